"""The stack's services: an MLflow tracking server, the prediction service and Airflow's components.

Embedded default: MLflow on SQLite with artifacts served by the MLflow server from a local folder; Airflow on
SQLite with the LocalExecutor. Production profile (``MLOPS_PROFILE=production``): the same services on
PostgreSQL, Airflow with the CeleryExecutor, a Redis broker and ``CELERY_WORKERS`` Celery workers. Every process
gets the same environment (:func:`stack_env`), which also tells the pipeline's steps where MLflow, the warehouse
and the runtime folder are.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from pipelines.core.people import People, load_people
from pipelines.core.settings import REPO_ROOT, Settings
from pipelines.stack import databases, db_roles, mlflow_auth
from pipelines.stack.processes import Service, StackError, wait_until
from pipelines.stack.settings import StackSettings

log = logging.getLogger(__name__)

AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


# MLflow's usage telemetry is on by default: it would try to reach the internet from every process, and its
# background thread sets and unsets an environment variable, which raced with a request reading the environment
# (KeyError '_MLFLOW_TELEMETRY_SESSION_ID' failed a task under load on the Celery workers). The server's job
# runner (GenAI jobs, unused here) starts seven extra processes of ~260 MB each.
MLFLOW_QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def _bin(name: str) -> str:
    """An executable of the running virtual environment (``mlflow``, ``airflow``)."""
    return str(Path(sys.executable).parent / name)


def _secret(path: Path, nbytes: int = 16) -> str:
    """A random secret kept in the runtime folder, created on first use."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(nbytes))
        path.chmod(0o600)
    return path.read_text().strip()


def people(stack: StackSettings) -> People:
    """The Airflow accounts of ``stack.people_file``; the stack's admin user must be an admin there."""
    team = load_people(stack.people_file)
    if team.role_of(stack.airflow_admin_user) != "admin":
        raise StackError(f"{stack.people_file}: {stack.airflow_admin_user!r} must be listed with role admin")
    return team


def passwords_file(stack: StackSettings) -> Path:
    return stack.airflow_home / "passwords.json"


def ensure_passwords(stack: StackSettings, path: Path | None = None) -> dict[str, str]:
    """A password for every person of the people file, in the simple auth manager's file (``path``, default the
    runtime folder's; 0600): kept once made, generated for a new person; the admin's is ``AIRFLOW_ADMIN_PASSWORD``
    when set. Returns the ones made now."""
    path = path or passwords_file(stack)
    kept: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
    legacy = stack.airflow_home / "admin_password"  # a runtime folder from before the people file
    if stack.airflow_admin_user not in kept and legacy.is_file():
        kept[stack.airflow_admin_user] = legacy.read_text().strip()
    wanted: dict[str, str] = {}
    made: dict[str, str] = {}
    for person in people(stack).users:
        if person.name == stack.airflow_admin_user and stack.airflow_admin_password:
            wanted[person.name] = stack.airflow_admin_password
        elif person.name in kept:
            wanted[person.name] = kept[person.name]
        else:
            wanted[person.name] = made[person.name] = secrets.token_urlsafe(12)
    if wanted != kept or not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(json.dumps(wanted, indent=1))
    return made


def read_passwords(stack: StackSettings, path: Path | None = None) -> dict[str, str]:
    """Every person's password as kept in ``path`` (default the runtime folder's file)."""
    passwords: dict[str, str] = json.loads((path or passwords_file(stack)).read_text())
    return passwords


def password_of(stack: StackSettings, name: str) -> str:
    """The Airflow password of ``name`` (generated on first use)."""
    ensure_passwords(stack)
    passwords = read_passwords(stack)
    if name not in passwords:
        raise StackError(f"{name!r} has no Airflow account: add them to {stack.people_file}")
    return passwords[name]


def admin_password(stack: StackSettings) -> str:
    """``AIRFLOW_ADMIN_PASSWORD`` when set, else the password generated on the first start."""
    return password_of(stack, stack.airflow_admin_user)


def accounts_text(stack: StackSettings, made: dict[str, str], path: Path | None = None) -> str:
    """The accounts made now, with their passwords: shown once, when they are generated."""
    team = people(stack)
    lines = [f"Airflow accounts created (passwords shown once; kept 0600 in {path or passwords_file(stack)}):"]
    lines += [f"  {name} / {password}  ({team.role_of(name)})" for name, password in made.items()]
    return "\n".join(lines) + "\n"


def database_url(stack: StackSettings, purpose: str, role: db_roles.Role | None = None) -> str:
    """The URL a service uses for ``purpose``'s database: production as its own PostgreSQL role (by default the
    database's owner), embedded the SQLite file."""
    if stack.production:
        return db_roles.role_url(stack, purpose, role)
    return stack.database_url(purpose)  # type: ignore[arg-type]


def stack_env(stack: StackSettings) -> dict[str, str]:
    """Environment of every process of the stack (and of the steps they run)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "MLOPS_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # Airflow re-imports a lot: let it use compiled bytecode
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(
        {
            "MLOPS_HOME": str(stack.home),
            "MLOPS_DATASETS_DIR": str(stack.datasets_dir),
            "MLOPS_MLFLOW_TRACKING_URI": stack.mlflow_url,
            "MLOPS_AIRFLOW_UI_URL": stack.airflow_url,
            "MLOPS_SERVING_URL": stack.serving_url,
            "MLOPS_WAREHOUSE_URL": database_url(stack, "warehouse"),
            "MLFLOW_TRACKING_URI": stack.mlflow_url,
            "AIRFLOW_HOME": str(stack.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # the LocalExecutor with the loop's libraries imported before it forks its workers (module docstring)
            "AIRFLOW__CORE__EXECUTOR": (
                "pipelines.stack.preloading_executor.PreloadingLocalExecutor"
                if stack.airflow_preload
                else "LocalExecutor"
            ),
            "AIRFLOW__CORE__PARALLELISM": str(stack.airflow_parallelism),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(stack.airflow_parallelism),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url(stack, "airflow"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{stack.airflow_url}/execution/",
            "AIRFLOW__API__BASE_URL": stack.airflow_url,
            "AIRFLOW__API__HOST": stack.host,
            "AIRFLOW__API__PORT": str(stack.airflow_port),
            "AIRFLOW__API_AUTH__JWT_SECRET": _secret(stack.airflow_home / "jwt_secret", nbytes=64),
            **_auth_env(stack),
            "MLOPS_PEOPLE_FILE": str(stack.people_file),
            "MLOPS_NOTIFICATIONS_FILE": str(stack.notifications_file),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            # An idle scheduler loop sleeps 1 s by default, and each hand-off of a short run (run start, task to
            # task, run end) waited for it: the demo's 63 monitoring runs went from about 720 s to 678 s here.
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(stack.airflow_home / "logs"),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(stack.worker_log_port),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(stack.trigger_log_port),
            "OMP_NUM_THREADS": "1",
            **MLFLOW_QUIET,
        }
    )
    env.update(notification_secrets(stack))
    if stack.production:
        env.update(_celery_env(stack))
        env.update(mlflow_auth.client_env(stack, mlflow_auth.PIPELINE))  # tasks and steps run as the pipeline
    return env


def _auth_env(stack: StackSettings) -> dict[str, str]:
    """Airflow's auth manager: the simple one embedded (the people file's users, their passwords in the runtime
    folder), FAB in production (accounts in the metadata database, created by :func:`sync_accounts`)."""
    if stack.production:
        from pipelines.stack.fab_accounts import FAB_AUTH_MANAGER

        # FAB's login form keeps a Flask session signed with this key: the same in every api-server worker
        return {
            "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
            "AIRFLOW__API__SECRET_KEY": _secret(stack.airflow_home / "api_secret_key", nbytes=32),
        }
    return {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": people(stack).airflow_users(),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(stack)),
    }


def notification_secrets(stack: StackSettings) -> dict[str, str]:
    """The variables the notifications file names (webhook URLs, SMTP passwords) that are set here: every process
    gets them, whatever their names (``MLOPS_*`` ones included). A file that does not load is left to the steps,
    which log it and send to the log alone."""
    from pipelines.core.errors import ConfigError
    from pipelines.core.notifications import load_notifications

    try:
        names = load_notifications(stack.notifications_file).env_names()
    except ConfigError as exc:
        log.warning("notifications: %s", exc)
        return {}
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        log.warning("notifications: %s not set: those channels will fail (%s)", ", ".join(missing),
                    stack.notifications_file)  # fmt: skip
    return {name: os.environ[name] for name in names if os.environ.get(name)}


def _celery_env(stack: StackSettings) -> dict[str, str]:
    """What the production profile changes: the CeleryExecutor, its broker and result backend, the slots."""
    slots = max(stack.airflow_parallelism, stack.celery_workers * stack.celery_concurrency)
    result_backend = make_url(database_url(stack, "airflow")).set(drivername="postgresql")
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(slots),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(slots),
        "AIRFLOW__CELERY__BROKER_URL": stack.redis_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + result_backend.render_as_string(hide_password=False),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(stack.celery_concurrency),
        # Airflow's Celery settings plus the loop's libraries imported before each worker forks its pool
        **(
            {"AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "pipelines.stack.celery_config.CELERY_CONFIG"}
            if stack.airflow_preload
            else {}
        ),
        # A task that outlives the visibility timeout is handed to a second worker: 6 h is above any run here.
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": stack.celery_queue,
        # Several workers share this machine: each reports its own name as the task's host (see worker_name).
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "pipelines.stack.hostname.worker_hostname",
    }


def act_as_pipeline(stack: StackSettings) -> None:
    """Let this process talk to the stack's MLflow as the pipeline (production: its basic-auth credentials)."""
    if stack.production:
        os.environ.update(mlflow_auth.client_env(stack, mlflow_auth.PIPELINE))


def pipeline_settings(stack: StackSettings) -> Settings:
    """The pipeline settings the stack's processes get (same warehouse, registry and service); this process then
    talks to MLflow as the pipeline does."""
    act_as_pipeline(stack)
    return Settings(
        home=stack.home,
        datasets_dir=stack.datasets_dir,
        warehouse_url=database_url(stack, "warehouse"),
        mlflow_tracking_uri=stack.mlflow_url,
        airflow_ui_url=stack.airflow_url,
        serving_url=stack.serving_url,
    )


def _service(
    stack: StackSettings, name: str, command: list[str], port: int | None = None, env: dict[str, str] | None = None
) -> Service:
    return Service(
        name=name,
        command=command,
        env={**stack_env(stack), **(env or {})},
        pid_file=stack.pids_dir / f"{name}.pid",
        log_file=stack.logs_dir / f"{name}.log",
        port=port,
        cwd=REPO_ROOT,
    )


def mlflow_service(stack: StackSettings) -> Service:
    """MLflow tracking server and registry: SQLite store (PostgreSQL and the basic-auth app in production),
    artifacts served from a local folder."""
    store = stack.mlflow_dir
    backend = database_url(stack, "mlflow")
    return _service(
        stack,
        "mlflow",
        [
            _bin("mlflow"),
            "server",
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            str(store / "artifacts"),
            "--serve-artifacts",
            "--host",
            stack.host,
            "--port",
            str(stack.mlflow_port),
            "--workers",
            str(stack.mlflow_workers),
            *(["--app-name", "basic-auth"] if stack.production else []),
        ],
        port=stack.mlflow_port,
        env=mlflow_auth.server_env(stack) if stack.production else None,
    )


def airflow_services(stack: StackSettings) -> list[Service]:
    """Airflow's components, each its own process, as in a real deployment."""
    services = []
    for component in AIRFLOW_COMPONENTS:
        command = [_bin("airflow"), component]
        if component == "api-server":
            command += ["--port", str(stack.airflow_port), "--host", stack.host]
        services.append(
            _service(
                stack, f"airflow-{component}", command, port=stack.airflow_port if component == "api-server" else None
            )
        )
    return services


def worker_name(stack: StackSettings, index: int) -> str:
    """Celery worker ``index``'s name (prefixed: stacks sharing one Redis tell their workers apart)."""
    return f"{stack.db_prefix}-worker-{index}"


def celery_workers(stack: StackSettings) -> list[Service]:
    """The production profile's Celery workers, each its own process with its own log server port."""
    if not stack.production:
        return []
    workers = []
    for index in range(1, stack.celery_workers + 1):
        name = worker_name(stack, index)
        log_port = stack.worker_log_port + index - 1
        command = [_bin("airflow"), "celery", "worker", "--concurrency", str(stack.celery_concurrency)]
        command += ["--queues", stack.celery_queue, "--celery-hostname", f"{name}@%h"]
        env = {"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_port), "STACK_WORKER_NAME": name}
        workers.append(_service(stack, f"airflow-{name}", command, port=log_port, env=env))
    return workers


def serving_service(stack: StackSettings) -> Service:
    """The prediction service: the champion of every dataset; ``POST /predict`` is the stack's ``serving_dataset``."""
    return _service(
        stack,
        "serving",
        [
            sys.executable,
            "-m",
            "pipelines.serving",
            "--default-dataset",
            stack.serving_dataset,
            "--host",
            stack.host,
            "--port",
            str(stack.serving_port),
            "--workers",
            str(stack.serving_workers),
        ],
        port=stack.serving_port,
        env=(
            {
                **mlflow_auth.client_env(stack, mlflow_auth.SERVING),  # MLflow: read only
                "MLOPS_WAREHOUSE_URL": database_url(stack, "warehouse", "serving"),  # the log, digests, audit inserts
            }
            if stack.production
            else None
        ),
    )


def all_services(stack: StackSettings) -> list[Service]:
    """Every service of the stack, in start order."""
    return [mlflow_service(stack), serving_service(stack), *airflow_services(stack), *celery_workers(stack)]


def _write_passwords(stack: StackSettings) -> None:
    made = ensure_passwords(stack)
    if made:
        sys.stdout.write(accounts_text(stack, made))
        sys.stdout.flush()


def _run_airflow_command(stack: StackSettings, what: str, command: list[str], env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        command,
        env={**stack_env(stack), **(env or {})},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if out.returncode != 0:
        raise StackError(f"{what} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return out.stdout


def _migrate_airflow(stack: StackSettings) -> None:
    log.info("airflow db migrate (metadata database in %s)", stack.airflow_home)
    _run_airflow_command(stack, "airflow db migrate", [_bin("airflow"), "db", "migrate"])


def sync_accounts(stack: StackSettings) -> None:
    """Production: give the people file's accounts, with the passwords of the runtime folder's file, to FAB's user
    store (``python -m pipelines.stack accounts`` in a process with Airflow's environment)."""
    log.info("Airflow accounts from %s (FAB auth manager)", stack.people_file)
    command = [sys.executable, "-m", "pipelines.stack", "accounts"]
    admin = {"AIRFLOW_ADMIN_PASSWORD": stack.airflow_admin_password} if stack.airflow_admin_password else {}
    sys.stdout.write(_run_airflow_command(stack, "creating Airflow's accounts", command, admin))
    sys.stdout.flush()


def mlflow_healthy(stack: StackSettings) -> bool:
    """Whether the MLflow server answers its health check."""
    return httpx.get(f"{stack.mlflow_url}/health", timeout=2).status_code == 200


def serving_healthy(stack: StackSettings) -> bool:
    """Whether the prediction service answers (it may have no champion to serve yet)."""
    return httpx.get(f"{stack.serving_url}/health", timeout=2).status_code == 200


def airflow_healthy(stack: StackSettings) -> bool:
    """Whether the api-server answers and reports a healthy scheduler, dag-processor and metadata database."""
    response = httpx.get(f"{stack.airflow_url}/api/v2/monitor/health", timeout=3)
    if response.status_code != 200:
        return False
    health = response.json()
    return all(
        health.get(part, {}).get("status") == "healthy" for part in ("metadatabase", "scheduler", "dag_processor")
    )


def workers_answering(stack: StackSettings, timeout: float = 2.0) -> set[str]:
    """Names of this stack's Celery workers that answer a ping over the broker."""
    from celery import Celery

    app = Celery(broker=stack.redis_url)
    try:
        replies = app.control.ping(timeout=timeout) or []
    finally:
        app.close()
    answering = {name.split("@", 1)[0] for reply in replies for name in reply}
    return answering & {worker_name(stack, i) for i in range(1, stack.celery_workers + 1)}


def up(stack: StackSettings, timeout: float = 240.0) -> None:
    """Start (or keep) every service and wait until all are healthy; idempotent."""
    stack.home.mkdir(parents=True, exist_ok=True)
    if stack.production:
        databases.check_broker(stack)
        databases.ensure_databases(stack)
    mlflow = mlflow_service(stack)
    serving = serving_service(stack)
    airflow = airflow_services(stack) + celery_workers(stack)
    mlflow.start()
    serving.start()  # it waits for the registry on its own
    _write_passwords(stack)
    if all(s.pid() is None for s in airflow):
        _migrate_airflow(stack)
        if stack.production:
            sync_accounts(stack)
    for service in airflow:
        service.start()
    wait_until(lambda: mlflow_healthy(stack), f"MLflow at {stack.mlflow_url}", timeout, [mlflow])
    if stack.production:
        mlflow_auth.ensure_users(stack)
    wait_until(lambda: serving_healthy(stack), f"the prediction service at {stack.serving_url}", timeout, [serving])
    wait_until(lambda: airflow_healthy(stack), f"Airflow at {stack.airflow_url}", timeout, airflow)
    if stack.production:
        wanted = stack.celery_workers
        wait_until(lambda: len(workers_answering(stack)) == wanted, f"{wanted} Celery workers", timeout, airflow)
    log.info(
        "stack up (%s): MLflow %s, Airflow %s, prediction service %s",
        stack.profile,
        stack.mlflow_url,
        stack.airflow_url,
        stack.serving_url,
    )


def down(stack: StackSettings) -> list[str]:
    """Stop every service the stack started (Airflow first); returns the names of those that were running."""
    stopped = [s.name for s in reversed(all_services(stack)) if s.stop()]
    return stopped


def status(stack: StackSettings) -> dict[str, str]:
    """Each service's pid or ``stopped``."""
    return {s.name: (f"running (pid {pid})" if (pid := s.pid()) else "stopped") for s in all_services(stack)}
