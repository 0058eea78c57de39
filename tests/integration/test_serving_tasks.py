"""One prediction service for every task, for real: the shared stack's service process answers the binary flights
champion, the multiclass wine champion and the regression flights_minutes champion (the shipped examples, trained
and deployed through Airflow), each on its own route, by its own contract, logging per task; on the Open Inference
Protocol too, called by a real client (``tritonclient``); and a dataset added to the folder is served after the next
poll, without a restart.

``wine_serving`` is the wine champion under a dataset of its own (its own prediction-log rows and outcomes);
``flights_minutes`` is the example itself (nothing else sends it requests). Each answer is checked against the
registered model loaded directly, and each logged row against the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from pipelines import steps
from pipelines.core.config import load_dataset_config
from pipelines.core.runs import RunContext, Window
from pipelines.stack.processes import wait_until
from pipelines.stack.settings import StackSettings
from tests.integration.conftest import SHARED
from tests.stack import drained, pointed_at

pytestmark = [pytest.mark.integration, SHARED]

WINE, WINE_MODEL = "wine_serving", "wine-cultivar"
MINUTES, MINUTES_MODEL = "flights_minutes", "flights-delay-minutes"
CLASSES = ["class_0", "class_1", "class_2"]


@dataclass
class Sample:
    """Rows of one dataset as model inputs, with their keys and event times, and the champion that answers them."""

    dataset: str
    model: str
    version: str
    features: pd.DataFrame
    ids: list[str]
    event_times: list[str | None]


def _sample(stack: StackSettings, dataset: str, version: str, window: Window | None) -> Sample:
    """Rows of the dataset's source (within ``window``): some with missing values first, then the latest."""
    from pipelines.core.settings import get_settings
    from pipelines.data.features import build_features
    from pipelines.data.sources import read_source

    with pointed_at(stack):
        config = load_dataset_config(dataset)
        frame = read_source(config, get_settings(), window)
    frame = pd.concat([frame[frame.isna().any(axis=1)].head(10), frame.tail(50)]) if len(frame) > 60 else frame
    features = build_features(frame, config).reset_index(drop=True)
    times = (
        [t.isoformat() for t in pd.to_datetime(frame[config.time_column])]
        if config.time_column
        else [None] * len(frame)
    )
    return Sample(
        dataset, config.model.registered_name, version, features, frame[config.key_name].astype(str).tolist(), times
    )


@pytest.fixture(scope="module")
def url(shared_stack: StackSettings, example_runs: dict[str, dict[str, Any]]) -> str:
    """The shared stack's prediction service, once it serves the wine and flights_minutes champions."""
    for example in ("wine", MINUTES):
        assert example_runs[example]["state"] == "success", example_runs[example]["tasks"]
    base = shared_stack.serving_url
    httpx.post(f"{base}/admin/reload", timeout=30)
    wait_until(lambda: httpx.get(f"{base}/ready", timeout=5).status_code == 200, "every champion to be served", 120)
    return base


@pytest.fixture(scope="module")
def samples(shared_stack: StackSettings, url: str, example_runs: dict[str, dict[str, Any]]) -> dict[str, Sample]:
    return {
        WINE: _sample(shared_stack, WINE, example_runs["wine"]["train"]["model_version"], None),
        MINUTES: _sample(
            shared_stack,
            MINUTES,
            example_runs[MINUTES]["train"]["model_version"],
            Window(date(2013, 1, 1), date(2013, 1, 15)),
        ),
    }


def _records(features: pd.DataFrame) -> list[dict[str, Any]]:
    return features.astype(object).where(features.notna(), None).to_dict(orient="records")


def _predict(url: str, dataset: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{url}/predict/{dataset}", json=body, timeout=30)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _logged(stack: StackSettings, url: str, dataset: str, by: str = "event_time") -> pd.DataFrame:
    from pipelines.serving.prediction_log import read_predictions

    wait_until(lambda: drained(url), "the prediction log to be written", 60)
    with pointed_at(stack) as settings:
        return read_predictions(settings.warehouse_url, dataset, by=by)  # type: ignore[arg-type]


def _champion(stack: StackSettings, sample: Sample) -> Any:
    import mlflow.sklearn

    with pointed_at(stack):
        return mlflow.sklearn.load_model(f"models:/{sample.model}/{sample.version}")


def test_one_process_serves_the_champion_of_every_task(url: str, samples: dict[str, Sample]) -> None:
    # given the stack's one service process, started before any of these champions existed
    listed = httpx.get(f"{url}/models", timeout=5).json()
    by_dataset = {m["dataset"]: m for m in listed["models"]}
    # then it serves the binary, multiclass and regression champions, each with its own version and task
    assert listed["default_dataset"] == "flights" and not listed["config_errors"]
    assert by_dataset["flights"]["task"] == "binary" and by_dataset["flights"]["version"] is not None
    assert by_dataset[WINE]["task"] == "multiclass" and by_dataset[WINE]["version"] == samples[WINE].version
    assert by_dataset[MINUTES]["task"] == "regression" and by_dataset[MINUTES]["version"] == samples[MINUTES].version
    assert by_dataset[WINE]["name"] == WINE_MODEL and by_dataset[WINE]["classes"] == CLASSES
    # and each is served by its compiled predictor, verified at load against the fitted pipeline: the trees of the
    # gradient-boosted flights models in numba, the wine logistic regression on the compiled preprocessing
    predictors = {name: by_dataset[name]["predictor"] for name in ("flights", WINE, MINUTES)}
    assert predictors == {"flights": "compiled", WINE: "compiled-preprocessing", MINUTES: "compiled"}
    # and each dataset's requests are counted under its own label
    _predict(url, MINUTES, {"records": _records(samples[MINUTES].features.head(3))})
    metrics = httpx.get(f"{url}/metrics", timeout=5).text
    assert f'mlops_predicted_records_total{{dataset="{MINUTES}",model_version="{samples[MINUTES].version}"}}' in metrics
    assert f'mlops_model_info{{dataset="{WINE}",name="{WINE_MODEL}",version="{samples[WINE].version}"}} 1.0' in metrics


def test_a_multiclass_model_answers_with_its_class_and_every_probability(
    shared_stack: StackSettings, url: str, samples: dict[str, Sample]
) -> None:
    wine = samples[WINE]
    started = datetime.now(UTC)
    # given the service's wine route: it reports its task and classes
    model_info = httpx.get(f"{url}/models/{WINE}", timeout=5).json()
    assert (model_info["task"], model_info["classes"], model_info["version"]) == ("multiclass", CLASSES, wine.version)
    assert "threshold" not in model_info

    # when it scores every wine of the source, with their row keys as ids
    body = _predict(url, WINE, {"records": _records(wine.features), "ids": wine.ids, "request_id": "wine-all"})

    # then each answer is the class and the class probabilities of the champion loaded directly with MLflow
    model = _champion(shared_stack, wine)
    expected = model.predict_proba(wine.features)
    answers = body["predictions"]
    assert [a["id"] for a in answers] == wine.ids and body["model_version"] == wine.version
    assert all(set(a) == {"id", "class", "probabilities"} and list(a["probabilities"]) == CLASSES for a in answers)
    served_proba = np.array([[a["probabilities"][c] for c in CLASSES] for a in answers])
    np.testing.assert_allclose(served_proba, expected, rtol=0, atol=1e-12)
    assert [a["class"] for a in answers] == [str(c) for c in model.predict(wine.features)]
    assert len({a["class"] for a in answers}) == 3, "the wines of the source span the three cultivars"

    # and the prediction log holds each answer under its dataset, found by when it was served (no time column)
    logged = _logged(shared_stack, url, WINE, by="served_at")
    logged = logged[logged["request_id"] == "wine-all"].set_index("record_index")
    assert len(logged) == len(answers)
    assert (logged["served_at"] >= pd.Timestamp(started) - pd.Timedelta(seconds=1)).all()
    assert logged["predicted_class"].tolist() == [a["class"] for a in answers]
    assert logged["probabilities"].tolist() == [a["probabilities"] for a in answers]
    assert logged["record_id"].tolist() == wine.ids and logged["event_time"].isna().all()
    assert logged[["probability", "decision", "prediction"]].isna().all().all()
    assert logged.loc[0, "alcohol"] == wine.features.loc[0, "alcohol"]


def test_a_dataset_without_time_gets_outcomes_live_performance_and_monitoring_by_serving_time(
    shared_stack: StackSettings, url: str, samples: dict[str, Sample]
) -> None:
    wine = samples[WINE]
    # given every wine of the source scored by the service (its ids: the keys derived from each row's content)
    _predict(url, WINE, {"records": _records(wine.features), "ids": wine.ids, "request_id": "wine-monitored"})
    _logged(shared_stack, url, WINE, by="served_at")
    now = datetime.now(UTC)
    with pointed_at(shared_stack, serving_url=""):
        # when the outcomes of the whole source are recorded (no time column: no window)
        outcomes = steps.record_outcomes(WINE, None, None, now)
        # then every labelled bottle is stored, and live performance joins them to the answers by row key
        assert outcomes["labelled"] == 178 and outcomes["window"] == "whole source"
        (version,) = steps.live_performance(WINE)["versions"]
        assert version["model_version"] == wine.version
        assert version["labelled"] == version["predictions"] >= len(wine.ids)
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
    shared_stack: StackSettings, url: str, samples: dict[str, Sample]
) -> None:
    minutes = samples[MINUTES]
    # given the service's flights_minutes route: it reports its task, without threshold or classes
    model_info = httpx.get(f"{url}/models/{MINUTES}", timeout=5).json()
    assert model_info["task"] == "regression" and not {"threshold", "classes"} & set(model_info)
    assert minutes.features.isna().any().any(), "the sample should include missing weather"

    # when it scores 60 flights of the source (some with missing weather) in two requests, with keys and times
    answers = []
    for part in (slice(0, 25), slice(25, None)):
        body = _predict(
            url,
            MINUTES,
            {
                "records": _records(minutes.features.iloc[part]),
                "ids": minutes.ids[part],
                "event_times": minutes.event_times[part],
                "request_id": f"minutes-{part.start}",
            },
        )
        answers += body["predictions"]

    # then each value is the champion's own prediction (MLflow loaded directly), minutes early or late
    expected = _champion(shared_stack, minutes).predict(minutes.features)
    assert all(set(a) == {"id", "value"} for a in answers) and [a["id"] for a in answers] == minutes.ids
    np.testing.assert_allclose([a["value"] for a in answers], expected, rtol=0, atol=1e-9)
    assert np.ptp(expected) > 1.0, "the predictions vary from flight to flight"

    # and the prediction log holds each value with its flight and event time
    logged = _logged(shared_stack, url, MINUTES)
    logged = logged[logged["request_id"].isin({"minutes-0", "minutes-25"})]
    by_id = dict(zip(logged["record_id"], logged["prediction"], strict=True))
    assert by_id == {a["id"]: a["value"] for a in answers}
    assert logged[["probability", "decision", "predicted_class", "probabilities"]].isna().all().all()
    first = pd.Timestamp(minutes.event_times[0])
    assert logged.loc[logged["record_id"] == minutes.ids[0], "event_time"].iloc[0] == first
    # and its event-time window finds them by the flights' own times
    with pointed_at(shared_stack) as settings:
        from pipelines.serving.prediction_log import served_by_version

        window = served_by_version(settings.warehouse_url, MINUTES, first.to_pydatetime(), first + timedelta(days=30))
    everything = _logged(shared_stack, url, MINUTES)
    assert sum(window.values()) == int((pd.to_datetime(everything["event_time"]) >= first).sum())


def test_the_openapi_page_shows_each_dataset_with_its_task_answer(url: str, samples: dict[str, Sample]) -> None:
    spec = httpx.get(f"{url}/openapi.json", timeout=10).json()
    for dataset, field, feature in ((WINE, "class", "proline"), (MINUTES, "value", "temp")):
        operation = spec["paths"][f"/predict/{dataset}"]["post"]
        answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
        record = answer["properties"]["predictions"]["items"]
        assert field in record["required"], (dataset, record)
        request = operation["requestBody"]["content"]["application/json"]["schema"]
        assert feature in request["properties"]["records"]["items"]["properties"], dataset


def test_a_bad_record_is_refused_by_name_and_an_unknown_dataset_by_its_name(
    url: str, samples: dict[str, Sample]
) -> None:
    record = _records(samples[WINE].features.head(1))[0]
    response = httpx.post(f"{url}/predict/{WINE}", json={"records": [{**record, "alcohol": "strong"}]}, timeout=10)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["records", 0, "alcohol"]
    # a record of one dataset sent to another dataset's route is refused by that route's contract
    response = httpx.post(f"{url}/predict/{MINUTES}", json={"records": [record]}, timeout=10)
    assert response.status_code == 422 and "unknown field 'alcohol'" in response.text
    response = httpx.post(f"{url}/predict/beer", json={"records": [record]}, timeout=10)
    assert response.status_code == 404 and "dataset 'beer' is not served" in response.json()["detail"][0]["msg"]


def test_a_dataset_added_to_the_folder_is_served_after_the_next_poll_and_dropped_when_removed(
    url: str, samples: dict[str, Sample], shared_datasets: Path
) -> None:
    wine = samples[WINE]
    # given a new dataset config dropped into the folder of the running service (the wine champion's model)
    added = shared_datasets / "wine_added.yaml"
    text = (shared_datasets / f"{WINE}.yaml").read_text().replace(f"name: {WINE}", "name: wine_added", 1)
    added.write_text(text)
    try:
        # when nobody tells the service: then after its next poll it serves the new dataset, without a restart
        wait_until(
            lambda: httpx.get(f"{url}/models/wine_added", timeout=5).json().get("version") == wine.version,
            "the service to serve wine_added",
            90,
        )
        body = _predict(url, "wine_added", {"records": _records(wine.features.head(2))})
        assert body["model_name"] == WINE_MODEL and len(body["predictions"]) == 2
    finally:
        added.unlink()
    # and once its config is gone, it is no longer served
    wait_until(lambda: httpx.get(f"{url}/models/wine_added", timeout=5).status_code == 404, "wine_added dropped", 90)


def _tensors(features: pd.DataFrame, contract: list[dict[str, Any]]) -> list[Any]:
    """The features as Open Inference Protocol input tensors built by Triton's client (JSON, not binary)."""
    from tritonclient.http import InferInput

    tensors = []
    for field in contract:
        column = features[field["name"]]
        if field["datatype"] == "BYTES":
            values = np.array(column.astype(str).tolist(), dtype=object)
        else:
            values = column.to_numpy(dtype=np.float64)
        tensor = InferInput(field["name"], [len(features)], field["datatype"])
        tensor.set_data_from_numpy(values, binary_data=False)
        tensors.append(tensor)
    return tensors


@pytest.mark.parametrize("dataset", ["flights", WINE, MINUTES])
def test_a_real_open_inference_protocol_client_gets_the_numbers_of_predict(
    dataset: str, url: str, samples: dict[str, Sample], shared_stack: StackSettings
) -> None:
    from tritonclient.http import InferenceServerClient, InferRequestedOutput

    # given rows without missing values (JSON has no NaN) of the dataset, and Triton's HTTP client on the service
    if dataset == "flights":
        features = _sample(shared_stack, "flights", "", Window(date(2013, 3, 1), date(2013, 3, 2))).features
    else:
        features = samples[dataset].features
    features = features.dropna().head(40).reset_index(drop=True)
    client = InferenceServerClient(url=url.removeprefix("http://"))
    try:
        # then the server is live and ready, and so is the model, whose metadata lists its inputs and outputs
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(dataset)
        meta = client.get_model_metadata(dataset)
        served = httpx.get(f"{url}/models/{dataset}", timeout=5).json()
        assert meta["name"] == dataset and meta["versions"] == [served["version"]]
        assert [i["name"] for i in meta["inputs"]] == list(features.columns)
        # when it scores the rows through /v2/models/<dataset>/infer, asking for every output in JSON
        outputs = [InferRequestedOutput(o["name"], binary_data=False) for o in meta["outputs"]]
        result = client.infer(dataset, _tensors(features, meta["inputs"]), outputs=outputs, request_id="oip-1")
    finally:
        client.close()
    assert result.get_response()["model_version"] == served["version"]
    # then its numbers are exactly those of POST /predict/<dataset> for the same rows
    answers = _predict(url, dataset, {"records": _records(features)})["predictions"]
    if served["task"] == "binary":
        assert result.as_numpy("probability").tolist() == [a["probability"] for a in answers]
        assert result.as_numpy("decision").tolist() == [a["decision"] for a in answers]
    elif served["task"] == "multiclass":
        expected = [[a["probabilities"][c] for c in CLASSES] for a in answers]
        assert result.as_numpy("probabilities").tolist() == expected
        assert [str(c) for c in result.as_numpy("class").tolist()] == [a["class"] for a in answers]
    else:
        assert result.as_numpy("value").tolist() == [a["value"] for a in answers]


def test_the_open_inference_protocol_routes_refuse_bad_input_by_name_never_with_a_500(
    url: str, samples: dict[str, Sample]
) -> None:
    from tritonclient.http import InferenceServerClient, InferInput
    from tritonclient.utils import InferenceServerException

    wine = samples[WINE].features.head(2)
    good = [{"name": name, "shape": [2], "datatype": "FP64", "data": wine[name].tolist()} for name in wine.columns]
    bad_bodies = {
        "not json": b"{inputs",
        "no inputs": b'{"id": "x"}',
        "text for a number": {"inputs": [{**good[0], "datatype": "BYTES", "data": ["a", "b"]}, *good[1:]]},
        "shape against data": {"inputs": [{**good[0], "shape": [3]}, *good[1:]]},
        "missing feature": {"inputs": good[1:]},
        "unknown output": {"inputs": good, "outputs": [{"name": "colour"}]},
        "out of bounds": {"inputs": [{**good[0], "data": [1e9, 1e9]}, *good[1:]]},
    }
    for kind, body in bad_bodies.items():
        content = body if isinstance(body, bytes) else httpx.Request("POST", url, json=body).content
        response = httpx.post(f"{url}/v2/models/{WINE}/infer", content=content, timeout=10)
        assert 400 <= response.status_code < 500, (kind, response.status_code, response.text)
        assert response.json()["error"], kind
    # the input at fault is named, for a wrong feature as for a value out of its bounds
    missing = httpx.post(f"{url}/v2/models/{WINE}/infer", json={"inputs": good[1:]}, timeout=10).json()
    assert good[0]["name"] in missing["error"]
    out_of_bounds = httpx.post(f"{url}/v2/models/{WINE}/infer", json=bad_bodies["out of bounds"], timeout=10).json()
    assert out_of_bounds["detail"][0]["loc"][:2] == ["inputs", good[0]["name"]]
    # an unknown model or version is a 404
    assert httpx.post(f"{url}/v2/models/beer/infer", json={"inputs": good}, timeout=10).status_code == 404
    response = httpx.post(f"{url}/v2/models/{WINE}/versions/999/infer", json={"inputs": good}, timeout=10)
    assert response.status_code == 404 and "999" in response.json()["error"]
    # and a real client shows the server's message naming the input
    client = InferenceServerClient(url=url.removeprefix("http://"))
    try:
        tensor = InferInput("sugar", [2], "FP64")
        tensor.set_data_from_numpy(np.array([1.0, 2.0]), binary_data=False)
        with pytest.raises(InferenceServerException, match="sugar"):
            client.infer(WINE, [tensor])
    finally:
        client.close()
    # and the service still answers
    assert httpx.post(f"{url}/v2/models/{WINE}/infer", json={"inputs": good}, timeout=10).status_code == 200
