"""The ``mlops`` Airflow plugin (plugins/) inside a real Airflow 3.3 API server.

One temporary Airflow per module (SQLite, simple auth manager, this repo's plugins and DAGs folders): a real
``airflow api-server`` and ``airflow dags test`` runs of stand-in training DAGs that have the real DAG's task
ids, return values shaped like the real steps' (``TrainResult.to_dict()`` for ``train``) and a subclass of
Airflow's ApprovalOperator for ``approve`` (answered through the REST API). The links are then read back the way
the UI reads them: ``GET /api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}/links``.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipelines.stack.processes import StackError, wait_until
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

AIRFLOW = Path(sys.executable).parent / "airflow"
DAG_ID = "train_plugintest"
INVALID_DAG_ID = "train_plugintest_invalid"
PAGE = "validations/flights/manual__plugintest/page.html"
LINK_NAMES = {"Data Docs", "MLflow run", "Model version"}
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"

STAND_IN_DAGS = '''
"""Stand-ins for the train_<dataset> DAGs: the same task ids and return values, no real work."""
from datetime import datetime

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import dag, task

TRAINED = {trained!r}
VALIDATION = {validation!r}


class CandidateApprovalOperator(ApprovalOperator):
    """Like the real DAG: a subclass of Airflow's ApprovalOperator."""


def stand_in(dag_id, validation_fails):
    @dag(dag_id=dag_id, schedule=None, start_date=datetime(2024, 1, 1), catchup=False)
    def training():
        @task
        def extract():
            return {{"path": "snapshot.parquet", "data_version": "0123abcd"}}

        @task
        def validate(snapshot):
            if validation_fails:
                raise ValueError("2 of 61 expectations failed")
            return VALIDATION

        @task
        def train(snapshot, validation):
            return TRAINED

        @task
        def evaluate(trained):
            return {{"candidate": {{"roc_auc": 0.71}}, "champion": None}}

        @task
        def gate(trained, evaluation):
            return {{"passed": True, "mlflow_run_url": trained["mlflow_run_url"],
                    "model_version_url": trained["model_version_url"]}}

        @task
        def deploy():
            return {{"champion_version": TRAINED["model_version"]}}

        snapshot = extract()
        trained = train(snapshot, validate(snapshot))
        decision = gate(trained, evaluate(trained))
        approve = CandidateApprovalOperator(task_id="approve", subject="Promote?", defaults="Reject")
        decision >> approve >> deploy()

    return training()


stand_in("{dag_id}", False)
stand_in("{invalid_dag_id}", True)
'''


@dataclass
class Airflow:
    url: str
    token: str
    env: dict[str, str]
    site: Path
    secret: Path
    trained: dict[str, Any]
    run_ids: dict[str, str]
    approve_link_while_waiting: str | None = None

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=30, **kwargs)

    def api(self, path: str) -> Any:
        response = self.get(path, headers={"Authorization": f"Bearer {self.token}"})
        response.raise_for_status()
        return response.json()

    def links(self, dag_id: str, task_id: str) -> dict[str, str | None]:
        run_id = self.run_ids[dag_id]
        links: dict[str, str | None] = self.api(
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links"
        )["extra_links"]
        return links


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process started in its own session, with all its children (uvicorn workers)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def _wait_until(check: Any, timeout: float, what: str, log: Path) -> Any:
    """The stack's one polling loop, failing with the end of ``log`` (these processes are not stack services)."""
    try:
        return wait_until(check, what, timeout, interval=0.5)
    except StackError as exc:
        raise AssertionError(f"{exc}\n{_tail(log)}") from exc


def _airflow_env(tmp: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # compiled bytecode saves seconds per airflow command
    bundles = [
        {"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle", "kwargs": {}},
        {
            "name": "plugintest",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(tmp / "stand_in_dags")},
        },
    ]
    env.update(
        {
            "AIRFLOW_HOME": str(tmp / "airflow"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp / 'airflow' / 'airflow.db'}",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            # the shipped people file's admin and approver (the DAG names its approvers as the approval's respondents)
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,ann:user",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp / "passwords.json"),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API__WORKERS": "1",
            "MLOPS_HOME": str(tmp / "mlops"),
            "MLOPS_AIRFLOW_UI_URL": f"http://127.0.0.1:{port}",
            "MLOPS_MLFLOW_TRACKING_URI": "http://mlflow.test:5000",
        }
    )
    return env


def _site_dir(env: dict[str, str]) -> Path:
    """The Data Docs folder the plugin serves, as the plugin computes it from these settings."""
    code = "import sys; sys.path.insert(0, sys.argv[1]); import mlops_web; print(mlops_web.data_docs_site_dir())"
    out = subprocess.run(
        [sys.executable, "-c", code, str(REPO_ROOT / "plugins")],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    """A real api-server with the plugin, and one finished run of each stand-in DAG."""
    from pipelines.training.train import TrainResult

    tmp = tmp_path_factory.mktemp("plugin")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = _airflow_env(tmp, port)
    password, approver_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    (tmp / "passwords.json").write_text(json.dumps({"admin": password, "ann": approver_password}))

    # Data Docs as GX lays them out (an index and one validation page), and a file outside the site.
    site = _site_dir(env)
    (site / PAGE).parent.mkdir(parents=True)
    (site / "index.html").write_text("<html><body><h1>Data Docs index</h1></body></html>")
    (site / PAGE).write_text("<html><body><h1>Validation of flights</h1></body></html>")
    secret = tmp / "mlops" / "secret.txt"
    secret.write_text("not for the web")

    mlflow = env["MLOPS_MLFLOW_TRACKING_URI"]
    trained = TrainResult(
        run_id="9f1c",
        experiment_id="1",
        model_name="flights-delay",
        model_version="3",
        model_uri="models:/flights-delay/3",
        mlflow_run_url=f"{mlflow}/#/experiments/1/runs/9f1c",
        model_version_url=f"{mlflow}/#/models/flights-delay/versions/3",
    ).to_dict()
    validation = {"evaluated": 61, "failed": 0, "data_docs_url": f"{url}/mlops/data-docs/{PAGE}"}
    dags = tmp / "stand_in_dags"
    dags.mkdir()
    (dags / "stand_in_dags.py").write_text(
        textwrap.dedent(STAND_IN_DAGS).format(
            trained=trained, validation=validation, dag_id=DAG_ID, invalid_dag_id=INVALID_DAG_ID
        )
    )

    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    api_log, test_log = tmp / "api-server.log", tmp / "dags-test.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with api_log.open("wb") as api_out, test_log.open("wb") as test_out:
            procs.append(
                subprocess.Popen(
                    [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(port)],
                    env=env,
                    stdout=api_out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            # The approval step waits for an answer given through this api-server.
            run = subprocess.Popen(
                [AIRFLOW, "dags", "test", DAG_ID, "-B", "plugintest"],
                env=env,
                stdout=test_out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            procs.append(run)
        _wait_until(
            lambda: httpx.get(f"{url}/api/v2/monitor/health", timeout=5).status_code == 200,
            120,
            "the api-server",
            api_log,
        )
        token = httpx.post(f"{url}/auth/token", json={"username": "admin", "password": password}, timeout=30).json()[
            "access_token"
        ]
        airflow = Airflow(url=url, token=token, env=env, site=site, secret=secret, trained=trained, run_ids={})

        def waiting_run() -> str | None:
            runs = airflow.api(f"/api/v2/dags/{DAG_ID}/dagRuns")["dag_runs"]
            if not runs:
                return None
            run_id = str(runs[0]["dag_run_id"])
            ti = airflow.api(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/approve")
            return run_id if ti["state"] == "awaiting_input" else None

        airflow.run_ids[DAG_ID] = _wait_until(waiting_run, 180, "the approval step", test_log)
        # The approver sees the candidate's model version while deciding.
        airflow.approve_link_while_waiting = airflow.links(DAG_ID, "approve")["Model version"]
        approver = httpx.post(
            f"{url}/auth/token", json={"username": "ann", "password": approver_password}, timeout=30
        ).json()["access_token"]
        answer = httpx.patch(
            f"{url}/api/v2/dags/{DAG_ID}/dagRuns/{airflow.run_ids[DAG_ID]}/taskInstances/approve/-1/hitlDetails",
            json={"chosen_options": ["Approve"], "params_input": {}},
            headers={"Authorization": f"Bearer {approver}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert run.wait(timeout=180) == 0, _tail(test_log)

        failing = subprocess.run(
            [AIRFLOW, "dags", "test", INVALID_DAG_ID, "-B", "plugintest"],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        runs = airflow.api(f"/api/v2/dags/{INVALID_DAG_ID}/dagRuns")["dag_runs"]
        assert runs and runs[0]["state"] == "failed", failing.stdout[-3000:]
        airflow.run_ids[INVALID_DAG_ID] = str(runs[0]["dag_run_id"])
        yield airflow
    finally:
        for proc in procs:
            _stop(proc)


def _raw_get(url: str, path: str, token: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (httpx would normalize the dot segments away)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_health_answers_without_authentication(airflow: Airflow) -> None:
    # given the api-server with the plugin
    # when anyone asks for the plugin's health
    response = airflow.get("/mlops/health")

    # then it answers without a token
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_data_docs_need_a_valid_airflow_token(airflow: Airflow) -> None:
    # given the Data Docs site served by the plugin
    # when it is asked for without a token, with a forged one, and by a browser without a session
    anonymous = airflow.get("/mlops/data-docs/index.html")
    forged = airflow.get("/mlops/data-docs/index.html", headers={"Authorization": "Bearer not.a.jwt"})
    other_secret = airflow.get(
        "/mlops/data-docs/index.html",
        cookies={"_token": "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmVkIGVsc2V3aGVyZQ"},
    )
    browser = airflow.get("/mlops/data-docs/index.html", headers={"Accept": "text/html"})

    # then API clients get 401 and the browser is sent to Airflow's login page, coming back afterwards
    assert anonymous.status_code == 401 and forged.status_code == 401 and other_secret.status_code == 401
    assert "Data Docs" not in anonymous.text
    assert browser.status_code == 303
    assert "/auth/login?next=" in browser.headers["location"]
    assert "mlops%2Fdata-docs%2Findex.html" in browser.headers["location"]

    # when it is asked with the token of POST /auth/token, as a bearer token or as the UI's session cookie
    bearer = airflow.get("/mlops/data-docs/index.html", headers={"Authorization": f"Bearer {airflow.token}"})
    cookie = airflow.get("/mlops/data-docs/", cookies={"_token": airflow.token})

    # then the page is served
    assert bearer.status_code == 200 and "Data Docs index" in bearer.text
    assert bearer.headers["content-type"].startswith("text/html")
    assert cookie.status_code == 200 and "Data Docs index" in cookie.text


def test_the_models_page_needs_a_valid_token_and_shows_what_it_cannot_read(airflow: Airflow) -> None:
    # given the plugin's Models page, and an MLflow server that does not answer (mlflow.test)
    # when it is asked for without a token, and by a browser without a session
    anonymous = airflow.get("/mlops/models")
    browser = airflow.get("/mlops/models/dag/train_flights", headers={"Accept": "text/html"})
    # then the API client gets 401 and the browser is sent to the login page
    assert anonymous.status_code == 401 and "Models" not in anonymous.text
    assert browser.status_code == 303 and "/auth/login?next=" in browser.headers["location"]

    # when a signed-in user opens it, and a DAG's tab
    page = airflow.get("/mlops/models", headers={"Authorization": f"Bearer {airflow.token}"})
    tab = airflow.get("/mlops/models/dag/train_flights", headers={"Authorization": f"Bearer {airflow.token}"})
    other = airflow.get(f"/mlops/models/dag/{DAG_ID}", headers={"Authorization": f"Bearer {airflow.token}"})

    # then every configured dataset has its card, each saying that MLflow could not be read (in seconds, not after
    # the client's retries), and the DAG's tab shows its own dataset only
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="dataset-flights"' in page.text and 'id="dataset-wine"' in page.text
    assert "Could not read MLflow: http://mlflow.test:5000 does not answer" in page.text
    assert tab.status_code == 200 and "<h1>Model: flights</h1>" in tab.text and 'id="dataset-wine"' not in tab.text
    # and a DAG of no configured dataset says so
    assert other.status_code == 200 and "This DAG belongs to no dataset." in other.text


def test_data_docs_refuse_paths_outside_the_site(airflow: Airflow) -> None:
    # given a readable file next to the Data Docs site
    assert airflow.secret.read_text() == "not for the web"
    up = "/".join([".."] * len(airflow.site.relative_to(airflow.secret.parent).parts))

    # when a signed-in user asks for it through dot segments, plain or percent-encoded, or for a missing page
    paths = [
        f"/mlops/data-docs/{up}/secret.txt",
        f"/mlops/data-docs/{up.replace('/', '%2f')}%2fsecret.txt",
        f"/mlops/data-docs/{up.replace('..', '%2e%2e')}/secret.txt",
        f"/mlops/data-docs/{airflow.secret}",
        f"/mlops/data-docs/%2f{str(airflow.secret).lstrip('/')}",
        "/mlops/data-docs/validations/missing.html",
    ]
    answers = {path: _raw_get(airflow.url, path, airflow.token) for path in paths}

    # then every one is 404 and nothing of the file leaks
    assert {path: status for path, (status, _) in answers.items()} == dict.fromkeys(paths, 404)
    assert not any(b"not for the web" in body for _, body in answers.values())


def test_plugin_is_listed_with_its_links_and_app(airflow: Airflow) -> None:
    # given the api-server with this repo's plugins folder
    # when the plugins are listed
    plugins = airflow.api("/api/v2/plugins")["plugins"]

    # then the mlops plugin shows its global links, its app under /mlops and its Data Docs menu entry
    mlops = next(p for p in plugins if p["name"] == "mlops")
    assert sorted(mlops["global_operator_extra_links"]) == [
        "<mlops_links.DataDocsLink object>",
        "<mlops_links.MlflowRunLink object>",
        "<mlops_links.ModelVersionLink object>",
    ]
    assert [app["url_prefix"] for app in mlops["fastapi_apps"]] == ["/mlops"]
    assert {view["name"]: (view["href"], view["destination"]) for view in mlops["external_views"]} == {
        "Models": ("/mlops/models", "nav"),
        "Data Docs": ("/mlops/data-docs/", "nav"),
        "Model": ("/mlops/models/dag/{DAG_ID}", "dag"),
    }
    # (the UI shows a view inside itself, and lists a DAG tab at all, only when it has a url_route)
    assert all(view["url_route"] for view in mlops["external_views"] if view["name"] != "Data Docs")
    assert airflow.api("/api/v2/importErrors")["import_errors"] == []


def test_each_training_task_links_to_its_evidence(airflow: Airflow) -> None:
    # given a finished run of a training DAG whose approval a person gave
    run_url, version_url = airflow.trained["mlflow_run_url"], airflow.trained["model_version_url"]

    # when the UI asks each task instance for its extra links
    links = {
        task: airflow.links(DAG_ID, task)
        for task in ["extract", "validate", "train", "evaluate", "gate", "approve", "deploy"]
    }

    # then each task links to what it produced, and to nothing else
    data_docs = f"{airflow.url}/mlops/data-docs/{PAGE}"
    none = dict.fromkeys(LINK_NAMES)
    assert links == {
        "extract": none,
        "validate": {**none, "Data Docs": data_docs},
        "train": {"Data Docs": None, "MLflow run": run_url, "Model version": version_url},
        "evaluate": {**none, "MLflow run": run_url},
        "gate": {"Data Docs": None, "MLflow run": run_url, "Model version": version_url},
        "approve": {**none, "Model version": version_url},
        "deploy": {**none, "Model version": version_url},
    }
    # and the approval step showed the model version while it waited for the person
    assert airflow.approve_link_while_waiting == version_url

    # when ops follow the Data Docs link with their session
    page = httpx.get(data_docs, cookies={"_token": airflow.token}, timeout=30)

    # then they land on the validation's page
    assert page.status_code == 200 and "Validation of flights" in page.text


def test_failed_validation_links_to_the_data_docs_index(airflow: Airflow) -> None:
    # given a run whose validation failed (so validate returned nothing and train never ran)
    # when the UI asks validate and train for their links
    validate, train = airflow.links(INVALID_DAG_ID, "validate"), airflow.links(INVALID_DAG_ID, "train")

    # then validate links to the Data Docs index, which opens, and train links nowhere
    assert validate == {"Data Docs": "/mlops/data-docs/index.html", "MLflow run": None, "Model version": None}
    assert train == dict.fromkeys(LINK_NAMES)
    assert airflow.get("/mlops/data-docs/index.html", cookies={"_token": airflow.token}).status_code == 200


CHECK_PLUGIN = """
import json, sys
from airflow import plugins_manager
from airflow.models.taskinstancekey import TaskInstanceKey

before = set(sys.modules)
links = plugins_manager.get_global_operator_extra_links()
loaded = {m.split(".")[0] for m in set(sys.modules) - before}

import mlops_web
site = mlops_web.data_docs_site_dir()
hrefs = [mlops_web.data_docs_href(u) for u in (
    (site / "validations" / "a b.html").as_uri(), str(site / "index.html"), "https://gx.example/x.html",
    (site.parent / "secret.txt").as_uri(), "ftp://gx.example/x.html")]

from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({
    "loaded": sorted(loaded),
    "links": {type(l).__name__: sorted(l.on_tasks) for l in links},
    "other_dag": [l.get_link(None, ti_key=TaskInstanceKey("report_daily", t, "r", 1, -1))
                  for l in links for t in ["train", "validate"]],
    "hrefs": hrefs,
    "training_dags": {d: sorted(bag.dags[d].task_ids) for d in bag.dag_ids if d.startswith("train_")},
    "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
}))
"""


def test_plugin_loads_cheaply_and_its_links_fit_the_real_training_dags(tmp_path: Path) -> None:
    # given a fresh Airflow process configured with this repo's plugins folder
    env = _airflow_env(tmp_path, 8080)

    # when Airflow's plugins manager loads the plugins (as every component does) and the real DAGs are parsed
    out = subprocess.run(
        [sys.executable, "-c", CHECK_PLUGIN, str(REPO_ROOT / "dags")],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])

    # then the plugin's three links are loaded, and loading imported nothing heavy (no web framework, no ML library)
    assert sorted(result["links"]) == ["DataDocsLink", "MlflowRunLink", "ModelVersionLink"]
    heavy = {"fastapi", "starlette", "mlflow", "pandas", "great_expectations", "sklearn", "evidently", "pipelines"}
    assert heavy.isdisjoint(result["loaded"]), result["loaded"]
    # and the links only ever appear on training DAGs
    assert result["other_dag"] == [""] * 6
    # and local Data Docs paths become their /mlops page, web URLs stay, anything else is dropped
    assert result["hrefs"] == [
        "/mlops/data-docs/validations/a%20b.html",
        "/mlops/data-docs/index.html",
        "https://gx.example/x.html",
        "",
        "",
    ]
    # and every task a link is meant for exists in every real training DAG
    assert result["import_errors"] == {} and result["training_dags"]
    for dag_id, task_ids in result["training_dags"].items():
        for link, on_tasks in result["links"].items():
            assert set(on_tasks) <= set(task_ids), (dag_id, link)
