"""The production profile's Celery configuration: Airflow's default, plus the loop's libraries imported by each
Celery worker before it forks its pool (Celery's ``imports`` setting), so a task forked there starts with them, as
on the embedded profile's :mod:`pipelines.stack.preloading_executor`.

Set as ``[celery] celery_config_options = pipelines.stack.celery_config.CELERY_CONFIG``. The list is the same one:
``[mlops] preload_modules`` when set (empty: none), else the default; a name that cannot be found is logged and
left out (Celery would refuse to start the worker over it).
"""

from __future__ import annotations

import logging
from importlib.util import find_spec
from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

from pipelines.stack.preloading_executor import preload_modules

log = logging.getLogger(__name__)


def importable(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` without those no installed module answers to (each left out is logged)."""
    found = []
    for name in names:
        try:
            present = find_spec(name) is not None
        except (ImportError, ValueError):  # a parent package that is missing or broken
            present = False
        if present:
            found.append(name)
        else:
            log.warning("[mlops] preload_modules: no module %s: the Celery workers do not preload it", name)
    return tuple(found)


CELERY_CONFIG: dict[str, Any] = {**DEFAULT_CELERY_CONFIG, "imports": importable(preload_modules())}
