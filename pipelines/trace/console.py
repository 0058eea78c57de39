"""The ops console's facts, one view per dataset: who serves it, how it does, what monitoring and the retraining
policy saw, and what happened to its versions. Read from MLflow (the champion alias, its run's holdout metrics)
and the warehouse (audit trail, monitoring results with the champion's live figures of the last window, retraining
decisions); nothing is written and nothing is recomputed.

The page that shows them is ``console_page``; pending approvals live in Airflow and are added by the plugin.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

from pipelines.core import audit, registry
from pipelines.core.config import LOWER_IS_BETTER, TASK_METRICS, DatasetConfig
from pipelines.core.settings import Settings
from pipelines.monitoring import store

log = logging.getLogger(__name__)

# A cell's state, most telling first: a cell shows the first that applies.
CELL_STATES = ("new_champion", "retraining", "drift", "insufficient_data", "ok")
AUDIT_ROWS = 25
DECISION_ROWS = 12
TREND_WINDOWS = 30


@dataclass(frozen=True)
class Champion:
    """The version behind ``champion`` and how it got there."""

    version: str
    since: str | None
    approved_by: str | None
    approved_at: str | None
    approval_mode: str | None
    approval_comment: str
    holdout: dict[str, float]
    previous_version: str | None
    version_url: str
    run_url: str | None


@dataclass(frozen=True)
class LivePerformance:
    """The champion's logged predictions of the last ``days`` days of traffic and its metrics on their outcomes."""

    days: int
    start: date
    end: date
    predictions: int
    labelled: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class CalendarCell:
    """One monitored window and what it meant."""

    start: date
    end: date
    state: str
    champion_version: str
    drift_share: float | None
    headline: float | None
    report_url: str
    title: str


@dataclass(frozen=True)
class PolicyDecision:
    """One retraining decision of the policy."""

    window_end: date
    retrain: bool
    trigger: str | None
    summary: str
    reasons: list[str]
    training_run_url: str | None


@dataclass(frozen=True)
class AuditEntry:
    """One event of the audit trail, with where to look."""

    at: str
    event: str
    version: str
    actor: str
    mode: str
    comment: str
    dag_runs_url: str | None
    version_url: str


@dataclass
class DatasetView:
    """Everything the console shows of one dataset."""

    name: str
    task: str
    description: str
    model_name: str
    headline_metric: str
    lower_is_better: bool
    champion: Champion | None
    live: list[LivePerformance]
    trend: list[tuple[date, float]]
    calendar: list[CalendarCell]
    decisions: list[PolicyDecision]
    audit: list[AuditEntry]
    rollback_command: str
    training_dag_url: str
    problems: list[str] = field(default_factory=list)
    decisions_not_listed: int = 0


def headline_metric(config: DatasetConfig) -> str:
    """The metric the dataset is watched by: the retraining policy's, else the gate's, else the task's first."""
    for names in (config.retraining.performance_floor, config.retraining.max_drop, config.gate.floors):
        if names:
            return next(iter(names))
    return TASK_METRICS[config.task][0]


def dataset_view(
    config: DatasetConfig, settings: Settings, airflow_base: str = "", mlflow_problem: str | None = None
) -> DatasetView:
    """The console's view of one dataset; a store that cannot be read becomes a problem listed on the card
    (``mlflow_problem``: MLflow is known to be unreachable, so it is not asked)."""
    name = config.model.registered_name
    metric = headline_metric(config)
    view = DatasetView(
        name=config.name,
        task=config.task,
        description=config.description,
        model_name=name,
        headline_metric=metric,
        lower_is_better=metric in LOWER_IS_BETTER,
        champion=None,
        live=[],
        trend=[],
        calendar=[],
        decisions=[],
        audit=[],
        rollback_command=f"python -m pipelines rollback --dataset {config.name}",
        training_dag_url=f"{airflow_base}/dags/train_{config.name}",
    )
    events: list[dict[str, Any]] = []
    try:
        events = audit.history(settings.warehouse_url, name)
    except Exception as exc:  # the page must show what it can
        view.problems.append(f"audit trail: {type(exc).__name__}: {exc}")
    if mlflow_problem:
        view.problems.append(f"MLflow: {mlflow_problem}")
    else:
        try:
            view.champion = _champion(settings, name, events, TASK_METRICS[config.task])
        except Exception as exc:
            view.problems.append(f"MLflow: {type(exc).__name__}: {exc}")
    results: list[dict[str, Any]] = []
    try:
        results = store.results(settings.warehouse_url, config.name)
        decisions = store.decisions(settings.warehouse_url, config.name)
        view.calendar = calendar(results, decisions, metric)
        view.trend = [(c.end, c.headline) for c in view.calendar if c.headline is not None][-TREND_WINDOWS:]
        listed = recent_decisions(decisions, DECISION_ROWS)
        view.decisions = [_decision(d, airflow_base, config.name) for d in listed]
        view.decisions_not_listed = len(decisions) - len(listed)
    except Exception as exc:
        view.problems.append(f"monitoring history: {type(exc).__name__}: {exc}")
    if view.champion is not None:
        view.live = _live(results, view.champion.version)
    view.audit = [_audit_entry(e, settings, airflow_base) for e in reversed(events[-AUDIT_ROWS:])]
    return view


def console(configs: list[DatasetConfig], settings: Settings, airflow_base: str = "") -> list[DatasetView]:
    """One view per configured dataset, in the order given. An MLflow server that does not answer is noticed
    once, in seconds, instead of through the client's minutes of retries for each dataset."""
    problem = mlflow_unreachable(settings.mlflow_tracking_uri)
    return [dataset_view(config, settings, airflow_base, problem) for config in configs]


def mlflow_unreachable(tracking_uri: str, timeout: float = 3.0) -> str | None:
    """Why the MLflow server at ``tracking_uri`` cannot be reached, or None (any HTTP answer counts as reached;
    a local store always is)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    import httpx

    try:
        httpx.get(f"{tracking_uri.rstrip('/')}/health", timeout=timeout)
    except httpx.HTTPError as exc:
        return f"{tracking_uri} does not answer ({type(exc).__name__}: {exc})"
    return None


def calendar(results: list[dict[str, Any]], decisions: list[dict[str, Any]], metric: str) -> list[CalendarCell]:
    """One cell per monitored window, oldest first: its state is the most telling of what happened in it.

    A window served by another champion than the window before it is the new champion's first, unless it was
    checked before that window was (``checked_at``): windows checked out of order (a backfill, a scheduled check
    of today beside a replay of the past) say which champion served when they were checked, not a switch."""
    retrain_on = {d["window_end"]: d for d in decisions if d["retrain"]}
    cells: list[CalendarCell] = []
    previous: str | None = None
    previous_checked: Any = None
    for row in results:
        checked = row.get("checked_at")
        in_order = previous_checked is None or checked is None or _utc(checked) >= _utc(previous_checked)
        champion = str(row["champion_version"] or "")
        notes = [str(row["status"]).replace("_", " ")]
        state = str(row["status"]) if row["status"] in CELL_STATES else "insufficient_data"
        if row["window_end"] in retrain_on:
            state = "retraining"
            notes.append(f"retraining decided: {retrain_on[row['window_end']]['summary']}")
        if previous is not None and champion and champion != previous and in_order:
            state = "new_champion"
            notes.append(f"new champion v{champion} (was v{previous})")
        if in_order:
            previous, previous_checked = champion or previous, checked if checked is not None else previous_checked
        metrics = row["live_metrics"] or {}
        value = metrics.get(metric)
        if isinstance(value, int | float):
            notes.append(f"live {metric} {value:.3f}")
        if row["drift_share"] is not None:
            notes.append(f"drift share {row['drift_share']:.2f}")
        cells.append(
            CalendarCell(
                start=row["window_start"],
                end=row["window_end"],
                state=state,
                champion_version=champion,
                drift_share=row["drift_share"],
                headline=float(value) if isinstance(value, int | float) else None,
                report_url=report_url(str(row["evidence_url"] or "")),
                title=f"{row['window_start']}: " + "; ".join(notes) + (f" (champion v{champion})" if champion else ""),
            )
        )
    return cells


def _utc(moment: datetime) -> datetime:
    """``moment`` comparable with any other: naive ones (SQLite's) are UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def recent_decisions(decisions: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """What ops read first of the policy's decisions (oldest-first ``decisions``), newest first: the latest one,
    whatever it was, then the latest decisions to retrain; at most ``limit``. The many windows that kept the
    champion in between are not worth a row each (the calendar shows them)."""
    if not decisions or limit <= 0:
        return []
    retrained = [d for d in reversed(decisions[:-1]) if d["retrain"]]
    return [decisions[-1], *retrained][:limit]


def report_url(evidence_url: str) -> str:
    """The window's Evidently drift report in the MLflow UI (its run's ``report/drift.html``)."""
    return f"{evidence_url}/artifacts/report/drift.html" if "/runs/" in evidence_url else evidence_url


def _champion(
    settings: Settings, name: str, events: list[dict[str, Any]], metric_names: tuple[str, ...]
) -> Champion | None:
    current = registry.alias_version(settings, name, registry.CHAMPION)
    if current is None:
        return None
    version = str(current.version)
    mine = [e for e in events if str(e["model_version"]) == version]
    decided = [e for e in mine if e["event"] in ("approved", "rejected")]
    approval = decided[-1] if decided else None
    moves = [e for e in events if e["event"] in ("deployed", "rolled_back")]
    since = next((e for e in reversed(moves) if str(e["model_version"]) == version), None)
    previous = next((str(e["model_version"]) for e in reversed(moves) if str(e["model_version"]) != version), None)
    holdout: dict[str, float] = {}
    run_url = None
    if current.run_id:
        run = registry.client(settings).get_run(current.run_id)
        metrics = run.data.metrics
        holdout = {m: metrics[f"holdout_{m}"] for m in metric_names if f"holdout_{m}" in metrics}
        run_url = registry.run_url(settings, run.info.experiment_id, run.info.run_id)
    return Champion(
        version=version,
        since=_iso(since["event_at"]) if since else None,
        approved_by=str(approval["actor"]) if approval else None,
        approved_at=_iso(approval["event_at"]) if approval else None,
        approval_mode=str(approval["mode"]) if approval else None,
        approval_comment=str(approval["comment"]) if approval else "",
        holdout=holdout,
        previous_version=previous,
        version_url=registry.version_url(settings, name, version),
        run_url=run_url,
    )


def _live(results: list[dict[str, Any]], version: str) -> list[LivePerformance]:
    """The champion's live performance over the days of traffic up to the last window monitored while it was the
    champion, as that window's monitoring run measured it (nothing before its first such window)."""
    mine = [r for r in results if str(r.get("champion_version") or "") == version]
    if not mine:
        return []
    last = mine[-1]
    periods = (last.get("summary") or {}).get("live_periods") or {}
    end: date = last["window_end"]
    return [
        LivePerformance(
            days=int(days),
            start=end - timedelta(days=int(days)),
            end=end,
            predictions=int(figures.get("predictions", 0)),
            labelled=int(figures.get("labelled", 0)),
            metrics={str(k): float(v) for k, v in (figures.get("metrics") or {}).items()},
        )
        for days, figures in sorted(periods.items(), key=lambda item: int(item[0]))
    ]


def _decision(row: dict[str, Any], airflow_base: str, dataset: str) -> PolicyDecision:
    run_id = row.get("training_run_id")
    return PolicyDecision(
        window_end=row["window_end"],
        retrain=bool(row["retrain"]),
        trigger=row.get("trigger"),
        summary=str(row["summary"]),
        reasons=[str(r) for r in (row.get("reasons") or [])],
        training_run_url=f"{airflow_base}/dags/train_{dataset}/runs/{quote(run_id, safe='')}" if run_id else None,
    )


def _audit_entry(row: dict[str, Any], settings: Settings, airflow_base: str) -> AuditEntry:
    run_key = str(row["run_key"] or "")
    dag_id = run_key.split("__", 1)[0] if "__" in run_key else ""
    return AuditEntry(
        at=_iso(row["event_at"]),
        event=str(row["event"]),
        version=str(row["model_version"]),
        actor=str(row["actor"]),
        mode=str(row["mode"]),
        comment=str(row["comment"] or ""),
        dag_runs_url=f"{airflow_base}/dags/{quote(dag_id, safe='')}/runs" if dag_id and dag_id != "cli" else None,
        version_url=registry.version_url(settings, str(row["model_name"]), str(row["model_version"])),
    )


def _iso(value: Any) -> str:
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else str(value)
