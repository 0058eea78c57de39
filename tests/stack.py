"""A real stack (MLflow server + Airflow) for tests: free ports, a temporary runtime folder, torn down after."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipelines.stack import services
from pipelines.stack.processes import free_port
from pipelines.stack.settings import StackSettings


def make_stack_settings(home: Path, datasets_dir: Path | None = None) -> StackSettings:
    """Stack settings on ports nothing else uses, with state under ``home``."""
    values: dict[str, object] = {
        "MLOPS_HOME": home,
        "MLFLOW_PORT": free_port(),
        "AIRFLOW_PORT": free_port(),
        "SERVING_PORT": free_port(),
        "AIRFLOW_WORKER_LOG_PORT": free_port(),
        "AIRFLOW_TRIGGER_LOG_PORT": free_port(),
        "AIRFLOW_ADMIN_PASSWORD": "test-password",
    }
    if datasets_dir is not None:
        values["MLOPS_DATASETS_DIR"] = datasets_dir
    return StackSettings(**values, mlflow_workers=1)  # type: ignore[arg-type]


def env_for(stack: StackSettings) -> dict[str, str]:
    """The environment a user of this stack has (what ``make demo`` would read)."""
    env = services.stack_env(stack)
    env.update(
        {
            "MLFLOW_PORT": str(stack.mlflow_port),
            "AIRFLOW_PORT": str(stack.airflow_port),
            "SERVING_PORT": str(stack.serving_port),
            "AIRFLOW_WORKER_LOG_PORT": str(stack.worker_log_port),
            "AIRFLOW_TRIGGER_LOG_PORT": str(stack.trigger_log_port),
            "AIRFLOW_ADMIN_PASSWORD": stack.airflow_admin_password,
        }
    )
    return env


@contextmanager
def running_stack(home: Path, datasets_dir: Path | None = None) -> Iterator[StackSettings]:
    """Start MLflow and Airflow for real, point this process's pipeline settings at them, stop them after."""
    from pipelines.settings import get_settings

    stack = make_stack_settings(home, datasets_dir)
    saved = dict(os.environ)
    try:
        services.up(stack)
        os.environ.update({k: v for k, v in services.stack_env(stack).items() if k.startswith("MLOPS_")})
        get_settings.cache_clear()
        yield stack
    finally:
        services.down(stack)
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()
