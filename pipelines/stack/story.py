"""The second half of ``make demo``: 2013 replayed day by day with ``monitor_<dataset>`` checking every day.

A week at a time: ``replay_<dataset>`` plays the week through the prediction service, then one
``monitor_<dataset>`` run checks it day by day (``step_days=1``: a result and a retraining decision per day, in
order, as daily runs would give, without paying Airflow's task start and the imports once a day). When the
retraining policy starts a ``train_<dataset>`` run, the demo follows it, answers its approval on the user's behalf
(or waits for a person, ``DEMO_APPROVAL=ui``) and, once the new champion serves, replays a few more days to show
its live performance. Everything here goes through Airflow's REST API; the timeline is read back from what the
pipeline recorded (monitoring results, retraining decisions, the prediction log, ground truth).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Literal

from pipelines.stack import services
from pipelines.stack.airflow_client import AirflowClient
from pipelines.stack.dag_runs import POLL_SECONDS, champion, client, follow_training, run_replay, wait_for_dag
from pipelines.stack.processes import StackError
from pipelines.stack.settings import StackSettings

log = logging.getLogger(__name__)

CHUNK_DAYS = 7


@dataclass
class Timeline:
    """What happened between the first deployment and the end of the replay."""

    dataset: str
    start: date
    end: date
    monitor_runs: int = 0
    replay: dict[str, Any] = field(default_factory=dict)
    days: list[dict[str, Any]] = field(default_factory=list)
    drift_started: date | None = None
    detected: date | None = None
    decision: str = ""
    evidence: str = ""
    training_run_id: str | None = None
    training_state: str | None = None
    approved_by: str | None = None
    old_version: str | None = None
    new_version: str | None = None
    took_over: date | None = None
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days)]


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min)


def _monitor(api: AirflowClient, stack: StackSettings, dataset: str, start: date, end: date) -> int:
    """One ``monitor_<dataset>`` run checking ``[start, end)`` day by day (a result and a decision per day)."""
    dag_id = f"monitor_{dataset}"
    conf = {"window_start": str(start), "window_end": str(end), "step_days": 1}
    run_id = api.trigger(dag_id, conf, note=f"started by `make demo`: {start} .. {end - timedelta(days=1)}, daily")
    state = api.follow(dag_id, run_id, timeout=900, interval=POLL_SECONDS)
    if state != "success":
        raise StackError(
            f"{dag_id} run {run_id} ({start} .. {end}) ended {state}: {stack.airflow_url}/dags/{dag_id}/runs/{run_id}"
        )
    return 1


def _new_retraining(stack: StackSettings, dataset: str, after: date, handled: set[str]) -> dict[str, Any] | None:
    from pipelines.monitoring import store

    settings = services.pipeline_settings(stack)
    for row in store.decisions(settings.warehouse_url, dataset, retrain_only=True):
        if row["window_end"] > after and row["training_run_id"] not in handled:
            return row
    return None


def _report(states: dict[str, str | None]) -> None:
    log.info("  retraining tasks: %s", ", ".join(f"{t}={s or 'none'}" for t, s in states.items()))


def run_story(
    stack: StackSettings,
    dataset: str,
    start: date,
    *,
    max_days: int,
    days_after: int,
    approval: Literal["api", "ui"],
    comment: str,
) -> Timeline:
    """Replay from ``start`` with daily monitoring until the policy's new champion served ``days_after`` days."""
    api = client(stack)
    timeline = Timeline(dataset=dataset, start=start, end=start)
    limit = start + timedelta(days=max_days)
    handled: set[str] = set()
    totals: dict[str, int] = {}
    model_name = _model_name(stack, dataset)
    timeline.old_version = champion(stack, model_name)[0]
    try:
        for dag_id in (f"monitor_{dataset}", f"replay_{dataset}"):
            wait_for_dag(api, dag_id)
            api.unpause(dag_id)
        day = start
        while day < limit:
            chunk = days_after if timeline.took_over else CHUNK_DAYS
            chunk_end = min(day + timedelta(days=chunk), limit)
            _, replayed = run_replay(stack, dataset, str(day), str(chunk_end))
            for key in ("days_replayed", "days_skipped", "requests", "answered", "rejected"):
                totals[key] = totals.get(key, 0) + int(replayed.get(key, 0))
            log.info(
                "monitoring %s..%s day by day, one %s run", day, chunk_end - timedelta(days=1), f"monitor_{dataset}"
            )
            timeline.monitor_runs += _monitor(api, stack, dataset, day, chunk_end)
            timeline.end = day = chunk_end
            if timeline.took_over is not None:
                break
            decided = _new_retraining(stack, dataset, start, handled)
            if decided is None:
                continue
            run_id = str(decided["training_run_id"])
            handled.add(run_id)
            timeline.detected, timeline.decision = decided["window_end"], str(decided["summary"])
            timeline.training_run_id = run_id
            timeline.evidence = str((decided.get("training_conf") or {}).get("evidence", ""))
            log.info(
                "the retraining policy started train_%s run %s: %s/dags/train_%s/runs/%s",
                dataset,
                run_id,
                stack.airflow_url,
                dataset,
                run_id,
            )
            timeline.training_state, timeline.approved_by = follow_training(
                api,
                stack,
                f"train_{dataset}",
                run_id,
                approval=approval,
                comment=comment,
                timeout=1200,
                on_change=_report,
            )
            version = champion(stack, model_name)[0]
            if timeline.training_state == "success" and version != timeline.old_version:
                timeline.new_version, timeline.took_over = version, chunk_end
                log.info("v%s is the new champion; replaying %d more days", version, days_after)
    finally:
        api.close()
    timeline.replay = {
        "dataset": dataset,
        "window": f"[{start}, {timeline.end})",
        **totals,
    }
    _read_back(stack, timeline)
    return timeline


def _model_name(stack: StackSettings, dataset: str) -> str:
    from pipelines.core.config import load_dataset_config

    return load_dataset_config(dataset, stack.datasets_dir).model.registered_name


def _read_back(stack: StackSettings, timeline: Timeline) -> None:
    """Fill the timeline from what the pipeline recorded."""
    from pipelines.core.config import load_dataset_config
    from pipelines.monitoring import store
    from pipelines.monitoring.outcomes import live_performance
    from pipelines.serving.prediction_log import served_by_version

    settings = services.pipeline_settings(stack)
    config = load_dataset_config(timeline.dataset, settings.datasets_dir)
    results = {
        r["window_start"]: r
        for r in store.results(settings.warehouse_url, timeline.dataset)
        if timeline.start <= r["window_start"] < timeline.end
    }
    decided = {
        d["window_end"]: d
        for d in store.decisions(settings.warehouse_url, timeline.dataset)
        if timeline.start < d["window_end"] <= timeline.end
    }
    for day in _days(timeline.start, timeline.end):
        row = results.get(day) or {}
        decision = decided.get(day + timedelta(days=1)) or {}
        served = served_by_version(
            settings.warehouse_url, timeline.dataset, _midnight(day), _midnight(day + timedelta(days=1))
        )
        timeline.days.append(
            {
                "day": day,
                "status": row.get("status"),
                "drift_share": row.get("drift_share"),
                "drifted": (row.get("summary") or {}).get("drifted_features", []),
                "roc_auc": (row.get("live_metrics") or {}).get("roc_auc"),
                "retrain": bool(decision.get("retrain")),
                "served_by": served,
            }
        )
    timeline.drift_started = next((d["day"] for d in timeline.days if d["status"] == "drift"), None)
    if timeline.new_version:
        first = next((d["day"] for d in timeline.days if timeline.new_version in d["served_by"]), None)
        timeline.took_over = first or timeline.took_over
    switch = timeline.took_over or timeline.end
    for key, (lo, hi, version) in {
        "before": (timeline.start, switch, timeline.old_version),
        "after": (switch, timeline.end, timeline.new_version),
    }.items():
        if version is None or lo >= hi:
            continue
        for perf in live_performance(config, settings, _midnight(lo), _midnight(hi)):
            if perf.model_version == version and perf.labelled:
                setattr(timeline, key, {"version": version, "from": lo, "to": hi, **perf.to_dict()})


def timeline_lines(timeline: Timeline) -> list[str]:
    """The story, for the summary: a strip per week and the key dates."""
    lines = ["", f"  monitoring timeline {timeline.start} .. {timeline.end - timedelta(days=1)} "
             f"({len(timeline.days)} days checked in {timeline.monitor_runs} monitor_{timeline.dataset} runs; "
             ". ok, D drift, - insufficient data, "
             "R retraining decided, * first day served by the new champion):"]  # fmt: skip
    for week_start in range(0, len(timeline.days), 7):
        week = timeline.days[week_start : week_start + 7]
        marks = ""
        for d in week:
            mark = {"ok": ".", "drift": "D", "insufficient_data": "-"}.get(str(d["status"]), "?")
            if d["retrain"]:
                mark = "R"
            if timeline.took_over == d["day"]:
                mark = "*"
            marks += mark
        shares = " ".join(f"{d['drift_share']:.2f}" if d["drift_share"] is not None else " -- " for d in week)
        lines.append(f"    {week[0]['day']}  {marks:<7}  drift share {shares}")
    first_drift = next((d for d in timeline.days if d["status"] == "drift"), None)
    lines.append(
        "  drift started: "
        + (f"{first_drift['day']} ({', '.join(first_drift['drifted'])} beyond the champion's own day-to-day spread)"
           if first_drift else "no drifted day in the replay")
    )  # fmt: skip
    if timeline.detected:
        lines.append(f"  detected: window ending {timeline.detected}: {timeline.decision}")
        lines.append(f"    evidence: {timeline.evidence}")
        lines.append(
            f"  retraining: train run {timeline.training_run_id} {timeline.training_state}"
            + (f", approved by {timeline.approved_by}" if timeline.approved_by else "")
        )
    else:
        lines.append("  detected: the retraining policy did not fire in this replay")
    if timeline.new_version:
        new, old = timeline.new_version, timeline.old_version
        lines.append(f"  new champion: v{new} (replacing v{old}) serves from {timeline.took_over}")
    for label, perf in (("before", timeline.before), ("after", timeline.after)):
        if perf:
            last = perf["to"] - timedelta(days=1)
            lines.append(
                f"  live performance {label}: v{perf['version']} on {perf['from']}..{last} ({perf['labelled']} "
                f"outcomes): roc_auc {_fmt(perf.get('roc_auc'))}, log_loss {_fmt(perf.get('log_loss'))}"
            )
    return lines


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
