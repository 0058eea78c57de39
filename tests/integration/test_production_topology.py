"""The production topology, started with native processes: the same DAGs on Airflow's distributed setup.

Airflow with the CeleryExecutor on PostgreSQL, a Redis broker and two Celery workers; the MLflow server on
PostgreSQL (artifacts served by it from a folder); the warehouse and the prediction log on PostgreSQL. The three
databases are created with a name unique to this test run and dropped after, with the run's Celery queue.

Skipped only when PostgreSQL or Redis is not listening (``STACK_POSTGRES_URL``, ``STACK_REDIS_URL``), and
then failed instead where ``MLOPS_REQUIRE_SERVICES=1`` (CI sets it: there both run).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import mlflow.artifacts
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from pipelines.core import registry
from pipelines.core.settings import get_settings
from pipelines.serving.prediction_log import settle
from pipelines.stack import services
from pipelines.stack.airflow_client import AirflowApiError, AirflowClient
from pipelines.stack.dag_runs import answer_when_parked, client, run_replay, wait_for_dag
from pipelines.stack.settings import StackSettings
from tests.conftest import missing
from tests.stack import fab_accounts, pointed_at, production_services_missing, running_stack, write_dataset

pytestmark = pytest.mark.integration

TRAIN, MONITOR = "train_flights", "monitor_flights"
WINDOW = {"window_start": "2013-01-01", "window_end": "2013-03-01"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackSettings]:
    absent = production_services_missing()
    if absent:
        missing(f"the production topology needs PostgreSQL and Redis: {absent}")
    folder = tmp_path_factory.mktemp("datasets")
    write_dataset(folder, "flights", table="flights", model="flights-delay")  # monitoring on demand only
    with (
        running_stack(tmp_path_factory.mktemp("stack"), folder, profile="production") as running,
        pointed_at(running),
    ):
        from pipelines import steps

        steps.seed("flights", "2013-01-01", "2013-03-08")
        yield running


@pytest.fixture(scope="module")
def api(stack: StackSettings) -> Iterator[AirflowClient]:
    api = client(stack)
    yield api
    api.close()


@pytest.fixture(scope="module")
def trained(stack: StackSettings, api: AirflowClient) -> dict[str, object]:
    """``train_flights`` run through the scheduler and the Celery workers up to its approval; a viewer, an operator
    and the admin try to answer it (FAB's accounts), then the approver approves it through the REST API."""
    wait_for_dag(api, TRAIN)
    api.unpause(TRAIN)
    run_id = api.trigger(TRAIN, {"reason": "production topology", **WINDOW})
    api.follow(TRAIN, run_id, timeout=900, stop_when=lambda states: states.get("approve") == "awaiting_input")
    refusals: dict[str, str] = {}
    for user in ("vera", "omar", stack.airflow_admin_user):
        other = client(stack, user)
        try:
            other.answer(TRAIN, run_id, "approve", "Approve", {"comment": f"{user} says yes"})
            refusals[user] = "accepted"
        except AirflowApiError as exc:
            refusals[user] = str(exc)
        finally:
            other.close()
    approver = client(stack, "ann")
    try:
        answer_when_parked(approver, stack, TRAIN, run_id, "approve", "Approve", {"comment": "ok on celery"})
    finally:
        approver.close()
    state = api.follow(TRAIN, run_id, timeout=900)
    return {
        "state": state,
        "run_id": run_id,
        "task_states": api.task_states(TRAIN, run_id),
        "refusals": refusals,
        "hosts": api.task_hosts(TRAIN, run_id),
    }


def test_every_store_of_the_topology_is_postgresql_and_the_executor_is_celery(stack: StackSettings) -> None:
    # given the production profile's environment
    env = services.stack_env(stack)

    # then Airflow, MLflow and the warehouse each have their own PostgreSQL database and tasks go through Redis
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    urls = {purpose: stack.database_url(purpose) for purpose in ("airflow", "mlflow", "mlflow_auth", "warehouse")}
    assert all(url.startswith("postgresql+psycopg2://") for url in urls.values())
    assert len({url.rsplit("/", 1)[1] for url in urls.values()}) == 4
    # each reached as the service's own role
    prefix = stack.db_prefix
    airflow_db = make_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert (airflow_db.database, airflow_db.username) == (f"{prefix}_airflow", f"{prefix}_airflow")
    warehouse = make_url(env["MLOPS_WAREHOUSE_URL"])
    assert (warehouse.database, warehouse.username) == (f"{prefix}_warehouse", f"{prefix}_pipeline")
    assert get_settings().warehouse_url == env["MLOPS_WAREHOUSE_URL"]
    command = services.mlflow_service(stack).command
    assert "--backend-store-uri" in command
    mlflow_db = make_url(command[command.index("--backend-store-uri") + 1])
    assert (mlflow_db.database, mlflow_db.username) == (f"{prefix}_mlflow", f"{prefix}_mlflow")
    serving_db = make_url(services.serving_service(stack).env["MLOPS_WAREHOUSE_URL"])
    assert (serving_db.database, serving_db.username) == (f"{prefix}_warehouse", f"{prefix}_serving")
    # and both workers answer over the broker
    assert services.workers_answering(stack) == {services.worker_name(stack, 1), services.worker_name(stack, 2)}


def test_mlflow_refuses_anonymous_requests_and_the_serving_account_can_only_read(
    stack: StackSettings, trained: dict[str, object]
) -> None:
    import httpx

    from pipelines.stack import mlflow_auth

    api = f"{stack.mlflow_url}/api/2.0/mlflow"
    create = {"name": "written-by-an-intruder"}
    passwords = mlflow_auth.accounts(stack)
    # given the production stack's MLflow (the basic-auth app), when an anonymous client writes or reads
    # then it gets 401, and nothing is created
    assert httpx.post(f"{api}/experiments/create", json=create, timeout=10).status_code == 401
    assert httpx.get(f"{api}/registered-models/get", params={"name": "flights-delay"}, timeout=10).status_code == 401
    assert httpx.get(f"{stack.mlflow_url}/health", timeout=10).status_code == 200  # health stays open
    # and the serving account reads the registry but may not log into the pipeline's experiment, tag a version or
    # move an alias (403)
    serving = httpx.BasicAuth(mlflow_auth.SERVING, passwords[mlflow_auth.SERVING])
    got = httpx.get(
        f"{api}/registered-models/alias",
        params={"name": "flights-delay", "alias": "champion"},
        auth=serving,
        timeout=10,
    )
    assert got.status_code == 200 and got.json()["model_version"]["version"] == "1"
    champion = registry.alias_version(get_settings(), "flights-delay", registry.CHAMPION)
    assert champion is not None and champion.run_id
    run = {"experiment_id": registry.client(get_settings()).get_run(champion.run_id).info.experiment_id}
    assert httpx.post(f"{api}/runs/create", json=run, auth=serving, timeout=10).status_code == 403
    move = {"name": "flights-delay", "alias": "champion", "version": "1"}
    assert httpx.post(f"{api}/registered-models/alias", json=move, auth=serving, timeout=10).status_code == 403
    tag = {"name": "flights-delay", "version": "1", "key": "approval.status", "value": "approved"}
    assert httpx.post(f"{api}/model-versions/set-tag", json=tag, auth=serving, timeout=10).status_code == 403
    # and a wrong password is refused like no password
    wrong = httpx.BasicAuth(mlflow_auth.PIPELINE, "not-the-password")
    assert httpx.post(f"{api}/experiments/create", json=create, auth=wrong, timeout=10).status_code == 401
    # and the services run as those accounts: the pipeline's tasks (they trained v1) and the service read only
    assert services.stack_env(stack)["MLFLOW_TRACKING_USERNAME"] == mlflow_auth.PIPELINE
    assert services.serving_service(stack).env["MLFLOW_TRACKING_USERNAME"] == mlflow_auth.SERVING
    assert (stack.mlflow_dir / "accounts.json").stat().st_mode & 0o777 == 0o600
    assert passwords[mlflow_auth.ADMIN] not in (stack.mlflow_dir / "basic_auth.ini").read_text()


def test_train_flights_with_its_approval_runs_to_success_on_both_workers(
    stack: StackSettings, trained: dict[str, object]
) -> None:
    # given the run triggered, approved through the REST API and followed to its end (fixture)
    states: dict[str, str] = trained["task_states"]  # type: ignore[assignment]
    hosts: dict[str, str] = trained["hosts"]  # type: ignore[assignment]

    # then every step succeeded and version 1 is the champion
    assert trained["state"] == "success", states
    for task in ("extract", "validate", "train", "evaluate", "gate", "route", "approve", "deploy"):
        assert states[task] == "success", (task, states)
    # and the tasks were spread over both Celery workers (each reports its own name as the task's host)
    workers = {services.worker_name(stack, 1), services.worker_name(stack, 2)}
    assert set(hosts.values()) == workers, hosts


def test_only_an_approver_can_answer_an_approval_with_fab_accounts(
    stack: StackSettings, trained: dict[str, object]
) -> None:
    # given the people file's accounts in FAB's user store, and a run waiting for its approval (fixture)
    # when a viewer, an operator and the admin tried to answer it, then Airflow refused each (403): the viewer by
    # her FAB role (no edit on "HITL Detail"), the others, whose roles may edit it, as not respondents of the task
    refusals: dict[str, str] = trained["refusals"]  # type: ignore[assignment]
    assert ": 403 " in refusals["vera"] and "Forbidden" in refusals["vera"], refusals
    for user in ("omar", stack.airflow_admin_user):
        assert ": 403 " in refusals[user] and f"User={user} (id=" in refusals[user], refusals
        assert "is not a respondent for the task" in refusals[user], refusals
    # and the approver's answer was taken: the run went on to deploy (the version's tags name her, test below)
    assert trained["task_states"]["deploy"] == "success"  # type: ignore[index]


def test_the_production_profile_authenticates_with_fab(stack: StackSettings, tmp_path: Path) -> None:
    # given the production profile's Airflow
    env = services.stack_env(stack)
    # then its auth manager is FAB, whose users live in Airflow's metadata database on PostgreSQL
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("FabAuthManager")
    assert "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS" not in env
    assert fab_accounts(stack.database_url("airflow")) == [
        ("admin", "Admin", True), ("ann", "User", True), ("omar", "Op", True), ("vera", "Viewer", True)
    ]  # fmt: skip
    # and a wrong password gets no token
    with pytest.raises(AirflowApiError, match="401"):
        AirflowClient(stack.airflow_url, "ann", "not-her-password")


def test_a_person_signs_in_on_fabs_form_and_changes_her_own_password(
    stack: StackSettings, trained: dict[str, object]
) -> None:
    """Vera, a viewer, signs in with the password she was given and sets her own (FAB's user store)."""
    from tests.browser import browser_page, log_in_to_airflow

    given = services.password_of(stack, "vera")
    chosen = "vera-" + secrets.token_urlsafe(12)
    with browser_page("production_fab_password") as (page, steps):
        # given Airflow's login form, when she signs in with the generated password
        log_in_to_airflow(page, stack.airflow_url, "vera", given)
        steps.shot(page, "signed-in")
        # then the plugin's Models page knows her through FAB, and a viewer may read it
        models = page.goto(f"{stack.airflow_url}/mlops/models")
        assert models is not None and models.status == 200
        assert "flights-delay" in page.content()
        steps.shot(page, "models-page")
        # and sets a password of her own on her profile
        page.goto(f"{stack.airflow_url}/auth/users/userinfo/")
        steps.shot(page, "profile")
        page.get_by_role("link", name="Reset my password").click()
        page.fill("input[name=password]", chosen)
        page.fill("input[name=conf_password]", chosen)
        steps.shot(page, "new-password")
        page.get_by_role("button", name="Save").click()
        page.wait_for_load_state()
        steps.shot(page, "saved")
    # then her own password signs her in, and the generated one no longer does
    AirflowClient(stack.airflow_url, "vera", chosen).close()
    with pytest.raises(AirflowApiError, match="401"):
        AirflowClient(stack.airflow_url, "vera", given)


def test_the_registry_alias_tags_and_artifacts_are_in_mlflow_on_postgresql(
    stack: StackSettings, trained: dict[str, object], tmp_path: Path
) -> None:
    # given the approved run (fixture)
    settings = get_settings()
    mlflow_client = registry.client(settings)

    # then the champion alias points at version 1 with the lineage and approval tags
    version = registry.alias_version(settings, "flights-delay", registry.CHAMPION)
    assert version is not None and str(version.version) == "1"
    tags = dict(version.tags)
    assert tags["airflow.run_id"] == trained["run_id"]
    assert tags["approval.status"] == "approved" and tags["approval.by"] == "ann"  # the people file's approver
    assert tags["deploy.status"] == "champion"
    # and the model's files come back through the MLflow server, which keeps them in its artifacts folder
    model_dir = Path(
        mlflow.artifacts.download_artifacts(f"models:/flights-delay/{version.version}", dst_path=str(tmp_path))
    )
    assert (model_dir / "MLmodel").is_file()
    assert any((stack.mlflow_dir / "artifacts").rglob("MLmodel"))
    # and the registry itself is in the MLflow database on PostgreSQL
    engine = sa.create_engine(stack.database_url("mlflow"), poolclass=sa.NullPool)
    with engine.connect() as conn:
        aliases = conn.execute(sa.text("SELECT alias, version FROM registered_model_aliases")).all()
    engine.dispose()
    assert ("champion", 1) in [tuple(row) for row in aliases]
    # and the training run has its metrics, plots, gate decision, config and data inputs, as on the embedded stack
    run = mlflow_client.get_run(version.run_id)
    assert run.data.metrics["holdout_roc_auc"] > 0.5
    logged = {
        a.path
        for folder in ("evaluation", "plots", "gate", "config")
        for a in mlflow_client.list_artifacts(run.info.run_id, folder)
    }
    assert "gate/decision.json" in logged and "plots/roc.png" in logged, logged
    assert any(path.startswith("config/") for path in logged), logged
    assert run.inputs.dataset_inputs, "no dataset inputs logged"


def test_replayed_predictions_and_monitoring_land_in_the_postgresql_warehouse(
    stack: StackSettings, api: AirflowClient, trained: dict[str, object]
) -> None:
    # given the deployed champion (fixture) and two days replayed through the prediction service
    _, replay = run_replay(stack, "flights", "2013-03-08", "2013-03-10", timeout=600)
    assert replay["days_replayed"] == 2 and replay["rejected"] == 0, replay

    # when monitor_flights checks the first day
    wait_for_dag(api, MONITOR)
    api.unpause(MONITOR)
    run_id = api.trigger(MONITOR, {"window_start": "2013-03-08", "window_end": "2013-03-09"})
    state = api.follow(MONITOR, run_id, timeout=600)

    # then it succeeds on a Celery worker, with its report in MLflow and its row in the warehouse on PostgreSQL
    assert state == "success", api.task_states(MONITOR, run_id)
    assert set(api.task_hosts(MONITOR, run_id).values()) <= {
        services.worker_name(stack, 1),
        services.worker_name(stack, 2),
    }
    checked = api.xcom(MONITOR, run_id, "check")
    assert checked["status"] in {"ok", "drift"}, checked
    artifacts = {a.path for a in registry.client(get_settings()).list_artifacts(checked["mlflow_run_id"], "report")}
    assert {"report/drift.html", "report/summary.json"} <= artifacts
    engine = sa.create_engine(stack.database_url("warehouse"), poolclass=sa.NullPool)
    settle(engine)  # any request the service stored after the check read the log, into records
    with engine.connect() as conn:
        logged = conn.execute(sa.text("SELECT count(*) FROM prediction_log WHERE dataset = 'flights'")).scalar_one()
        results = conn.execute(sa.text("SELECT status FROM monitoring_results WHERE dataset = 'flights'")).all()
    engine.dispose()
    assert logged == replay["answered"] > 0
    assert [row[0] for row in results] == [checked["status"]]


def test_each_service_has_its_own_database_role_and_the_serving_role_only_logs(
    stack: StackSettings, trained: dict[str, object]
) -> None:
    from datetime import UTC, datetime

    from pipelines import steps

    # given the warehouse after a deployment, with outcomes recorded by the pipeline's role
    steps.record_outcomes("flights", "2013-03-01", "2013-03-02", datetime(2026, 1, 1, tzinfo=UTC))
    serving = sa.create_engine(services.serving_service(stack).env["MLOPS_WAREHOUSE_URL"], poolclass=sa.NullPool)
    try:
        with serving.connect() as conn:
            # then the serving role reads the approved digests and logs predictions
            assert conn.execute(sa.text("SELECT count(*) FROM model_artifact_digests")).scalar_one() >= 2
            assert conn.execute(sa.text("SELECT count(*) FROM prediction_log")).scalar_one() >= 0
            # and keeps the log's intake: stores requests and turns them into records (deleting them then)
            conn.execute(sa.text("DELETE FROM prediction_requests WHERE request_id = 'none-such'"))
        # and it may not change ground truth, delete from the audit trail or read the source table
        for statement in (
            "UPDATE ground_truth SET label = 1 - label",
            "DELETE FROM model_audit",
            "UPDATE model_artifact_digests SET digest = 'x'",
            "SELECT count(*) FROM flights",
            "CREATE TABLE planted (x int)",
        ):
            with serving.connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                conn.execute(sa.text(statement))
    finally:
        serving.dispose()
    # and no service's role reaches another's database: the serving and pipeline roles cannot open Airflow's
    for role in ("serving", "pipeline"):
        url = make_url(services.database_url(stack, "airflow", role))  # type: ignore[arg-type]
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        with pytest.raises(sa.exc.OperationalError, match="permission denied for database"):
            engine.connect().close()
        engine.dispose()
