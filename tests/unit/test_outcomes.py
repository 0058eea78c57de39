"""Ground truth and live performance on a real SQLite warehouse seeded with three real days of flights."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.metrics import brier_score_loss, f1_score, log_loss, precision_score, recall_score, roc_auc_score

from pipelines.core.config import DatasetConfig, load_config_file
from pipelines.core.errors import NotFoundError
from pipelines.core.runs import Window
from pipelines.core.settings import Settings
from pipelines.core.warehouse import get_engine
from pipelines.data.features import build_target
from pipelines.data.seed import seed
from pipelines.data.sources import load_source
from pipelines.monitoring.outcomes import VersionPerformance, live_performance, record_outcomes
from pipelines.serving.log_writer import PredictionLogWriter
from pipelines.serving.prediction_log import PredictionRecord
from tests.conftest import REPO_ROOT

OBSERVED_AT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
DAYS = Window(date(2013, 1, 1), date(2013, 1, 4))
LABELLED = Window(date(2013, 1, 1), date(2013, 1, 3))


@pytest.fixture(scope="module")
def flights_days() -> pd.DataFrame:
    """The real flights of 2013-01-01 to 2013-01-03 (about 2,700, some cancelled), loaded once per module."""
    return three_days()


def three_days() -> pd.DataFrame:
    config = load_config_file(REPO_ROOT / "pipelines" / "conf" / "datasets" / "flights.yaml")
    frame = load_source(config)
    in_days = (frame["sched_dep"] >= DAYS.start_dt) & (frame["sched_dep"] < DAYS.end_dt)
    return frame.loc[in_days].reset_index(drop=True)


def _day(frame: pd.DataFrame, day: int) -> pd.DataFrame:
    return frame.loc[frame["sched_dep"].dt.day == day]


def stored_truth(url: str) -> pd.DataFrame:
    """The ground-truth table as stored."""
    with get_engine(url).connect() as conn:
        return pd.read_sql(sa.text("SELECT * FROM ground_truth ORDER BY record_id"), conn)


def log_predictions(url: str, frame: pd.DataFrame, version: str, request_id: str, drop_ids: int = 0) -> pd.DataFrame:
    """Log one prediction per flight of ``frame`` (a made-up, deterministic, informative score); what was logged."""
    noise = ((frame["distance"].to_numpy() * 7 + frame["sched_dep"].dt.minute.to_numpy() * 13) % 100) / 100
    delay = np.clip((frame["dep_delay"].fillna(0).to_numpy() + 20) / 80, 0.0, 1.0)
    probability = np.clip(0.5 * noise + 0.5 * delay, 0.01, 0.99)
    logged = pd.DataFrame(
        {
            "model_version": version,
            "record_id": [None if i < drop_ids else key for i, key in enumerate(frame["flight_id"])],
            "probability": probability,
            "decision": (probability >= 0.3).astype(int),
        }
    )
    records = [
        PredictionRecord(
            dataset="flights",
            request_id=request_id,
            record_index=i,
            record_id=logged["record_id"].iloc[i],
            served_at=OBSERVED_AT,
            event_time=row.sched_dep.to_pydatetime(),
            model_name="flights-delay",
            model_version=version,
            features={"carrier": row.carrier, "distance": float(row.distance), "temp": _nan_to_none(row.temp)},
            probability=float(logged["probability"].iloc[i]),
            decision=int(logged["decision"].iloc[i]),
        )
        for i, row in enumerate(frame.itertuples())
    ]
    writer = PredictionLogWriter(url, batch_size=500, flush_interval=0.05)
    writer.start()
    for start in range(0, len(records), 100):
        assert writer.submit(records[start : start + 100])
    stats = writer.close()
    assert stats.written == len(records) and stats.dropped == 0
    return logged


def _nan_to_none(value: float) -> float | None:
    return None if pd.isna(value) else float(value)


def expected_performance(logged: pd.DataFrame, labels: dict[str, int]) -> dict[str, dict[str, Any]]:
    """The metrics per version computed by hand with scikit-learn on the joined rows."""
    out: dict[str, dict[str, Any]] = {}
    for version, group in logged.groupby("model_version"):
        joined = group.assign(label=group["record_id"].map(labels)).dropna(subset=["label"])
        y, p, d = joined["label"].astype(int), joined["probability"], joined["decision"]
        out[str(version)] = {"predictions": len(group), "labelled": len(joined)}
        if len(joined):
            out[str(version)] |= {
                "positive_rate": y.mean(),
                "roc_auc": roc_auc_score(y, p) if y.nunique() == 2 else None,
                "log_loss": log_loss(y, p, labels=[0, 1]),
                "brier": brier_score_loss(y, p),
                "precision": precision_score(y, d, zero_division=0),
                "recall": recall_score(y, d, zero_division=0),
                "f1": f1_score(y, d, zero_division=0),
            }
    return out


def assert_matches(actual: list[VersionPerformance], expected: dict[str, dict[str, Any]]) -> None:
    """Every version's counts equal and metrics equal to the hand-computed ones."""
    assert sorted(v.model_version for v in actual) == sorted(expected)
    for perf in actual:
        want = expected[perf.model_version]
        got = perf.to_dict()
        for name in ("positive_rate", "roc_auc", "log_loss", "brier", "precision", "recall", "f1"):
            want_value = want.get(name)
            if want_value is None:
                assert got[name] is None, (perf.model_version, name)
            else:
                assert got[name] == pytest.approx(want_value, rel=1e-12), (perf.model_version, name)
        assert (perf.predictions, perf.labelled) == (want["predictions"], want["labelled"])


def labels_of(frame: pd.DataFrame, config: DatasetConfig) -> dict[str, int]:
    """record id -> label for the flights whose outcome is known, straight from ``build_target``."""
    target, known = build_target(frame, config)
    return dict(zip(frame.loc[known, "flight_id"], target[known].astype(int), strict=True))


def test_outcomes_carry_the_labels_of_build_target(
    flights_config: DatasetConfig, isolated_settings: Settings, flights_days: pd.DataFrame
) -> None:
    # given three days of flights in the warehouse
    seed(flights_config, isolated_settings, DAYS, source=flights_days)

    # when the outcomes of the first two days are recorded
    result = record_outcomes(flights_config, isolated_settings, LABELLED, OBSERVED_AT)

    # then every flight with an arrival delay is labelled as build_target says; cancelled ones are counted apart
    window = flights_days.loc[flights_days["sched_dep"] < LABELLED.end_dt]
    expected = labels_of(window, flights_config)
    assert result.to_dict() == {
        "dataset": "flights",
        "window": str(LABELLED),
        "rows": len(window),
        "labelled": len(expected),
        "without_outcome": int(window["arr_delay"].isna().sum()),
        "without_key": 0,
    }
    assert result.without_outcome == 26
    truth = stored_truth(isolated_settings.warehouse_url)
    assert dict(zip(truth["record_id"], truth["label"], strict=True)) == expected
    assert set(truth["dataset"]) == {"flights"}
    assert pd.to_datetime(truth["observed_at"]).dt.tz_localize(None).eq(pd.Timestamp("2026-03-02 09:30")).all()
    times = dict(zip(window["flight_id"], window["sched_dep"], strict=True))
    assert (pd.to_datetime(truth["event_time"]) == truth["record_id"].map(times)).all()


def test_recording_a_window_again_replaces_it(
    flights_config: DatasetConfig, isolated_settings: Settings, flights_days: pd.DataFrame
) -> None:
    # given the outcomes of day 1 and day 2 already recorded
    url = isolated_settings.warehouse_url
    seed(flights_config, isolated_settings, DAYS, source=flights_days)
    day1, day2 = Window(date(2013, 1, 1), date(2013, 1, 2)), Window(date(2013, 1, 2), date(2013, 1, 3))
    first = record_outcomes(flights_config, isolated_settings, day1, OBSERVED_AT)
    record_outcomes(flights_config, isolated_settings, day2, OBSERVED_AT)
    stored = len(stored_truth(url))

    # when day 1 is recorded again
    again = record_outcomes(flights_config, isolated_settings, day1, OBSERVED_AT)

    # then nothing is duplicated
    assert again == first
    assert len(stored_truth(url)) == stored

    # when the warehouse is corrected (one flight turns out cancelled, one much later, one moves to day 2)
    fixed = flights_days.copy()
    cancelled, late, moved = fixed.index[[0, 1, 2]]
    fixed.loc[cancelled, "arr_delay"] = np.nan
    fixed.loc[late, "arr_delay"] = 120.0
    fixed.loc[moved, "sched_dep"] = pd.Timestamp("2013-01-02 23:00")
    seed(flights_config, isolated_settings, DAYS, source=fixed)
    record_outcomes(flights_config, isolated_settings, day2, OBSERVED_AT)
    record_outcomes(flights_config, isolated_settings, day1, OBSERVED_AT)

    # then the stored outcomes follow the correction, each flight still once
    truth = stored_truth(url).set_index("record_id")
    assert truth.index.is_unique
    assert fixed.loc[cancelled, "flight_id"] not in truth.index
    assert truth.loc[fixed.loc[late, "flight_id"], "label"] == 1
    assert pd.Timestamp(truth.loc[fixed.loc[moved, "flight_id"], "event_time"]) == pd.Timestamp("2013-01-02 23:00")
    assert dict(truth["label"]) == labels_of(fixed.loc[fixed["sched_dep"] < LABELLED.end_dt], flights_config)


def test_outcomes_need_the_warehouse_table(flights_config: DatasetConfig, isolated_settings: Settings) -> None:
    # given an empty warehouse, when outcomes are recorded, then the error says to seed first
    with pytest.raises(NotFoundError, match="seed it first"):
        record_outcomes(flights_config, isolated_settings, LABELLED, OBSERVED_AT)


def test_live_performance_scores_each_version_on_its_labelled_predictions(
    flights_config: DatasetConfig, isolated_settings: Settings, flights_days: pd.DataFrame
) -> None:
    # given version 1 served day 1, version 2 day 2 (5 records without an id), version 10 part of day 3,
    # and the outcomes of days 1 and 2 are known
    url = isolated_settings.warehouse_url
    seed(flights_config, isolated_settings, DAYS, source=flights_days)
    logged = pd.concat(
        [
            log_predictions(url, _day(flights_days, 1), "1", "day1"),
            log_predictions(url, _day(flights_days, 2), "2", "day2", drop_ids=5),
            log_predictions(url, _day(flights_days, 3).head(50), "10", "day3"),
        ]
    )
    record_outcomes(flights_config, isolated_settings, LABELLED, OBSERVED_AT)

    # when the live performance is computed, in all and on day 2 only
    everything = live_performance(flights_config, isolated_settings)
    day2 = live_performance(flights_config, isolated_settings, datetime(2013, 1, 2), datetime(2013, 1, 3))

    # then each version's numbers equal scikit-learn's on the same joined rows
    labels = labels_of(flights_days, flights_config)
    labels_known = {
        k: v
        for k, v in labels.items()
        if k in set(_day(flights_days, 1)["flight_id"]) | set(_day(flights_days, 2)["flight_id"])
    }
    expected = expected_performance(logged, labels_known)
    assert_matches(everything, expected)
    assert [(v.model_version, v.predictions, v.labelled) for v in everything] == [
        ("1", 842, 842 - 11),
        ("2", 943, 943 - 15 - 5),
        ("10", 50, 0),
    ]
    assert everything[2].roc_auc is None and everything[2].positive_rate is None
    assert 0.0 < everything[0].positive_rate < 1.0 and everything[0].roc_auc is not None
    assert_matches(day2, {"2": expected["2"]})


def test_live_performance_without_both_classes_has_no_roc_auc(
    flights_config: DatasetConfig, isolated_settings: Settings, flights_days: pd.DataFrame
) -> None:
    # given a version that served only flights that arrived on time
    url = isolated_settings.warehouse_url
    seed(flights_config, isolated_settings, DAYS, source=flights_days)
    on_time = _day(flights_days, 1).loc[lambda f: f["arr_delay"] <= 15].head(40)
    logged = log_predictions(url, on_time, "3", "on-time")
    record_outcomes(flights_config, isolated_settings, LABELLED, OBSERVED_AT)

    # when its live performance is computed
    (perf,) = live_performance(flights_config, isolated_settings)

    # then ROC AUC is undefined, the rest is computed
    assert perf.roc_auc is None and perf.positive_rate == 0.0 and perf.labelled == 40
    assert_matches([perf], expected_performance(logged, labels_of(on_time, flights_config)))


def test_live_performance_is_empty_without_a_prediction_log(
    flights_config: DatasetConfig, isolated_settings: Settings
) -> None:
    # given a warehouse where nothing was served, then there is nothing to report
    assert live_performance(flights_config, isolated_settings) == []
