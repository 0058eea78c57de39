"""Replay DAGs, one per dataset config: ``replay_<dataset>`` plays a date range as live traffic.

One task, one call into ``pipelines.steps.replay``: day by day, the day's events go to the prediction service in
hourly batches, then the day's rows and outcomes land in the warehouse. Days already replayed are skipped, so a
failed run is simply run again. Only datasets with a time column and a staged, file or table source have one.
Parsing this file reads the YAML configs and nothing else; a config that fails to load becomes a placeholder DAG
that fails with its error (``_config_errors.py``).
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from pipelines.core.config import DatasetConfig

# Airflow puts the DAG folder on sys.path when it parses a bundle; a plain DagBag (tests, tools) does not.
if str(Path(__file__).parent) not in sys.path:
    sys.path.append(str(Path(__file__).parent))

from _config_errors import dataset_dags
from _notify import task_failed

DEFAULT_ARGS: dict[str, Any] = {"owner": "mlops", "retries": 2, "retry_delay": timedelta(seconds=30)}
# Sources whose days can be replayed: the rows of a day are read by the time column (a query is the user's own).
REPLAYABLE_SOURCES = frozenset({"staged", "file", "table"})


def replayable(config: DatasetConfig) -> bool:
    """Whether a dataset has days to replay: a time column and a staged, file or table source."""
    return config.time_column is not None and config.source.kind in REPLAYABLE_SOURCES


def build_replay_dag(config: DatasetConfig) -> Any:
    """The replay DAG of one dataset (one with a time column, hence a default window)."""
    dataset = config.name
    if config.window is None:
        raise ValueError(f"dataset {dataset!r} has no time column: no days to replay")
    window_end = config.window.end

    @dag(
        dag_id=f"replay_{dataset}",
        dag_display_name=f"Replay {dataset} as live traffic",
        description=f"Send a date range of {dataset} to the prediction service day by day, then record outcomes",
        doc_md="Params: `start` and `end` (ISO dates, `[start, end)`), `batch_size` (records per request at most), "
        "`concurrency` (requests in flight). Days already replayed are skipped.",
        schedule=None,
        start_date=datetime(2024, 1, 1),
        catchup=False,
        max_active_runs=1,
        default_args={**DEFAULT_ARGS, "on_failure_callback": task_failed(dataset)},
        tags=["replay", "serving", dataset],
        params={
            "start": Param(str(window_end), type="string", format="date", description="First day"),
            "end": Param(
                str(window_end + timedelta(days=28)),
                type="string",
                format="date",
                description="Day after the last",
            ),
            "batch_size": Param(50, type="integer", minimum=1, maximum=config.serving.max_records),
            "concurrency": Param(4, type="integer", minimum=1, maximum=32),
        },
    )
    def replaying() -> None:
        @task
        def replay() -> dict[str, Any]:
            from pipelines import steps
            from pipelines.core.errors import ConfigError
            from pipelines.core.runs import RunContext

            ctx = get_current_context()
            params = ctx["params"]
            run = RunContext(dag_id=ctx["dag"].dag_id, run_id=ctx["run_id"], reason="replay")
            try:
                return steps.replay(
                    dataset, run, params["start"], params["end"], int(params["batch_size"]), int(params["concurrency"])
                )
            except ConfigError as exc:  # a bad config will not fix itself: no retry (an unreachable service may)
                from airflow.sdk.exceptions import AirflowFailException

                raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc

        replay()

    return replaying()


globals().update(dataset_dags("replay", build_replay_dag, wanted=replayable))
