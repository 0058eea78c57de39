"""Maintenance DAGs, one per dataset config: ``maintain_<dataset>`` applies the dataset's retention policy.

One task, ``apply_retention``: the run partitions, GX results and Evidently reports the ``retention`` section does
not keep are removed (``pipelines.monitoring.retention``); the champion's and previous champion's runs and the
reports cited as evidence of a retraining decision always stay. The run's data interval end is "now" for the
policy's age limit, so a rerun of the same interval decides the same. Parsing reads the YAML configs only.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import dag, get_current_context, task

from pipelines.core.config import DatasetConfig

if str(Path(__file__).parent) not in sys.path:
    sys.path.append(str(Path(__file__).parent))

from _config_errors import dataset_dags
from _notify import task_failed

DEFAULT_ARGS: dict[str, Any] = {"owner": "mlops", "retries": 1, "retry_delay": timedelta(minutes=5)}


def _policy_time() -> datetime:
    """The end of the run's data interval (the run's own time for a manual run)."""
    ctx = get_current_context()
    end = ctx.get("data_interval_end")
    return end if end is not None else ctx["dag_run"].run_after


def build_maintenance_dag(config: DatasetConfig) -> Any:
    """The maintenance DAG of one dataset."""
    dataset = config.name
    policy = config.retention

    @dag(
        dag_id=f"maintain_{dataset}",
        dag_display_name=f"Maintain {dataset}",
        description=f"Retention of {dataset}'s run partitions, GX results and Evidently reports",
        doc_md=f"Keeps the newest {policy.keep_training_runs} run partitions (and their GX results) and the reports "
        f"of the newest {policy.keep_monitoring_reports} monitored windows of **{dataset}**, besides the champion's "
        "and previous champion's runs and every report cited as a retraining decision's evidence; nothing younger "
        f"than {policy.min_age_hours:g} h. Removes the rest (local files, and the reports in MLflow). See "
        "`docs/monitoring.md` (Retention).",
        schedule=policy.schedule,
        start_date=datetime(2024, 1, 1),
        catchup=False,
        max_active_runs=1,
        default_args={**DEFAULT_ARGS, "on_failure_callback": task_failed(dataset)},
        tags=["maintenance", dataset, *config.tags],
    )
    def maintenance() -> None:
        @task
        def apply_retention() -> dict[str, Any]:
            from pipelines import steps

            result = steps.apply_retention(dataset, _policy_time())
            return {
                "runs_removed": len(result["runs_removed"]),
                "reports_removed": len(result["reports_removed"]),
                "runs_kept": len(result["runs_kept"]),
                "reports_kept": len(result["reports_kept"]),
                "mb_freed": round(result["bytes_freed"] / 1e6, 1),
            }

        apply_retention()

    return maintenance()


globals().update(dataset_dags("maintain", build_maintenance_dag))
