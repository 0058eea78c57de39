"""The production topology's files: docker-compose.yaml, .env.example, Dockerfile and .dockerignore (issue 5).

The compose binary validates the file and renders it with .env.example (`docker compose config`, or Debian's
`docker-compose` 1.29 where the v2 plugin is absent); the tests read what it rendered. No Docker engine is needed
and none is used. Without a compose binary the compose tests are SKIPPED, unless ``MLOPS_REQUIRE_COMPOSE=1``
(CI sets it): then they FAIL. The Dockerfile tests need nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from pipelines.core.people import USER_IDS_VARIABLE
from pipelines.stack.fab_accounts import FAB_AUTH_MANAGER
from tests.conftest import missing
from tests.stack import fab_accounts

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"

ONE_SHOTS = {"preflight", "db-init", "airflow-init", "mlflow-init"}
LONG_RUNNING = {
    "postgres",
    "redis",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "mlflow",
    "serving",
}
THIRD_PARTY = {"postgres", "redis"}
AIRFLOW_COMPONENTS = {
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}


def _example_env() -> dict[str, str]:
    """The active ``KEY=value`` lines of .env.example: the secrets compose requires."""
    lines = ENV_EXAMPLE.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.lstrip().startswith("#"))


SECRETS = sorted(_example_env())


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], check=False, capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.fixture(scope="module")
def compose() -> list[str]:
    command = _compose_command()
    if command is None:
        message = (
            "no compose binary: neither `docker compose` (v2 plugin) nor `docker-compose` "
            "(apt-get install docker-compose) is installed"
        )
        missing(message, require_env="MLOPS_REQUIRE_COMPOSE")
    return command


def _config(compose: list[str], env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``compose --env-file ENV_FILE -f docker-compose.yaml config ARGS``, blind to this shell's own variables."""
    env = {k: v for k, v in os.environ.items() if k not in SECRETS and not k.startswith("COMPOSE_")}
    return subprocess.run(
        [*compose, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config", *args],
        check=False,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def services(compose: list[str]) -> dict[str, dict[str, Any]]:
    """The services as compose renders them with .env.example."""
    result = _config(compose, ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Mount target -> named volume, from the short (1.29) or long (v2) syntax."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        mounts[target] = source
    return mounts


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def test_the_file_validates_with_the_example_env(compose: list[str]) -> None:
    # given the committed compose file and .env.example
    # when compose validates it
    result = _config(compose, ENV_EXAMPLE, "-q")
    # then it is valid, and no variable is silently blank (every optional one has a default)
    assert result.returncode == 0, result.stderr
    assert "is not set" not in result.stderr, result.stderr


def test_every_service_of_the_topology_is_there(services: dict[str, dict[str, Any]]) -> None:
    # given the rendered configuration, then it holds exactly the topology of docs/deployment.md
    assert set(services) == LONG_RUNNING | ONE_SHOTS


def test_every_long_running_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert services[name].get("restart") == "unless-stopped", name
    for name in ONE_SHOTS:
        assert services[name].get("restart", "no") == "no" and "healthcheck" not in services[name], name


def test_start_up_waits_for_health_and_for_the_one_shots(services: dict[str, dict[str, Any]]) -> None:
    # given every dependency of every service
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            # then it waits for the right condition: one-shots to succeed, the others to be healthy
            expected = "service_completed_successfully" if dependency in ONE_SHOTS else "service_healthy"
            assert spec["condition"] == expected, f"{name} -> {dependency}"
    # and the chain is: preflight -> postgres -> db-init -> airflow-init -> Airflow's components, and
    # db-init -> mlflow -> mlflow-init -> serving and the workers
    assert "preflight" in services["postgres"]["depends_on"]
    assert "postgres" in services["db-init"]["depends_on"]
    assert "db-init" in services["airflow-init"]["depends_on"]
    assert "db-init" in services["mlflow"]["depends_on"]
    # and whatever talks to MLflow waits for its accounts, made once MLflow is healthy
    assert "mlflow" in services["mlflow-init"]["depends_on"]
    assert {"db-init", "mlflow-init"} <= set(services["serving"]["depends_on"])
    assert "mlflow-init" in services["airflow-worker"]["depends_on"]
    for name in AIRFLOW_COMPONENTS:
        assert "airflow-init" in services[name]["depends_on"], name


def test_the_worker_can_be_scaled(services: dict[str, dict[str, Any]]) -> None:
    # given the Celery worker (`docker compose up --scale airflow-worker=3`)
    worker = services["airflow-worker"]
    # then no replica would clash with another over a name or a host port
    assert "container_name" not in worker and "hostname" not in worker and not worker.get("ports")
    for name, service in services.items():
        assert "container_name" not in service, name
    # and it runs the CeleryExecutor's worker, checked by Celery's own ping of this replica
    assert worker["command"] == ["airflow", "celery", "worker"]
    assert "inspect ping" in " ".join(worker["healthcheck"]["test"])


def test_airflow_mlflow_and_the_warehouse_have_three_distinct_databases(
    services: dict[str, dict[str, Any]],
) -> None:
    airflow = _env(services["airflow-scheduler"])
    urls = {
        "airflow": make_url(airflow["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]),
        "mlflow": make_url(_env(services["mlflow"])["MLFLOW_BACKEND_STORE_URI"]),
        "warehouse": make_url(airflow["MLOPS_WAREHOUSE_URL"]),
    }
    assert {purpose: url.database for purpose, url in urls.items()} == {
        "airflow": "mlops_airflow",
        "mlflow": "mlops_mlflow",
        "warehouse": "mlops_warehouse",
    }
    # on the one PostgreSQL server that db-init creates them on
    assert {(url.host, url.port) for url in urls.values()} == {("postgres", 5432)}
    assert _env(services["db-init"])["STACK_DB_PREFIX"] == "mlops"
    assert make_url(_env(services["db-init"])["STACK_POSTGRES_URL"]).host == "postgres"
    # and each service reaches them as its own role: the prediction service's may only log (docs/security.md)
    serving = make_url(_env(services["serving"])["MLOPS_WAREHOUSE_URL"])
    assert {purpose: url.username for purpose, url in urls.items()} == {
        "airflow": "mlops_airflow",
        "mlflow": "mlops_mlflow",
        "warehouse": "mlops_pipeline",
    }
    assert (serving.username, serving.database) == ("mlops_serving", "mlops_warehouse")
    example = _example_env()
    assert urls["warehouse"].password == example["POSTGRES_PIPELINE_PASSWORD"]
    assert serving.password == example["POSTGRES_SERVING_PASSWORD"]
    db_init = _env(services["db-init"])
    assert all(db_init[f"POSTGRES_{r}_PASSWORD"] == example[f"POSTGRES_{r}_PASSWORD"] for r in ("AIRFLOW", "SERVING"))
    # and MLflow's users and permissions (the basic-auth app) have a database of their own on the same server
    auth = make_url(_env(services["mlflow"])["MLFLOW_AUTH_DATABASE_URI"])
    assert (auth.host, auth.port, auth.database) == ("postgres", 5432, "mlops_mlflow_auth")
    # Celery's results go to Airflow's database, its messages to Redis
    assert make_url(airflow["AIRFLOW__CELERY__RESULT_BACKEND"].removeprefix("db+")).database == "mlops_airflow"
    assert airflow["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"


def test_every_python_service_runs_the_one_image_of_this_repository(services: dict[str, dict[str, Any]]) -> None:
    python_services = {name: s for name, s in services.items() if name not in THIRD_PARTY}
    builds = {repr(s.get("build")) for s in python_services.values()}
    images = {s.get("image") for s in python_services.values()}
    assert len(builds) == 1 and len(images) == 1, (builds, images)
    build = next(iter(python_services.values()))["build"]
    assert Path(build["context"]).resolve() == REPO_ROOT and build.get("dockerfile", "Dockerfile") == "Dockerfile"
    for name in THIRD_PARTY:
        assert "build" not in services[name], name


def test_the_pipeline_contract_reaches_every_python_process(services: dict[str, dict[str, Any]]) -> None:
    for name in [*AIRFLOW_COMPONENTS, "serving"]:
        env = _env(services[name])
        assert env["MLOPS_HOME"] == "/runtime" and _mounts(services[name]).get("/runtime") == "runtime", name
        assert env["MLOPS_MLFLOW_TRACKING_URI"] == env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        assert env["MLOPS_SERVING_URL"] == "http://serving:8000", name
        assert env["MLOPS_SERVING_ADMIN_TOKEN"] == _example_env()["MLOPS_SERVING_ADMIN_TOKEN"], name
        assert make_url(env["MLOPS_WAREHOUSE_URL"]).database == "mlops_warehouse", name
    # and MLflow is reached as `pipeline` by Airflow's processes and as the read-only `serving` by the service
    example = _example_env()
    for name, account in [*((c, "pipeline") for c in AIRFLOW_COMPONENTS), ("serving", "serving")]:
        env = _env(services[name])
        assert env["MLFLOW_TRACKING_USERNAME"] == account, name
        assert env["MLFLOW_TRACKING_PASSWORD"] == example[f"MLFLOW_{account.upper()}_PASSWORD"], name
    for name in AIRFLOW_COMPONENTS:
        env = _env(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-api-server:8080/execution/", name
        assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/mlops/dags", name
        # task logs written by the workers are readable by the api-server
        assert _mounts(services[name]).get(env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"]) == "airflow-logs", name


def test_notification_secrets_from_env_reach_airflow_only(compose: list[str], tmp_path: Path) -> None:
    from pipelines.core.notifications.config import load_notifications

    # given the example env plus a Slack webhook URL, as a user enabling the shipped file's slack channel sets it
    url = "https://hooks.slack.com/services/T000/B000/secret-token"
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text() + f"SLACK_WEBHOOK_URL={url}\n")
    # when compose renders the file
    result = _config(compose, env_file)
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)["services"]
    # then every Airflow process has it (tasks, HITL notifiers and callbacks run there), and no other service does
    for name in AIRFLOW_COMPONENTS:
        assert _env(rendered[name])["SLACK_WEBHOOK_URL"] == url, name
    assert all("SLACK_WEBHOOK_URL" not in _env(rendered[name]) for name in ("serving", "mlflow", "postgres"))
    # and every variable the shipped file's example channels name is passed (blank unless set)
    shipped = (REPO_ROOT / "pipelines" / "conf" / "notifications.yaml").read_text()
    examples = tmp_path / "notifications.yaml"
    examples.write_text(re.sub(r"(?m)^  # ", "  ", shipped))
    named = load_notifications(examples).env_names()
    assert set(named) == {"SLACK_WEBHOOK_URL", "TEAMS_WEBHOOK_URL", "SMTP_PASSWORD"}
    assert all(variable in _env(rendered["airflow-worker"]) for variable in named)


@pytest.mark.parametrize("secret", SECRETS)
def test_no_secret_has_a_default(compose: list[str], secret: str, tmp_path: Path) -> None:
    # given an env file with every secret but one
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in _example_env().items() if k != secret))
    # when compose renders the file
    result = _config(compose, env_file, "-q")
    # then it refuses, naming the missing variable and where to look
    assert result.returncode != 0
    assert f"set {secret} in .env" in result.stderr + result.stdout
    # and nowhere in the file does that secret fall back to a value
    text = COMPOSE_FILE.read_text()
    assert re.findall(r"\$\{" + secret + r"(?::?[-?][^}]*)?\}", text), f"{secret} is not used"
    assert not re.search(r"\$\{" + secret + r"(\}|:?-)", text), f"{secret} has a default or may be blank"


def test_preflight_refuses_the_example_placeholders_and_accepts_generated_secrets(
    services: dict[str, dict[str, Any]],
) -> None:
    # given the preflight one-shot's own command (it runs before PostgreSQL initialises with the password)
    preflight = services["preflight"]
    command = [sys.executable if part == "python" else part.replace("$$", "$") for part in preflight["command"]]
    # when it runs with .env.example's placeholders, then it fails naming each one
    refused = subprocess.run(
        command, check=False, env={**os.environ, **_env(preflight)}, capture_output=True, text=True
    )
    assert refused.returncode == 1
    for secret in SECRETS:
        assert f"{secret}: still the placeholder" in refused.stderr
    # when it runs with secrets generated as .env.example says, then it passes
    generated = {name: f"{name.lower().replace('_', '-')}-0123456789abcdef" for name in SECRETS}
    from cryptography.fernet import Fernet

    generated["AIRFLOW_FERNET_KEY"] = Fernet.generate_key().decode()
    accepted = subprocess.run(command, check=False, env={**os.environ, **generated}, capture_output=True, text=True)
    assert accepted.returncode == 0, accepted.stderr


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO_ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_image_installs_exactly_the_lock_file_as_a_non_root_user() -> None:
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim-bookworm")
    copies = [args for op, args in instructions if op == "COPY"]
    runs = [args for op, args in instructions if op == "RUN"]
    # the lock file is copied in and synced with uv (exactly its set, nothing resolved at build time)
    assert any(args.split()[0] == "requirements.lock" for args in copies)
    assert any(re.search(r"\buv pip sync\b.*requirements\.lock", args) for args in runs)
    assert not any(re.search(r"pip install\b.*(-r|\.\s*$|-e)", args) for args in runs)
    # the DAGs, plugins and pipeline code are baked in; bytecode is compiled at build time
    for folder in ("pipelines", "dags", "plugins", "expectations"):
        assert any(args.split()[0] == folder for args in copies), folder
    env = " ".join(args for op, args in instructions if op == "ENV")
    assert "UV_COMPILE_BYTECODE=1" in env and any("compileall" in args for args in runs)
    # and the processes do not run as root
    users = [args for op, args in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}


def test_the_build_context_leaves_out_state_secrets_and_the_virtualenv() -> None:
    ignored = {line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "runtime", ".env"} <= ignored
    # and the lock file and the code are not excluded
    assert not ignored & {"requirements.lock", "pipelines", "dags", "plugins", "expectations", "*"}


def test_the_real_env_file_is_never_committed() -> None:
    git = shutil.which("git")
    if git is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("git is not installed or this is not a git checkout")
    assert subprocess.run([git, "check-ignore", "-q", ".env"], check=False, cwd=REPO_ROOT).returncode == 0
    assert subprocess.run([git, "check-ignore", "-q", ".env.example"], check=False, cwd=REPO_ROOT).returncode == 1


def _shell(services: dict[str, dict[str, Any]], name: str, replace: dict[str, str]) -> str:
    """The ``sh -c`` script of a service's command as it would run here: ``python`` is this interpreter."""
    command = services[name]["command"]
    assert command[:2] == ["sh", "-c"], command
    script = command[2].replace("$$", "$").replace("python -m", f"{sys.executable} -m")
    for old, new in replace.items():
        assert old in script, (name, script)
        script = script.replace(old, new)
    return script


def _fab_accounts(database: Path, env: dict[str, str]) -> tuple[list[tuple[str, str, bool]], dict[str, str]]:
    """FAB's accounts (login, role, active) in the metadata database, and the login -> id map as tasks read it."""
    variable = subprocess.run(
        ["airflow", "variables", "get", USER_IDS_VARIABLE], env=env, capture_output=True, text=True, check=True
    )
    return fab_accounts(f"sqlite:///{database}"), json.loads(variable.stdout.strip().splitlines()[-1])


def test_the_airflow_accounts_come_from_the_people_file(services: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    from pipelines.core.people import load_people

    team = load_people(REPO_ROOT / "pipelines" / "conf" / "people.yaml")
    compose_env = services["airflow-init"]["environment"]
    assert compose_env["AIRFLOW__CORE__AUTH_MANAGER"] == FAB_AUTH_MANAGER
    assert services["airflow-api-server"]["environment"]["AIRFLOW__CORE__AUTH_MANAGER"] == FAB_AUTH_MANAGER
    # given airflow-init's own command, run for real on a SQLite metadata database, twice
    passwords, database = tmp_path / "passwords.json", tmp_path / "airflow.db"
    init = _shell(services, "airflow-init", {"/opt/airflow/auth/passwords.json": str(passwords)})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "AIRFLOW"))}
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "AIRFLOW_HOME": str(tmp_path / "airflow"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{database}",
            "AIRFLOW__CORE__AUTH_MANAGER": compose_env["AIRFLOW__CORE__AUTH_MANAGER"],
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_ADMIN_PASSWORD": "from-the-secrets",
            "MLOPS_HOME": str(tmp_path / "runtime"),
        }
    )

    def run(script: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", "-c", script], env={**env, **extra}, cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )

    first, second = run(init), run(init)
    # then every person has a password in a file only its owner reads, the admin's from the secrets, and the
    # generated ones were printed the first time only
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-3000:] + second.stderr[-3000:]
    kept = yaml.safe_load(passwords.read_text())
    assert sorted(kept) == sorted(p.name for p in team.users) and kept["admin"] == "from-the-secrets"
    assert passwords.stat().st_mode & 0o777 == 0o600
    assert f"ann / {kept['ann']}  (approver)" in first.stdout and "from-the-secrets" not in first.stdout
    # (not lost among FAB's ~300 lines of permissions created on a fresh database)
    assert "Added Permission" not in first.stdout and len(first.stdout.splitlines()) < 60, first.stdout[-3000:]
    assert "accounts created" not in second.stdout and kept["ann"] not in second.stdout + second.stderr
    # and FAB's user store holds each person with the Airflow role of theirs, and the logins' ids for the approvals
    accounts, ids = _fab_accounts(database, env)
    assert accounts == [("admin", "Admin", True), ("ann", "User", True), ("omar", "Op", True), ("vera", "Viewer", True)]
    assert sorted(ids) == ["admin", "ann", "omar", "vera"] and all(i.isdigit() for i in ids.values())

    # when someone leaves the file and a viewer becomes an approver, and the accounts are made again
    changed = tmp_path / "people.yaml"
    changed.write_text(
        "users:\n  - {name: admin, role: admin}\n  - {name: ann, role: approver}\n  - {name: vera, role: approver}\n"
    )
    third = run(init, MLOPS_PEOPLE_FILE=str(changed))
    # then the one who left is deactivated (kept: past answers carry their name), the other has her new role
    assert third.returncode == 0, third.stderr[-3000:]
    accounts, ids = _fab_accounts(database, env)
    assert accounts == [("admin", "Admin", True), ("ann", "User", True), ("omar", "Op", False), ("vera", "User", True)]
    assert sorted(ids) == ["admin", "ann", "vera"]


def test_mlflow_runs_its_basic_auth_app_and_mlflow_init_makes_the_accounts(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    import signal

    import httpx

    from pipelines.stack.processes import free_port, wait_until

    port = free_port()
    ini = tmp_path / "basic_auth.ini"
    # given the mlflow service's own command (on a free local port, SQLite stores instead of PostgreSQL)
    script = _shell(
        services,
        "mlflow",
        {"--host 0.0.0.0 --port 5000": f"--host 127.0.0.1 --port {port}", "/tmp/basic_auth.ini": str(ini)},
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "AIRFLOW", "MLFLOW_"))}
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"
    secrets_ = {
        "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-from-the-secrets",
        "MLFLOW_PIPELINE_PASSWORD": "pipeline-from-the-secrets",
        "MLFLOW_SERVING_PASSWORD": "serving-from-the-secrets",
    }
    server_env = {
        **base,
        **_env(services["mlflow"]),
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{tmp_path / 'auth.db'}",
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
        "MLFLOW_ALLOWED_HOSTS": "localhost:*,127.0.0.1:*",
        "MLFLOW_WORKERS": "1",
        "MLFLOW_AUTH_ADMIN_PASSWORD": secrets_["MLFLOW_AUTH_ADMIN_PASSWORD"],
    }
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "mlflow.log").open("w")
    server = subprocess.Popen(
        ["sh", "-c", script], env=server_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_until(lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, "MLflow with basic-auth", 120)
        # when mlflow-init's own command runs (twice: it is idempotent)
        init = [sys.executable if part == "python" else part for part in services["mlflow-init"]["command"]]
        init = [url if part == "http://mlflow:5000" else part for part in init]
        init_env = {**base, **secrets_, "MLOPS_HOME": str(tmp_path / "runtime")}
        runs = [subprocess.run(init, env=init_env, capture_output=True, text=True, check=False) for _ in range(2)]
        assert all(r.returncode == 0 for r in runs), [r.stderr[-2000:] for r in runs]
        # then anonymous requests get 401, the pipeline may write and the serving account may only read
        api = f"{url}/api/2.0/mlflow/experiments"
        assert httpx.post(f"{api}/create", json={"name": "anon"}, timeout=10).status_code == 401
        pipeline = httpx.BasicAuth("pipeline", secrets_["MLFLOW_PIPELINE_PASSWORD"])
        serving = httpx.BasicAuth("serving", secrets_["MLFLOW_SERVING_PASSWORD"])
        made = httpx.post(f"{api}/create", json={"name": "by-the-pipeline"}, auth=pipeline, timeout=10)
        assert made.status_code == 200, made.text
        seen = httpx.get(f"{api}/get", params={"experiment_id": made.json()["experiment_id"]}, auth=serving, timeout=10)
        assert seen.status_code == 200
        # (it may not write into what the pipeline made: MLflow lets any account create experiments of its own)
        run = {"experiment_id": made.json()["experiment_id"]}
        runs_api = f"{url}/api/2.0/mlflow/runs/create"
        assert httpx.post(runs_api, json=run, auth=serving, timeout=10).status_code == 403
        assert httpx.post(runs_api, json=run, auth=pipeline, timeout=10).status_code == 200
        # and the auth app's file (it holds the database URL) is private to the container's user; no account file
        # was written: the passwords come from the secrets
        assert ini.stat().st_mode & 0o777 == 0o600
        assert not (tmp_path / "runtime").exists()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
