"""Airflow's LocalExecutor with the loop's libraries imported once, before it forks its workers.

Each task of the loop runs in a process forked from a LocalExecutor worker, which is forked from the scheduler
(Linux, fork start method). Without this executor every task imports pandas, scikit-learn, MLflow, Evidently or
Great Expectations anew: seconds of CPU per task, most of a short task's time (a ``decide`` task spent about 4 s
importing for 0.2 s of work). Imported in the scheduler before the workers are forked, they are shared
copy-on-write by every worker and task; nothing else changes (same queue, same worker processes, same task
supervision). Configured as ``[core] executor = pipelines.stack.preloading_executor.PreloadingLocalExecutor``;
``[mlops] preload_modules`` (comma-separated) replaces the default list, empty turns preloading off.
"""

from __future__ import annotations

import importlib
import logging
import time

from airflow.executors.local_executor import LocalExecutor

log = logging.getLogger(__name__)

# What the loop's task bodies import (each one's first call into ``pipelines``, and the libraries behind it).
PRELOAD_MODULES = (
    "pandas",
    "pyarrow",
    "sqlalchemy",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.pipeline",
    "sklearn.metrics",
    "mlflow",
    "mlflow.sklearn",
    "evidently",
    "evidently.metrics",
    "evidently.presets",
    "great_expectations",
    "pipelines.steps",
    "pipelines.data.validation",
    "pipelines.training.train",
    "pipelines.monitoring.monitor",
    "pipelines.monitoring.drift",
)


def preload_modules() -> tuple[str, ...]:
    """The modules to import: ``[mlops] preload_modules`` when set, else :data:`PRELOAD_MODULES`."""
    from airflow.configuration import conf

    configured = conf.get("mlops", "preload_modules", fallback=None)
    if configured is None:
        return PRELOAD_MODULES
    return tuple(name.strip() for name in configured.split(",") if name.strip())


def preload(names: tuple[str, ...]) -> list[str]:
    """Import ``names``; those that fail are logged and skipped (a task importing one fails as it would have)."""
    failed = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a module that cannot be imported must not stop the scheduler
            failed.append(name)
            log.warning("preloading %s failed: %s", name, exc)
    return failed


class PreloadingLocalExecutor(LocalExecutor):
    """:class:`LocalExecutor` whose forked workers (and their tasks) start with the loop's libraries imported."""

    def start(self) -> None:
        if self.is_mp_using_fork:
            names = preload_modules()
            began = time.perf_counter()
            failed = preload(names)
            log.info(
                "preloaded %d modules for the task processes in %.1f s%s",
                len(names) - len(failed),
                time.perf_counter() - began,
                f" ({', '.join(failed)} failed)" if failed else "",
            )
        super().start()
