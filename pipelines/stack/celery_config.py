"""The production profile's Celery configuration: Airflow's default, plus the loop's libraries imported by each
Celery worker before it forks its pool (Celery's ``imports`` setting), so a task forked there starts with them, as
on the embedded profile's :mod:`pipelines.stack.preloading_executor`.

Set as ``[celery] celery_config_options = pipelines.stack.celery_config.CELERY_CONFIG``.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

from pipelines.stack.preloading_executor import PRELOAD_MODULES

CELERY_CONFIG: dict[str, Any] = {**DEFAULT_CELERY_CONFIG, "imports": PRELOAD_MODULES}
