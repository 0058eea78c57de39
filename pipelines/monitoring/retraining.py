"""The retraining policy: a pure decision, with every reason, from monitoring history, training state and a policy.

Every rule is evaluated and gives reason lines, whatever the other rules say, each prefixed so it can be grepped:
``TRIGGER`` / ``NO TRIGGER`` for what calls for retraining (drift, live performance), ``BLOCK`` / ``OK`` for what
stops it. A line reads ``<PREFIX> <head>: <details>``; :meth:`RetrainingDecision.summary` joins the heads. Dates
are data time (window ends), never the wall clock, so a replay or a backfill decides as the original run did.
Live metrics are compared by name with their bounds and the champion's holdout metrics, each in its own direction
(``LOWER_IS_BETTER``: log_loss, brier, rmse, mae), so the rules apply to every task's metrics alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

from pipelines.core.config import LOWER_IS_BETTER, RetrainingPolicy

_EPS = 1e-9  # float noise: a metric exactly at its floor, or a drop exactly at its margin, does not trigger
_DISABLED = "BLOCK retraining disabled"
_NO_CHAMPION = "BLOCK no champion"


@dataclass(frozen=True)
class WindowResult:
    """One monitoring window's outcome."""

    window_start: date
    window_end: date
    status: Literal["ok", "drift", "insufficient_data"]
    champion_version: str  # the version that was champion (and served) during the window
    drift_share: float | None = None  # share of counted features that drifted
    live_metrics: dict[str, float] = field(default_factory=dict)  # {"roc_auc": 0.68}, {"mae": 31.2}; empty: no outcomes
    evidence_url: str = ""  # link to the report (MLflow run)


@dataclass(frozen=True)
class Retraining:
    """A retraining that monitoring triggered earlier."""

    triggered_for: date  # end of the monitoring window that triggered it (data time)
    run_id: str  # the training DAG run
    # rejected: the gate failed, a person rejected, or the approval timed out; failed: the run itself failed
    outcome: Literal["pending", "deployed", "rejected", "failed"]


@dataclass(frozen=True)
class TrainingState:
    """What else is going on, gathered by the caller."""

    now: date  # end of the window being decided on (data time; never the wall clock)
    champion_version: str | None
    champion_metrics: dict[str, float]  # the champion's holdout metrics by name (roc_auc, accuracy, rmse...)
    active_training_runs: int  # queued or running training DAG runs
    awaiting_approval: list[str]  # candidate versions waiting for a person's decision
    retrainings: list[Retraining]  # past triggered retrainings, any order


@dataclass(frozen=True)
class RetrainingDecision:
    """Retrain or not, the trigger (``drift``, ``performance`` or None), one reason line per rule, in rule order."""

    retrain: bool
    trigger: str | None
    reasons: list[str]
    evidence_url: str  # the report of the window that triggered (else the latest counted window), "" if none

    def summary(self) -> str:
        """One line for logs and tags."""
        if self.retrain:
            return f"retrain ({self.trigger}): " + "; ".join(self._heads("TRIGGER "))
        if self.trigger is None:
            gating = [_head(r, "BLOCK ") for r in self.reasons if r.startswith((_DISABLED, _NO_CHAMPION))]
            return "no retraining: " + "; ".join([*gating, f"no trigger ({'; '.join(self._heads('NO TRIGGER '))})"])
        return "no retraining: " + "; ".join(self._heads("BLOCK "))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _heads(self, prefix: str) -> list[str]:
        return [_head(r, prefix) for r in self.reasons if r.startswith(prefix)]


def _head(line: str, prefix: str) -> str:
    return line.removeprefix(prefix).split(": ", 1)[0]


def _plus_days(day: date, days: int) -> date:
    """``day`` + ``days``, saturating at ``date.max`` (a long backoff doubling must not crash the decision)."""
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return date.max


def _counted_windows(history: Sequence[WindowResult], state: TrainingState) -> list[WindowResult]:
    """Windows that count, oldest first: ended by ``now``, the last one given per window end, of the current
    champion (a new champion brings a new reference), with enough data."""
    latest: dict[date, WindowResult] = {}
    for window in history:
        if window.window_end <= state.now:
            latest[window.window_end] = window
    return [
        w
        for _, w in sorted(latest.items())
        if w.champion_version == state.champion_version and w.status != "insufficient_data"
    ]


def _dates(windows: Sequence[WindowResult]) -> str:
    ends = [str(w.window_end) for w in windows]
    return ", ".join(ends) if len(ends) <= 5 else f"{ends[0]}, {ends[1]}, ..., {ends[-1]} ({len(ends)} windows)"


def _drift(windows: list[WindowResult], policy: RetrainingPolicy, champion: str) -> str:
    need = policy.drift_windows
    streak = 0
    for window in reversed(windows):
        if window.status != "drift":
            break
        streak += 1
    if streak >= need:
        run = windows[-streak:]
        share = run[-1].drift_share
        detail = f"windows ending {_dates(run)}, need {need}" + ("" if share is None else f"; drift share {share:.4f}")
        return f"TRIGGER drift in {streak} consecutive windows: {detail}"
    if len(windows) < need:
        why = f"only {len(windows)} window(s) of champion {champion} with enough data"
    else:
        why = f"window ending {windows[-1 - streak].window_end} had no drift"
    return f"NO TRIGGER drift in {streak} of {need} consecutive windows: {why}"


def _floor(metric: str, bound: float, value: float | None, where: str) -> str:
    lower = metric in LOWER_IS_BETTER
    word = "ceiling" if lower else "floor"
    if value is None or not math.isfinite(value):
        return f"NO TRIGGER {metric} unknown: no live value in the {where} ({word} {bound:.4f})"
    if value > bound + _EPS if lower else value < bound - _EPS:
        return f"TRIGGER {metric} {value:.4f} {'above' if lower else 'below'} {word} {bound:.4f}: live, {where}"
    return f"NO TRIGGER {metric} {value:.4f} within {word} {bound:.4f}: live, {where}"


def _drop(metric: str, margin: float, value: float | None, base: float | None, where: str) -> str:
    if value is None or not math.isfinite(value):
        return f"NO TRIGGER {metric} drop unknown: no live value in the {where}"
    if base is None or not math.isfinite(base):
        return f"NO TRIGGER {metric} drop unknown: the champion has no holdout {metric}"
    lower = metric in LOWER_IS_BETTER
    drop = (value - base) if lower else (base - value)
    detail = f"live {value:.4f} vs champion holdout {base:.4f} ({'lower' if lower else 'higher'} is better), {where}"
    if drop > margin + _EPS:
        return f"TRIGGER {metric} dropped {drop:+.4f} > max {margin:.4f}: {detail}"
    return f"NO TRIGGER {metric} drop {drop:+.4f} within max {margin:.4f}: {detail}"


def _performance(
    windows: list[WindowResult], state: TrainingState, policy: RetrainingPolicy
) -> tuple[WindowResult | None, list[str]]:
    """Reason lines for the live metrics, averaged over the latest ``performance_windows`` windows that have them
    (one day of outcomes is noisy), and the latest of those windows."""
    if not policy.performance_floor and not policy.max_drop:
        return None, ["NO TRIGGER performance not monitored: no performance_floor or max_drop in the policy"]
    need = policy.performance_windows
    with_metrics = [w for w in windows if w.live_metrics][-need:]
    if len(with_metrics) < need:
        return None, [
            f"NO TRIGGER performance unknown: {len(with_metrics)} of the {need} windows of champion "
            f"{state.champion_version} it is judged on have live metrics (too few known outcomes)"
        ]
    window = with_metrics[-1]
    if need == 1:
        where = f"window ending {window.window_end}"
    else:
        where = f"mean of {need} windows ending {with_metrics[0].window_end}..{window.window_end}"

    def live(metric: str) -> float | None:
        values = [w.live_metrics.get(metric) for w in with_metrics]
        known = [v for v in values if v is not None and math.isfinite(v)]
        return sum(known) / len(known) if len(known) == len(values) else None

    lines = [_floor(m, bound, live(m), where) for m, bound in sorted(policy.performance_floor.items())]
    lines += [
        _drop(m, margin, live(m), state.champion_metrics.get(m), where) for m, margin in sorted(policy.max_drop.items())
    ]
    return window, lines


def _running(state: TrainingState) -> str:
    if state.active_training_runs > 0:
        return f"BLOCK training run in progress: {state.active_training_runs} queued or running training run(s)"
    return "OK no training run in progress"


def _approval(state: TrainingState) -> str:
    if state.awaiting_approval:
        versions = ", ".join(state.awaiting_approval)
        return f"BLOCK version(s) {versions} awaiting approval: a person has yet to approve or reject"
    return "OK no candidate awaiting approval"


def _cooldown(state: TrainingState, policy: RetrainingPolicy) -> str:
    if not state.retrainings:
        return "OK cooldown: no earlier retraining"
    last = max(r.triggered_for for r in state.retrainings)
    days = (state.now - last).days
    until = _plus_days(last, policy.cooldown_days)
    if days < 0:  # a later window already triggered (backfill or replay): do not retrain for an earlier one
        return f"BLOCK cooldown until {until}: last retraining for {last}, {-days} days after this window"
    detail = f"last retraining for {last}, {days} days ago"
    if days < policy.cooldown_days:
        return f"BLOCK cooldown until {until}: {detail} < {policy.cooldown_days} days"
    return f"OK cooldown over since {until}: {detail} >= {policy.cooldown_days} days"


def _per_period(state: TrainingState, policy: RetrainingPolicy) -> str:
    start = state.now - timedelta(days=policy.period_days)
    inside = sorted(r.triggered_for for r in state.retrainings if start < r.triggered_for <= state.now)
    count, cap, period = len(inside), policy.max_retrainings, policy.period_days
    detail = f"retrainings for ({start}, {state.now}]: {', '.join(map(str, inside)) or 'none'}"
    if count >= cap:
        until = _plus_days(inside[count - cap], period)  # when enough of them have left the period
        return f"BLOCK {count} of max {cap} retrainings in {period} days until {until}: {detail}"
    return f"OK {count} of max {cap} retrainings in {period} days: {detail}"


def _backoff(state: TrainingState, policy: RetrainingPolicy) -> str:
    """Rejections in a row at the end (``failed`` and ``pending`` skipped, ``deployed`` resets) double the wait."""
    rejections = 0
    last: date | None = None
    for retraining in sorted(state.retrainings, key=lambda r: r.triggered_for, reverse=True):
        if retraining.outcome == "deployed":
            break
        if retraining.outcome == "rejected":
            rejections += 1
            last = retraining.triggered_for if last is None else last
    if last is None:
        return "OK backoff: no rejected candidate since the last deployment"
    wait = policy.backoff_days * 2 ** (rejections - 1)
    until = _plus_days(last, wait)
    detail = (
        f"{rejections} rejection(s) in a row, the last for {last}; "
        f"wait {policy.backoff_days} x 2^{rejections - 1} = {wait} days"
    )
    if state.now < until:
        return f"BLOCK backoff until {until}: {detail}"
    return f"OK backoff over since {until}: {detail}"


def needs_retraining(
    history: Sequence[WindowResult], state: TrainingState, policy: RetrainingPolicy
) -> RetrainingDecision:
    """Decide from the monitoring ``history`` whether to retrain the champion now (``state.now``, data time).

    Triggers, on the current champion's windows up to ``now`` with enough data: the last ``drift_windows`` all
    drifted; a live metric of the latest window with live metrics beyond ``performance_floor`` or worse than the
    champion's holdout by more than ``max_drop`` (performance wins when both trigger). Blocks: a training run in
    progress, a candidate awaiting approval, the cooldown, ``max_retrainings`` per ``period_days``, and the backoff
    after rejections. Retrain when enabled, with a champion, a trigger and no block.
    """
    champion = state.champion_version
    reasons = [
        "OK retraining enabled by policy" if policy.enabled else f"{_DISABLED} by policy: policy.enabled is false",
        f"OK champion {champion}: triggers judged on its windows"
        if champion is not None
        else f"{_NO_CHAMPION}: nothing to compare windows with",
    ]
    windows = _counted_windows(history, state)
    performance_window: WindowResult | None = None
    if champion is None:
        trigger_lines = ["NO TRIGGER drift without a champion", "NO TRIGGER performance without a champion"]
        drifting = performing_badly = False
    else:
        drift_line = _drift(windows, policy, champion)
        performance_window, performance_lines = _performance(windows, state, policy)
        trigger_lines = [drift_line, *performance_lines]
        drifting = drift_line.startswith("TRIGGER ")
        performing_badly = any(line.startswith("TRIGGER ") for line in performance_lines)
    reasons += trigger_lines
    trigger = "performance" if performing_badly else "drift" if drifting else None

    blocks = [
        _running(state),
        _approval(state),
        _cooldown(state, policy),
        _per_period(state, policy),
        _backoff(state, policy),
    ]
    reasons += blocks
    blocked = any(line.startswith("BLOCK ") for line in blocks)

    evidence = performance_window if trigger == "performance" else (windows[-1] if windows else None)
    return RetrainingDecision(
        retrain=policy.enabled and champion is not None and trigger is not None and not blocked,
        trigger=trigger,
        reasons=reasons,
        evidence_url=evidence.evidence_url if evidence is not None else "",
    )
