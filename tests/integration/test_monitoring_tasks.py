"""Monitoring of the other task types for real: a trained multiclass and a regression champion, real MLflow (its
registry and artifacts in a SQLite store), real Evidently, a real SQLite warehouse; the PostgreSQL upgrade of an
older ground-truth table on a throwaway database.

``wine`` (multiclass, no time column: its windows are days of serving time) and ``flights_minutes`` (regression,
windows of event time) are trained and deployed by the pipeline's steps (their monitoring reference prepared at
deploy). What the prediction service would log is inserted into the prediction log directly, in the task's columns
(``predicted_class`` and ``probabilities``, or ``prediction``), computed by the champion itself, so that this module
does not depend on a running service. ``flights_minutes``' outcomes are recorded by ``record_outcomes``; ``wine``'s
are inserted into ``ground_truth`` (``record_outcomes`` reads windows of event time, which wine has not).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from pipelines import steps
from pipelines.core import registry
from pipelines.core.config import DatasetConfig, load_dataset_config
from pipelines.core.runs import RunContext, Window
from pipelines.core.settings import Settings, get_settings
from pipelines.core.warehouse import get_engine
from pipelines.data.features import build_features, build_target
from pipelines.data.sources import read_source
from pipelines.monitoring.monitor import MonitorResult, monitor_window
from pipelines.monitoring.outcomes import create_table, ground_truth_table, record_outcomes, upgrade_table
from pipelines.serving.prediction_log import create_table as create_log
from pipelines.serving.prediction_log import prediction_log_table
from pipelines.training.metrics import task_metrics
from tests.conftest import REPO_ROOT, throwaway_postgres
from tests.stack import train_champion

pytestmark = pytest.mark.integration

AT = datetime(2026, 1, 1, tzinfo=UTC)
CHECKED_AT = datetime(2026, 3, 10, tzinfo=UTC)
SERVED = date(2026, 3, 2)  # wine: a day of serving answered like its training data
SHIFTED = date(2026, 3, 3)  # wine: a day of serving of different wines (stronger, darker, richer in proline)
STABLE = date(2013, 4, 2)  # flights_minutes: the day after the champion's window
SUMMER = date(2013, 7, 1)  # flights_minutes: July weather, far from January-March
SHIPPED = REPO_ROOT / "pipelines" / "conf" / "datasets"
MULTICLASS_METRICS = {"log_loss", "accuracy", "f1_macro", "roc_auc_ovr", "min_class_recall"}


def _day(day: date) -> Window:
    return Window(day, date.fromordinal(day.toordinal() + 1))


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a runtime folder of this module's own: the shipped wine (windows of 30 predictions judged, 30
    outcomes scored: it has 178 wines) and flights_minutes configs, MLflow in a SQLite store, no service."""
    folder = tmp_path_factory.mktemp("monitoring-tasks")
    datasets = folder / "datasets"
    datasets.mkdir()
    wine = yaml.safe_load((SHIPPED / "wine.yaml").read_text())
    wine["monitoring"].update(min_rows=30, min_labelled=30)
    (datasets / "wine.yaml").write_text(yaml.safe_dump(wine, sort_keys=False))
    shutil.copy(SHIPPED / "flights_minutes.yaml", datasets / "flights_minutes.yaml")
    home = folder / "runtime"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_HOME", str(home))
        patch.setenv("MLOPS_MLFLOW_TRACKING_URI", f"sqlite:///{home}/mlflow.db")
        patch.setenv("MLOPS_AIRFLOW_UI_URL", "http://127.0.0.1:1")
        patch.setenv("MLOPS_DATASETS_DIR", str(datasets))
        for name in ("MLOPS_WAREHOUSE_URL", "MLOPS_SERVING_URL"):
            patch.delenv(name, raising=False)
        get_settings.cache_clear()
        yield get_settings()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def champions(settings: Settings) -> dict[str, dict[str, Any]]:
    """wine and flights_minutes (January-March 2013) trained, approved by policy and deployed as version 1."""
    steps.seed("wine", None, None)
    steps.seed("flights_minutes", "2013-01-01", "2013-07-05")
    chains = {
        "wine": train_champion("wine", RunContext("tests", "wine_v1", "test"), None, None, AT),  # type: ignore[arg-type]
        "flights_minutes": train_champion(
            "flights_minutes", RunContext("tests", "minutes_v1", "test"), "2013-01-01", "2013-04-01", AT
        ),
    }
    for name, chain in chains.items():
        assert chain["gate"]["passed"], (name, chain["gate"]["reasons"])
        assert chain["deploy"]["champion_version"] == "1", name
    return chains


def _champion(config: DatasetConfig) -> Any:
    import mlflow.sklearn

    registry.client(get_settings())
    return mlflow.sklearn.load_model(f"models:/{config.model.registered_name}@champion")


def _log(config: DatasetConfig, rows: pd.DataFrame, answers: dict[str, Any], served_at: datetime, tag: str) -> None:
    """Insert one prediction-log record per row as the service logs it: the model's inputs, its answer columns."""
    engine = get_engine(get_settings().warehouse_url)
    create_log(engine)
    features = build_features(rows, config)
    time_column = config.time_column
    records = [
        {
            "dataset": config.name,
            "request_id": f"{config.name}-{tag}",
            "record_index": i,
            "record_id": str(key),
            "served_at": served_at,
            "event_time": rows[time_column].iloc[i].to_pydatetime() if time_column else None,
            "model_name": config.model.registered_name,
            "model_version": "1",
            "features": {k: (None if pd.isna(v) else v) for k, v in features.iloc[i].items()},
            **{column: values[i] for column, values in answers.items()},
        }
        for i, key in enumerate(rows[config.key_name])
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(prediction_log_table), records)


def _multiclass_answers(model: Any, features: pd.DataFrame) -> tuple[dict[str, Any], np.ndarray, list[str]]:
    proba = model.predict_proba(features)
    classes = [str(c) for c in model.classes_]
    answers = {
        "predicted_class": list(np.asarray(classes, dtype=object)[proba.argmax(axis=1)]),
        "probabilities": [dict(zip(classes, map(float, row), strict=True)) for row in proba],
    }
    return answers, proba, classes


@pytest.fixture(scope="module")
def wine(settings: Settings, champions: dict[str, Any]) -> dict[str, Any]:
    """Every wine answered by the champion on SERVED, with its outcome; the same wines altered on SHIFTED."""
    config = load_dataset_config("wine")
    model = _champion(config)
    rows = read_source(config, settings).reset_index(drop=True)
    answers, proba, classes = _multiclass_answers(model, build_features(rows, config))
    _log(config, rows, answers, datetime.combine(SERVED, datetime.min.time(), UTC).replace(hour=10), "served")
    shifted = rows.assign(
        alcohol=rows["alcohol"] + 2.0,
        color_intensity=rows["color_intensity"] * 2.0,
        proline=rows["proline"] * 1.8,
        flavanoids=rows["flavanoids"] * 0.4,
        _row_key=rows["_row_key"] + "-shifted",
    )
    shifted_answers, _, _ = _multiclass_answers(model, build_features(shifted, config))
    _log(
        config,
        shifted,
        shifted_answers,
        datetime.combine(SHIFTED, datetime.min.time(), UTC).replace(hour=10),
        "shifted",
    )
    target, _ = build_target(rows, config)
    create_table(get_engine(settings.warehouse_url))
    with get_engine(settings.warehouse_url).begin() as conn:
        conn.execute(
            sa.insert(ground_truth_table),
            [
                {
                    "dataset": "wine",
                    "record_id": key,
                    "event_time": datetime.combine(SERVED, datetime.min.time()),
                    "label": None,
                    "label_class": label,
                    "label_value": None,
                    "observed_at": CHECKED_AT,
                }
                for key, label in zip(rows["_row_key"], target, strict=True)
            ],
        )
    run = RunContext("monitor_wine", "tasks", "test")
    return {
        "config": config,
        "labels": target,
        "proba": proba,
        "classes": classes,
        "served": monitor_window(config, settings, _day(SERVED), run, CHECKED_AT),
        "shifted": monitor_window(config, settings, _day(SHIFTED), run, CHECKED_AT),
    }


@pytest.fixture(scope="module")
def minutes(settings: Settings, champions: dict[str, Any]) -> dict[str, Any]:
    """flights_minutes: every flight of STABLE and SUMMER answered by the champion; the outcomes recorded."""
    config = load_dataset_config("flights_minutes")
    model = _champion(config)
    out: dict[str, Any] = {"config": config}
    run = RunContext("monitor_flights_minutes", "tasks", "test")
    for name, day in (("stable", STABLE), ("summer", SUMMER)):
        rows = read_source(config, settings, _day(day)).reset_index(drop=True)
        predicted = model.predict(build_features(rows, config))
        _log(config, rows, {"prediction": [float(v) for v in predicted]}, CHECKED_AT, name)
        record_outcomes(config, settings, _day(day), CHECKED_AT)
        out[f"{name}_rows"] = rows.assign(predicted=predicted)
        out[name] = monitor_window(config, settings, _day(day), run, CHECKED_AT)
    return out


def test_the_multiclass_reference_holds_predicted_classes_calibrated_on_random_chunks(
    settings: Settings, champions: dict[str, Any]
) -> None:
    from pipelines.monitoring.reference import TAG, load_reference

    # given the wine champion deployed: its reference was prepared at deploy
    config = load_dataset_config("wine")
    version = registry.client(settings).get_model_version(config.model.registered_name, "1")
    assert version.tags[TAG].startswith("runs:/")
    reference = load_reference(config, settings, config.model.registered_name, "1")
    # then it holds every wine, its cultivar and the class the champion predicts
    assert len(reference.frame) == 178
    assert set(reference.frame["predicted_class"]) == {"class_0", "class_1", "class_2"}
    # and, without a time column, thresholds calibrated on 5 random chunks of 30 wines (monitoring.min_rows)
    calibration = reference.info["calibration"]
    assert calibration["by"] == "random_chunks" and (calibration["chunks"], calibration["chunk_rows"]) == (5, 30)
    assert set(reference.thresholds) == {*config.feature_names, "predicted_class"}


def test_a_multiclass_window_of_serving_time_like_the_training_data_is_ok_and_scored(wine: dict[str, Any]) -> None:
    result: MonitorResult = wine["served"]
    # given the wines answered on SERVED (no event time: the window is their serving day)
    # then all 178 were read, nothing drifted, the predicted classes did not drift
    assert (result.status, result.rows, result.labelled) == ("ok", 178, 178), result.message
    assert result.drift_share == 0.0 and result.prediction_drift is False
    # and the live metrics are the multiclass holdout metrics of the same answers
    expected = task_metrics("multiclass", wine["labels"], wine["proba"], classes=wine["classes"])
    assert set(result.live_metrics) == MULTICLASS_METRICS
    assert all(result.live_metrics[k] == pytest.approx(expected[k], abs=1e-6) for k in MULTICLASS_METRICS)
    assert result.live_metrics["accuracy"] > 0.9
    # and the evidence is on disk and in MLflow
    folder = Path(result.report_dir)
    assert {"drift.html", "performance.html", "summary.json"} <= {p.name for p in folder.iterdir()}
    assert result.mlflow_run_id


def test_a_multiclass_window_of_other_wines_drifts_in_features_and_predicted_classes(wine: dict[str, Any]) -> None:
    result: MonitorResult = wine["shifted"]
    # given the same wines altered (stronger, darker, richer in proline, fewer flavanoids) on SHIFTED
    # then the window drifts, naming the altered features, and so does the distribution of the predicted class
    assert result.status == "drift" and result.rows == 178, result.message
    assert {"alcohol", "color_intensity", "proline", "flavanoids"} <= set(result.drifted_features)
    assert result.prediction_drift is True
    # and live performance is scored on the outcomes known over the trailing performance_days (SERVED's wines)
    assert result.labelled == 178 and result.live_metrics["accuracy"] > 0.9


def test_a_regression_window_is_judged_on_the_predicted_value_and_scored_with_its_metrics(
    minutes: dict[str, Any],
) -> None:
    stable: MonitorResult = minutes["stable"]
    rows = minutes["stable_rows"]
    known = rows["arr_delay"].notna()
    # given the flights of STABLE answered by the regression champion, their arrival delays recorded
    # then the window is read by event time, its predicted values judged, and nothing drifted
    assert (stable.status, stable.rows, stable.labelled) == ("ok", len(rows), int(known.sum())), stable.message
    assert stable.prediction_drift is False
    # and the live metrics are the regression holdout metrics (minutes) of the same flights
    expected = task_metrics("regression", rows.loc[known, "arr_delay"], rows.loc[known, "predicted"].to_numpy())
    assert set(stable.live_metrics) == {"rmse", "mae", "r2"}
    assert all(stable.live_metrics[k] == pytest.approx(expected[k], abs=1e-6) for k in stable.live_metrics)
    summary = Path(stable.report_dir) / "summary.json"
    assert summary.is_file() and (Path(stable.report_dir) / "performance.html").is_file()


def test_a_summer_regression_window_drifts_in_the_weather(minutes: dict[str, Any]) -> None:
    import json

    summer: MonitorResult = minutes["summer"]
    # given the flights of SUMMER: July weather against a January-March reference
    # then the window drifts on temperature and dew point, the predicted value judged as a number
    assert summer.status == "drift", summer.message
    assert {"temp", "dewp"} <= set(summer.drifted_features)
    details = json.loads((Path(summer.report_dir) / "summary.json").read_text())
    prediction = details["drift"]["prediction"]
    assert prediction["method"] == "wasserstein" and prediction["score"] is not None
    assert summer.prediction_drift is not None


def test_a_range_recheck_whose_windows_changed_rebuilds_the_timeline_once(
    settings: Settings, minutes: dict[str, Any]
) -> None:
    from mlflow.entities import ViewType

    from pipelines.monitoring.monitor import TIMELINE_TAG, timeline_point

    config = minutes["config"]
    model = _champion(config)
    days = [STABLE, STABLE + timedelta(days=1)]
    mlf = registry.client(settings)
    experiment = mlf.get_experiment_by_name(config.monitoring_experiment).experiment_id
    query = f"tags.`{TIMELINE_TAG}` = '{config.name}'"

    def timelines(view: int) -> list[str]:
        return [r.info.run_id for r in mlf.search_runs([experiment], query, run_view_type=view)]

    # given STABLE and the day after checked in one run: STABLE from the fixture's predictions, the next day empty
    run = RunContext("monitor_flights_minutes", "range_first", "test")
    first = steps.monitor(config.name, run, str(days[0]), str(days[1] + timedelta(days=1)), CHECKED_AT, step_days=1)
    assert [w["status"] for w in first["windows"]] == ["ok", "insufficient_data"]
    deleted_before = len(timelines(ViewType.DELETED_ONLY))
    # and then more predictions logged for both days, so that a recheck changes both windows' numbers
    for day in days:
        rows = read_source(config, settings, _day(day)).reset_index(drop=True)
        predicted = model.predict(build_features(rows, config))
        _log(config, rows, {"prediction": [float(v) for v in predicted]}, CHECKED_AT, f"again-{day}")

    # when the two days are checked again in one run
    again = steps.monitor(
        config.name, RunContext("monitor_flights_minutes", "range_again", "test"), str(days[0]),
        str(days[1] + timedelta(days=1)), CHECKED_AT + timedelta(hours=1), step_days=1,
    )  # fmt: skip

    # then both windows changed, and the timeline run was replaced once, not once per window
    assert [w["rows"] for w in first["windows"]] == [minutes["stable"].rows, 0]
    assert again["windows"][0]["rows"] == 2 * minutes["stable"].rows and again["windows"][1]["rows"] > 0
    assert len(timelines(ViewType.DELETED_ONLY)) == deleted_before + 1
    (timeline,) = timelines(ViewType.ACTIVE_ONLY)
    # and it holds one point per window, each with the recheck's numbers
    for window in again["windows"]:
        step, _ = timeline_point(f"{window['window_start']}_{window['window_end']}")
        points = [m.value for m in mlf.get_metric_history(timeline, "rows") if m.step == step]
        assert points == [window["rows"]], (window, points)


# PostgreSQL: the ground-truth table of an older version, upgraded in place.

_OLD_SCHEMA = """CREATE TABLE ground_truth (
    dataset VARCHAR(64) NOT NULL, record_id VARCHAR(200) NOT NULL, event_time TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    label INTEGER NOT NULL, observed_at TIMESTAMP WITH TIME ZONE NOT NULL, PRIMARY KEY (dataset, record_id))"""


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A throwaway PostgreSQL database, dropped after."""
    with throwaway_postgres("mlops_gt") as url:
        yield url


def test_an_old_postgresql_ground_truth_is_altered_in_place_keeping_its_rows(pg_url: str) -> None:
    # given the ground truth of the binary-only version, with two outcomes
    engine = get_engine(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(_OLD_SCHEMA)
        conn.exec_driver_sql(
            "INSERT INTO ground_truth VALUES ('flights', 'a', '2013-01-01 10:00', 1, '2026-01-01 00:00+00'), "
            "('flights', 'b', '2013-01-01 11:00', 0, '2026-01-01 00:00+00')"
        )
    # when the table is used by this version
    create_table(engine)
    # then the task columns are there, label is nullable, the rows are kept
    columns = {c["name"]: c for c in sa.inspect(engine).get_columns("ground_truth")}
    assert columns["label"]["nullable"] and columns["label_class"]["nullable"] and columns["label_value"]["nullable"]
    assert str(columns["label_value"]["type"]) in ("DOUBLE PRECISION", "FLOAT")
    with engine.connect() as conn:
        kept = conn.execute(sa.select(ground_truth_table.c.record_id, ground_truth_table.c.label).order_by("record_id"))
        assert [tuple(r) for r in kept] == [("a", 1), ("b", 0)]
    # and a multiclass and a regression outcome can be stored beside them; a second upgrade changes nothing
    with engine.begin() as conn:
        for row in (
            {"dataset": "wine", "record_id": "w", "label_class": "class_1", "event_time": datetime(2026, 3, 2)},
            {"dataset": "flights_minutes", "record_id": "m", "label_value": -7.5, "event_time": datetime(2013, 4, 2)},
        ):
            conn.execute(sa.insert(ground_truth_table).values(**row, observed_at=CHECKED_AT))
    assert upgrade_table(engine) is False
    with engine.connect() as conn:
        stored = conn.execute(
            sa.select(
                ground_truth_table.c.record_id, ground_truth_table.c.label_class, ground_truth_table.c.label_value
            )
            .where(ground_truth_table.c.label.is_(None))
            .order_by("record_id")
        )
        assert [tuple(r) for r in stored] == [("m", None, -7.5), ("w", "class_1", None)]
