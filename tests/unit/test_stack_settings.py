"""The stack's settings: read from the documented variables only, never from look-alikes such as $HOME."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.settings import REPO_ROOT
from pipelines.stack.settings import StackSettings


def test_defaults_keep_state_in_the_repository_runtime_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a shell whose HOME and HOST are set, as every shell's are, and no stack variables
    for name in ("MLOPS_HOME", "MLFLOW_PORT", "AIRFLOW_PORT", "STACK_HOST", "AIRFLOW_ADMIN_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/somewhere/else")
    monkeypatch.setenv("HOST", "example.org")
    # when the settings are read, then the defaults hold
    stack = StackSettings()
    assert stack.home == REPO_ROOT / "runtime"
    assert stack.mlflow_url == "http://127.0.0.1:5000" and stack.airflow_url == "http://127.0.0.1:8080"
    assert stack.airflow_admin_password == "" and stack.demo_approval == "api"


def test_documented_variables_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # given the variables the README documents
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_PORT", "5123")
    monkeypatch.setenv("AIRFLOW_PORT", "8123")
    monkeypatch.setenv("AIRFLOW_ADMIN_PASSWORD", "s3cret")
    monkeypatch.setenv("DEMO_APPROVAL", "ui")
    # when the settings are read, then each is taken
    stack = StackSettings()
    assert stack.home == tmp_path and stack.airflow_home == tmp_path / "airflow"
    assert stack.mlflow_url.endswith(":5123") and stack.airflow_url.endswith(":8123")
    assert stack.airflow_admin_password == "s3cret" and stack.demo_approval == "ui"


def test_bad_values_are_refused_with_the_variable_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_PORT", "not-a-port")
    with pytest.raises(ValueError, match="AIRFLOW_PORT"):
        StackSettings()
