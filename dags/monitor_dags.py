"""Monitoring DAGs, one per dataset config: ``monitor_<dataset>``.

check (Evidently drift and live performance of the data interval's predictions, against the champion's
reference) -> decide (the retraining gate: the policy's decision, every reason logged; the run stops here unless
it says retrain) -> trigger_training (a ``train_<dataset>`` run with the reason, the evidence and the window in its
conf; its run id is derived from the window, so a rerun never starts a second one). A run triggered with
``step_days`` checks and decides its range window by window, in order (``pipelines.steps.monitor`` and
``pipelines.steps.decide_checked``). Parsing this file reads the YAML configs and nothing else; a config that fails
to load becomes a placeholder DAG that fails with its error (``_config_errors.py``).
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, get_current_context, task

from pipelines.core.config import DatasetConfig

# Airflow puts the DAG folder on sys.path when it parses a bundle; a plain DagBag (tests, tools) does not.
if str(Path(__file__).parent) not in sys.path:
    sys.path.append(str(Path(__file__).parent))

from _config_errors import dataset_dags
from _notify import task_failed

log = logging.getLogger(__name__)

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "mlops",
    "retries": 1,
    "retry_delay": timedelta(seconds=30),
}


class TriggerTraining(TriggerDagRunOperator):
    """Airflow's TriggerDagRunOperator with a templated ``note`` (it names the monitoring run that decided)."""

    template_fields = (*TriggerDagRunOperator.template_fields, "note")


def _run_context() -> Any:
    from pipelines.core.runs import RunContext

    ctx = get_current_context()
    return RunContext(dag_id=ctx["dag"].dag_id, run_id=ctx["run_id"], reason="monitoring")


def _window() -> tuple[str, str]:
    """The window to check: the params when given, else the run's data interval, else the day before the run."""
    ctx = get_current_context()
    params = ctx["params"]
    if params.get("window_start") and params.get("window_end"):
        return str(params["window_start"]), str(params["window_end"])
    start, end = ctx.get("data_interval_start"), ctx.get("data_interval_end")
    if start is not None and end is not None and end > start:
        return start.date().isoformat(), end.date().isoformat()
    run_day = ctx["dag_run"].run_after.date()
    return (run_day - timedelta(days=1)).isoformat(), run_day.isoformat()


def _started_at() -> datetime:
    start = get_current_context()["ti"].start_date
    assert start is not None
    return start


def build_monitor_dag(config: DatasetConfig) -> Any:
    """The monitoring DAG of one dataset."""
    dataset = config.name
    training_dag = f"train_{dataset}"

    @dag(
        dag_id=f"monitor_{dataset}",
        dag_display_name=f"Monitor {dataset}",
        description=f"Drift and live performance of {config.model.registered_name}; retraining when policy says so",
        doc_md=f"Checks a window of what the prediction service answered for **{dataset}** against the champion's "
        "reference with Evidently, logs the reports to MLflow (experiment "
        f"`{config.monitoring_experiment}`), and applies the retraining policy. Params `window_start`/`window_end` "
        "(ISO dates) override the data interval; with `step_days` the range is checked as consecutive windows of that "
        "many days, each with its own result and retraining decision.",
        schedule=config.monitoring.schedule,
        start_date=datetime(2024, 1, 1),
        catchup=False,
        max_active_runs=1,
        default_args={**DEFAULT_ARGS, "on_failure_callback": task_failed(dataset)},
        render_template_as_native_obj=True,
        tags=["monitoring", dataset, *config.tags],
        params={
            "window_start": Param(None, type=["null", "string"], format="date", description="First day to check"),
            "window_end": Param(None, type=["null", "string"], format="date", description="Day after the last"),
            "step_days": Param(
                None,
                type=["null", "integer"],
                minimum=1,
                description="Check the range as consecutive windows of this many days, in order, with one result "
                "and one retraining decision each (empty: the range is one window)",
            ),
        },
    )
    def monitoring() -> None:
        @task
        def check() -> dict[str, Any]:
            from pipelines import steps

            start, end = _window()
            step_days = get_current_context()["params"].get("step_days")
            return steps.monitor(dataset, _run_context(), start, end, _started_at(), step_days)

        @task.branch(retries=0)
        def decide(result: dict[str, Any]) -> str | None:
            """The retraining gate: applies the policy (every reason logged) and follows trigger_training only
            when it says retrain; the decision is kept in XCom under ``decision``."""
            from pipelines import steps

            ti = get_current_context()["ti"]
            active = ti.get_dr_count(dag_id=training_dag, states=["queued", "running"])
            decision = steps.decide_checked(dataset, _run_context(), result, active, _started_at())
            ti.xcom_push(key="decision", value=decision)
            for window in decision.get("windows", []):
                log.info("window ending %s: %s", window["window_end"], window["summary"])
            log.info("%s", decision["summary"])
            for reason in decision["reasons"]:
                log.info("  %s", reason)
            return "trigger_training" if decision["retrain"] else None

        trigger = TriggerTraining(
            task_id="trigger_training",
            trigger_dag_id=training_dag,
            trigger_run_id="{{ ti.xcom_pull(task_ids='decide', key='decision')['training_run_id'] }}",
            # rendered to the decision's conf dict (render_template_as_native_obj)
            conf="{{ ti.xcom_pull(task_ids='decide', key='decision')['training_conf'] }}",  # type: ignore[arg-type]
            logical_date=None,
            skip_when_already_exists=True,
            note="triggered by the retraining policy of {{ dag.dag_id }} ({{ run_id }})",
            retries=2,
        )
        decide(check()) >> trigger  # type: ignore[arg-type]

    return monitoring()


globals().update(dataset_dags("monitor", build_monitor_dag))
