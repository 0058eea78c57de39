"""Least privilege in the production profile's PostgreSQL: one login role per service, each owning only its data.

- ``<prefix>_airflow`` owns the database ``<prefix>_airflow`` (metadata, Celery results);
- ``<prefix>_mlflow`` owns ``<prefix>_mlflow`` and ``<prefix>_mlflow_auth``;
- ``<prefix>_pipeline`` owns ``<prefix>_warehouse`` (every table: sources, audit trail, ground truth...);
- ``<prefix>_serving`` owns nothing; in the warehouse it may INSERT and SELECT the prediction log, SELECT the
  approved artifact digests, and INSERT (never DELETE or UPDATE) into the audit trail.

Nobody else may connect to a database (``CONNECT`` revoked from ``PUBLIC``): the service cannot read Airflow's
metadata or MLflow's store, nor change ground truth, sources or the audit trail. The tables the service touches are
created by the pipeline role when the databases are set up, so the service needs no right to create anything.
Passwords come from ``POSTGRES_<ROLE>_PASSWORD`` (compose: ``.env``) or are generated once and kept 0600 in the
runtime folder. ``python -m pipelines.stack databases`` (``make up-prod-local``, compose's ``db-init``) applies it all,
idempotently.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from pipelines.stack.settings import StackSettings

log = logging.getLogger(__name__)

Role = Literal["airflow", "mlflow", "pipeline", "serving"]
ROLES: tuple[Role, ...] = ("airflow", "mlflow", "pipeline", "serving")
OWNED: dict[Role, tuple[str, ...]] = {
    "airflow": ("airflow",),
    "mlflow": ("mlflow", "mlflow_auth"),
    "pipeline": ("warehouse",),
    "serving": (),
}
# Who reaches each database, as whom, by default.
DEFAULT_ROLE: dict[str, Role] = {
    "airflow": "airflow",
    "mlflow": "mlflow",
    "mlflow_auth": "mlflow",
    "warehouse": "pipeline",
}


def role_name(stack: StackSettings, role: Role) -> str:
    return f"{stack.db_prefix}_{role}"


def passwords_file(stack: StackSettings) -> Path:
    return stack.home / "postgres_roles.json"


def passwords(stack: StackSettings) -> dict[str, str]:
    """Each role's password: ``POSTGRES_<ROLE>_PASSWORD`` when set, else generated once and kept 0600."""
    given: dict[str, str] = {role: stack.postgres_role_passwords.get(role, "") for role in ROLES}
    if all(given.values()):
        return given
    path = passwords_file(stack)
    kept: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
    wanted: dict[str, str] = {role: given[role] or kept.get(role) or secrets.token_urlsafe(18) for role in ROLES}
    if wanted != kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(wanted, handle, indent=2)
        path.chmod(0o600)
    return wanted


def role_url(stack: StackSettings, purpose: str, role: Role | None = None) -> str:
    """The URL of ``purpose``'s database as ``role`` (by default the role that owns it)."""
    who = role or DEFAULT_ROLE[purpose]
    url = make_url(stack.database_url(purpose)).set(username=role_name(stack, who), password=passwords(stack)[who])  # type: ignore[arg-type]
    return url.render_as_string(hide_password=False)


def ensure_roles(stack: StackSettings, admin: sa.Engine) -> None:
    """Create or update the login roles, hand each its databases, and close every database to ``PUBLIC``."""
    secret = passwords(stack)
    with admin.connect() as conn:
        existing = set(conn.execute(sa.text("SELECT rolname FROM pg_roles")).scalars())
        for role in ROLES:
            name = role_name(stack, role)
            verb = "ALTER" if name in existing else "CREATE"
            conn.execute(sa.text(f'{verb} ROLE "{name}" LOGIN PASSWORD :password'), {"password": secret[role]})
            for purpose in OWNED[role]:
                database = stack.database_name(purpose)
                conn.execute(sa.text(f'ALTER DATABASE "{database}" OWNER TO "{name}"'))
        for purpose in DEFAULT_ROLE:
            conn.execute(sa.text(f'REVOKE CONNECT, TEMPORARY ON DATABASE "{stack.database_name(purpose)}" FROM PUBLIC'))
        conn.execute(
            sa.text(
                f'GRANT CONNECT ON DATABASE "{stack.database_name("warehouse")}" TO "{role_name(stack, "serving")}"'
            )
        )
    _prepare_warehouse(stack)
    log.info("PostgreSQL roles: %s", ", ".join(role_name(stack, r) for r in ROLES))


def _prepare_warehouse(stack: StackSettings) -> None:
    """As the pipeline role: create the tables the service uses, and grant the service exactly what it needs."""
    from pipelines.core.artifact_digests import digest_table
    from pipelines.core.audit import audit_table
    from pipelines.serving.prediction_log import create_table

    engine = sa.create_engine(role_url(stack, "warehouse"), poolclass=sa.NullPool)
    try:
        create_table(engine)
        for table in (digest_table, audit_table):
            table.metadata.create_all(engine, tables=[table])
        serving = role_name(stack, "serving")
        with engine.begin() as conn:
            # nothing the pipeline owned before the service's grants below is left open to it
            conn.execute(sa.text(f'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "{serving}"'))
            conn.execute(sa.text(f'GRANT SELECT, INSERT ON prediction_log TO "{serving}"'))
            # the log's intake: the service stores requests there and, when idle, turns them into records
            conn.execute(sa.text(f'GRANT SELECT, INSERT, DELETE ON prediction_requests TO "{serving}"'))
            conn.execute(sa.text(f'GRANT SELECT ON {digest_table.name} TO "{serving}"'))
            conn.execute(sa.text(f'GRANT SELECT, INSERT ON {audit_table.name} TO "{serving}"'))
            conn.execute(sa.text(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{serving}"'))
    finally:
        engine.dispose()


def drop_roles(stack: StackSettings, admin: sa.Engine) -> list[str]:
    """Drop the profile's roles (their databases dropped first); the names dropped."""
    dropped = []
    with admin.connect() as conn:
        existing = set(conn.execute(sa.text("SELECT rolname FROM pg_roles")).scalars())
        for role in ROLES:
            name = role_name(stack, role)
            if name in existing:
                conn.execute(sa.text(f'DROP ROLE "{name}"'))
                dropped.append(name)
    return dropped
