"""A real stack (MLflow server + Airflow) for tests: free ports, a temporary runtime folder, torn down after.

``running_stack`` starts the embedded default; with ``profile="production"`` it starts the production topology
(PostgreSQL, Redis, CeleryExecutor, two workers) on databases named uniquely for the test, dropped after.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url

from pipelines.stack import databases, services
from pipelines.stack.processes import free_port, port_is_free
from pipelines.stack.settings import StackSettings

Profile = str


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (one log server port per Celery worker)."""
    while True:
        first = free_port()
        if first + count <= 65535 and all(port_is_free(first + i) for i in range(count)):
            return first


def make_stack_settings(home: Path, datasets_dir: Path | None = None, profile: Profile = "embedded") -> StackSettings:
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
    home: Path, datasets_dir: Path | None = None, profile: Profile = "embedded"
) -> Iterator[StackSettings]:
    """Start MLflow and Airflow for real, point this process's pipeline settings at them, stop them after."""
    from pipelines.core.settings import get_settings

    stack = make_stack_settings(home, datasets_dir, profile)
    saved = dict(os.environ)
    try:
        services.up(stack, timeout=300)
        os.environ.update({k: v for k, v in services.stack_env(stack).items() if k.startswith("MLOPS_")})
        get_settings.cache_clear()
        yield stack
    finally:
        services.down(stack)
        if stack.production:
            databases.drop_databases(stack)
            databases.drop_queue(stack)
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()
