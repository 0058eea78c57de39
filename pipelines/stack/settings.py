"""How the local stack is laid out: ports, runtime folder, Airflow login. Read once from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines.settings import REPO_ROOT


class StackSettings(BaseSettings):
    """Ports and folders of the services ``make demo`` starts (``MLFLOW_PORT``, ``AIRFLOW_PORT``, ...)."""

    # Only the documented upper-case names are read, from the environment or as keyword arguments. No
    # populate_by_name: the lookup ignores case, so the field name ``home`` would read $HOME.
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    home: Path = Field(REPO_ROOT / "runtime", validation_alias="MLOPS_HOME")
    datasets_dir: Path = Field(REPO_ROOT / "pipelines" / "conf" / "datasets", validation_alias="MLOPS_DATASETS_DIR")
    host: str = Field("127.0.0.1", validation_alias="STACK_HOST")
    mlflow_port: int = Field(5000, ge=1, le=65535, validation_alias="MLFLOW_PORT")
    airflow_port: int = Field(8080, ge=1, le=65535, validation_alias="AIRFLOW_PORT")
    serving_port: int = Field(8000, ge=1, le=65535, validation_alias="SERVING_PORT")
    worker_log_port: int = Field(8793, ge=1, le=65535, validation_alias="AIRFLOW_WORKER_LOG_PORT")
    trigger_log_port: int = Field(8794, ge=1, le=65535, validation_alias="AIRFLOW_TRIGGER_LOG_PORT")
    airflow_admin_user: str = "admin"
    airflow_admin_password: str = Field(
        "",
        validation_alias="AIRFLOW_ADMIN_PASSWORD",
        description="Empty: generate one on first start and keep it in the runtime folder.",
    )
    airflow_parallelism: int = Field(4, ge=1, description="Task slots: 2 cores here, tasks mostly wait on I/O.")
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
