"""Airflow's side of the notifications: a ``BaseNotifier`` that turns a task's context into a message of the loop
(``pipelines.core.notifications``) and delivers it to the channels of the notifications file.

- :func:`task_failed`: every task's ``on_failure_callback`` (in each DAG's ``default_args``); a failure that the
  step already announced (``deploy_failed``, sent by ``pipelines.steps.deploy``) is not sent again.
- :func:`approval_requested`: the ``notifiers`` of the approval task, with the request's link, the metrics against
  the champion, the gate's reasons and the deadline.
- :func:`send_approval_timed_out`: called by the approval operator when nobody answered in time.

Delivery never raises (a dead receiver is logged and counted, the task carries on), and each message carries its
event's key, so a retried task does not repeat it to a channel that already had it. Parsing stays cheap: nothing
of the pipeline is imported before a notifier runs. The DAG files import this module by name (the DAG folder is
on ``sys.path``).
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)

APPROVAL_TASK = "approve"


class LoopNotifier(BaseNotifier):
    """Sends the message of ``kind`` about ``dataset``, built from the task's context; never raises."""

    def __init__(self, kind: str, dataset: str) -> None:
        super().__init__()
        self.kind = kind
        self.dataset = dataset

    def notify(self, context: Any) -> None:
        try:
            notification = _BUILDERS[self.kind](self.dataset, context)
            if notification is None:
                return
            import dataclasses

            from pipelines.core.notifications import deliver

            report = deliver(dataclasses.replace(notification, key=_key(self.kind, context)))
            log.info("notification %s: delivered to %s%s", self.kind, report.delivered or "no channel",
                     f", failed on {report.failed}" if report.failed else "")  # fmt: skip
        except Exception:  # a notification must never fail the task it is about
            log.exception("notification %s of %s could not be sent", self.kind, self.dataset)


def task_failed(dataset: str) -> LoopNotifier:
    """The ``on_failure_callback`` of every task of ``dataset``'s DAGs."""
    return LoopNotifier("task_failed", dataset)


def approval_requested(dataset: str) -> LoopNotifier:
    """The ``notifiers`` of ``dataset``'s approval task."""
    return LoopNotifier("approval_requested", dataset)


def send_approval_timed_out(dataset: str, context: Any) -> None:
    """Announce that nobody answered the approval of this run in time; never raises."""
    LoopNotifier("approval_timed_out", dataset).notify(context)


def _key(kind: str, context: Any) -> str:
    """The event's identity: one approval request (or time-out) per run, one failure message per task try, so a
    retried approval task or a callback run twice does not send it again to a channel that had it."""
    ti = context["ti"]
    if kind == "task_failed":
        return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/try{ti.try_number}/{kind}"
    return f"{ti.dag_id}/{ti.run_id}/{kind}"


def _ui() -> str:
    from pipelines.core.settings import get_settings

    return get_settings().airflow_ui_url


def _request_url(ti: Any) -> str:
    from pipelines.core.notifications.message import airflow_link

    return airflow_link(_ui(), ti.dag_id, ti.run_id, ti.task_id, "required_actions")


def _build_task_failed(dataset: str, context: Any) -> Any:
    from pipelines.core.notifications import message, notified

    error = context.get("exception")
    already = notified(error)
    if already:
        log.info("this failure was already announced as %s: no task_failed message", already)
        return None
    ti = context["ti"]
    link = message.airflow_link(_ui(), ti.dag_id, ti.run_id, ti.task_id)
    return message.task_failed(
        dataset,
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        task_id=ti.task_id,
        try_number=ti.try_number,
        error=f"{type(error).__name__}: {error}" if error is not None else "no exception recorded: see the log",
        log_url=f"{link}?try_number={ti.try_number}" if ti.try_number else link,
        run_url=message.airflow_link(_ui(), ti.dag_id, ti.run_id),
    )


def _build_approval_requested(dataset: str, context: Any) -> Any:
    from pipelines.core.notifications import message

    ti, task = context["ti"], context["task"]
    trained = ti.xcom_pull(task_ids="train") or {}
    evaluation = ti.xcom_pull(task_ids="evaluate") or {}
    gate = ti.xcom_pull(task_ids="gate") or {}
    return message.approval_requested(
        dataset,
        str(trained.get("model_name", "?")),
        str(trained.get("model_version", "?")),
        request_url=_request_url(ti),
        deadline=getattr(task, "hitl_summary_extra", {}).get("timeout_datetime"),
        candidate_metrics=evaluation.get("candidate") or {},
        champion_metrics=evaluation.get("champion"),
        champion_version=evaluation.get("champion_version"),
        reasons=gate.get("reasons") or [],
        mlflow_run_url=trained.get("mlflow_run_url"),
        model_version_url=trained.get("model_version_url"),
    )


def _build_approval_timed_out(dataset: str, context: Any) -> Any:
    from pipelines.core.notifications import message

    ti, task = context["ti"], context["task"]
    trained = ti.xcom_pull(task_ids="train") or {}
    timeout = getattr(task, "response_timeout", None)
    return message.approval_timed_out(
        dataset,
        str(trained.get("model_name", "?")),
        str(trained.get("model_version", "?")),
        request_url=_request_url(ti),
        timeout_minutes=timeout.total_seconds() / 60 if timeout else None,
        model_version_url=trained.get("model_version_url"),
    )


_BUILDERS = {
    "task_failed": _build_task_failed,
    "approval_requested": _build_approval_requested,
    "approval_timed_out": _build_approval_timed_out,
}
