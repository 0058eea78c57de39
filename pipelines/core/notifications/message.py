"""The messages: one :class:`Notification` per event of the loop, built by a pure function per kind.

A message has a title, a one-paragraph summary, key facts (metrics, versions, the deadline), details (the gate's
or the policy's reasons, the error) and links (the approval request, the MLflow run, the evidence). Channels
render it as plain text (:meth:`Notification.text`, readable in a mail, Slack or Teams) or as JSON
(:meth:`Notification.fields`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args
from urllib.parse import quote

Kind = Literal[
    "approval_requested",
    "approval_timed_out",
    "candidate_refused",
    "drift_detected",
    "retraining_decided",
    "deployed",
    "deploy_failed",
    "rolled_back",
    "task_failed",
]
KINDS: tuple[str, ...] = get_args(Kind)
Severity = Literal["info", "warning", "error"]

_MAX_DETAIL = 2000  # characters of one detail line (a traceback's message can be long)


@dataclass(frozen=True)
class Notification:
    """One message about one event of one dataset."""

    kind: Kind
    dataset: str
    title: str
    summary: str
    severity: Severity = "info"
    facts: dict[str, str] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # The event's identity ("" = none): a channel that already has this key delivered (notification_log) is not
    # sent it again, so a retried or cleared task does not repeat its message; failed channels are tried again.
    key: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown notification kind {self.kind!r}; known: {', '.join(KINDS)}")

    @property
    def subject(self) -> str:
        """One line: the mail subject."""
        return f"[mlops {self.dataset}] {self.title}"

    def text(self) -> str:
        """Plain text, readable as is in a mail, a log line, Slack or Teams (links are bare URLs)."""
        parts = [self.subject, self.summary]
        if self.facts:
            parts.append("\n".join(f"{name}: {value}" for name, value in self.facts.items()))
        if self.details:
            parts.append("\n".join(f"- {line}" for line in self.details))
        if self.links:
            parts.append("\n".join(f"{label}: {url}" for label, url in self.links.items()))
        return "\n\n".join(parts)

    def fields(self) -> dict[str, Any]:
        """The structured message, for JSON receivers."""
        return {
            "kind": self.kind,
            "dataset": self.dataset,
            "severity": self.severity,
            "title": self.title,
            "summary": self.summary,
            "facts": dict(self.facts),
            "details": list(self.details),
            "links": dict(self.links),
            "at": self.at.isoformat(),
        }


def airflow_link(base_url: str, dag_id: str, run_id: str | None, task_id: str | None = None, page: str = "") -> str:
    """A page of the Airflow UI: a DAG run, a task of it (its log), or a task's ``page`` (``required_actions``)."""
    url = f"{base_url.rstrip('/')}/dags/{quote(dag_id)}"
    if run_id:
        url += f"/runs/{quote(run_id)}"
        if task_id:
            url += f"/tasks/{quote(task_id)}" + (f"/{page}" if page else "")
    return url


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def metric_facts(candidate: Mapping[str, Any], champion: Mapping[str, Any] | None) -> dict[str, str]:
    """``{metric: "0.7123 (champion 0.7001)"}`` for every metric of the candidate."""
    champion = champion or {}
    return {
        name: _number(value) + (f" (champion {_number(champion[name])})" if name in champion else "")
        for name, value in candidate.items()
        if isinstance(value, int | float)
    }


def _links(**named: str | None) -> dict[str, str]:
    """Only the links that exist, labelled with spaces (``mlflow_run`` -> ``MLflow run``)."""
    labels = {"mlflow_run": "MLflow run", "model_version": "Model version", "data_docs": "Data Docs"}
    return {labels.get(k, k.replace("_", " ")): v for k, v in named.items() if v}


def _clip(lines: Iterable[Any]) -> list[str]:
    return [str(line)[:_MAX_DETAIL] for line in lines]


def approval_requested(
    dataset: str,
    model_name: str,
    version: str,
    *,
    request_url: str,
    deadline: datetime | str | None,
    candidate_metrics: Mapping[str, Any],
    champion_metrics: Mapping[str, Any] | None = None,
    champion_version: str | None = None,
    reasons: Iterable[str] = (),
    mlflow_run_url: str | None = None,
    model_version_url: str | None = None,
) -> Notification:
    """A candidate waits for a person's approval until ``deadline``."""
    deadline_text = deadline.isoformat() if isinstance(deadline, datetime) else (deadline or "none")
    return Notification(
        kind="approval_requested",
        dataset=dataset,
        title=f"Approval requested: promote {model_name} v{version} to champion?",
        summary=f"{model_name} v{version} passed the gate and waits for an approver until {deadline_text} "
        "(then it is rejected by default). Approve or reject it in Airflow: " + request_url,
        facts={
            "model": f"{model_name} v{version}",
            "champion": f"v{champion_version}" if champion_version else "none yet",
            "deadline": deadline_text,
            **metric_facts(candidate_metrics, champion_metrics),
        },
        details=_clip(reasons),
        links=_links(approval_request=request_url, mlflow_run=mlflow_run_url, model_version=model_version_url),
    )


def approval_timed_out(
    dataset: str,
    model_name: str,
    version: str,
    *,
    request_url: str,
    timeout_minutes: float | None,
    model_version_url: str | None = None,
) -> Notification:
    """Nobody answered an approval in time: the candidate is not deployed."""
    waited = f" within {timeout_minutes:g} minutes" if timeout_minutes else ""
    return Notification(
        kind="approval_timed_out",
        dataset=dataset,
        title=f"Approval timed out: {model_name} v{version} not deployed",
        summary=f"Nobody answered the approval of {model_name} v{version}{waited}: it is recorded as timed out, "
        "not deployed, and the champion stays.",
        severity="warning",
        facts={"model": f"{model_name} v{version}", "status": "timed_out"},
        links=_links(approval_request=request_url, model_version=model_version_url),
    )


def candidate_refused(
    dataset: str,
    model_name: str,
    version: str,
    *,
    summary: str,
    reasons: Iterable[str],
    candidate_metrics: Mapping[str, Any],
    champion_metrics: Mapping[str, Any] | None = None,
    champion_version: str | None = None,
    mlflow_run_url: str | None = None,
    model_version_url: str | None = None,
) -> Notification:
    """The gate refused a candidate: it is not deployed."""
    return Notification(
        kind="candidate_refused",
        dataset=dataset,
        title=f"Candidate refused by the gate: {model_name} v{version}",
        summary=f"{summary}. The candidate is not deployed; the champion stays "
        f"{f'v{champion_version}' if champion_version else 'none'}.",
        severity="warning",
        facts={
            "model": f"{model_name} v{version}",
            "champion": f"v{champion_version}" if champion_version else "none yet",
            **metric_facts(candidate_metrics, champion_metrics),
        },
        details=_clip(reasons),
        links=_links(mlflow_run=mlflow_run_url, model_version=model_version_url),
    )


def drift_detected(
    dataset: str,
    *,
    window: str,
    champion_version: str | None,
    drift_share: float | None,
    drifted_features: Iterable[str],
    message: str,
    evidence_url: str | None = None,
    report_dir: str | None = None,
) -> Notification:
    """Monitoring found the window's traffic drifted from the champion's training data."""
    features = list(drifted_features)
    return Notification(
        kind="drift_detected",
        dataset=dataset,
        title=f"Drift detected in {window}",
        summary=f"The predictions of {window} drifted from the champion's training data: {message}.",
        severity="warning",
        facts={
            "window": window,
            "champion": f"v{champion_version}" if champion_version else "none",
            "drift share": _number(drift_share) if drift_share is not None else "unknown",
            "drifted features": ", ".join(features) or "none",
        },
        details=[f"report folder: {report_dir}"] if report_dir else [],
        links=_links(evidence=evidence_url),
    )


def retraining_decided(
    dataset: str,
    *,
    window_end: str,
    trigger: str | None,
    summary: str,
    reasons: Iterable[str],
    training_dag_id: str,
    training_run_id: str | None,
    training_window: str | None = None,
    evidence_url: str | None = None,
    training_run_url: str | None = None,
) -> Notification:
    """The retraining policy decided to train a new candidate."""
    return Notification(
        kind="retraining_decided",
        dataset=dataset,
        title=f"Retraining decided ({trigger or 'policy'}), window ending {window_end}",
        summary=f"{summary}. Training run {training_run_id} of {training_dag_id} is triggered"
        + (f" on {training_window}" if training_window else "")
        + ".",
        facts={
            "trigger": trigger or "none",
            "window end": window_end,
            "training run": f"{training_dag_id} / {training_run_id}",
        },
        details=_clip(reasons),
        links=_links(evidence=evidence_url, training_run=training_run_url),
    )


def deployed(
    dataset: str,
    model_name: str,
    version: str,
    *,
    previous_version: str | None,
    actor: str,
    model_version_url: str | None = None,
    smoke_single_p50_ms: float | None = None,
) -> Notification:
    """``champion`` moved to a new version, smoke-tested, and the service answers with it."""
    facts = {
        "champion": f"v{version}",
        "replaced": f"v{previous_version}" if previous_version else "none",
        "by": actor,
    }
    if smoke_single_p50_ms is not None:
        facts["smoke test p50"] = f"{smoke_single_p50_ms:.2f} ms"
    return Notification(
        kind="deployed",
        dataset=dataset,
        title=f"Deployed: {model_name} v{version} is the champion",
        summary=f"{model_name} v{version} passed its smoke test and is the champion "
        f"(it replaced {f'v{previous_version}' if previous_version else 'none'}).",
        facts=facts,
        links=_links(model_version=model_version_url),
    )


def deploy_failed(
    dataset: str,
    model_name: str,
    version: str,
    *,
    error: str,
    actor: str,
    model_version_url: str | None = None,
    log_url: str | None = None,
) -> Notification:
    """A deployment failed; the champion stays (or was put back)."""
    return Notification(
        kind="deploy_failed",
        dataset=dataset,
        title=f"Deploy failed: {model_name} v{version}",
        summary=f"Deploying {model_name} v{version} failed; the champion did not move to it (or was put back).",
        severity="error",
        facts={"model": f"{model_name} v{version}", "by": actor},
        details=_clip([error]),
        links=_links(model_version=model_version_url, task_log=log_url),
    )


def rolled_back(
    dataset: str,
    model_name: str,
    *,
    from_version: str | None,
    to_version: str,
    actor: str,
    reason: str = "",
    model_version_url: str | None = None,
) -> Notification:
    """``champion`` was moved back by hand."""
    return Notification(
        kind="rolled_back",
        dataset=dataset,
        title=f"Rolled back: {model_name} v{to_version} is the champion again",
        summary=f"champion moved back from {f'v{from_version}' if from_version else 'none'} to v{to_version}"
        + (f": {reason}" if reason else "")
        + ".",
        severity="warning",
        facts={"champion": f"v{to_version}", "was": f"v{from_version}" if from_version else "none", "by": actor},
        links=_links(model_version=model_version_url),
    )


def task_failed(
    dataset: str,
    *,
    dag_id: str,
    run_id: str,
    task_id: str,
    try_number: int | None,
    error: str,
    log_url: str | None = None,
    run_url: str | None = None,
) -> Notification:
    """A task of one of the loop's DAGs failed (for good: no retry left)."""
    return Notification(
        kind="task_failed",
        dataset=dataset,
        title=f"Task failed: {dag_id}.{task_id}",
        summary=f"Task {task_id} of {dag_id} (run {run_id}) failed"
        + (f" on try {try_number}" if try_number else "")
        + ".",
        severity="error",
        facts={"dag": dag_id, "run": run_id, "task": task_id, "try": str(try_number or "?")},
        details=_clip([error]),
        links=_links(task_log=log_url, dag_run=run_url),
    )
