"""Driving the loop's DAGs through Airflow's REST API, as ``make demo`` does: trigger, follow, answer approvals.

Shared by the demo's two halves (``demo``: the first training run; ``story``: replay, monitoring, retraining) and
by the tests that drive a real Airflow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipelines.core.config import METRICS
from pipelines.stack import services
from pipelines.stack.airflow_client import TERMINAL_RUN_STATES, AirflowApiError, AirflowClient
from pipelines.stack.processes import StackError, wait_until
from pipelines.stack.settings import StackSettings

log = logging.getLogger(__name__)

APPROVAL_TASK = "approve"
SHOWN_METRICS = tuple(f"holdout_{metric}" for metric in METRICS)  # those of the model's task are on its run
# How often a followed run is polled (two light REST calls, ~20 ms of the api-server's CPU). The demo follows
# one short run after another (a replay, then a monitoring run, a week at a time): the client's default of 2 s
# left about a second of idle waiting at the end of each of them.
POLL_SECONDS = 0.5


@dataclass
class DemoResult:
    """What one demo run did, for the summary and for tests."""

    dag_id: str
    run_id: str
    state: str
    task_states: dict[str, str | None]
    approved_by: str | None = None
    champion_version: str | None = None
    champion_metrics: dict[str, float] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    replay: dict[str, Any] = field(default_factory=dict)
    timeline: Any = None


def client(stack: StackSettings, user: str | None = None) -> AirflowClient:
    """A REST client logged in as ``user`` of the people file (default: the stack's admin)."""
    name = user or stack.airflow_admin_user
    return AirflowClient(stack.airflow_url, name, services.password_of(stack, name))


def demo_approver(stack: StackSettings) -> str:
    """The approver the demo answers as on the user's behalf: the first of the people file."""
    return services.people(stack).approvers[0]


def wait_for_dag(api: AirflowClient, dag_id: str, timeout: float = 180.0) -> None:
    """Wait until the dag-processor has parsed ``dag_id``; fail with the import errors if it cannot."""

    def parsed_or_broken() -> tuple[str, list[dict[str, Any]]] | None:
        errors = api.import_errors()
        if errors:
            return "broken", errors
        try:
            api.dag(dag_id)
        except AirflowApiError:
            return None
        return "parsed", []

    found = wait_until(parsed_or_broken, f"Airflow to parse {dag_id}", timeout, interval=0.5)
    assert found is not None  # wait_until returns a true value or raises
    outcome, errors = found
    if outcome == "broken":
        raise StackError(
            "DAG files failed to import:\n" + "\n".join(f"{e['filename']}: {e['stack_trace'][-1500:]}" for e in errors)
        )


def _report(states: dict[str, str | None]) -> None:
    log.info("tasks: %s", ", ".join(f"{task}={state or 'none'}" for task, state in states.items()))


def run_training(
    stack: StackSettings,
    dataset: str,
    conf: dict[str, Any],
    *,
    approval: Literal["api", "ui"],
    approval_comment: str,
    timeout: float = 900.0,
) -> DemoResult:
    """Trigger ``train_<dataset>``, answer (or wait for) its approval, and follow it to the end."""
    dag_id = f"train_{dataset}"
    api = client(stack)
    try:
        wait_for_dag(api, dag_id)
        api.unpause(dag_id)
        run_id = api.trigger(dag_id, conf, note=f"started by `make demo` ({conf.get('reason', 'demo')})")
        log.info("triggered %s run %s: %s/dags/%s/runs/%s", dag_id, run_id, stack.airflow_url, dag_id, run_id)
        state, approved_by = follow_training(
            api, stack, dag_id, run_id, approval=approval, comment=approval_comment, timeout=timeout, on_change=_report
        )
        result = DemoResult(
            dag_id=dag_id,
            run_id=run_id,
            state=state,
            task_states=api.task_states(dag_id, run_id),
            approved_by=approved_by,
        )
        if result.task_states.get("train") == "success":
            result.training = api.xcom(dag_id, run_id, "train")
        return result
    finally:
        api.close()


def run_replay(
    stack: StackSettings, dataset: str, start: str, end: str, timeout: float = 900.0
) -> tuple[str, dict[str, Any]]:
    """Trigger ``replay_<dataset>`` for ``[start, end)`` and follow it; returns its run id and the task's result."""
    dag_id = f"replay_{dataset}"
    api = client(stack)
    try:
        wait_for_dag(api, dag_id)
        api.unpause(dag_id)
        run_id = api.trigger(dag_id, {"start": start, "end": end}, note="started by `make demo`")
        log.info(
            "replaying %s [%s, %s) through the prediction service: %s/dags/%s/runs/%s",
            dataset,
            start,
            end,
            stack.airflow_url,
            dag_id,
            run_id,
        )
        state = api.follow(dag_id, run_id, timeout=timeout, on_change=_report, interval=POLL_SECONDS)
        if state != "success":
            raise StackError(f"{dag_id} run {run_id} ended {state}: see its task log in the Airflow UI")
        return run_id, dict(api.xcom(dag_id, run_id, "replay"))
    finally:
        api.close()


def answer_approval(
    api: AirflowClient, stack: StackSettings, dag_id: str, run_id: str, *, approval: str, comment: str
) -> str | None:
    detail = api.hitl_detail(dag_id, run_id, APPROVAL_TASK)
    url = f"{stack.airflow_url}/dags/{dag_id}/runs/{run_id}/tasks/{APPROVAL_TASK}/required_actions"
    log.info("approval requested: %s", detail.get("subject"))
    approver = demo_approver(stack)
    if approval == "ui":
        log.info(
            "waiting for a person to answer in the Airflow UI: Browse > Required Actions, or %s (log in as an "
            "approver of %s, e.g. %s: only approvers may answer)",
            url,
            stack.people_file,
            approver,
        )
        return None
    log.info(
        "approving on your behalf through the REST API, as approver %r. To decide yourself next time, run "
        "`DEMO_APPROVAL=ui make demo` and answer in the Airflow UI under Browse > Required Actions.",
        approver,
    )
    as_approver = client(stack, approver)
    try:
        answer_when_parked(as_approver, stack, dag_id, run_id, APPROVAL_TASK, "Approve", {"comment": comment})
    finally:
        as_approver.close()
    return approver


def scheduler_saw_parked_exit(log_file: Path, dag_id: str, run_id: str, task_id: str) -> bool:
    """Whether the scheduler has processed the exit of the worker that parked ``task_id`` in ``awaiting_input``.

    The scheduler logs ``TaskInstance Finished: dag_id=..., task_id=..., run_id=..., ... state=awaiting_input,
    ... executor_state=success`` when it takes that worker's exit from the executor's event buffer.
    """
    if not log_file.is_file():
        return False
    needle = f"TaskInstance Finished: dag_id={dag_id}, task_id={task_id}, run_id={run_id}, "
    with log_file.open(errors="replace") as lines:
        return any(needle in line and "state=awaiting_input" in line for line in lines)


def answer_when_parked(
    api: AirflowClient,
    stack: StackSettings,
    dag_id: str,
    run_id: str,
    task_id: str,
    option: str,
    params: dict[str, Any],
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Answer a human-in-the-loop task once the scheduler has processed the exit of the worker that parked it.

    In Airflow 3.3.2 the worker that runs an approval task parks it in ``awaiting_input`` and exits; the executor
    reports that exit ("success") to the scheduler later. An answer that lands in between moves the task to
    ``scheduled``/``queued`` for its resume, and the scheduler then reads the stale "success" as a state changed
    externally and fails the task. A person never answers that fast; a script does (seen 0.4 s after parking, and
    the exit took up to 6 s to be processed under CI load). So the answer waits for the scheduler's own record of
    that exit in its log (the stack's scheduler writes to ``<logs>/airflow-scheduler.log``).
    """
    log_file = stack.logs_dir / "airflow-scheduler.log"
    wait_until(
        lambda: scheduler_saw_parked_exit(log_file, dag_id, run_id, task_id),
        f"the scheduler to process the parked exit of {dag_id}.{task_id} ({run_id}) in {log_file}",
        timeout,
        interval=0.5,
    )
    return api.answer(dag_id, run_id, task_id, option, params)


def follow_training(
    api: AirflowClient,
    stack: StackSettings,
    dag_id: str,
    run_id: str,
    *,
    approval: Literal["api", "ui"],
    comment: str,
    timeout: float,
    on_change: Callable[[dict[str, str | None]], None],
) -> tuple[str, str | None]:
    """Follow a training run, answer its approval when it asks (or wait for a person), follow it to its end.

    Returns the run's final state and who approved (None when a person answers in the UI, or nobody was asked).
    """
    state = api.follow(
        dag_id,
        run_id,
        timeout=timeout,
        on_change=on_change,
        stop_when=lambda s: s.get(APPROVAL_TASK) == "awaiting_input",
        interval=POLL_SECONDS,
    )
    approved_by = None
    if state not in TERMINAL_RUN_STATES:
        approved_by = answer_approval(api, stack, dag_id, run_id, approval=approval, comment=comment)
        state = api.follow(dag_id, run_id, timeout=timeout, on_change=on_change, interval=POLL_SECONDS)
    return state, approved_by


def champion(stack: StackSettings, model_name: str) -> tuple[str | None, dict[str, float], dict[str, str]]:
    """The version behind ``champion``, its holdout metrics and its tags."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    mlf = MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
    try:
        version = mlf.get_model_version_by_alias(model_name, "champion")
    except MlflowException:
        return None, {}, {}
    metrics = mlf.get_run(version.run_id).data.metrics if version.run_id else {}
    return str(version.version), {k: metrics[k] for k in SHOWN_METRICS if k in metrics}, dict(version.tags)
