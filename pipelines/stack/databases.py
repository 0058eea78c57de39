"""The production profile's PostgreSQL databases (Airflow metadata, MLflow store, warehouse) and its Redis broker.

``python -m pipelines.stack databases`` creates the databases if absent, and a login role per service
(``pipelines.stack.db_roles``): the native ``make up-prod-local`` and the compose file's ``db-init`` service run the
same code.
"""

from __future__ import annotations

import logging
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from pipelines.stack import db_roles
from pipelines.stack.processes import StackError
from pipelines.stack.settings import StackSettings

log = logging.getLogger(__name__)

PURPOSES: tuple[Literal["airflow", "mlflow", "mlflow_auth", "warehouse"], ...] = (
    "airflow",
    "mlflow",
    "mlflow_auth",  # MLflow's users and permissions (the basic-auth app)
    "warehouse",
)


def _admin_engine(stack: StackSettings) -> sa.Engine:
    url = make_url(stack.postgres_url).set(drivername="postgresql+psycopg2")
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=True, poolclass=sa.NullPool)


def _existing(conn: sa.Connection) -> set[str]:
    return set(conn.execute(sa.text("SELECT datname FROM pg_database")).scalars())


def ensure_databases(stack: StackSettings) -> list[str]:
    """Create the profile's databases where absent; returns the names created (idempotent)."""
    engine = _admin_engine(stack)
    created = []
    try:
        with engine.connect() as conn:
            existing = _existing(conn)
            for purpose in PURPOSES:
                name = stack.database_name(purpose)
                if name not in existing:
                    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
                    created.append(name)
    except sa.exc.OperationalError as exc:
        raise StackError(
            f"cannot reach PostgreSQL at {make_url(stack.postgres_url).render_as_string(hide_password=True)} "
            f"(STACK_POSTGRES_URL): {str(exc.orig).strip()}"
        ) from exc
    finally:
        engine.dispose()
    engine = _admin_engine(stack)
    try:
        db_roles.ensure_roles(stack, engine)
    finally:
        engine.dispose()
    log.info(
        "databases: %s (created: %s)",
        ", ".join(stack.database_name(p) for p in PURPOSES),
        ", ".join(created) or "none, all there",
    )
    return created


def drop_databases(stack: StackSettings) -> list[str]:
    """Drop the profile's databases, closing other sessions on them; returns the names dropped."""
    engine = _admin_engine(stack)
    dropped = []
    try:
        with engine.connect() as conn:
            existing = _existing(conn)
            for purpose in PURPOSES:
                name = stack.database_name(purpose)
                if name in existing:
                    conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
                    dropped.append(name)
        db_roles.drop_roles(stack, engine)
    finally:
        engine.dispose()
    return dropped


def check_broker(stack: StackSettings, timeout: float = 3.0) -> None:
    """Fail with a clear message when the Redis broker does not answer a PING."""
    import redis

    try:
        redis.Redis.from_url(stack.redis_url, socket_connect_timeout=timeout, socket_timeout=timeout).ping()
    except redis.RedisError as exc:
        raise StackError(f"cannot reach the Redis broker at {stack.redis_url} (STACK_REDIS_URL): {exc}") from exc


def drop_queue(stack: StackSettings) -> int:
    """Delete this stack's Celery queue from Redis (tasks never taken, the queue's binding); returns keys deleted."""
    import redis

    client = redis.Redis.from_url(stack.redis_url)
    try:
        queue = stack.celery_queue
        return int(client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"))
    finally:
        client.close()
