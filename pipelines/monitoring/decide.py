"""``decide``: gather what the retraining policy needs, apply it, record the decision and the training request.

The facts come from where they live: monitoring history and past retraining requests from the warehouse, the
champion and candidates from the MLflow registry, active training runs from Airflow (counted by the caller). The
decision itself is :func:`pipelines.monitoring.retraining.needs_retraining`, a pure function. A decision to
retrain names the training run to start (a run id derived from the window, so a rerun cannot start a second
one) and its conf: the reason, a link to the evidence, the window to train on and the approval policy for
drift-triggered candidates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from pipelines.core import audit, registry
from pipelines.core.config import DatasetConfig
from pipelines.core.runs import RunContext
from pipelines.core.settings import Settings
from pipelines.monitoring import store
from pipelines.monitoring.retraining import Retraining, TrainingState, needs_retraining

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainingRequest:
    """What the monitoring DAG acts on."""

    retrain: bool
    trigger: str | None
    summary: str
    reasons: list[str]
    window_end: str
    champion_version: str | None
    training_dag_id: str
    training_run_id: str | None
    training_conf: dict[str, Any] | None
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def decide_in_order(
    window_ends: Sequence[date],
    active_training_runs: int,
    decide_one: Callable[[date, int], RetrainingRequest],
) -> list[RetrainingRequest]:
    """Decide the windows of one monitoring run in order, each with ``decide_one(window_end, active_runs)``.

    The training run a window decides to start is triggered after the last window of the run; until then it
    counts as a training run in progress for the later windows, as it would if each window had its own run. So a
    run starts at most one training run, and the windows after it are held back exactly as they would be.
    """
    decided: list[RetrainingRequest] = []
    pending = 0
    for window_end in window_ends:
        request = decide_one(window_end, active_training_runs + pending)
        decided.append(request)
        if request.retrain and not request.reused:
            pending = 1
    return decided


def to_trigger(decided: Sequence[RetrainingRequest]) -> RetrainingRequest:
    """The decision a monitoring run acts on: the window that decided to retrain, else the last window."""
    return next((d for d in decided if d.retrain), decided[-1])


def training_run_id(dataset: str, window_end: date) -> str:
    """The id of the training run triggered for the window ending ``window_end`` (one per window, ever)."""
    return f"retrain__{dataset}__{window_end.isoformat()}"


def outcome_of(tags: dict[str, str] | None, active_training_runs: int) -> str:
    """What became of a triggered training run, from its model version's tags (None: no version yet)."""
    if tags is None:
        return "pending" if active_training_runs else "failed"
    if tags.get("gate.decision") == "failed" or tags.get("approval.status") in ("rejected", "timed_out"):
        return "rejected"
    deployed = tags.get("deploy.status")
    if deployed in ("champion", "rolled_back"):
        return "deployed"
    if deployed in ("smoke_test_failed", "serving_switch_failed"):
        return "failed"
    return "pending" if active_training_runs else "failed"


def _retrainings(config: DatasetConfig, settings: Settings, active_training_runs: int) -> list[Retraining]:
    mlf = registry.client(settings)
    name = config.model.registered_name
    found = []
    for row in store.decisions(settings.warehouse_url, config.name, retrain_only=True):
        run_id = row["training_run_id"]
        versions = mlf.search_model_versions(f"name = '{name}' and tags.`airflow.run_id` = '{run_id}'")
        tags = dict(versions[0].tags) if versions else None
        found.append(Retraining(row["window_end"], run_id, outcome_of(tags, active_training_runs)))  # type: ignore[arg-type]
    return found


def _awaiting_approval(config: DatasetConfig, settings: Settings, active_training_runs: int) -> list[str]:
    """Versions that passed the gate and wait for a person (only a running training run can be waiting)."""
    if not active_training_runs:
        return []
    versions = registry.client(settings).search_model_versions(
        f"name = '{config.model.registered_name}' and tags.`gate.decision` = 'passed'"
    )
    return sorted(str(v.version) for v in versions if "approval.status" not in v.tags)


def _champion_metrics(settings: Settings, run_id: str | None) -> dict[str, float]:
    if not run_id:
        return {}
    metrics = registry.client(settings).get_run(run_id).data.metrics
    return {k.removeprefix("holdout_"): v for k, v in metrics.items() if k.startswith("holdout_")}


def decide_retraining(
    config: DatasetConfig,
    settings: Settings,
    window_end: date,
    run: RunContext,
    active_training_runs: int,
    decided_at: datetime,
) -> RetrainingRequest:
    """Apply the retraining policy for the window ending ``window_end``; record and return the decision.

    A window already decided *to retrain* keeps that decision when rerun (its training run may be running now,
    which would otherwise block it): the training run it names is the same, so nothing is triggered twice.
    """
    dag_id = f"train_{config.name}"
    earlier = store.decision_for(settings.warehouse_url, config.name, window_end)
    if earlier is not None and earlier["retrain"]:
        log.info("the window ending %s was already decided: %s", window_end, earlier["summary"])
        return RetrainingRequest(
            retrain=True,
            trigger=earlier["trigger"],
            summary=earlier["summary"],
            reasons=list(earlier["reasons"]),
            window_end=str(window_end),
            champion_version=earlier["champion_version"],
            training_dag_id=dag_id,
            training_run_id=earlier["training_run_id"],
            training_conf=earlier["training_conf"],
            reused=True,
        )
    name = config.model.registered_name
    champion = registry.alias_version(settings, name, registry.CHAMPION)
    state = TrainingState(
        now=window_end,
        champion_version=str(champion.version) if champion else None,
        champion_metrics=_champion_metrics(settings, champion.run_id if champion else None),
        active_training_runs=active_training_runs,
        awaiting_approval=_awaiting_approval(config, settings, active_training_runs),
        retrainings=_retrainings(config, settings, active_training_runs),
    )
    history = store.history(settings.warehouse_url, config.name, until=window_end)
    decision = needs_retraining(history, state, config.retraining)
    log.info("retraining policy for the window ending %s: %s", window_end, decision.summary())
    for reason in decision.reasons:
        log.info("  %s", reason)
    run_id, conf = None, None
    if decision.retrain:
        run_id = training_run_id(config.name, window_end)
        start = window_end - timedelta(days=config.retraining.train_days)
        conf = {
            "window_start": start.isoformat(),
            "window_end": window_end.isoformat(),
            "reason": f"{decision.trigger}: {decision.summary()}"[:500],
            "evidence": decision.evidence_url,
        }
        audit.record(
            settings.warehouse_url,
            "retraining_triggered",
            at=decided_at,
            dataset=config.name,
            model_name=name,
            model_version=state.champion_version or "none",
            actor=run.dag_id,
            mode="policy",
            comment=(
                f"{decision.summary()}; training run {run_id} on [{start}, {window_end}); candidate approval: "
                f"{config.retraining.approval} (retraining.approval); evidence {decision.evidence_url}"
            )[:2000],
            run_key=run.key,
        )
    store.save_decision(
        settings.warehouse_url,
        {
            "dataset": config.name,
            "window_end": window_end,
            "retrain": decision.retrain,
            "trigger": decision.trigger,
            "summary": decision.summary(),
            "reasons": decision.reasons,
            "champion_version": state.champion_version,
            "training_run_id": run_id,
            "training_conf": conf,
            "run_key": run.key,
            "decided_at": decided_at,
        },
    )
    return RetrainingRequest(
        retrain=decision.retrain,
        trigger=decision.trigger,
        summary=decision.summary(),
        reasons=decision.reasons,
        window_end=str(window_end),
        champion_version=state.champion_version,
        training_dag_id=dag_id,
        training_run_id=run_id,
        training_conf=conf,
    )
