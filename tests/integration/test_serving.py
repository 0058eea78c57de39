"""The prediction service for real: a real MLflow server and registry, the service as its own process, a real
SQLite warehouse for the prediction log.

Covers what the serving issue asks: predictions equal the model loaded directly; bad payloads get the right 4xx
naming the field and never stop the service; a promotion under concurrent requests loses none and the answers
switch version; a broken version is refused while the old one keeps serving; deploy rolls the alias back when the
service does not switch; the prediction log holds exactly the records answered; replay is idempotent.

The module's services serve two datasets of different task types at once, as one process: ``flights_serving``
(binary, three versions of its own) and ``wine`` (multiclass, the shipped example's champion, read only), so the
promotion and the refusal of one are checked under load on both.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psutil
import pytest
import sqlalchemy as sa

from pipelines import steps
from pipelines.core import audit, registry
from pipelines.core.runs import RunContext, Window
from pipelines.core.settings import Settings, get_settings
from pipelines.core.warehouse import get_engine
from pipelines.stack.processes import Service, wait_until
from pipelines.stack.settings import StackSettings
from tests.conftest import POSTGRES_SERVER, throwaway_postgres
from tests.integration.conftest import SHARED
from tests.netcut import TcpRelay
from tests.stack import pointed_at, service_env, start_service, write_dataset

pytestmark = [pytest.mark.integration, SHARED]

DATASET = "flights_serving"  # a dataset of this module's own on the shared stack: its own model and table
MODEL = "flights-delay-serving"
OTHER = "wine"  # the example's multiclass champion, served beside it by the same process
AT = datetime(2026, 1, 1, tzinfo=UTC)


class Registry:
    """The MLflow server with three trained versions, and the environment the service and steps share."""

    def __init__(self, env: dict[str, str], settings: Settings, versions: dict[str, dict[str, Any]]) -> None:
        self.env = env
        self.settings = settings
        self.versions = versions

    def set_champion(self, version: str) -> None:
        registry.client(self.settings).set_registered_model_alias(MODEL, registry.CHAMPION, version)


@pytest.fixture(scope="module")
def trained(
    shared_stack: StackSettings,
    shared_datasets: Path,
    example_runs: dict[str, dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Registry]:
    """On the shared stack's MLflow: Jan-Mar 2013 seeded; v1 (Jan-Feb), v2 (other params), v3 (to be broken after
    its approval), each approved (as a person would: never deployed by the module's fixture). The
    module's services read a folder of their own: this dataset and the wine example (trained by ``example_runs``)."""
    assert example_runs[OTHER]["state"] == "success", example_runs[OTHER]["tasks"]
    datasets = tmp_path_factory.mktemp("serving-datasets")
    for name in (DATASET, OTHER):
        shutil.copy(shared_datasets / f"{name}.yaml", datasets / f"{name}.yaml")
    with pointed_at(shared_stack, serving_url=""):  # steps here talk to a service only when a test says so
        steps.seed(DATASET, "2013-01-01", "2013-04-01")
        versions = {}
        for run_id, overrides, end in (
            ("v1", None, "2013-03-01"),
            ("v2", {"model": {"params": {"max_iter": 60, "learning_rate": 0.2}}}, "2013-03-01"),
            ("v3", None, "2013-03-15"),
        ):
            run = RunContext(dag_id="test_serving", run_id=run_id, reason="test")
            snapshot = steps.extract(DATASET, run, "2013-01-01", end, overrides)
            validation = steps.validate(DATASET, run, snapshot, overrides)
            versions[run_id] = {
                "snapshot": snapshot,
                "trained": steps.train(DATASET, run, snapshot, validation, overrides),
            }
            # only approved versions are served: the approval records the digest the service checks at load
            steps.record_approval(
                DATASET,
                run,
                versions[run_id]["trained"],
                status="approved",
                decided_by="test",
                decided_at=AT,
                mode="manual",
                overrides=overrides,
            )
        env = {k: v for k, v in service_env(shared_stack).items() if k != "MLOPS_SERVING_URL"}
        env["MLOPS_DATASETS_DIR"] = str(datasets)
        reg = Registry(env, get_settings(), versions)
        reg.set_champion("1")
        yield reg


@contextmanager
def pointed_at_service(reg: Registry, url: str) -> Iterator[Settings]:
    """The pipeline's settings with the module's service as ``MLOPS_SERVING_URL`` for the block."""
    saved = os.environ.get("MLOPS_SERVING_URL")
    os.environ["MLOPS_SERVING_URL"] = url
    get_settings.cache_clear()
    try:
        yield get_settings()
    finally:
        if saved is None:
            os.environ.pop("MLOPS_SERVING_URL", None)
        else:
            os.environ["MLOPS_SERVING_URL"] = saved
        get_settings.cache_clear()


def service_of(reg: Registry, home: Path, name: str = "serving") -> tuple[Service, str]:
    """The prediction service of this module's dataset, as `make demo` starts one, on a free port."""
    return start_service(reg.env, home, DATASET, name)


@pytest.fixture(scope="module")
def service_proc(trained: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, str]]:
    proc, url = service_of(trained, tmp_path_factory.mktemp("service"))
    try:
        yield proc, url
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def service(service_proc: tuple[Service, str]) -> str:
    return service_proc[1]


def holdout_records(reg: Registry, n: int) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """``n`` rows of v1's snapshot (some with missing weather) as model inputs, and as JSON records."""
    from pipelines.core.config import load_dataset_config
    from pipelines.data.extract import load_snapshot
    from pipelines.data.features import build_features

    frame = load_snapshot(reg.versions["v1"]["snapshot"]["path"])
    with_nulls = frame[frame["temp"].isna()].head(n // 5)  # a few records with missing weather, then the latest
    frame = pd.concat([with_nulls, frame.tail(n - len(with_nulls))]) if n >= 5 else frame.tail(n)
    features = build_features(frame, load_dataset_config(DATASET)).reset_index(drop=True)
    records = features.astype(object).where(features.notna(), None).to_dict(orient="records")
    return features, records


def model_version(url: str) -> str:
    return str(httpx.get(f"{url}/model", timeout=5).json()["version"])


def wait_for_version(url: str, version: str, timeout: float = 120) -> None:
    wait_until(lambda: model_version(url) == version, f"the service to serve v{version}", timeout)


def test_predictions_match_the_model_loaded_directly(trained: Registry, service: str) -> None:
    import mlflow.pyfunc

    # given 300 real records (some with missing weather) and one with an airport never seen in training
    features, records = holdout_records(trained, 300)
    assert features.isna().any().any(), "the sample should include nulls"
    records[0] = {**records[0], "dest": "ZZZ"}
    features.loc[0, "dest"] = "ZZZ"
    # when the service scores them in batches of 100
    answers = []
    for start in range(0, 300, 100):
        response = httpx.post(f"{service}/predict", json={"records": records[start : start + 100]}, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_name"] == MODEL and body["model_version"] == "1"
        answers += body["predictions"]
    # then every probability equals the champion loaded directly with MLflow, to the last digit
    direct = mlflow.pyfunc.load_model(f"models:/{MODEL}/1").predict(features)[:, 1]
    served = np.array([a["probability"] for a in answers])
    np.testing.assert_array_equal(served, direct)
    assert [a["decision"] for a in answers] == [int(p >= 0.3) for p in direct]


BAD_PAYLOADS = [
    (
        "missing field",
        lambda r: {"records": [{k: v for k, v in r.items() if k != "temp"}]},
        422,
        ["records", 0, "temp"],
        "missing",
    ),
    ("extra field", lambda r: {"records": [{**r, "arr_delay": 12}]}, 422, ["records", 0, "arr_delay"], "unknown field"),
    (
        "wrong type",
        lambda r: {"records": [{**r, "distance": "far"}]},
        422,
        ["records", 0, "distance"],
        "must be a number",
    ),
    (
        "string for a category",
        lambda r: {"records": [{**r, "carrier": 9}]},
        422,
        ["records", 0, "carrier"],
        "must be a string",
    ),
    ("out of bounds", lambda r: {"records": [{**r, "humid": 180.0}]}, 422, ["records", 0, "humid"], "bounds"),
    (
        "null where required",
        lambda r: {"records": [{**r, "origin": None}]},
        422,
        ["records", 0, "origin"],
        "may not be null",
    ),
    (
        "bool is not a number",
        lambda r: {"records": [{**r, "precip": True}]},
        422,
        ["records", 0, "precip"],
        "must be a number",
    ),
    ("no records", lambda r: {"records": []}, 422, ["records"], "non-empty"),
    ("not an object", lambda r: [r], 422, [], "JSON object"),
    ("ids of the wrong length", lambda r: {"records": [r], "ids": ["a", "b"]}, 422, ["ids"], "one entry per record"),
    ("bad event time", lambda r: {"records": [r], "event_times": ["yesterday"]}, 422, ["event_times", 0], "ISO 8601"),
    ("too many records", lambda r: {"records": [r] * 1001}, 413, ["records"], "exceed the limit"),
]


@pytest.mark.parametrize(("case", "make", "status", "loc", "message"), BAD_PAYLOADS, ids=[c[0] for c in BAD_PAYLOADS])
def test_bad_payload_gets_a_4xx_naming_the_field(
    trained: Registry, service: str, case: str, make: Any, status: int, loc: list[Any], message: str
) -> None:
    _, records = holdout_records(trained, 1)
    # when a request breaks the contract
    response = httpx.post(f"{service}/predict", json=make(records[0]), timeout=30)
    # then it gets the right status and the first problem names the place
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert detail[0]["loc"] == loc and message in detail[0]["msg"], detail


def test_malformed_and_oversized_bodies_are_refused_and_the_service_keeps_answering(
    trained: Registry, service: str
) -> None:
    _, records = holdout_records(trained, 1)
    # given malformed JSON, a body over the size limit (declared, and streamed without a length) and garbage bytes
    malformed = httpx.post(f"{service}/predict", content=b'{"records": [', timeout=30)
    oversized = httpx.post(f"{service}/predict", content=b"x" * 2_100_000, timeout=30)
    streamed = httpx.post(f"{service}/predict", content=iter([b"[" * 1_000_000, b"[" * 1_100_000]), timeout=30)
    garbage = httpx.post(f"{service}/predict", content=bytes(range(256)), timeout=30)
    # then each gets a 4xx that says why
    assert malformed.status_code == 400 and "malformed JSON" in malformed.text
    assert oversized.status_code == 413 and "exceeds the limit" in oversized.text
    assert streamed.status_code == 413
    assert garbage.status_code == 400
    # and the service is still alive and answering, and counted all of it
    assert httpx.get(f"{service}/health", timeout=5).status_code == 200
    assert httpx.post(f"{service}/predict", json={"records": records}, timeout=30).status_code == 200
    metrics = httpx.get(f"{service}/metrics", timeout=5).text
    assert f'mlops_predict_requests_total{{dataset="{DATASET}",status="413"}}' in metrics
    assert 'status="500"' not in metrics


def test_a_client_leaving_mid_body_is_counted_not_reported_as_a_failure(
    trained: Registry, service_proc: tuple[Service, str]
) -> None:
    proc, url = service_proc
    host, port = url.removeprefix("http://").split(":")
    # given a client that announces 50,000 bytes of body, sends 1,000 and closes its connection (a timeout, a crash)
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000\r\n\r\n"
            + b'{"records": ['
            + b" " * 987
        )
    # then the service counts it as a request its client closed (499), not as an internal error (500) ...
    wait_until(
        lambda: (
            f'mlops_predict_requests_total{{dataset="{DATASET}",status="499"}}'
            in httpx.get(f"{url}/metrics", timeout=5).text
        ),
        "the abandoned request to be counted",
        30,
    )
    assert 'status="500"' not in httpx.get(f"{url}/metrics", timeout=5).text
    # ... with no traceback in its log, and it keeps answering
    assert "ClientDisconnect" not in proc.log_file.read_text()
    _, records = holdout_records(trained, 1)
    assert httpx.post(f"{url}/predict", json={"records": records}, timeout=30).status_code == 200


def wine_records(reg: Registry, n: int) -> list[dict[str, Any]]:
    """``n`` wines of the example's source as JSON records."""
    from pipelines.core.config import load_dataset_config
    from pipelines.data.features import build_features
    from pipelines.data.sources import read_source

    config = load_dataset_config(OTHER)
    features = build_features(read_source(config, reg.settings), config).head(n)
    records: list[dict[str, Any]] = features.astype(object).to_dict(orient="records")
    return records


def test_promotion_under_concurrent_requests_loses_none_and_switches_version(trained: Registry, service: str) -> None:
    _, records = holdout_records(trained, 50)
    wines = wine_records(trained, 50)
    trained.set_champion("1")
    wait_for_version(service, "1")
    wine_version = str(httpx.get(f"{service}/models/{OTHER}", timeout=5).json()["version"])
    stop = threading.Event()
    seen: list[list[tuple[int, str]]] = [[] for _ in range(8)]

    def client(k: int) -> None:
        # clients 0-3 send flights to the default route, clients 4-7 wines to theirs: one process answers both
        route, rows = (f"{service}/predict", records) if k < 4 else (f"{service}/predict/{OTHER}", wines)
        with httpx.Client(timeout=30) as http:
            i = 0
            while not stop.is_set():
                response = http.post(route, json={"records": [rows[(i + k) % 50]]})
                seen[k].append((response.status_code, response.json().get("model_version", "")))
                i += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    try:
        # given steady load on both datasets, when flights_serving's champion moves to v2 and the service is told
        time.sleep(1.0)
        trained.set_champion("2")
        assert httpx.post(f"{service}/admin/reload", params={"dataset": DATASET}, timeout=10).status_code == 200
        wait_for_version(service, "2")
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    # then no request of either dataset failed
    answers = [a for client_answers in seen for a in client_answers]
    assert len(answers) > 200
    assert {status for status, _ in answers} == {200}
    # and every flights client saw v1 then v2 and never went back, while every wine client kept its one version
    for client_answers in seen[:4]:
        versions = [v for _, v in client_answers]
        assert versions[0] == "1" and versions[-1] == "2"
        assert versions == sorted(versions), "a client saw v1 again after v2"
    for client_answers in seen[4:]:
        assert {v for _, v in client_answers} == {wine_version} and len(client_answers) > 10


def _break_version(reg: Registry, version: str) -> None:
    """Overwrite the serialized model of ``version`` in the artifact store with garbage."""
    mv = registry.client(reg.settings).get_model_version(MODEL, version)
    model_id = mv.source.split("/")[-1]
    store = Path(reg.env["MLOPS_HOME"]) / "mlflow" / "artifacts"
    files = [p for p in store.rglob("*") if p.is_file() and model_id in str(p) and p.suffix in (".skops", ".pkl")]
    assert files, f"no serialized model of v{version} ({model_id}) under {store}"
    for path in files:
        path.write_bytes(b"not a model")


def test_a_broken_version_is_refused_and_the_old_one_keeps_serving(trained: Registry, service: str) -> None:
    _, records = holdout_records(trained, 1)
    trained.set_champion("2")
    wait_for_version(service, "2")
    # given version 3, approved, whose serialized model was overwritten in the artifact store since
    _break_version(trained, "3")
    # when the champion alias moves to it and the service is told
    trained.set_champion("3")
    httpx.post(f"{service}/admin/reload", timeout=10)
    wait_until(
        lambda: (httpx.get(f"{service}/model", timeout=5).json().get("last_error") or {}).get("version") == "3",
        "the service to refuse v3",
        120,
    )
    # then it refuses v3 before deserialising anything (its files are not the approved ones) and keeps v2
    status = httpx.get(f"{service}/model", timeout=5).json()
    assert status["version"] == "2" and "changed: model.skops" in status["last_error"]["error"], status
    response = httpx.post(f"{service}/predict", json={"records": records}, timeout=30)
    assert response.status_code == 200 and response.json()["model_version"] == "2"
    metrics = httpx.get(f"{service}/metrics", timeout=5).text
    assert f'mlops_model_loads_total{{dataset="{DATASET}",outcome="refused"}} 1.0' in metrics
    # and the other dataset of the same process keeps serving, untouched by the refusal
    wine = httpx.post(f"{service}/predict/{OTHER}", json={"records": wine_records(trained, 3)}, timeout=30)
    assert wine.status_code == 200 and len(wine.json()["predictions"]) == 3
    assert f'mlops_model_loads_total{{dataset="{OTHER}",outcome="failure"}}' not in metrics
    # and the refusal is in the audit trail, by the service
    refused = [e for e in audit.history(trained.settings.warehouse_url, MODEL) if e["event"] == "artifact_refused"]
    assert [(e["model_version"], e["actor"]) for e in refused] == [("3", "serving")], refused
    trained.set_champion("2")


def test_deploy_rolls_the_alias_back_when_the_service_does_not_switch(
    trained: Registry, service: str, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from pipelines.core.errors import SmokeTestError

    trained.set_champion("2")
    wait_for_version(service, "2")
    run = RunContext(dag_id="test_serving", run_id="v1", reason="test")
    v1 = trained.versions["v1"]
    steps.record_approval(
        DATASET, run, v1["trained"], status="approved", decided_by="test", decided_at=AT, mode="manual"
    )
    reviewed = os.environ["MLOPS_DATASETS_DIR"]
    # given a config (a run cannot override serving policy) under which the service cannot possibly switch within
    # the wait deploy allows (loading takes seconds)
    too_short = tmp_path_factory.mktemp("too-short")
    write_dataset(too_short, DATASET, table=DATASET, model=MODEL, serving={"deploy_wait_seconds": 0.05})
    monkeypatch.setenv("MLOPS_SERVING_URL", service)
    monkeypatch.setenv("MLOPS_DATASETS_DIR", str(too_short))
    get_settings.cache_clear()
    try:
        # when v1 is deployed, then deploy fails and puts the alias back on v2
        with pytest.raises(SmokeTestError, match=f"did not answer {DATASET} with v1"):
            steps.deploy(DATASET, run, v1["trained"], v1["snapshot"], AT)
        monkeypatch.setenv("MLOPS_DATASETS_DIR", reviewed)
        get_settings.cache_clear()
        assert str(registry.alias_version(get_settings(), MODEL, registry.CHAMPION).version) == "2"
        tags = registry.client(get_settings()).get_model_version(MODEL, "1").tags
        assert tags["deploy.status"] == "serving_switch_failed"
        # and the service, told of the rollback, ends up serving v2 again
        wait_for_version(service, "2")
        # when the wait is long enough, then deploy succeeds only once the service answers with v1
        result = steps.deploy(DATASET, run, v1["trained"], v1["snapshot"], AT)
        assert result["champion_version"] == "1"
        assert model_version(service) == "1"
    finally:
        monkeypatch.delenv("MLOPS_SERVING_URL")
        get_settings.cache_clear()


def _logged(settings: Settings, prefix: str) -> pd.DataFrame:
    from pipelines.core.warehouse import get_engine
    from pipelines.serving.prediction_log import settle

    engine = get_engine(settings.warehouse_url)
    settle(engine)  # the stored requests into records, as every reader of the log does first
    with engine.connect() as conn:
        return pd.read_sql(
            sa.text(
                "select request_id, record_index, record_id, model_version, probability from "
                "prediction_log where request_id like :p"
            ),
            conn,
            params={"p": f"{prefix}%"},
        )


def test_the_prediction_log_holds_exactly_the_records_answered(
    trained: Registry, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _, records = holdout_records(trained, 40)
    # given a service of its own, so that stopping it is part of the test
    proc, url = service_of(trained, tmp_path_factory.mktemp("logged"), name="serving-log")
    answered: dict[str, list[float]] = {}
    try:
        # when 60 requests of 1 to 40 records are sent, some of them bad, and one sent twice
        for i in range(60):
            size = 1 + (i * 7) % 40
            batch = records[:size]
            if i % 10 == 3:
                batch = [*batch[:-1], {**batch[-1], "temp": 999.0}]
            body = {"records": batch, "ids": [f"rec-{i}-{j}" for j in range(size)], "request_id": f"log-test-{i}"}
            response = httpx.post(f"{url}/predict", json=body, timeout=30)
            if response.status_code == 200:
                answered[body["request_id"]] = [p["probability"] for p in response.json()["predictions"]]
            else:
                assert response.status_code == 422
        # (a client retrying request 0 with the same request id: answered again, logged once)
        retry = {"records": records[:1], "ids": ["rec-0-0"], "request_id": "log-test-0"}
        assert httpx.post(f"{url}/predict", json=retry, timeout=30).status_code == 200
    finally:
        # when the service is stopped cleanly (SIGTERM, as `make down` does)
        proc.stop()
    # then the log holds every answered record once, with what was answered, and nothing of the refused requests
    logged = _logged(trained.settings, "log-test-")
    assert len(answered) == 54
    assert len(logged) == sum(len(v) for v in answered.values())
    assert not logged.duplicated(["request_id", "record_index"]).any()
    for request_id, probabilities in answered.items():
        rows = logged[logged.request_id == request_id].sort_values("record_index")
        assert rows.probability.tolist() == probabilities
        assert rows.record_id.tolist() == [f"rec-{request_id.split('-')[-1]}-{j}" for j in range(len(rows))]


def test_replay_is_idempotent(trained: Registry, service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.core.warehouse import get_engine

    monkeypatch.setenv("MLOPS_SERVING_URL", service)
    get_settings.cache_clear()
    try:
        run = RunContext(dag_id="replay_flights", run_id="test", reason="replay")
        # when two April days are replayed, then a range overlapping them
        first = steps.replay(DATASET, run, "2013-04-01", "2013-04-03")
        second = steps.replay(DATASET, run, "2013-04-01", "2013-04-04")
        again = steps.replay(DATASET, run, "2013-04-01", "2013-04-04")
        settings = get_settings()
    finally:
        monkeypatch.delenv("MLOPS_SERVING_URL")
        get_settings.cache_clear()
    # (the log is written behind the requests: wait until the service has nothing left to write)
    wait_until(
        lambda: httpx.get(f"{service}/model", timeout=5).json()["prediction_log"]["queued"] == 0,
        "the prediction log to be written",
        60,
    )
    # then each day was replayed once, and nothing was duplicated
    assert (first["days_replayed"], second["days_replayed"], second["days_skipped"]) == (2, 1, 2)
    assert again["days_replayed"] == 0 and again["days_skipped"] == 3
    assert first["rejected"] == second["rejected"] == 0
    logged = _logged(settings, f"replay:{DATASET}:2013-04-0")
    assert len(logged) == first["answered"] + second["answered"] > 2000
    assert logged.record_id.is_unique
    with get_engine(settings.warehouse_url).connect() as conn:
        flights = conn.execute(
            sa.text(f"select count(*) from {DATASET} where sched_dep >= '2013-04-01' and sched_dep < '2013-04-04'")
        ).scalar_one()
        truth = conn.execute(
            sa.text(
                "select count(*) from ground_truth where dataset = :dataset"
                " and event_time >= '2013-04-01' and event_time < '2013-04-04'"
            ),
            {"dataset": DATASET},
        ).scalar_one()
    assert flights == first["records"] + second["records"]
    assert truth == first["outcomes"] + second["outcomes"] and truth > 0.95 * flights
    # and the live performance joins those outcomes to the predictions
    perf = steps.live_performance(DATASET, "2013-04-01", "2013-04-04")
    assert sum(v["labelled"] for v in perf["versions"]) == truth


def test_an_unreachable_log_database_costs_records_not_answers_and_a_dead_writer_is_not_ready(
    trained: Registry, tmp_path_factory: pytest.TempPathFactory
) -> None:

    from pipelines.core.artifact_digests import digest_table

    _, records = holdout_records(trained, 20)
    # given a service whose prediction log holds at most 100 records, on a PostgreSQL warehouse reached through a
    # relay, holding the approved digests of the module's versions (a service never loads what it cannot verify)
    datasets = tmp_path_factory.mktemp("datasets")
    write_dataset(datasets, DATASET, table=DATASET, model=MODEL, serving={"log_queue_records": 100})
    with throwaway_postgres("serving_nodb") as pg_url:
        digest_table.metadata.create_all(get_engine(pg_url), tables=[digest_table])
        with get_engine(trained.settings.warehouse_url).connect() as source, get_engine(pg_url).begin() as target:
            rows = source.execute(sa.select(digest_table).where(digest_table.c.model_name == MODEL)).mappings().all()
            target.execute(sa.insert(digest_table), [{k: v for k, v in r.items() if k != "id"} for r in rows])
        host, port = POSTGRES_SERVER.split(":")
        relay = TcpRelay(host, int(port))
        relayed = sa.engine.make_url(pg_url).set(host="127.0.0.1", port=relay.port)
        env = {
            **trained.env,
            "MLOPS_DATASETS_DIR": str(datasets),
            "MLOPS_WAREHOUSE_URL": relayed.render_as_string(hide_password=False),
        }
        proc, url = service_of(
            Registry(env, trained.settings, trained.versions), tmp_path_factory.mktemp("unreachable"), "serving-nodb"
        )
        try:
            _answer_through_an_outage(proc, url, relay, records)
        finally:
            relay.cut()
            proc.stop()


def _answer_through_an_outage(proc: Service, url: str, relay: TcpRelay, records: list[dict[str, Any]]) -> None:
    # when the warehouse goes away after the service loaded its champion
    relay.cut()
    # and 30 requests of 20 records are answered
    statuses = [httpx.post(f"{url}/predict", json={"records": records}, timeout=30).status_code for _ in range(30)]
    # then every request is answered, without waiting on the failing database
    assert statuses == [200] * 30
    # and what the log could not keep is counted and reported: 100 queued, the other 500 dropped
    log_state = httpx.get(f"{url}/model", timeout=5).json()["prediction_log"]
    assert log_state["queued"] == 100 and log_state["dropped"] == 500 and log_state["written"] == 0
    assert log_state["last_error"]
    assert "mlops_prediction_log_dropped_records 500.0" in httpx.get(f"{url}/metrics", timeout=5).text
    assert httpx.get(f"{url}/ready", timeout=5).status_code == 200  # a failing database is not a dead writer

    # when the prediction log's writer process dies
    pid = proc.pid()
    assert pid is not None
    writers = [
        p for p in psutil.Process(pid).children(recursive=True) if "resource_tracker" not in " ".join(p.cmdline())
    ]
    assert len(writers) == 1, [p.cmdline() for p in writers]
    writers[0].kill()  # the service reaps it: a zombie until then, so its end is seen through the service
    # then the service says it is not ready, and why, while it still answers
    wait_until(lambda: httpx.get(f"{url}/ready", timeout=5).status_code == 503, "the service to be unready", 10)
    assert "writer process is not running" in httpx.get(f"{url}/ready", timeout=5).json()["reason"]
    assert httpx.get(f"{url}/v2/health/ready", timeout=5).status_code != 200
    assert httpx.post(f"{url}/predict", json={"records": records}, timeout=30).status_code == 200


def test_a_replayed_day_with_rejected_requests_is_not_marked_done(trained: Registry, service: str) -> None:
    from pipelines.data.sources import load_source
    from pipelines.monitoring.replay import ReplayError, done_days, replay

    day = Window(date(2013, 4, 10), date(2013, 4, 11))
    with pointed_at_service(trained, service) as settings:
        config = steps.dataset_config(DATASET)
        source = load_source(config)
        rows = source[(source["sched_dep"] >= "2013-04-10") & (source["sched_dep"] < "2013-04-11")]
        # given a day of which one flight has a temperature the model's contract refuses (500 °F)
        broken = rows.copy()
        broken.loc[broken.index[0], "temp"] = 500.0
        # when it is replayed, then the replay fails naming the day, and the day is not marked done
        with pytest.raises(ReplayError, match=r"on 2013-04-10 \(not marked done") as failure:
            replay(config, settings, day, "test-rejected", source=broken)
        assert "'temp' = 500" in str(failure.value)
        assert done_days(settings, DATASET, day) == set()
        # and when the day is replayed again with the flight's real reading, it goes through and is marked done
        again = replay(config, settings, day, "test-rejected", source=rows)
        assert (again.days_replayed, again.rejected, again.answered) == (1, 0, len(rows))
        assert done_days(settings, DATASET, day) == {day.start}


def test_two_workers_on_one_port_share_the_load_switch_together_and_log_every_record_once(
    trained: Registry, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from pipelines.serving.client import ServingClient

    _, records = holdout_records(trained, 20)
    trained.set_champion("1")
    # given the service started with two worker processes on one port (SERVING_WORKERS=2)
    proc, url = start_service(trained.env, tmp_path_factory.mktemp("workers"), DATASET, "serving-2w", workers=2)
    try:
        wait_until(
            lambda: (
                set(httpx.get(f"{url}/models/{DATASET}", timeout=5).json()["workers"].values()) == {"1"}
                and len(httpx.get(f"{url}/models/{DATASET}", timeout=5).json()["workers"]) == 2
            ),
            "both workers to serve v1",
            120,
        )

        def send(request_id: str) -> tuple[int, str]:
            response = httpx.post(f"{url}/predict", json={"records": records, "request_id": request_id}, timeout=30)
            return response.status_code, response.json().get("model_version", "")

        def worker_of(_: int) -> int:
            return int(httpx.get(f"{url}/models/{DATASET}", timeout=5).json()["worker"])

        # when 60 requests of 20 records are sent by 4 clients, one of them 5 times over (a client retrying)
        with ThreadPoolExecutor(4) as pool:
            before = list(pool.map(send, [f"w2-{k}" for k in range(60)] + ["w2-retry"] * 5))
            # then connections are answered by both workers
            assert len(set(pool.map(worker_of, range(40)))) == 2

        # when 16 clients open their connections at the same moment and keep them alive (a load balancer's pool)
        opened = threading.Barrier(16)

        def kept_alive(_: int) -> list[int]:
            with httpx.Client(base_url=url, timeout=10) as client:
                opened.wait()
                return [int(client.get(f"/models/{DATASET}").json()["worker"]) for _ in range(3)]

        with ThreadPoolExecutor(16) as pool:
            connections = list(pool.map(kept_alive, range(16)))
        # then the kernel spreads them over both workers (each worker has its own SO_REUSEPORT socket; sharing one,
        # the first worker to wake took them all), and each connection stays with its worker
        assert len({worker for answers in connections for worker in answers}) == 2
        assert all(len(set(answers)) == 1 for answers in connections)
        assert {status for status, _ in before} == {200} and {v for _, v in before} == {"1"}

        # when the champion moves and one worker is told: deploy's wait returns once every worker answers with v2
        trained.set_champion("2")
        with ServingClient(url) as client:
            switched = client.wait_for_version(DATASET, MODEL, "2", timeout=120)
        assert set(switched["workers"].values()) == {"2"}
        with ThreadPoolExecutor(4) as pool:
            after = list(pool.map(send, [f"w2-after-{k}" for k in range(20)]))
        assert after == [(200, "2")] * 20, "a worker still answered with v1 after deploy's wait"

        # then every record answered is logged exactly once (the retried request once), across both writers
        # (the writers count every submitted record as written, a retry's ignored duplicates too: wait for all 1,700)
        expected, submitted = 60 * 20 + 20 + 20 * 20, (60 + 5 + 20) * 20

        def all_written() -> bool:
            counts = httpx.get(f"{url}/models", timeout=5).json()["prediction_log"]
            return bool(counts["written"] >= submitted and counts["queued"] == 0)

        wait_until(all_written, "both workers' logs to be written", 60)
        logged = _logged(trained.settings, "w2-")
        assert len(logged) == expected
        assert not logged.duplicated(["request_id", "record_index"]).any()
        assert (logged.request_id == "w2-retry").sum() == 20
        # and the Prometheus counters of both workers are summed by whichever answers the scrape
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        answered = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith(f'mlops_predicted_records_total{{dataset="{DATASET}"')
        )
        assert answered == (60 + 5 + 20) * 20
    finally:
        proc.stop()
    trained.set_champion("2")
