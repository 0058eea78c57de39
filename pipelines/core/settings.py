"""Environment settings: where state lives and how to reach the services.

Read once from environment variables prefixed ``MLOPS_`` (e.g. ``MLOPS_WAREHOUSE_URL``). Everything the
datasets have in common lives here; everything about one dataset lives in its YAML config.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    """Where runtime state lives and which services the steps talk to."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_", extra="forbid", frozen=True)

    home: Path = Field(REPO_ROOT / "runtime", description="Git-ignored folder for all runtime state.")
    warehouse_url: str = Field("", description="SQLAlchemy URL of the warehouse; default a SQLite file in home.")
    mlflow_tracking_uri: str = "http://127.0.0.1:5000"
    mlflow_ui_url: str = Field("", description="Public MLflow URL for links; default the tracking URI.")
    airflow_ui_url: str = "http://127.0.0.1:8080"
    serving_url: str = Field("", description="Prediction service that deploy tells to switch; empty: none runs.")
    serving_admin_token: str = Field(
        "", description="Bearer token for the service's /admin endpoints; empty: no token (loopback only)."
    )
    datasets_dir: Path = REPO_ROOT / "pipelines" / "conf" / "datasets"
    people_file: Path = Field(
        REPO_ROOT / "pipelines" / "conf" / "people.yaml", description="Who uses the Airflow UI, with which role."
    )
    notifications_file: Path = Field(
        REPO_ROOT / "pipelines" / "conf" / "notifications.yaml",
        description="Where notifications go (log, SMTP, webhooks) and which kinds each channel receives.",
    )
    expectations_dir: Path = REPO_ROOT / "expectations"
    # Set by `python -m pipelines.serving --workers N` for its worker processes (not by hand):
    serving_workers_dir: Path | None = Field(None, description="The folder the service's workers share.")
    serving_default_dataset: str = Field("", description="The default dataset of the service's workers.")

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        if not self.warehouse_url:
            object.__setattr__(self, "warehouse_url", f"sqlite:///{self.home / 'warehouse.db'}")
        if not self.mlflow_ui_url:
            object.__setattr__(self, "mlflow_ui_url", self.mlflow_tracking_uri)
        return self

    @property
    def data_dir(self) -> Path:
        """Partitioned snapshots: ``data/<dataset>/<run key>/``."""
        return self.home / "data"

    @property
    def gx_dir(self) -> Path:
        """Great Expectations project (Data Docs, validation results)."""
        return self.home / "gx"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, validated once."""
    return Settings()
