"""Monitoring for real: a real MLflow server and registry, real Evidently reports, a real prediction service.

The module reads the shared champion (trained on January-March 2013 with the pipeline's steps, approved by policy,
deployed, its monitoring reference prepared at deploy) through a dataset of its own (``flights_monitoring``: the
same model and source rows, its own monitoring history), starts a prediction service for that dataset as its own
process and replays days through it (the service logs what it answered; the replay records the outcomes): a
day of April (the season the champion knows), four days of July (summer weather: temperature and dew point far
from anything in the reference), and a fraction of a June day. Nothing here stands in for Airflow's part: the
retraining decision is taken by the same step the monitoring DAG's ``decide`` task calls.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from pipelines import steps
from pipelines.core import audit, registry
from pipelines.core.config import DatasetConfig
from pipelines.core.runs import RunContext, Window
from pipelines.core.settings import Settings, get_settings
from pipelines.stack.processes import wait_until
from pipelines.stack.settings import StackSettings
from tests.integration.conftest import SHARED
from tests.stack import drained, pointed_at, replay_days

pytestmark = [pytest.mark.integration, SHARED]

DATASET = "flights_monitoring"
MODEL = "flights-delay"
EXPERIMENT = f"{DATASET}-monitoring"
AT = datetime(2026, 1, 1, tzinfo=UTC)
STABLE = date(2013, 4, 2)  # the day after the champion's window: same season
JULY = [date(2013, 7, 1), date(2013, 7, 2), date(2013, 7, 3), date(2013, 7, 4)]
EMPTY = date(2013, 6, 1)  # nothing replayed
THIN = date(2013, 6, 20)  # only THIN_RECORDS of its flights replayed
THIN_RECORDS = 120
FEATURES = [
    "carrier",
    "origin",
    "dest",
    "distance",
    "sched_hour",
    "day_of_week",
    "month",
    "temp",
    "dewp",
    "humid",
    "wind_dir",
    "wind_speed",
    "precip",
    "pressure",
    "visib",
]


@dataclass
class Monitored:
    """The registry with its champion, and the prediction log filled by replays."""

    settings: Settings
    config: DatasetConfig
    champion: dict[str, Any]


@pytest.fixture(scope="module")
def monitored(
    shared_stack: StackSettings, flights_champion: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Monitored]:
    """The shared champion; days replayed to this module's dataset through the stack's prediction service."""
    from pipelines.data.sources import load_source
    from pipelines.monitoring.replay import replay

    url = shared_stack.serving_url
    with pointed_at(shared_stack):
        replay_run = RunContext(dag_id="replay_flights", run_id="test_monitoring", reason="replay")
        for first, end in ((STABLE, STABLE + timedelta(days=1)), (JULY[0], JULY[-1] + timedelta(days=1))):
            replay_days(DATASET, replay_run, first, end, url)
        # a day of which only a handful of flights were ever sent to the service
        config = steps.dataset_config(DATASET)
        source = load_source(config)
        day = source[
            (source["sched_dep"] >= pd.Timestamp(THIN))
            & (source["sched_dep"] < pd.Timestamp(THIN) + pd.Timedelta(days=1))
        ]
        window = Window(THIN, THIN + timedelta(days=1))
        thin = replay(config, get_settings(), window, replay_run.key, source=day.head(THIN_RECORDS))
        assert thin.answered == THIN_RECORDS, thin
        wait_until(lambda: drained(url), "the prediction log to be written", 60)
        yield Monitored(settings=get_settings(), config=config, champion=flights_champion["trained"])


def _monitor(day: date, run_id: str = "test", checked_at: datetime = AT) -> dict[str, Any]:
    run = RunContext(dag_id="monitor_flights", run_id=run_id, reason="monitoring")
    return steps.monitor(DATASET, run, day, day + timedelta(days=1), checked_at)


def _decide(day: date) -> dict[str, Any]:
    """The retraining decision for the window ``[day, day + 1)``, no training run active."""
    run = RunContext(dag_id="monitor_flights", run_id=f"decide_{day}", reason="monitoring")
    return steps.decide_retraining(DATASET, run, day + timedelta(days=1), 0, AT)


def _scalar(settings: Settings, sql: str, **params: Any) -> Any:
    from pipelines.core.warehouse import get_engine

    with get_engine(settings.warehouse_url).connect() as conn:
        return conn.execute(sa.text(sql), params).scalar_one()


def _flights_of(settings: Settings, day: date) -> int:
    """Rows the replay wrote to the warehouse for ``day`` (each one was sent to the service)."""
    return int(
        _scalar(
            settings,
            "select count(*) from flights where sched_dep >= :a and sched_dep < :b",
            a=str(day),
            b=str(day + timedelta(days=1)),
        )
    )


def _outcomes_of(settings: Settings, day: date) -> int:
    return int(
        _scalar(
            settings,
            "select count(*) from ground_truth where dataset = :dataset and event_time >= :a and event_time < :b",
            dataset=DATASET,
            a=str(day),
            b=str(day + timedelta(days=1)),
        )
    )


def _window_runs(settings: Settings, day: date) -> list[Any]:
    """The MLflow runs of the monitoring experiment tagged with the window ``[day, day + 1)``."""
    mlf = registry.client(settings)
    experiment = mlf.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, f"no MLflow experiment {EXPERIMENT}"
    key = f"{day}_{day + timedelta(days=1)}"
    return list(mlf.search_runs([experiment.experiment_id], filter_string=f"tags.`monitoring.window` = '{key}'"))


def _stored(settings: Settings, day: date) -> list[dict[str, Any]]:
    from pipelines.monitoring import store

    return [r for r in store.results(settings.warehouse_url, DATASET) if r["window_start"] == day]


def _assert_evidence(settings: Settings, result: dict[str, Any], *, with_outcomes: bool) -> None:
    """The check left its reports on disk, one MLflow run with its numbers and reports, and its warehouse row."""
    day = date.fromisoformat(result["window_start"])
    folder = settings.home / "monitoring" / DATASET / f"{day}_{day + timedelta(days=1)}"
    assert Path(result["report_dir"]) == folder
    drift_html = (folder / "drift.html").read_text()
    assert "<html" in drift_html.lower() and "temp" in drift_html
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == result["status"] and summary["drift_share"] == result["drift_share"]
    assert sorted(summary["drift"]["features"]) == sorted(FEATURES)

    runs = _window_runs(settings, day)
    assert [r.info.run_id for r in runs] == [result["mlflow_run_id"]]
    mlflow_run = runs[0]
    assert f"/runs/{result['mlflow_run_id']}?workflowType=machine_learning" in result["mlflow_run_url"]
    metrics = mlflow_run.data.metrics
    assert metrics["drift_share"] == pytest.approx(result["drift_share"])
    assert metrics["dataset_drift"] == float(result["status"] == "drift")
    assert metrics["rows"] == result["rows"] and metrics["labelled"] == result["labelled"]
    for feature in FEATURES:
        assert metrics[f"drift_score.{feature}"] == pytest.approx(summary["drift"]["features"][feature]["score"])
    assert "drift_score.prediction" in metrics
    assert mlflow_run.data.tags["monitoring.status"] == result["status"]
    assert mlflow_run.data.tags["monitoring.champion_version"] == "1"
    artifacts = {a.path for a in registry.client(settings).list_artifacts(result["mlflow_run_id"], "report")}
    assert {"report/drift.html", "report/summary.json"} <= artifacts
    if with_outcomes:
        assert (folder / "performance.html").is_file() and "report/performance.html" in artifacts
        assert metrics["live_roc_auc"] == pytest.approx(result["live_metrics"]["roc_auc"])
    else:
        assert not (folder / "performance.html").exists() and "live_roc_auc" not in metrics

    rows = _stored(settings, day)
    assert len(rows) == 1
    assert rows[0]["status"] == result["status"] and rows[0]["evidence_url"] == result["mlflow_run_url"]
    assert rows[0]["drift_share"] == pytest.approx(result["drift_share"])


def test_the_champions_reference_is_tagged_on_its_version_and_downloadable(
    monitored: Monitored, tmp_path: Path
) -> None:
    import mlflow.artifacts

    # given the champion deployed by the fixture
    champion = registry.alias_version(monitored.settings, MODEL, registry.CHAMPION)
    assert champion is not None and str(champion.version) == monitored.champion["model_version"]
    # when its monitoring reference is fetched as any worker would, through the tag on the version
    uri = champion.tags["monitoring.reference"]
    assert uri == f"runs:/{champion.run_id}/monitoring"
    got = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path)))
    # then it holds the sampled training rows, scored by the champion, with a calibrated threshold per column
    frame = pd.read_parquet(got / "reference.parquet")
    info = json.loads((got / "reference.json").read_text())
    assert len(frame) == int(champion.tags["monitoring.reference_rows"]) == info["rows_kept"] == 20_000
    assert set(FEATURES) | {"is_delayed", "probability"} <= set(frame.columns)
    assert frame["probability"].between(0, 1).all() and frame["probability"].nunique() > 1000
    assert set(frame["is_delayed"].unique()) == {0, 1}
    assert (info["version"], info["first_day"], info["last_day"]) == ("1", "2013-01-01", "2013-03-31")
    calibration = info["calibration"]
    assert calibration["calibrated"] and calibration["days"] == 90 and calibration["margin"] == 1.25
    assert sorted(info["thresholds"]) == sorted([*FEATURES, "probability"])
    for column, threshold in info["thresholds"].items():
        worst = calibration["worst_day_scores"][column]
        assert threshold == pytest.approx(max(0.01, 1.25 * worst), abs=1e-5), column


def test_a_day_of_the_champions_season_is_ok(monitored: Monitored) -> None:
    settings = monitored.settings
    # given a day of April 2013 (the day after the champion's training window) replayed through the service
    # when the monitoring step checks it
    result = _monitor(STABLE)
    # then no counted feature drifted, and the champion's live performance on it is known
    assert result["status"] == "ok", result["message"]
    assert result["dataset_drift"] is False and result["drifted_features"] == []
    assert result["drift_share"] < monitored.config.monitoring.drift.drift_share
    assert result["rows"] == _flights_of(settings, STABLE) > monitored.config.monitoring.min_rows
    assert result["labelled"] == _outcomes_of(settings, STABLE) > monitored.config.monitoring.min_labelled
    assert 0.55 < result["live_metrics"]["roc_auc"] < 0.9
    assert result["message"].startswith("ok: 0 of 13 counted features drifted")
    _assert_evidence(settings, result, with_outcomes=True)
    # and the window stores the champion's traffic of the 7 and 30 days up to it (the Models page's live figures):
    # its last 7 days are what the window's performance was scored on (performance_days 7), 30 days hold them
    periods = result["live_periods"]
    assert sorted(periods, key=int) == ["7", "30"]
    week, month = periods["7"], periods["30"]
    assert week["labelled"] == result["labelled"]
    assert week["metrics"]["roc_auc"] == pytest.approx(result["live_metrics"]["roc_auc"], abs=1e-4)  # (Evidently's)
    assert result["rows"] <= week["predictions"] <= month["predictions"] and week["labelled"] <= month["labelled"]


def test_a_summer_day_drifts_and_names_the_weather_that_moved(monitored: Monitored) -> None:
    settings = monitored.settings
    # given the first day of July replayed through the service (the champion only saw January to March)
    # when the monitoring step checks it
    result = _monitor(JULY[0])
    # then the window drifts, and the features named are temperature and dew point, nothing about the schedule
    assert result["status"] == "drift", result["message"]
    assert result["dataset_drift"] is True
    assert {"temp", "dewp"} <= set(result["drifted_features"])
    assert not {"carrier", "origin", "dest", "distance", "sched_hour"} & set(result["drifted_features"])
    assert result["drift_share"] >= monitored.config.monitoring.drift.drift_share
    assert "temp" in result["message"] and "dewp" in result["message"]
    # and each drifted feature scored beyond the threshold calibrated on the champion's own days
    features = json.loads((Path(result["report_dir"]) / "summary.json").read_text())["drift"]["features"]
    for name in ("temp", "dewp"):
        assert features[name]["drifted"] and features[name]["score"] >= features[name]["threshold"]
    # (month is reported but never counted: one day always holds one month)
    assert features["month"]["counted"] is False and "month" not in result["drifted_features"]
    assert result["rows"] == _flights_of(settings, JULY[0])
    _assert_evidence(settings, result, with_outcomes=True)


def test_an_empty_window_and_a_thin_window_are_insufficient_data_never_drift(monitored: Monitored) -> None:
    settings = monitored.settings
    minimum = monitored.config.monitoring.min_rows
    for day, logged in ((EMPTY, 0), (THIN, THIN_RECORDS)):
        # given a day with no logged prediction, and a day with fewer than monitoring.min_rows of them
        # when the monitoring step checks it
        result = _monitor(day)
        # then it says insufficient data, with how many predictions it found and how many it needs
        assert result["status"] == "insufficient_data", result
        assert result["rows"] == logged
        assert result["dataset_drift"] is False and result["drift_share"] is None
        assert result["drifted_features"] == [] and result["live_metrics"] == {}
        assert result["message"] == (
            f"insufficient data: {logged} predictions logged in [{day}, {day + timedelta(days=1)}), fewer than the "
            f"{minimum} monitoring.min_rows needs for a drift verdict"
        )
        # and it leaves a summary, no drift report, an MLflow run flagged insufficient_data and a warehouse row
        folder = Path(result["report_dir"])
        assert json.loads((folder / "summary.json").read_text())["status"] == "insufficient_data"
        assert not (folder / "drift.html").exists()
        runs = _window_runs(settings, day)
        assert len(runs) == 1
        assert runs[0].data.metrics["insufficient_data"] == 1.0 and runs[0].data.metrics["rows"] == logged
        assert "drift_share" not in runs[0].data.metrics
        assert [r["status"] for r in _stored(settings, day)] == ["insufficient_data"]


def test_rechecking_a_window_reuses_its_mlflow_run_and_replaces_its_row(monitored: Monitored) -> None:
    settings = monitored.settings
    day = JULY[1]
    # given a window checked once
    first = _monitor(day, run_id="first", checked_at=AT)
    _assert_evidence(settings, first, with_outcomes=True)
    # when the same window is checked again by another run
    second = _monitor(day, run_id="second", checked_at=AT + timedelta(hours=1))
    # then the verdict is the same, logged to the same MLflow run (no second run for the window)
    assert second["status"] == first["status"] == "drift"
    assert second["drift_share"] == first["drift_share"]
    assert second["mlflow_run_id"] == first["mlflow_run_id"]
    _assert_evidence(settings, second, with_outcomes=True)
    tags = _window_runs(settings, day)[0].data.tags
    assert tags["airflow.run_id"] == "second"
    # and the warehouse holds one row for the window: the second check's
    rows = _stored(settings, day)
    assert len(rows) == 1 and rows[0]["run_key"] == "monitor_flights__second"
    # and the dataset's timeline run holds one point for the window (at its step), the MLflow UI's chart of drift
    _assert_one_timeline_point(settings, day, second)


def _assert_one_timeline_point(settings: Settings, day: date, result: dict[str, Any]) -> None:
    from pipelines.monitoring.monitor import timeline_point

    mlf = registry.client(settings)
    experiment = mlf.get_experiment_by_name(EXPERIMENT)
    assert experiment.tags[registry.EXPERIMENT_KIND_TAG] == registry.MODEL_TRAINING_KIND
    timelines = mlf.search_runs([experiment.experiment_id], filter_string=f"tags.`monitoring.timeline` = '{DATASET}'")
    assert len(timelines) == 1
    step, _ = timeline_point(f"{day}_{day + timedelta(days=1)}")
    points = [m for m in mlf.get_metric_history(timelines[0].info.run_id, "drift_share") if m.step == step]
    assert [m.value for m in points] == [pytest.approx(result["drift_share"])]


def test_three_drifted_windows_in_a_row_trigger_retraining_and_the_next_one_waits_for_the_cooldown(
    monitored: Monitored,
) -> None:
    from pipelines.monitoring import store

    settings = monitored.settings
    policy = monitored.config.retraining
    # given the first two July days checked and decided in order: drift, but not yet three windows in a row
    results = {}
    for n, day in enumerate(JULY[:2], start=1):
        results[day] = _monitor(day)
        assert results[day]["status"] == "drift"
        decision = _decide(day)
        assert decision["retrain"] is False and decision["training_run_id"] is None, decision
        assert any(r.startswith(f"NO TRIGGER drift in {n} of 3 consecutive windows") for r in decision["reasons"])

    # when the third July day drifts too and its window is decided
    results[JULY[2]] = _monitor(JULY[2])
    assert results[JULY[2]]["status"] == "drift"
    decision = _decide(JULY[2])

    # then the policy retrains, naming the three windows, with a training run and conf for the window's end
    end = JULY[2] + timedelta(days=1)
    assert decision["retrain"] is True and decision["trigger"] == "drift", decision["reasons"]
    windows = ", ".join(str(d + timedelta(days=1)) for d in JULY[:3])
    assert f"TRIGGER drift in 3 consecutive windows: windows ending {windows}, need 3; drift share" in "\n".join(
        decision["reasons"]
    )
    assert decision["training_dag_id"] == f"train_{DATASET}"
    assert decision["training_run_id"] == f"retrain__{DATASET}__{end}"
    conf = decision["training_conf"]
    assert conf["window_end"] == str(end)
    assert conf["window_start"] == str(end - timedelta(days=policy.train_days))
    assert conf["reason"].startswith("drift: retrain (drift): drift in 3 consecutive windows")
    assert conf["evidence"] == results[JULY[2]]["mlflow_run_url"]
    assert "overrides" not in conf
    # and the training run it names is approved by retraining.approval, found from the stored decision
    mode, why = steps.approval_mode(
        monitored.config, settings, RunContext(f"train_{DATASET}", f"retrain__{DATASET}__{end}")
    )
    assert mode == policy.approval and why.startswith("retraining.approval"), why
    other = RunContext(f"train_{DATASET}", "manual__2013-07-04")
    assert steps.approval_mode(monitored.config, settings, other) == (monitored.config.approval.mode, "approval.mode")
    # and the decision is in the warehouse, and the audit says a retraining was triggered, and why
    stored = store.decision_for(settings.warehouse_url, DATASET, end)
    assert stored is not None and stored["retrain"] and stored["training_run_id"] == decision["training_run_id"]
    events = audit.history(settings.warehouse_url, MODEL)
    triggered = [e for e in events if e["event"] == "retraining_triggered" and e["dataset"] == DATASET]
    assert len(triggered) == 1 and f"training run retrain__{DATASET}__{end}" in str(triggered[0]["comment"])

    # when the same window is decided again (a rerun of the monitoring run)
    again = _decide(JULY[2])
    # then it keeps its decision and names the same training run: nothing would be triggered twice
    assert again["retrain"] is True and again["reused"] is True
    assert again["training_run_id"] == decision["training_run_id"] and again["training_conf"] == conf

    # when the fourth July day drifts as well, the day after the retraining was triggered
    assert _monitor(JULY[3])["status"] == "drift"
    fourth = _decide(JULY[3])
    # then drift still calls for retraining, but the cooldown blocks it
    assert fourth["retrain"] is False and fourth["trigger"] == "drift" and fourth["training_run_id"] is None
    cooldown_until = end + timedelta(days=policy.cooldown_days)
    assert (
        f"BLOCK cooldown until {cooldown_until}: last retraining for {end}, 1 days ago < {policy.cooldown_days} days"
        in fourth["reasons"]
    )
    assert fourth["summary"] == f"no retraining: cooldown until {cooldown_until}"
    retrainings = store.decisions(settings.warehouse_url, DATASET, retrain_only=True)
    assert [r["training_run_id"] for r in retrainings] == [f"retrain__{DATASET}__{end}"]
