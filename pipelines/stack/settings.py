"""How the local stack is laid out: profile, ports, runtime folder, databases, Airflow login. Read once.

Two profiles, one switch (``MLOPS_PROFILE``):

- ``embedded`` (default): Airflow on SQLite with the LocalExecutor, MLflow and the warehouse on SQLite files in
  the runtime folder. Nothing to install beyond the lock file.
- ``production``: the topology of ``docker-compose.yaml`` with native processes: Airflow with the CeleryExecutor
  on PostgreSQL and a Redis broker, ``CELERY_WORKERS`` Celery workers, MLflow on PostgreSQL behind its basic-auth
  app, the warehouse (and the prediction log) on PostgreSQL; four databases named
  ``<STACK_DB_PREFIX>_airflow|_mlflow|_mlflow_auth|_warehouse`` on the server of ``STACK_POSTGRES_URL``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from pipelines.core.settings import REPO_ROOT


class StackSettings(BaseSettings):
    """Ports and folders of the services ``make demo`` starts (``MLFLOW_PORT``, ``AIRFLOW_PORT``, ...)."""

    # Only the documented upper-case names are read, from the environment or as keyword arguments. No
    # populate_by_name: the lookup ignores case, so the field name ``home`` would read $HOME.
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    profile: Literal["embedded", "production"] = Field(
        "embedded",
        validation_alias="MLOPS_PROFILE",
        description="embedded: SQLite + LocalExecutor; production: PostgreSQL + Redis + CeleryExecutor.",
    )
    home: Path = Field(
        REPO_ROOT / "runtime",
        validation_alias="MLOPS_HOME",
        description="Runtime folder; the production profile defaults to runtime/prod-local (its own pid files).",
    )
    datasets_dir: Path = Field(REPO_ROOT / "pipelines" / "conf" / "datasets", validation_alias="MLOPS_DATASETS_DIR")
    serving_dataset: str = Field(
        "flights",
        pattern=r"^[a-z][a-z0-9_]{0,40}$",
        validation_alias="SERVING_DATASET",
        description="The demo's dataset, and the prediction service's default (POST /predict, GET /model).",
    )
    host: str = Field("127.0.0.1", validation_alias="STACK_HOST")
    mlflow_port: int = Field(5000, ge=1, le=65535, validation_alias="MLFLOW_PORT")
    airflow_port: int = Field(8080, ge=1, le=65535, validation_alias="AIRFLOW_PORT")
    serving_port: int = Field(8000, ge=1, le=65535, validation_alias="SERVING_PORT")
    serving_workers: int = Field(
        1, ge=1, le=64, validation_alias="SERVING_WORKERS", description="Prediction service processes on its port."
    )
    worker_log_port: int = Field(8793, ge=1, le=65535, validation_alias="AIRFLOW_WORKER_LOG_PORT")
    trigger_log_port: int = Field(8794, ge=1, le=65535, validation_alias="AIRFLOW_TRIGGER_LOG_PORT")
    postgres_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/postgres",
        validation_alias="STACK_POSTGRES_URL",
        description="production: a URL to the PostgreSQL server with the right to create databases.",
    )
    db_prefix: str = Field(
        "mlops",
        pattern=r"^[a-z][a-z0-9_]{0,40}$",
        validation_alias="STACK_DB_PREFIX",
        description="production: databases <prefix>_airflow, <prefix>_mlflow, <prefix>_warehouse; Celery queue.",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias="STACK_REDIS_URL")
    celery_workers: int = Field(2, ge=1, le=16, validation_alias="CELERY_WORKERS")
    celery_concurrency: int = Field(
        2, ge=1, le=32, validation_alias="CELERY_WORKER_CONCURRENCY", description="Task slots per Celery worker."
    )
    airflow_admin_user: str = "admin"
    people_file: Path = Field(
        REPO_ROOT / "pipelines" / "conf" / "people.yaml",
        validation_alias="MLOPS_PEOPLE_FILE",
        description="The Airflow accounts and their roles (approver, operator, viewer, admin).",
    )
    notifications_file: Path = Field(
        REPO_ROOT / "pipelines" / "conf" / "notifications.yaml",
        validation_alias="MLOPS_NOTIFICATIONS_FILE",
        description="Where notifications go (log, SMTP, webhooks); the variables it names reach every process.",
    )
    airflow_admin_password: str = Field(
        "",
        validation_alias="AIRFLOW_ADMIN_PASSWORD",
        description="Empty: generate one on first start and keep it in the runtime folder.",
    )
    mlflow_admin_password: str = Field(
        "",
        validation_alias="MLFLOW_AUTH_ADMIN_PASSWORD",
        description="Production: MLflow's admin password; empty: generated on first start, kept in the runtime folder.",
    )
    postgres_airflow_password: str = Field("", validation_alias="POSTGRES_AIRFLOW_PASSWORD")
    postgres_mlflow_password: str = Field("", validation_alias="POSTGRES_MLFLOW_PASSWORD")
    postgres_pipeline_password: str = Field("", validation_alias="POSTGRES_PIPELINE_PASSWORD")
    postgres_serving_password: str = Field(
        "",
        validation_alias="POSTGRES_SERVING_PASSWORD",
        description="Production: each service's PostgreSQL role password (these four); empty: generated, kept 0600.",
    )
    mlflow_pipeline_password: str = Field(
        "", validation_alias="MLFLOW_PIPELINE_PASSWORD", description="Production: MLflow password of `pipeline`."
    )
    mlflow_serving_password: str = Field(
        "", validation_alias="MLFLOW_SERVING_PASSWORD", description="Production: MLflow password of `serving`."
    )
    airflow_parallelism: int = Field(4, ge=1, description="Task slots: 2 cores here, tasks mostly wait on I/O.")
    airflow_preload: bool = Field(
        True,
        validation_alias="AIRFLOW_PRELOAD",
        description="Import the loop's libraries once before Airflow forks its task workers (false: every task "
        "imports them itself, Airflow's default).",
    )
    mlflow_workers: int = Field(2, ge=1)
    demo_approval: Literal["api", "ui"] = Field(
        "api",
        validation_alias="DEMO_APPROVAL",
        description="api: the demo approves through the REST API on the user's behalf; ui: a person does.",
    )

    demo_replay_days: int = Field(
        84,
        ge=0,
        validation_alias="DEMO_REPLAY_DAYS",
        description="Most days replayed (and monitored) after the first deployment; 0: no replay.",
    )
    demo_days_after_switch: int = Field(
        7,
        ge=1,
        validation_alias="DEMO_DAYS_AFTER_SWITCH",
        description="Days replayed once a retrained champion serves, to show its live performance.",
    )

    @model_validator(mode="before")
    @classmethod
    def _production_home(cls, values: dict[str, object]) -> dict[str, object]:
        if values.get("MLOPS_PROFILE") == "production" and not values.get("MLOPS_HOME"):
            values = {**values, "MLOPS_HOME": REPO_ROOT / "runtime" / "prod-local"}
        return values

    @property
    def production(self) -> bool:
        return self.profile == "production"

    def database_url(self, purpose: Literal["airflow", "mlflow", "mlflow_auth", "warehouse"]) -> str:
        """SQLAlchemy URL of the database for ``purpose``: a SQLite file (embedded) or a PostgreSQL database."""
        if not self.production:
            files = {
                "airflow": self.airflow_home / "airflow.db",
                "mlflow": self.mlflow_dir / "mlflow.db",
                "mlflow_auth": self.mlflow_dir / "mlflow_auth.db",
            }
            return f"sqlite:///{files.get(purpose, self.home / 'warehouse.db')}"
        url = make_url(self.postgres_url).set(drivername="postgresql+psycopg2", database=self.database_name(purpose))
        return url.render_as_string(hide_password=False)

    def database_name(self, purpose: str) -> str:
        """The PostgreSQL database of ``purpose`` in the production profile."""
        return f"{self.db_prefix}_{purpose}"

    @property
    def postgres_role_passwords(self) -> dict[str, str]:
        """The PostgreSQL role passwords given by the environment (empty: to generate)."""
        return {
            "airflow": self.postgres_airflow_password,
            "mlflow": self.postgres_mlflow_password,
            "pipeline": self.postgres_pipeline_password,
            "serving": self.postgres_serving_password,
        }

    @property
    def celery_queue(self) -> str:
        """The queue this stack's tasks go to: stacks sharing one Redis never take each other's tasks."""
        return self.db_prefix

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def airflow_url(self) -> str:
        return f"http://{self.host}:{self.airflow_port}"

    @property
    def serving_url(self) -> str:
        return f"http://{self.host}:{self.serving_port}"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.home / "pids"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"
