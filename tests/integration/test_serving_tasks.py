"""The prediction service for the other task types, for real: a multiclass and a regression model trained by the
steps into a real MLflow registry, each served by the service as its own process, answering and logging per task.

The module runs its own MLflow server (no Airflow: nothing here needs the scheduler) in a temporary runtime folder
with two datasets of its own: ``wine_serving`` (the shipped wine example: multiclass, no time column, classes
``class_0..2``) and ``minutes_serving`` (the shipped flights_minutes example: regression, trained on two weeks of
January 2013). Each answer is checked against the registered model loaded directly, and each logged row against
the answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines import steps
from pipelines.core import registry
from pipelines.core.config import load_dataset_config
from pipelines.core.runs import RunContext
from pipelines.core.settings import Settings
from pipelines.stack import services
from pipelines.stack.processes import wait_until
from pipelines.stack.settings import StackSettings
from tests.integration.conftest import SHIPPED_DATASETS
from tests.stack import drained, make_stack_settings, pointed_at, service_env, start_service

pytestmark = pytest.mark.integration

WINE, WINE_MODEL = "wine_serving", "wine-cultivar-serving"
MINUTES, MINUTES_MODEL = "minutes_serving", "flights-delay-minutes-serving"
CLASSES = ["class_0", "class_1", "class_2"]


@dataclass
class Trained:
    """One dataset's champion: its registered name, and the snapshot it was trained on as model inputs."""

    dataset: str
    model: str
    features: pd.DataFrame
    ids: list[str]
    event_times: list[str | None]


def _copy(folder: Path, example: str, name: str, model: str, **changes: Any) -> None:
    """The shipped ``example`` config as dataset ``name`` with its own registered model and experiment."""
    config = yaml.safe_load((SHIPPED_DATASETS / f"{example}.yaml").read_text())
    config["name"] = name
    config["model"].update(registered_name=model, experiment=name)
    for section, values in changes.items():
        config[section] = {**config.get(section, {}), **values}
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackSettings]:
    """An MLflow server of this module's own, with the module's two datasets."""
    root = tmp_path_factory.mktemp("serving-tasks")
    datasets = root / "datasets"
    datasets.mkdir()
    _copy(
        datasets,
        "wine",
        WINE,
        WINE_MODEL,
        source={"path": "{home}/sources/wine_serving.parquet"},
        monitoring={"min_rows": 50, "min_labelled": 50},  # the wine requests below: one per bottle of the sample
    )
    _copy(datasets, "flights_minutes", MINUTES, MINUTES_MODEL, window={"start": "2013-01-01", "end": "2013-01-15"})
    stack = make_stack_settings(root / "runtime", datasets)
    stack.home.mkdir(parents=True, exist_ok=True)
    mlflow = services.mlflow_service(stack)
    mlflow.start()
    try:
        wait_until(lambda: services.mlflow_healthy(stack), f"MLflow at {stack.mlflow_url}", 180, [mlflow])
        yield stack
    finally:
        mlflow.stop()


def _train(settings: Settings, dataset: str, model: str, start: str | None, end: str | None) -> Trained:
    """Seed, extract, validate and train ``dataset`` through the steps; its version 1 becomes the champion."""
    from pipelines.data.extract import load_snapshot
    from pipelines.data.features import build_features

    steps.seed(dataset, start, end)
    run = RunContext(dag_id="test_serving_tasks", run_id=dataset, reason="test")
    snapshot = steps.extract(dataset, run, start, end)
    trained = steps.train(dataset, run, snapshot, steps.validate(dataset, run, snapshot))
    assert trained["model_version"] == "1", trained
    registry.client(settings).set_registered_model_alias(model, registry.CHAMPION, "1")
    config = load_dataset_config(dataset)
    frame = load_snapshot(snapshot["path"])
    frame = pd.concat([frame[frame.isna().any(axis=1)].head(10), frame.tail(50)]) if len(frame) > 60 else frame
    features = build_features(frame, config).reset_index(drop=True)
    key = frame[config.key_name].astype(str).tolist() if config.key_name in frame else [str(i) for i in frame.index]
    times = (
        [t.isoformat() for t in pd.to_datetime(frame[config.time_column])]
        if config.time_column
        else [None] * len(frame)
    )
    return Trained(dataset, model, features, key, times)


@pytest.fixture(scope="module")
def trained(stack: StackSettings) -> dict[str, Trained]:
    with pointed_at(stack, serving_url=""):
        from pipelines.core.settings import get_settings

        settings = get_settings()
        return {
            WINE: _train(settings, WINE, WINE_MODEL, None, None),
            MINUTES: _train(settings, MINUTES, MINUTES_MODEL, "2013-01-01", "2013-01-15"),
        }


@pytest.fixture(scope="module")
def served(
    stack: StackSettings, trained: dict[str, Trained], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """A prediction service per dataset, as ``make demo`` starts one: their URLs."""
    env = {k: v for k, v in service_env(stack).items() if k != "MLOPS_SERVING_URL"}
    home = tmp_path_factory.mktemp("services")
    started = [start_service(env, home, name, f"serving-{name}") for name in trained]
    try:
        yield {name: url for name, (_, url) in zip(trained, started, strict=True)}
    finally:
        for service, _ in started:
            service.stop()


def _records(features: pd.DataFrame) -> list[dict[str, Any]]:
    return features.astype(object).where(features.notna(), None).to_dict(orient="records")


def _predict(url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{url}/predict", json=body, timeout=30)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _logged(stack: StackSettings, url: str, dataset: str, by: str = "event_time") -> pd.DataFrame:
    from pipelines.serving.prediction_log import read_predictions

    wait_until(lambda: drained(url), "the prediction log to be written", 60)
    with pointed_at(stack) as settings:
        return read_predictions(settings.warehouse_url, dataset, by=by)  # type: ignore[arg-type]


def test_a_multiclass_model_answers_with_its_class_and_every_probability(
    stack: StackSettings, trained: dict[str, Trained], served: dict[str, str]
) -> None:
    import mlflow.sklearn

    wine, url = trained[WINE], served[WINE]
    started = datetime.now(UTC)
    # given the service of the wine champion: it reports its task and classes
    model_info = httpx.get(f"{url}/model", timeout=5).json()
    assert (model_info["task"], model_info["classes"], model_info["version"]) == ("multiclass", CLASSES, "1")
    assert "threshold" not in model_info

    # when it scores every wine of the snapshot, with their row keys as ids
    body = _predict(url, {"records": _records(wine.features), "ids": wine.ids, "request_id": "wine-all"})

    # then each answer is the class and the class probabilities of the champion loaded directly with MLflow
    with pointed_at(stack):
        model = mlflow.sklearn.load_model(f"models:/{WINE_MODEL}/1")
    expected = model.predict_proba(wine.features)
    answers = body["predictions"]
    assert [a["id"] for a in answers] == wine.ids and body["model_version"] == "1"
    assert all(set(a) == {"id", "class", "probabilities"} and list(a["probabilities"]) == CLASSES for a in answers)
    served_proba = np.array([[a["probabilities"][c] for c in CLASSES] for a in answers])
    np.testing.assert_allclose(served_proba, expected, rtol=0, atol=1e-12)
    assert [a["class"] for a in answers] == [str(c) for c in model.predict(wine.features)]
    assert len({a["class"] for a in answers}) == 3, "the wines of the snapshot span the three cultivars"

    # and the prediction log holds each answer, found by when it was served (wine has no time column)
    logged = _logged(stack, url, WINE, by="served_at").set_index("record_index")
    assert len(logged) == len(answers) and set(logged["request_id"]) == {"wine-all"}
    assert (logged["served_at"] >= pd.Timestamp(started) - pd.Timedelta(seconds=1)).all()
    assert logged["predicted_class"].tolist() == [a["class"] for a in answers]
    assert logged["probabilities"].tolist() == [a["probabilities"] for a in answers]
    assert logged["record_id"].tolist() == wine.ids and logged["event_time"].isna().all()
    assert logged[["probability", "decision", "prediction"]].isna().all().all()
    assert logged.loc[0, "alcohol"] == wine.features.loc[0, "alcohol"]


def test_a_dataset_without_time_gets_outcomes_live_performance_and_monitoring_by_serving_time(
    stack: StackSettings, trained: dict[str, Trained], served: dict[str, str]
) -> None:
    wine, url = trained[WINE], served[WINE]
    # given every wine of the sample scored by the service (its ids: the keys derived from each row's content)
    _predict(url, {"records": _records(wine.features), "ids": wine.ids, "request_id": "wine-monitored"})
    _logged(stack, url, WINE, by="served_at")
    now = datetime.now(UTC)
    with pointed_at(stack, serving_url=""):
        # when the outcomes of the whole source are recorded (no time column: no window)
        outcomes = steps.record_outcomes(WINE, None, None, now)
        # then every labelled bottle is stored, and live performance joins them to the answers by row key
        assert outcomes["labelled"] == 178 and outcomes["window"] == "whole source"
        (version,) = steps.live_performance(WINE)["versions"]
        assert version["model_version"] == "1" and version["labelled"] == version["predictions"] >= len(wine.ids)
        assert {"accuracy", "f1_macro", "log_loss", "min_class_recall"} <= set(version["metrics"])
        assert version["metrics"]["accuracy"] > 0.8 and version["roc_auc"] is None
        # and monitoring checks the day the requests were served, with the multiclass live metrics
        today = now.date()
        run = RunContext(dag_id="test_serving_tasks", run_id="monitor_wine", reason="test")
        checked = steps.monitor(WINE, run, today, today + timedelta(days=1), now)
    assert checked["status"] in {"ok", "drift"}, checked["message"]
    assert checked["rows"] >= len(wine.ids) and checked["labelled"] >= 50
    assert checked["prediction_drift"] is not None and checked["live_metrics"]["accuracy"] > 0.8


def test_a_regression_model_answers_with_its_value(
    stack: StackSettings, trained: dict[str, Trained], served: dict[str, str]
) -> None:
    import mlflow.sklearn

    minutes, url = trained[MINUTES], served[MINUTES]
    # given the service of the arrival-delay champion: it reports its task, without threshold or classes
    model_info = httpx.get(f"{url}/model", timeout=5).json()
    assert model_info["task"] == "regression" and not {"threshold", "classes"} & set(model_info)
    assert minutes.features.isna().any().any(), "the sample should include missing weather"

    # when it scores 60 flights of the snapshot (some with missing weather) in two requests, with keys and times
    answers = []
    for part in (slice(0, 25), slice(25, None)):
        body = _predict(
            url,
            {
                "records": _records(minutes.features.iloc[part]),
                "ids": minutes.ids[part],
                "event_times": minutes.event_times[part],
            },
        )
        answers += body["predictions"]

    # then each value is the champion's own prediction (MLflow loaded directly), minutes early or late
    with pointed_at(stack):
        model = mlflow.sklearn.load_model(f"models:/{MINUTES_MODEL}/1")
    expected = model.predict(minutes.features)
    assert all(set(a) == {"id", "value"} for a in answers) and [a["id"] for a in answers] == minutes.ids
    np.testing.assert_allclose([a["value"] for a in answers], expected, rtol=0, atol=1e-9)
    assert np.ptp(expected) > 1.0, "the predictions vary from flight to flight"

    # and the prediction log holds each value with its flight and event time
    logged = _logged(stack, url, MINUTES)
    by_id = dict(zip(logged["record_id"], logged["prediction"], strict=True))
    assert by_id == {a["id"]: a["value"] for a in answers}
    assert logged[["probability", "decision", "predicted_class", "probabilities"]].isna().all().all()
    first = pd.Timestamp(minutes.event_times[0])
    assert logged.loc[logged["record_id"] == minutes.ids[0], "event_time"].iloc[0] == first
    # and its event-time window finds them by the flights' own times
    with pointed_at(stack) as settings:
        from pipelines.serving.prediction_log import served_by_version

        window = served_by_version(settings.warehouse_url, MINUTES, first.to_pydatetime(), first + timedelta(days=30))
    assert sum(window.values()) == int((pd.to_datetime(logged["event_time"]) >= first).sum())


def test_the_openapi_page_shows_each_task_answer(served: dict[str, str]) -> None:
    for dataset, field in ((WINE, "class"), (MINUTES, "value")):
        spec = httpx.get(f"{served[dataset]}/openapi.json", timeout=10).json()
        answer = spec["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
        record = answer["properties"]["predictions"]["items"]
        assert field in record["required"], (dataset, record)


def test_a_bad_record_is_refused_by_name_for_every_task(served: dict[str, str], trained: dict[str, Trained]) -> None:
    record = _records(trained[WINE].features.head(1))[0]
    response = httpx.post(f"{served[WINE]}/predict", json={"records": [{**record, "alcohol": "strong"}]}, timeout=10)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["records", 0, "alcohol"]
