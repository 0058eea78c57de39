"""The "Models" page of the Airflow UI: the facts come from ``pipelines.trace.console`` (MLflow and the
warehouse), the approvals waiting for someone from Airflow's own database (Human-in-the-loop requests whose task
is parked awaiting input). Imported only by the plugin's web app, in the API server, on first use.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from pipelines.core.config import DatasetConfig
    from pipelines.trace.console_page import PendingApproval

log = logging.getLogger(__name__)

# The DAGs of a dataset are named <prefix><dataset>: the per-DAG tab shows that dataset's card.
DAG_PREFIXES = ("train_", "monitor_", "replay_", "maintain_")
WAITING_STATES = ("awaiting_input", "deferred")  # Airflow 3.3 parks a HITL task in awaiting_input


def dataset_configs() -> tuple[list[DatasetConfig], list[str]]:
    """Every dataset config that loads, and a line per one that does not (shown on the page)."""
    from pipelines.core.config import dataset_config_paths, load_config_file
    from pipelines.core.settings import get_settings

    configs, problems = [], []
    for path in dataset_config_paths(get_settings().datasets_dir):
        try:
            configs.append(load_config_file(path))
        except Exception as exc:  # one broken file must not hide the others
            problems.append(f"{path.name}: {type(exc).__name__}: {exc}")
    return configs, problems


def dataset_of_dag(dag_id: str, names: list[str]) -> str | None:
    """The dataset whose DAG ``dag_id`` is (``train_flights`` -> ``flights``), None for any other DAG."""
    for prefix in DAG_PREFIXES:
        if dag_id.startswith(prefix) and dag_id.removeprefix(prefix) in names:
            return dag_id.removeprefix(prefix)
    return None


def pending_approvals(configs: list[DatasetConfig], base: str) -> list[PendingApproval]:
    """The approval requests of the training DAGs that nobody has answered yet, oldest first."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from pipelines.trace.console_page import PendingApproval

    by_dag = {f"train_{c.name}": c for c in configs}
    query = (
        select(
            HITLDetail.subject, HITLDetail.created_at, TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id
        )
        .join(TaskInstance, TaskInstance.id == HITLDetail.ti_id)
        .where(HITLDetail.responded_at.is_(None), TaskInstance.state.in_(WAITING_STATES))
        .order_by(HITLDetail.created_at)
    )
    with create_session() as session:
        rows = session.execute(query).all()
    out = []
    for subject, created_at, dag_id, run_id, task_id in rows:
        config = by_dag.get(dag_id)
        if config is None:
            continue
        out.append(
            PendingApproval(
                dataset=config.name,
                subject=subject,
                dag_id=dag_id,
                run_id=run_id,
                requested_at=created_at,
                deadline=created_at + timedelta(minutes=config.approval.timeout_minutes),
                url=f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}/tasks/"
                f"{quote(task_id, safe='')}/required_actions",
            )
        )
    return out


def models_page(base: str, dag_id: str | None = None) -> str:
    """The page: every dataset, or only the dataset of ``dag_id`` (the DAG's tab)."""
    from pipelines.core.settings import get_settings
    from pipelines.trace.console import console
    from pipelines.trace.console_page import render

    configs, problems = dataset_configs()
    note = "; ".join(f"config not loaded: {p}" for p in problems)
    title = "Models"
    if dag_id is not None:
        name = dataset_of_dag(dag_id, [c.name for c in configs])
        if name is None:
            return render([], [], datetime.now(UTC), title=dag_id, note="This DAG belongs to no dataset.")
        configs = [c for c in configs if c.name == name]
        title = f"Model: {name}"
    try:
        pending = pending_approvals(configs, base)
    except Exception as exc:  # the rest of the page is still worth showing
        log.warning("models page: pending approvals not read: %s: %s", type(exc).__name__, exc)
        pending, note = [], f"{note}; pending approvals not read: {exc}".strip("; ")
    views = console(configs, get_settings(), airflow_base=base)
    return render(views, pending, datetime.now(UTC), title=title, note=note)
