"""The LocalExecutor that imports the loop's libraries once before forking its workers."""

from __future__ import annotations

import sys

import pytest

from pipelines.stack import preloading_executor
from pipelines.stack.preloading_executor import PRELOAD_MODULES, PreloadingLocalExecutor, preload, preload_modules


def test_it_is_airflows_local_executor_and_every_default_module_exists() -> None:
    # given the executor the embedded stack configures
    from airflow.executors.local_executor import LocalExecutor

    # then it is Airflow's LocalExecutor, and every module it preloads by default can be found
    assert issubclass(PreloadingLocalExecutor, LocalExecutor)
    from importlib.util import find_spec

    missing = [name for name in PRELOAD_MODULES if find_spec(name) is None]
    assert missing == []


def test_a_module_that_cannot_be_imported_is_skipped_and_named(caplog: pytest.LogCaptureFixture) -> None:
    # given a list with a module that does not exist between two that do
    names = ("json", "pipelines_no_such_module", "csv")
    # when they are preloaded
    failed = preload(names)
    # then the missing one is named and logged, the others imported
    assert failed == ["pipelines_no_such_module"]
    assert "preloading pipelines_no_such_module failed" in caplog.text
    assert "csv" in sys.modules


def test_the_list_comes_from_airflow_config_and_empty_turns_preloading_off(monkeypatch: pytest.MonkeyPatch) -> None:
    # given no [mlops] preload_modules, then the default list
    monkeypatch.delenv("AIRFLOW__MLOPS__PRELOAD_MODULES", raising=False)
    assert preload_modules() == PRELOAD_MODULES
    # given a list of two (spaces and a trailing comma tolerated), then those two
    monkeypatch.setenv("AIRFLOW__MLOPS__PRELOAD_MODULES", " pandas, mlflow ,")
    assert preload_modules() == ("pandas", "mlflow")
    # given an empty value, then nothing
    monkeypatch.setenv("AIRFLOW__MLOPS__PRELOAD_MODULES", "")
    assert preload_modules() == ()
    assert preloading_executor.PRELOAD_MODULES  # the default is untouched


def test_celery_workers_preload_the_same_configured_list_without_unknown_names(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import importlib

    from pipelines.stack import celery_config

    try:
        # given [mlops] preload_modules naming two modules and one that does not exist
        monkeypatch.setenv("AIRFLOW__MLOPS__PRELOAD_MODULES", "json, pipelines_no_such_module, pipelines.steps")
        # when Airflow loads the Celery configuration, then the workers import the two, and the unknown one is named
        configured = importlib.reload(celery_config).CELERY_CONFIG
        assert configured["imports"] == ("json", "pipelines.steps")
        assert "no module pipelines_no_such_module" in caplog.text
        # and everything else is Airflow's default Celery configuration
        from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

        assert {k: v for k, v in configured.items() if k != "imports"} == DEFAULT_CELERY_CONFIG
        # given no setting, then the default list
        monkeypatch.delenv("AIRFLOW__MLOPS__PRELOAD_MODULES")
        assert importlib.reload(celery_config).CELERY_CONFIG["imports"] == PRELOAD_MODULES
    finally:
        monkeypatch.delenv("AIRFLOW__MLOPS__PRELOAD_MODULES", raising=False)
        importlib.reload(celery_config)
