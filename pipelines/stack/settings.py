"""How the local stack is laid out: ports, runtime folder, Airflow login. Read once from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines.settings import REPO_ROOT


class StackSettings(BaseSettings):
    """Ports and folders of the services ``make demo`` starts (``MLFLOW_PORT``, ``AIRFLOW_PORT``, ...)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    home: Path = Field(REPO_ROOT / "runtime", validation_alias=AliasChoices("MLOPS_HOME", "home"))
    datasets_dir: Path = Field(REPO_ROOT / "pipelines" / "conf" / "datasets",
                               validation_alias=AliasChoices("MLOPS_DATASETS_DIR", "datasets_dir"))
    host: str = Field("127.0.0.1", validation_alias=AliasChoices("STACK_HOST", "host"))
    mlflow_port: int = Field(5000, ge=1, le=65535, validation_alias=AliasChoices("MLFLOW_PORT", "mlflow_port"))
    airflow_port: int = Field(8080, ge=1, le=65535, validation_alias=AliasChoices("AIRFLOW_PORT", "airflow_port"))
    worker_log_port: int = Field(8793, ge=1, le=65535, validation_alias=AliasChoices("AIRFLOW_WORKER_LOG_PORT",
                                                                                    "worker_log_port"))
    trigger_log_port: int = Field(8794, ge=1, le=65535, validation_alias=AliasChoices("AIRFLOW_TRIGGER_LOG_PORT",
                                                                                     "trigger_log_port"))
    airflow_admin_user: str = "admin"
    airflow_admin_password: str = Field(
        "", validation_alias=AliasChoices("AIRFLOW_ADMIN_PASSWORD", "airflow_admin_password"),
        description="Empty: generate one on first start and keep it in the runtime folder.",
    )
    airflow_parallelism: int = Field(4, ge=1, description="Task slots: 2 cores here, tasks mostly wait on I/O.")
    mlflow_workers: int = Field(2, ge=1)
    demo_approval: Literal["api", "ui"] = Field(
        "api", validation_alias=AliasChoices("DEMO_APPROVAL", "demo_approval"),
        description="api: the demo approves through the REST API on the user's behalf; ui: a person does.",
    )

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def airflow_url(self) -> str:
        return f"http://{self.host}:{self.airflow_port}"

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
