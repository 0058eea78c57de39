"""MLflow's own ``basic-auth`` app in the production profile: three accounts, anonymous requests get 401.

- ``admin`` (an MLflow admin: users and permissions), its password from ``MLFLOW_AUTH_ADMIN_PASSWORD`` or generated;
- ``pipeline``: what Airflow's tasks and the steps run as; it creates the experiments and registered models, so it
  holds MANAGE on them (MLflow gives a resource's creator MANAGE);
- ``serving``: the prediction service, READ only (``default_permission = READ``: it can read every experiment
  and model, change none).

Passwords come from the environment (compose: ``.env``) or are generated on the first start and kept 0600 in
``<runtime>/mlflow/accounts.json`` (the Flask secret the auth app needs for CSRF beside it), never in YAML, code,
logs or MLflow. The users and permissions live in their
own database, ``<prefix>_mlflow_auth``. The embedded profile runs MLflow without authentication, on loopback only.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path

import httpx

from pipelines.stack import db_roles
from pipelines.stack.processes import StackError
from pipelines.stack.settings import StackSettings

log = logging.getLogger(__name__)

ADMIN, PIPELINE, SERVING = "admin", "pipeline", "serving"
ACCOUNTS = (ADMIN, PIPELINE, SERVING)
AUTH_CACHE_SECONDS = 60


def accounts_file(stack: StackSettings) -> Path:
    return stack.mlflow_dir / "accounts.json"


def accounts(stack: StackSettings) -> dict[str, str]:
    """Each account's password: ``MLFLOW_AUTH_ADMIN_PASSWORD``, ``MLFLOW_PIPELINE_PASSWORD`` and
    ``MLFLOW_SERVING_PASSWORD`` when set (compose passes them from ``.env``; the auth app reads the admin's only when
    it creates the admin, on its first start), else generated once and kept 0600 in the runtime folder."""
    given = {
        ADMIN: stack.mlflow_admin_password,
        PIPELINE: stack.mlflow_pipeline_password,
        SERVING: stack.mlflow_serving_password,
    }
    if all(given.values()):
        return given
    path = accounts_file(stack)
    kept: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
    wanted = {name: given[name] or kept.get(name) or secrets.token_urlsafe(18) for name in ACCOUNTS}
    if wanted != kept:
        _write_private(path, json.dumps(wanted, indent=2))
    return wanted


def _flask_secret(stack: StackSettings) -> str:
    """The auth app's CSRF secret (every MLflow worker must share it), generated once and kept 0600."""
    path = stack.mlflow_dir / "flask_secret"
    if not path.is_file():
        _write_private(path, secrets.token_urlsafe(32))
    return path.read_text().strip()


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)


def config_file(stack: StackSettings) -> Path:
    """The auth app's ini, 0600 (its database URL may hold the PostgreSQL password; the admin password and the
    Flask secret go by environment)."""
    path = stack.mlflow_dir / "basic_auth.ini"
    _write_private(
        path,
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {db_roles.role_url(stack, 'mlflow_auth')}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Without it every request pays a PBKDF2 check of its password (a training task makes hundreds): a
        # password change or removal then reaches the other workers within this many seconds.
        f"auth_cache_ttl_seconds = {AUTH_CACHE_SECONDS}\n",
    )
    return path


def server_env(stack: StackSettings) -> dict[str, str]:
    """What the MLflow server needs to run the auth app."""
    passwords = accounts(stack)
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(config_file(stack)),
        "MLFLOW_AUTH_ADMIN_PASSWORD": passwords[ADMIN],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": _flask_secret(stack),
    }


def client_env(stack: StackSettings, account: str) -> dict[str, str]:
    """The credentials MLflow's client sends (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``) for ``account``."""
    return {"MLFLOW_TRACKING_USERNAME": account, "MLFLOW_TRACKING_PASSWORD": accounts(stack)[account]}


def ensure_users(stack: StackSettings, mlflow_url: str | None = None) -> list[str]:
    """Create the pipeline and serving accounts where absent (as the admin); the names created."""
    passwords = accounts(stack)
    admin = httpx.BasicAuth(ADMIN, passwords[ADMIN])
    api = f"{mlflow_url or stack.mlflow_url}/api/2.0/mlflow/users"
    created = []
    with httpx.Client(auth=admin, timeout=10) as http:
        for name in (PIPELINE, SERVING):
            found = http.get(f"{api}/get", params={"username": name})
            if found.status_code == 200:
                continue
            if found.status_code == 401:
                raise StackError(
                    f"MLflow refuses the admin password kept in {accounts_file(stack)} (401): set "
                    "MLFLOW_AUTH_ADMIN_PASSWORD to the admin's current password"
                )
            made = http.post(f"{api}/create", json={"username": name, "password": passwords[name]})
            if made.status_code != 200:
                raise StackError(f"creating the MLflow account {name!r} failed: {made.status_code} {made.text[:300]}")
            created.append(name)
    if created:
        log.info("MLflow accounts created: %s (passwords in %s)", ", ".join(created), accounts_file(stack))
    return created
