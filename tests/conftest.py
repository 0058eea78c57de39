"""Shared test helpers: the repository root, and settings isolated in a temporary folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """No MLflow telemetry from the test process (no network; its thread mutates the environment)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture
def flights_config():
    """The shipped flights dataset config, as loaded by the pipeline."""
    from pipelines.core.config import load_config_file

    return load_config_file(REPO_ROOT / "pipelines" / "conf" / "datasets" / "flights.yaml")


@pytest.fixture
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings whose state (warehouse, MLflow store, snapshots, Data Docs) lives in a temporary folder."""
    from pipelines.core.settings import get_settings

    home = tmp_path / "runtime"
    monkeypatch.setenv("MLOPS_HOME", str(home))
    monkeypatch.setenv("MLOPS_MLFLOW_TRACKING_URI", f"sqlite:///{home}/mlflow.db")
    monkeypatch.setenv("MLOPS_AIRFLOW_UI_URL", "http://127.0.0.1:1")
    monkeypatch.delenv("MLOPS_WAREHOUSE_URL", raising=False)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()
