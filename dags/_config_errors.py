"""Isolation between datasets at parse time: one DAG per dataset config file, or a DAG that says why not.

Each DAG file calls :func:`dataset_dags` with its builder. Every config is loaded (and its DAG built) on its own: a
file that fails (a ConfigError, or any other exception) is logged and becomes a placeholder DAG with the same
``dag_id``, tagged ``config-error``, whose doc and only task (``config_error``, failing without retry) show the
error, naming the file and the field. Every other dataset keeps its DAGs. Parsing stays cheap: the configs are
read with :func:`pipelines.core.config.load_config_file`, which imports no scikit-learn (``check_estimator``
does, so it is left to the tasks and to ``python -m pipelines check-config``).

Airflow puts the DAG folder on ``sys.path`` when it parses a bundle, so the DAG files import this module by name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import dag, task
from airflow.sdk.exceptions import AirflowFailException

from pipelines.core.config import DatasetConfig, dataset_config_paths, load_config_file
from pipelines.core.errors import ConfigError
from pipelines.core.settings import get_settings

log = logging.getLogger(__name__)

CONFIG_ERROR_TAG = "config-error"
CONFIG_ERROR_TASK = "config_error"


def dag_id_for(prefix: str, path: Path) -> str:
    """``<prefix>_<file stem>``, with characters a dag_id cannot hold replaced by ``_``."""
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9_.-]', '_', path.stem)}"


def config_error_message(path: Path, exc: BaseException) -> str:
    """The error as ops people should read it: a ConfigError already names the file and the field."""
    if isinstance(exc, ConfigError):
        return str(exc)
    return f"{path}: {type(exc).__name__}: {exc}"


def dataset_dags(
    prefix: str,
    build: Callable[[DatasetConfig], Any],
    wanted: Callable[[DatasetConfig], bool] | None = None,
) -> dict[str, Any]:
    """``{dag_id: DAG}`` for every dataset config file: ``build(config)``, or a placeholder when that fails.

    ``wanted`` leaves out the datasets a DAG does not apply to (a config that fails to load is never left out).
    """
    dags: dict[str, Any] = {}
    for path in dataset_config_paths(get_settings().datasets_dir):
        dag_id = dag_id_for(prefix, path)
        try:
            config = load_config_file(path)
            if wanted is not None and not wanted(config):
                log.debug("%s: not built for dataset %s", dag_id, config.name)
                continue
            dags[dag_id] = build(config)
        except Exception as exc:
            message = config_error_message(path, exc)
            log.error("%s is a placeholder that fails: %s", dag_id, message)
            _forget_partial_dag(dag_id)
            dags[dag_id] = config_error_dag(dag_id, path, message)
    return dags


def config_error_dag(dag_id: str, path: Path, message: str) -> Any:
    """A DAG standing in for a dataset whose config fails: its doc and its one task show ``message``."""
    quoted = "\n".join(f"    {line}" for line in message.splitlines())
    from _notify import task_failed  # by name, as the DAG files import this module (the DAG folder is on sys.path)

    @dag(
        dag_id=dag_id,
        dag_display_name=f"{dag_id} (config error)",
        description=f"Dataset config {path.name} does not load: see the doc or run the task",
        doc_md=f"**The dataset config `{path}` does not load**, so this DAG is a placeholder:\n\n{quoted}\n\n"
        f"Fix the file, check it with `python -m pipelines check-config --dataset {path.stem}`, and the real DAG "
        "comes back at the next parse. The other datasets' DAGs are not affected.",
        schedule=None,
        start_date=datetime(2024, 1, 1),
        catchup=False,
        default_args={"owner": "mlops", "retries": 1, "on_failure_callback": task_failed(path.stem)},
        tags=[CONFIG_ERROR_TAG],
    )
    def placeholder() -> None:
        @task(task_id=CONFIG_ERROR_TASK, retries=0)
        def config_error() -> None:
            """Fails with the config error: a broken file does not fix itself, so no retry."""
            raise AirflowFailException(message)

        config_error()

    return placeholder()


def _forget_partial_dag(dag_id: str) -> None:
    """Drop a DAG a failed build left registered under ``dag_id``, so the placeholder is the only one."""
    try:
        from airflow.sdk.definitions._internal.contextmanager import DagContext
    except ImportError:  # pragma: no cover - a later Airflow moved it; the module's globals still win
        return
    for entry in [e for e in DagContext.autoregistered_dags if e[0].dag_id == dag_id]:
        DagContext.autoregistered_dags.discard(entry)
