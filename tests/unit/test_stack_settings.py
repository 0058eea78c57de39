"""The stack's settings: read from the documented variables only, never from look-alikes such as $HOME."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipelines.core.settings import REPO_ROOT
from pipelines.stack.settings import StackSettings


def test_defaults_keep_state_in_the_repository_runtime_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a shell whose HOME and HOST are set, as every shell's are, and no stack variables
    for name in ("MLOPS_HOME", "MLFLOW_PORT", "AIRFLOW_PORT", "STACK_HOST", "AIRFLOW_ADMIN_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/somewhere/else")
    monkeypatch.setenv("HOST", "example.org")
    # when the settings are read, then the defaults hold
    stack = StackSettings()
    assert stack.home == REPO_ROOT / "runtime"
    assert stack.mlflow_url == "http://127.0.0.1:5000" and stack.airflow_url == "http://127.0.0.1:8080"
    assert stack.airflow_admin_password == "" and stack.demo_approval == "api"


def test_documented_variables_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # given the variables the README documents
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_PORT", "5123")
    monkeypatch.setenv("AIRFLOW_PORT", "8123")
    monkeypatch.setenv("AIRFLOW_ADMIN_PASSWORD", "s3cret")
    monkeypatch.setenv("DEMO_APPROVAL", "ui")
    # when the settings are read, then each is taken
    stack = StackSettings()
    assert stack.home == tmp_path and stack.airflow_home == tmp_path / "airflow"
    assert stack.mlflow_url.endswith(":5123") and stack.airflow_url.endswith(":8123")
    assert stack.airflow_admin_password == "s3cret" and stack.demo_approval == "ui"


def test_bad_values_are_refused_with_the_variable_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_PORT", "not-a-port")
    with pytest.raises(ValueError, match="AIRFLOW_PORT"):
        StackSettings()


_PROFILE_VARS = (
    "MLOPS_PROFILE",
    "MLOPS_HOME",
    "STACK_POSTGRES_URL",
    "STACK_DB_PREFIX",
    "STACK_REDIS_URL",
    *(f"POSTGRES_{role}_PASSWORD" for role in ("AIRFLOW", "MLFLOW", "PIPELINE", "SERVING")),
)


def test_the_embedded_profile_keeps_every_store_in_sqlite_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # given no profile chosen
    for name in _PROFILE_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    # when the stack's environment is built
    from pipelines.stack.services import stack_env

    stack = StackSettings()
    env = stack_env(stack)
    # then Airflow runs the LocalExecutor (preloading the loop's libraries) on SQLite, and MLflow and the warehouse
    # are SQLite files in the runtime
    executor = env["AIRFLOW__CORE__EXECUTOR"]
    assert stack.profile == "embedded" and executor == "pipelines.stack.preloading_executor.PreloadingLocalExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path / 'airflow' / 'airflow.db'}"
    assert env["MLOPS_WAREHOUSE_URL"] == f"sqlite:///{tmp_path / 'warehouse.db'}"
    assert stack.database_url("mlflow") == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert "AIRFLOW__CELERY__BROKER_URL" not in env
    # and Airflow's simple auth manager holds the people file's accounts, their passwords in the runtime folder
    assert "AIRFLOW__CORE__AUTH_MANAGER" not in env  # Airflow's default: the simple auth manager
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin,ann:user,omar:op,vera:viewer"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(tmp_path / "airflow" / "passwords.json")


def test_one_switch_moves_every_store_to_postgresql_and_the_executor_to_celery(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # given the production profile on a named server, prefix and broker
    for name in _PROFILE_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLOPS_PROFILE", "production")
    monkeypatch.setenv("STACK_POSTGRES_URL", "postgresql://ops:pw@db.internal:5433/postgres")
    monkeypatch.setenv("STACK_DB_PREFIX", "team_a")
    monkeypatch.setenv("STACK_REDIS_URL", "redis://broker.internal:6380/2")
    monkeypatch.setenv("CELERY_WORKERS", "3")
    # when the stack's environment is built
    from pipelines.stack.services import celery_workers, database_url, stack_env, worker_name

    assert StackSettings().home == REPO_ROOT / "runtime" / "prod-local"  # its own runtime folder by default
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    stack = StackSettings()
    env = stack_env(stack)
    # then Airflow, MLflow and the warehouse each get their own database on that server
    base = "postgresql+psycopg2://ops:pw@db.internal:5433/team_a_"
    assert stack.database_url("mlflow") == base + "mlflow"  # as the server's admin (creates them)
    # and each service reaches its database as its own role, with a password generated once and kept 0600
    passwords = json.loads((tmp_path / "postgres_roles.json").read_text())
    assert (tmp_path / "postgres_roles.json").stat().st_mode & 0o777 == 0o600
    role = "postgresql+psycopg2://team_a_{0}:{1}@db.internal:5433/team_a_{2}"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == role.format("airflow", passwords["airflow"], "airflow")
    assert env["MLOPS_WAREHOUSE_URL"] == role.format("pipeline", passwords["pipeline"], "warehouse")
    assert database_url(stack, "warehouse", "serving") == role.format("serving", passwords["serving"], "warehouse")
    assert len(set(passwords.values())) == 4
    # and tasks go through that broker to this stack's own queue, with results in the metadata database
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://broker.internal:6380/2"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == (
        f"db+postgresql://team_a_airflow:{passwords['airflow']}@db.internal:5433/team_a_airflow"
    )
    assert env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] == "team_a"
    # and each worker imports the loop's libraries before forking its pool (Airflow's Celery settings plus that)
    assert env["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"] == "pipelines.stack.celery_config.CELERY_CONFIG"
    # and the slots cover every worker, each a process with its own name and log port
    assert int(env["AIRFLOW__CORE__PARALLELISM"]) == 3 * stack.celery_concurrency
    workers = celery_workers(stack)
    assert [w.name for w in workers] == [f"airflow-{worker_name(stack, i)}" for i in (1, 2, 3)]
    assert [w.port for w in workers] == [stack.worker_log_port + i for i in range(3)]
    assert all("--queues" in w.command and "team_a" in w.command for w in workers)
    # and Airflow authenticates with FAB (accounts in its metadata database), its Flask sessions signed with one
    # key kept 0600 in the runtime folder
    assert env["AIRFLOW__CORE__AUTH_MANAGER"] == "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
    assert not any(name.startswith("AIRFLOW__CORE__SIMPLE_AUTH") for name in env)
    key = tmp_path / "airflow" / "api_secret_key"
    assert env["AIRFLOW__API__SECRET_KEY"] == key.read_text() and key.stat().st_mode & 0o777 == 0o600
    assert stack_env(stack)["AIRFLOW__API__SECRET_KEY"] == env["AIRFLOW__API__SECRET_KEY"]


def test_a_database_prefix_that_is_not_a_plain_identifier_is_refused() -> None:
    # given a prefix that would need quoting in SQL, then the settings refuse it naming the variable
    with pytest.raises(ValidationError, match="STACK_DB_PREFIX"):
        StackSettings(MLOPS_PROFILE="production", STACK_DB_PREFIX='x"; DROP DATABASE y; --')  # type: ignore[call-arg]


@pytest.mark.parametrize("profile", ["embedded", "production"])
def test_preloading_can_be_turned_off_leaving_airflows_own_executors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, profile: str
) -> None:
    # given a stack with AIRFLOW_PRELOAD=false
    for name in _PROFILE_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLOPS_PROFILE", profile)
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW_PRELOAD", "false")
    # when its environment is built
    from pipelines.stack.services import stack_env

    env = stack_env(StackSettings())
    # then Airflow runs its own executor with its own Celery settings
    assert env["AIRFLOW__CORE__EXECUTOR"] == ("LocalExecutor" if profile == "embedded" else "CeleryExecutor")
    assert "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS" not in env
