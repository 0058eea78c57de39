"""Real stacks and the loop's usual moves, shared by the integration tests.

``running_stack`` starts MLflow, the prediction service and Airflow on free ports in a temporary runtime folder
(the embedded default; ``profile="production"``: the production topology on uniquely named PostgreSQL databases,
dropped after) and stops them after; ``pointed_at`` points this process's pipeline settings at a stack for a
while. ``write_dataset`` writes a copy of the shipped flights config under another name, so that tests which
change state (models, aliases, monitoring history) each have their own. ``train_champion``, ``replay_days`` and
``start_service`` are the chain, the traffic and the service as the demo runs them.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url

from pipelines.core.runs import RunContext
from pipelines.core.settings import Settings
from pipelines.stack import databases, services
from pipelines.stack.processes import Service, free_port, port_is_free, wait_until
from pipelines.stack.settings import StackSettings
from tests.conftest import REPO_ROOT

SHIPPED_CONFIG = REPO_ROOT / "pipelines" / "conf" / "datasets" / "flights.yaml"

Profile = str


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (one log server port per Celery worker)."""
    while True:
        first = free_port()
        if first + count <= 65535 and all(port_is_free(first + i) for i in range(count)):
            return first


def make_stack_settings(
    home: Path, datasets_dir: Path | None = None, profile: Profile = "embedded", notifications_file: Path | None = None
) -> StackSettings:
    """Stack settings on ports nothing else uses, with state under ``home`` (and, in production, own databases)."""
    values: dict[str, object] = {
        "MLOPS_PROFILE": profile,
        "MLOPS_HOME": home,
        "MLFLOW_PORT": free_port(),
        "AIRFLOW_PORT": free_port(),
        "SERVING_PORT": free_port(),
        "AIRFLOW_WORKER_LOG_PORT": _free_ports(2),
        "AIRFLOW_TRIGGER_LOG_PORT": free_port(),
        "AIRFLOW_ADMIN_PASSWORD": "test-password",
    }
    if profile == "production":
        values["STACK_DB_PREFIX"] = f"mlops_test_{secrets.token_hex(4)}"
    if datasets_dir is not None:
        values["MLOPS_DATASETS_DIR"] = datasets_dir
    if notifications_file is not None:
        values["MLOPS_NOTIFICATIONS_FILE"] = notifications_file
    return StackSettings(**values, mlflow_workers=1)  # type: ignore[arg-type]


def production_services_missing(stack: StackSettings | None = None) -> str | None:
    """Why the production topology cannot run here (PostgreSQL or Redis not listening), or None."""
    stack = stack or StackSettings(MLOPS_PROFILE="production")  # type: ignore[call-arg]
    pg, redis = make_url(stack.postgres_url), make_url(stack.redis_url)
    for what, host, port, var in (
        ("PostgreSQL", pg.host or "127.0.0.1", pg.port or 5432, "STACK_POSTGRES_URL"),
        ("Redis", redis.host or "127.0.0.1", redis.port or 6379, "STACK_REDIS_URL"),
    ):
        try:
            socket.create_connection((host, port), timeout=2).close()
        except OSError as exc:
            return f"{what} is not running at {host}:{port} ({var}): {exc}"
    return None


def env_for(stack: StackSettings) -> dict[str, str]:
    """The environment a user of this stack has (what ``make demo`` would read)."""
    env = services.stack_env(stack)
    env.update(
        {
            "MLFLOW_PORT": str(stack.mlflow_port),
            "AIRFLOW_PORT": str(stack.airflow_port),
            "SERVING_PORT": str(stack.serving_port),
            "AIRFLOW_WORKER_LOG_PORT": str(stack.worker_log_port),
            "AIRFLOW_TRIGGER_LOG_PORT": str(stack.trigger_log_port),
            "AIRFLOW_ADMIN_PASSWORD": stack.airflow_admin_password,
        }
    )
    return env


@contextmanager
def running_stack(
    home: Path, datasets_dir: Path | None = None, profile: Profile = "embedded", notifications_file: Path | None = None
) -> Iterator[StackSettings]:
    """Start MLflow, the prediction service and Airflow for real; stop them (and drop production databases) after."""
    stack = make_stack_settings(home, datasets_dir, profile, notifications_file)
    try:
        services.up(stack, timeout=300)
        yield stack
    finally:
        services.down(stack)
        if stack.production:
            databases.drop_databases(stack)
            databases.drop_queue(stack)


@contextmanager
def pointed_at(stack: StackSettings, serving_url: str | None = None) -> Iterator[Settings]:
    """This process's pipeline settings (``MLOPS_*``) pointed at ``stack`` for the block, restored after.

    ``serving_url`` names the prediction service the steps talk to (default: the stack's own; ``""``: none).
    """
    from pipelines.core.settings import get_settings

    saved = dict(os.environ)
    try:
        os.environ.update(
            {k: v for k, v in services.stack_env(stack).items() if k.startswith(("MLOPS_", "MLFLOW_TRACKING_"))}
        )
        if serving_url is not None:
            os.environ["MLOPS_SERVING_URL"] = serving_url
        get_settings.cache_clear()
        yield get_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


def write_dataset(folder: Path, name: str, *, table: str, model: str, **sections: dict[str, Any]) -> Path:
    """A copy of the shipped flights config named ``name``: its own source table, registered model and experiments.

    Monitoring runs on demand only (no daily run for today's empty window). ``sections`` update the config's
    top-level sections (``approval={"mode": "manual", "timeout_minutes": 1}``).
    """
    config = yaml.safe_load(SHIPPED_CONFIG.read_text())
    config["name"] = name
    config["source"]["table"] = table
    config["model"].update(registered_name=model, experiment=name)
    config["monitoring"]["schedule"] = None
    config["monitoring"]["experiment"] = f"{name}-monitoring"
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def train_champion(
    dataset: str, run: RunContext, start: str, end: str, at: datetime, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The train DAG's chain through the steps: extract, validate, train, evaluate, gate and, when the gate passes,
    approval by policy and deploy. Returns every step's result by step name (no ``deploy`` when the gate failed)."""
    from pipelines import steps

    snapshot = steps.extract(dataset, run, start, end, overrides)
    validation = steps.validate(dataset, run, snapshot, overrides)
    trained = steps.train(dataset, run, snapshot, validation, overrides)
    evaluation = steps.evaluate(dataset, run, snapshot, trained, overrides)
    gate = steps.gate(dataset, run, trained, evaluation, validation, at, overrides)
    chain = {"snapshot": snapshot, "validation": validation, "trained": trained, "evaluation": evaluation, "gate": gate}
    if gate["passed"]:
        chain["approval"] = steps.record_approval(
            dataset,
            run,
            trained,
            status="approved",
            decided_by="policy",
            decided_at=at,
            mode="auto",
            overrides=overrides,
        )
        chain["deploy"] = steps.deploy(dataset, run, trained, snapshot, at, overrides)
    return chain


def drained(serving_url: str) -> bool:
    """Whether the prediction service has written every answered record to the prediction log."""
    return int(httpx.get(f"{serving_url}/models", timeout=5).json()["prediction_log"]["queued"]) == 0


def replay_days(dataset: str, run: RunContext, start: date, end: date, serving_url: str) -> dict[str, Any]:
    """Replay ``[start, end)`` through the service at ``serving_url`` (every record answered), wait for its log."""
    from pipelines import steps

    replayed = steps.replay(dataset, run, start, end)
    assert replayed["rejected"] == 0 and replayed["answered"] == replayed["records"], replayed
    wait_until(lambda: drained(serving_url), "the prediction log to be written", 60)
    return replayed


def start_service(
    env: dict[str, str], home: Path, dataset: str, name: str = "serving", workers: int = 1
) -> tuple[Service, str]:
    """The prediction service as ``make demo`` starts it (every dataset of the environment's folder, ``dataset`` the
    default), on a free port, once ready: the service and its URL."""
    port = free_port()
    service = Service(
        name=name,
        command=[
            sys.executable,
            "-m",
            "pipelines.serving",
            "--default-dataset",
            dataset,
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        pid_file=home / f"{name}.pid",
        log_file=home / f"{name}.log",
        port=port,
        cwd=REPO_ROOT,
    )
    service.start()
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{url}/ready", timeout=2).status_code == 200, f"{name} to be ready", 120, [service])
    return service, url


def service_env(stack: StackSettings) -> dict[str, str]:
    """The environment of a prediction service (or a step) of ``stack``, without Airflow's settings."""
    return {k: v for k, v in services.stack_env(stack).items() if not k.startswith("AIRFLOW__")}


def fab_accounts(airflow_db_url: str) -> list[tuple[str, str, bool]]:
    """FAB's accounts in an Airflow metadata database: (login, role, active), by login."""
    engine = sa.create_engine(airflow_db_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT u.username, r.name, u.active FROM ab_user u JOIN ab_user_role ur ON ur.user_id = u.id "
                    "JOIN ab_role r ON r.id = ur.role_id ORDER BY u.username"
                )
            ).all()
    finally:
        engine.dispose()
    return [(str(r[0]), str(r[1]), bool(r[2])) for r in rows]
