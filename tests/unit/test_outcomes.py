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
from pipelines.monitoring.outcomes import (
    VersionPerformance,
    live_performance,
    record_outcomes,
    trailing_performance,
)
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


def test_trailing_periods_are_read_once_and_score_as_live_performance_does(
    flights_config: DatasetConfig, isolated_settings: Settings, flights_days: pd.DataFrame
) -> None:
    # given version 2 served all three days (5 records of day 1 without an id), version 1 fifty flights of day 3,
    # and the outcomes of days 1 and 2 known
    url = isolated_settings.warehouse_url
    seed(flights_config, isolated_settings, DAYS, source=flights_days)
    log_predictions(url, flights_days, "2", "all", drop_ids=5)
    log_predictions(url, _day(flights_days, 3).head(50), "1", "day3")
    record_outcomes(flights_config, isolated_settings, LABELLED, OBSERVED_AT)

    # when version 2's last 1 and 2 days up to the end of day 3 are read
    end = datetime(2013, 1, 4)
    found = trailing_performance(flights_config, isolated_settings, end, "2", (1, 2))

    # then each period counts and scores what live_performance finds for version 2 over the same days
    for days, since in ((1, datetime(2013, 1, 3)), (2, datetime(2013, 1, 2))):
        (same,) = [p for p in live_performance(flights_config, isolated_settings, since, end) if p.model_version == "2"]
        assert found[days] == same, days
    # and the last day has no outcome yet: counted, not scored; two days are scored on day 2's outcomes
    assert (found[1].predictions, found[1].labelled, found[1].metrics) == (len(_day(flights_days, 3)), 0, {})
    assert found[2].labelled == 943 - 15 and found[2].metrics["roc_auc"] == pytest.approx(found[2].roc_auc, abs=1e-6)


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


# Every task: the outcome in its own column, scored with the task's metrics; the table of an older version upgraded.


def task_config(flights_config: DatasetConfig, task: str) -> DatasetConfig:
    """The flights rows with another task: the arrival delay in minutes (regression, the shipped flights_minutes)
    or the origin airport (multiclass, ``flights_origin``: origin is no longer a feature)."""
    if task == "regression":
        return load_config_file(REPO_ROOT / "pipelines" / "conf" / "datasets" / "flights_minutes.yaml")
    raw = flights_config.model_dump(mode="json", exclude_unset=True)
    raw["model"].pop("threshold")
    raw.update(
        name="flights_origin",
        target={"task": "multiclass", "column": "origin"},
        features=[f for f in raw["features"] if f["name"] != "origin"],
        slices=["carrier"],
        gate={},
        retraining={},
    )
    return DatasetConfig.model_validate(raw)


def insert_predictions(url: str, config: DatasetConfig, frame: pd.DataFrame, version: str, answers: dict) -> None:
    """Log one record per row of ``frame`` as the service does for the task (``answers``: column -> values)."""
    from pipelines.serving.prediction_log import create_table, prediction_log_table

    engine = get_engine(url)
    create_table(engine)
    rows = [
        {
            "dataset": config.name,
            "request_id": f"{config.name}-{version}",
            "record_index": i,
            "record_id": str(key),
            "served_at": OBSERVED_AT,
            "event_time": ts.to_pydatetime(),
            "model_name": config.model.registered_name,
            "model_version": version,
            "features": {"carrier": carrier},
            **{column: values[i] for column, values in answers.items()},
        }
        for i, (key, ts, carrier) in enumerate(
            zip(frame["flight_id"], frame["sched_dep"], frame["carrier"], strict=True)
        )
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(prediction_log_table), rows)


def test_each_task_stores_its_outcome_in_its_own_column(
    flights_config: DatasetConfig, isolated_settings: Settings, flights_days: pd.DataFrame
) -> None:
    # given three days of flights in the warehouse
    seed(flights_config, isolated_settings, DAYS, source=flights_days)
    minutes, origin = task_config(flights_config, "regression"), task_config(flights_config, "multiclass")

    # when the outcomes of the first two days are recorded for the binary, regression and multiclass datasets
    for config in (flights_config, minutes, origin):
        record_outcomes(config, isolated_settings, LABELLED, OBSERVED_AT)

    # then each dataset's outcomes are in the column of its task, the other two null
    truth = stored_truth(isolated_settings.warehouse_url)
    days = flights_days.loc[flights_days["sched_dep"] < LABELLED.end_dt]
    window = days.loc[days["arr_delay"].notna()]  # the arrival delay is unknown for cancelled flights, not the origin
    by_dataset = {name: rows.set_index("record_id") for name, rows in truth.groupby("dataset")}
    assert {name: len(rows) for name, rows in by_dataset.items()} == {
        "flights": len(window),
        "flights_minutes": len(window),
        "flights_origin": len(days),
    }
    delays = dict(zip(window["flight_id"].astype(str), window["arr_delay"], strict=True))
    origins = dict(zip(days["flight_id"].astype(str), days["origin"], strict=True))
    regression = by_dataset["flights_minutes"]
    assert regression["label_value"].to_dict() == delays
    assert regression["label"].isna().all() and regression["label_class"].isna().all()
    multiclass = by_dataset["flights_origin"]
    assert multiclass["label_class"].to_dict() == origins
    assert multiclass["label"].isna().all() and multiclass["label_value"].isna().all()
    binary = by_dataset["flights"]
    assert binary["label"].to_dict() == {str(k): v for k, v in labels_of(window, flights_config).items()}
    assert binary["label_class"].isna().all() and binary["label_value"].isna().all()


def test_live_performance_of_regression_and_multiclass_uses_the_holdout_metrics(
    flights_config: DatasetConfig, isolated_settings: Settings, flights_days: pd.DataFrame
) -> None:
    from pipelines.training.metrics import task_metrics

    # given regression and multiclass answers logged for day 1 (version 4) and day 2 (version 5), outcomes known
    url = isolated_settings.warehouse_url
    seed(flights_config, isolated_settings, DAYS, source=flights_days)
    minutes, origin = task_config(flights_config, "regression"), task_config(flights_config, "multiclass")
    rng = np.random.default_rng(11)
    logged: dict[str, pd.DataFrame] = {}
    for version, day in (("4", 1), ("5", 2)):
        rows = _day(flights_days, day)
        predicted = rows["arr_delay"].fillna(0).to_numpy() * 0.5 + rng.normal(0, 20, len(rows))
        proba = rng.dirichlet([1, 1, 1], size=len(rows))
        probabilities = [dict(zip(["EWR", "JFK", "LGA"], p, strict=True)) for p in proba]
        classes = np.array(["EWR", "JFK", "LGA"], dtype=object)[proba.argmax(axis=1)]
        insert_predictions(url, minutes, rows, version, {"prediction": predicted})
        insert_predictions(url, origin, rows, version, {"predicted_class": classes, "probabilities": probabilities})
        logged[version] = rows.assign(predicted=predicted, proba=list(proba))
    for config in (minutes, origin):
        record_outcomes(config, isolated_settings, LABELLED, OBSERVED_AT)

    # when their live performance is computed
    regression = live_performance(minutes, isolated_settings)
    multiclass = live_performance(origin, isolated_settings)

    # then each version is scored on its rows with an outcome by the functions that scored the holdout
    for version, perf_r, perf_m in zip(("4", "5"), regression, multiclass, strict=True):
        rows = logged[version]
        known = rows["arr_delay"].notna().to_numpy()
        assert (perf_r.model_version, perf_r.predictions, perf_r.labelled) == (version, len(rows), known.sum())
        expected = task_metrics("regression", rows["arr_delay"][known], rows["predicted"][known].to_numpy())
        assert set(perf_r.metrics) == {"rmse", "mae", "r2"}
        assert all(perf_r.metrics[k] == pytest.approx(expected[k], abs=1e-6) for k in perf_r.metrics)
        # (the origin of a cancelled flight is known: every record has its outcome)
        assert (perf_m.model_version, perf_m.predictions, perf_m.labelled) == (version, len(rows), len(rows))
        proba = np.vstack(rows["proba"].to_list())
        expected = task_metrics("multiclass", rows["origin"], proba, classes=["EWR", "JFK", "LGA"])
        assert set(perf_m.metrics) == {"log_loss", "accuracy", "f1_macro", "roc_auc_ovr", "min_class_recall"}
        assert all(perf_m.metrics[k] == pytest.approx(expected[k], abs=1e-6) for k in perf_m.metrics)
        # and the binary attributes stay empty
        assert perf_r.roc_auc is None and perf_m.roc_auc is None and perf_m.positive_rate is None


def test_binary_live_performance_also_gives_the_task_metrics(
    flights_config: DatasetConfig, isolated_settings: Settings, flights_days: pd.DataFrame
) -> None:
    from pipelines.core.config import TASK_METRICS

    # given one day of binary answers with its outcomes
    url = isolated_settings.warehouse_url
    seed(flights_config, isolated_settings, DAYS, source=flights_days)
    log_predictions(url, _day(flights_days, 1), "1", "day1")
    record_outcomes(flights_config, isolated_settings, LABELLED, OBSERVED_AT)
    (perf,) = live_performance(flights_config, isolated_settings)
    # then metrics hold the binary metrics by name, the same ROC AUC and log loss as the attributes
    assert set(perf.metrics) == set(TASK_METRICS["binary"])
    assert perf.metrics["roc_auc"] == pytest.approx(perf.roc_auc, abs=1e-6)
    assert perf.metrics["log_loss"] == pytest.approx(perf.log_loss, abs=1e-4)


_OLD_SCHEMA = """CREATE TABLE ground_truth (
    dataset VARCHAR(64) NOT NULL, record_id VARCHAR(200) NOT NULL, event_time DATETIME NOT NULL,
    label INTEGER NOT NULL, observed_at DATETIME NOT NULL, PRIMARY KEY (dataset, record_id))"""


def _old_ground_truth(url: str, index: bool = True) -> None:
    """A ground-truth table as the binary-only version created it, with two outcomes."""
    with get_engine(url).begin() as conn:
        conn.exec_driver_sql(_OLD_SCHEMA)
        if index:
            conn.exec_driver_sql(
                "CREATE INDEX ix_ground_truth_dataset_event_time ON ground_truth (dataset, event_time)"
            )
        conn.exec_driver_sql(
            "INSERT INTO ground_truth VALUES ('flights', 'a', '2013-01-01 10:00:00', 1, '2026-01-01 00:00:00'), "
            "('flights', 'b', '2013-01-01 11:00:00', 0, '2026-01-01 00:00:00')"
        )


def _columns(url: str) -> dict[str, bool]:
    return {c["name"]: c["nullable"] for c in sa.inspect(get_engine(url)).get_columns("ground_truth")}


def test_an_old_sqlite_ground_truth_is_upgraded_in_place_keeping_its_rows(
    flights_config: DatasetConfig, isolated_settings: Settings, flights_days: pd.DataFrame
) -> None:
    from pipelines.monitoring.outcomes import upgrade_table

    # given the warehouse of an older version: ground_truth with label NOT NULL and no task columns
    url = isolated_settings.warehouse_url
    _old_ground_truth(url)
    assert _columns(url) == {
        "dataset": False,
        "record_id": False,
        "event_time": False,
        "label": False,
        "observed_at": False,
    }

    # when a regression dataset's outcomes are recorded
    seed(flights_config, isolated_settings, DAYS, source=flights_days)
    result = record_outcomes(task_config(flights_config, "regression"), isolated_settings, LABELLED, OBSERVED_AT)

    # then the table was upgraded: task columns added, label nullable, the old rows and the index kept
    columns = _columns(url)
    assert columns["label"] and columns["label_class"] and columns["label_value"]
    truth = stored_truth(url)
    old = truth.loc[truth["dataset"] == "flights"]
    assert old[["record_id", "label"]].to_dict("records") == [
        {"record_id": "a", "label": 1},
        {"record_id": "b", "label": 0},
    ]
    assert (truth["dataset"] == "flights_minutes").sum() == result.labelled > 0
    indexes = {i["name"] for i in sa.inspect(get_engine(url)).get_indexes("ground_truth")}
    assert "ix_ground_truth_dataset_event_time" in indexes
    assert not sa.inspect(get_engine(url)).has_table("ground_truth__before_upgrade")
    # and upgrading again changes nothing
    assert upgrade_table(get_engine(url)) is False


def test_a_failed_sqlite_upgrade_leaves_the_old_table_as_it_was(isolated_settings: Settings) -> None:
    from pipelines.monitoring.outcomes import upgrade_table

    # given an old ground_truth without its index, and another table whose index already has the index's name
    # (SQLite index names are global): the rebuild fails after renaming the table and creating the new one
    url = isolated_settings.warehouse_url
    _old_ground_truth(url, index=False)
    with get_engine(url).begin() as conn:
        conn.exec_driver_sql("CREATE TABLE decoy (dataset TEXT, event_time TEXT)")
        conn.exec_driver_sql("CREATE INDEX ix_ground_truth_dataset_event_time ON decoy (dataset, event_time)")

    # when the upgrade runs, then it fails
    with pytest.raises(sa.exc.OperationalError, match="already exists"):
        upgrade_table(get_engine(url))

    # and all of it was rolled back: the old table with its rows, no half-built one
    assert _columns(url) == {
        "dataset": False,
        "record_id": False,
        "event_time": False,
        "label": False,
        "observed_at": False,
    }
    assert stored_truth(url)["record_id"].tolist() == ["a", "b"]
    assert not sa.inspect(get_engine(url)).has_table("ground_truth__before_upgrade")
