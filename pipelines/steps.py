"""The pipeline's steps as one call each, shared by the Airflow tasks and the command line.

Each step loads the dataset config (plus the run's validated overrides), does its work through the modules of
this package, writes its small JSON result into the run's partition (so the next step can also run from a shell)
and returns that result. Inputs and outputs are small dicts: paths, versions, ids, metrics; never data frames.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.core.config import DatasetConfig, load_dataset_config
from pipelines.core.errors import ConfigError, NotFoundError
from pipelines.core.runs import RunContext, Window
from pipelines.core.settings import Settings, get_settings

if TYPE_CHECKING:
    from pipelines.core.notifications import Notification

log = logging.getLogger(__name__)

Result = dict[str, Any]


def notify(build: Callable[[], Notification], key: str = "") -> None:
    """Build and deliver a notification (``pipelines.core.notifications``); a failure to build one is logged, and
    delivery never raises: a message that cannot go out never fails the step. ``key`` is the event's identity: a
    rerun of the step does not send it again to a channel that had it delivered."""
    from pipelines.core.notifications import deliver

    try:
        notification = dataclasses.replace(build(), key=key)
    except Exception:
        log.exception("could not build a notification")
        return
    deliver(notification)


def dataset_config(dataset: str, overrides: dict[str, Any] | None = None) -> DatasetConfig:
    """The dataset's config with the run's overrides applied and validated (policy cannot be overridden)."""
    return load_dataset_config(dataset, get_settings().datasets_dir).with_run_overrides(overrides)


def _partition(settings: Settings, dataset: str, run: RunContext) -> Path:
    return settings.data_dir / dataset / run.key


def save_result(dataset: str, run: RunContext, step: str, result: Result) -> Result:
    """Keep a step's result in the run's partition (``<step>.json``)."""
    path = _partition(get_settings(), dataset, run) / f"{step}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
    return result


def load_result(dataset: str, run: RunContext, step: str) -> Result:
    """A result saved by an earlier step of the same run."""
    path = _partition(get_settings(), dataset, run) / f"{step}.json"
    if not path.is_file():
        raise NotFoundError(f"no {step} result for run {run.key!r} ({path}): run the {step} step first")
    data: Result = json.loads(path.read_text())
    return data


def resolve_window(config: DatasetConfig, start: str | date | None, end: str | date | None) -> Window | None:
    """The run's window: the given bounds, else the config's default window; None when the dataset has no time
    column (a run reads the whole source; given bounds are ignored, with a warning)."""
    if config.time_column is None or config.window is None:
        if start or end:
            log.warning("dataset %s has no time column: bounds %s..%s ignored, reading it all", config.name, start, end)
        return None
    return Window(
        date.fromisoformat(str(start)) if start else config.window.start,
        date.fromisoformat(str(end)) if end else config.window.end,
    )


def _day_window(config: DatasetConfig, start: str | date | None, end: str | date | None, what: str) -> Window:
    """The window of a step that works day by day on event time (replay, outcomes); a ConfigError without one."""
    window = resolve_window(config, start, end)
    if window is None:
        raise ConfigError(f"dataset {config.name!r}: {what} needs source.time_column (it works on days of events)")
    return window


def scheduled_window(dataset: str, last: date, overrides: dict[str, Any] | None = None) -> tuple[str, str]:
    """The window of a scheduled training run: the ``retraining.train_days`` before ``last`` (its interval's end)."""
    days = dataset_config(dataset, overrides).retraining.train_days
    return (last - timedelta(days=days)).isoformat(), last.isoformat()


def seed(dataset: str, start: str | date | None = None, end: str | date | None = None) -> Result:
    """Stage the dataset's demo rows: ``[start, end)`` (default: the config's window; all rows without a time
    column) into a staged source's warehouse table, or a file source's file when it does not exist yet."""
    from dataclasses import asdict

    from pipelines.data.seed import seed as seed_rows

    config = dataset_config(dataset)
    return asdict(seed_rows(config, get_settings(), resolve_window(config, start, end)))


def extract(
    dataset: str,
    run: RunContext,
    start: str | None = None,
    end: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Result:
    """Snapshot the run's window of the source (all of it without a time column) to Parquet, with its data
    version."""
    from pipelines.data.extract import extract as extract_window

    config = dataset_config(dataset, overrides)
    snapshot = extract_window(config, get_settings(), resolve_window(config, start, end), run)
    return save_result(dataset, run, "extract", snapshot.to_dict())


def validate(dataset: str, run: RunContext, snapshot: Result, overrides: dict[str, Any] | None = None) -> Result:
    """Run the dataset's expectation suite on the snapshot; raises ``DataValidationError`` on failure."""
    from pipelines.data.validation.run import validate_snapshot

    config = dataset_config(dataset, overrides)
    summary = validate_snapshot(config, get_settings(), snapshot["path"], run)
    return save_result(dataset, run, "validate", summary.to_dict())


def train(
    dataset: str, run: RunContext, snapshot: Result, validation: Result, overrides: dict[str, Any] | None = None
) -> Result:
    """Train, log and register a candidate (reuses the run's version when rerun)."""
    from pipelines.training.train import train as train_model

    config = dataset_config(dataset, overrides)
    result = train_model(config, get_settings(), snapshot, validation, run)
    return save_result(dataset, run, "train", result.to_dict())


def evaluate(
    dataset: str, run: RunContext, snapshot: Result, trained: Result, overrides: dict[str, Any] | None = None
) -> Result:
    """Score candidate and champion on the holdout; log metrics and plots to the candidate's run."""
    from pipelines.training.evaluate import evaluate as evaluate_model

    config = dataset_config(dataset, overrides)
    result = evaluate_model(config, get_settings(), snapshot, trained)
    return save_result(dataset, run, "evaluate", result.to_dict())


def gate(
    dataset: str,
    run: RunContext,
    trained: Result,
    evaluation: Result,
    validation: Result,
    decided_at: datetime,
    overrides: dict[str, Any] | None = None,
) -> Result:
    """Apply the gate policy; log the decision and reasons to the run and the model version.

    The result carries the approval mode and the Markdown evidence for the approver.
    """
    from pipelines.release.approval import approval_body, record_gate
    from pipelines.release.gate import promotion_decision

    config = dataset_config(dataset, overrides)
    settings = get_settings()
    decision = promotion_decision(config.gate, evaluation)
    log.info(decision.summary())
    for reason in decision.reasons:
        log.info("  %s", reason)
    record_gate(config, settings, trained, decision.to_dict(), run, decided_at, overrides)
    mode, why = approval_mode(config, settings, run)
    log.info("approval: %s (%s)", mode, why)
    result = {
        **decision.to_dict(),
        "summary": decision.summary(),
        "approval_mode": mode,
        "approval_mode_reason": why,
        "approval_timeout_minutes": config.approval.timeout_minutes,
        "mlflow_run_url": trained["mlflow_run_url"],
        "model_version_url": trained["model_version_url"],
    }
    result["approval_body"] = approval_body(trained, evaluation, result, str(validation.get("data_docs_url", "")))
    if not decision.passed:
        notify(lambda: _refused(dataset, trained, evaluation, result), key=f"{run.key}/gate/refused")
    return save_result(dataset, run, "gate", result)


def _refused(dataset: str, trained: Result, evaluation: Result, decision: Result) -> Notification:
    from pipelines.core.notifications import message

    return message.candidate_refused(
        dataset,
        trained["model_name"],
        str(trained["model_version"]),
        summary=decision["summary"],
        reasons=decision["reasons"],
        candidate_metrics=evaluation["candidate"],
        champion_metrics=evaluation.get("champion"),
        champion_version=evaluation.get("champion_version"),
        mlflow_run_url=trained.get("mlflow_run_url"),
        model_version_url=trained.get("model_version_url"),
    )


def approval_mode(config: DatasetConfig, settings: Settings, run: RunContext) -> tuple[str, str]:
    """How this run's candidate is approved, and why: ``retraining.approval`` for a training run that the
    retraining policy triggered (its decision, naming this run, is in the warehouse: a person cannot claim it by a
    DAG param), ``approval.mode`` for any other run."""
    from pipelines.monitoring.store import decision_for_training_run

    if run.dag_id == f"train_{config.name}":
        decided = decision_for_training_run(settings.warehouse_url, config.name, run.run_id)
        if decided is not None:
            return config.retraining.approval, (
                f"retraining.approval: the retraining policy triggered this run for the window ending "
                f"{decided['window_end']} ({decided['trigger']})"
            )
    return config.approval.mode, "approval.mode"


def record_approval(
    dataset: str,
    run: RunContext,
    trained: Result,
    *,
    status: str,
    decided_by: str,
    decided_at: datetime,
    mode: str,
    comment: str = "",
    overrides: dict[str, Any] | None = None,
) -> Result:
    """Record an approval decision (a person's, the policy's, or a timeout) on the version and in the audit."""
    from pipelines.release.approval import record_approval as record

    config = dataset_config(dataset, overrides)
    rec = record(
        config,
        get_settings(),
        trained,
        run,
        status=status,
        decided_by=decided_by,
        decided_at=decided_at,
        mode=mode,
        comment=comment,
    )
    return save_result(dataset, run, "approve", {**rec.to_dict(), "model_version_url": trained["model_version_url"]})


def deploy(
    dataset: str,
    run: RunContext,
    trained: Result,
    snapshot: Result,
    deployed_at: datetime,
    overrides: dict[str, Any] | None = None,
) -> Result:
    """Move ``champion`` to the approved version, smoke-test it, switch the service, prepare monitoring's reference."""
    from pipelines.core.notifications import mark_notified, message
    from pipelines.release.deploy import deploy as deploy_version
    from pipelines.serving.switch import ServiceSwitch

    config = dataset_config(dataset, overrides)
    settings = get_settings()
    name, version = trained["model_name"], str(trained["model_version"])
    try:
        result = deploy_version(
            config, settings, trained, snapshot, run, deployed_at, ServiceSwitch.from_settings(settings, dataset)
        )
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        url = trained.get("model_version_url")
        notify(
            lambda: message.deploy_failed(dataset, name, version, error=error, actor=run.dag_id, model_version_url=url)
        )
        mark_notified(exc, "deploy_failed")
        raise
    if result.changed:
        _prepare_reference_now(config, settings, result.model_name, result.champion_version)
        notify(
            lambda: message.deployed(
                dataset,
                result.model_name,
                result.champion_version,
                previous_version=result.previous_version,
                actor=run.dag_id,
                model_version_url=result.model_version_url,
                smoke_single_p50_ms=result.smoke_single_p50_ms,
            ),
            key=f"{run.key}/deploy/{result.model_name}/{result.champion_version}",
        )
    return save_result(dataset, run, "deploy", result.to_dict())


def _prepare_reference_now(config: DatasetConfig, settings: Settings, name: str, version: str) -> None:
    """Prepare the new champion's monitoring reference now (monitoring would otherwise do it on its first run)."""
    from pipelines.monitoring.reference import record_reference

    try:
        record_reference(config, settings, name, version)
    except Exception as exc:  # monitoring must not undo a good deployment: it prepares the reference itself later
        log.warning("could not record the monitoring reference of v%s now (%s): monitoring will retry", version, exc)


def rollback(dataset: str, run: RunContext, at: datetime, to_version: str | None = None, reason: str = "") -> Result:
    """Move ``champion`` back to the previous champion (or ``to_version``)."""
    from pipelines.core.notifications import message
    from pipelines.release.rollback import rollback as rollback_alias
    from pipelines.serving.switch import ServiceSwitch

    config = dataset_config(dataset)
    settings = get_settings()
    result = rollback_alias(
        config, settings, run, at, to_version, reason, ServiceSwitch.from_settings(settings, dataset)
    )
    if result.changed:
        notify(
            lambda: message.rolled_back(
                dataset,
                result.model_name,
                from_version=result.previous_version,
                to_version=result.champion_version,
                actor=run.dag_id,
                reason=reason,
                model_version_url=result.model_version_url,
            )
        )
    return result.to_dict()


def replay(
    dataset: str, run: RunContext, start: str | date, end: str | date, batch_size: int = 50, concurrency: int = 4
) -> Result:
    """Replay ``[start, end)`` day by day through the prediction service, then record the outcomes."""
    from pipelines.monitoring.replay import replay as replay_days

    config = dataset_config(dataset)
    return replay_days(
        config,
        get_settings(),
        _day_window(config, start, end, "replay"),
        run.key,
        batch_size=batch_size,
        concurrency=concurrency,
    ).to_dict()


def record_outcomes(dataset: str, start: str | date | None, end: str | date | None, observed_at: datetime) -> Result:
    """Record the known outcomes of ``[start, end)`` (the whole source without a time column) as ground truth."""
    from pipelines.monitoring.outcomes import record_outcomes as record

    config = dataset_config(dataset)
    return record(config, get_settings(), resolve_window(config, start, end), observed_at).to_dict()


def live_performance(dataset: str, start: str | date | None = None, end: str | date | None = None) -> Result:
    """Live performance per model version: logged predictions joined to ground truth (event time in the range)."""
    from pipelines.monitoring.outcomes import live_performance as performance

    config = dataset_config(dataset)
    lo = datetime.combine(date.fromisoformat(str(start)), datetime.min.time()) if start else None
    hi = datetime.combine(date.fromisoformat(str(end)), datetime.min.time()) if end else None
    return {
        "dataset": dataset,
        "start": str(start) if start else None,
        "end": str(end) if end else None,
        "versions": [p.to_dict() for p in performance(config, get_settings(), lo, hi)],
    }


_WINDOW_SUMMARY = ("window_start", "window_end", "status", "rows", "drift_share", "mlflow_run_url")


def monitor(
    dataset: str,
    run: RunContext,
    start: str | date,
    end: str | date,
    checked_at: datetime,
    step_days: int | None = None,
) -> Result:
    """Check ``[start, end)`` of the prediction log for drift (and live performance) against the champion.

    With ``step_days``, the range is checked as consecutive windows of that many days, in order (one result each);
    the result is the last window's, with every window summarised under ``windows``.
    """
    from pipelines.monitoring.monitor import DeferredTimeline, monitor_window, rebuild_timeline

    config = dataset_config(dataset)
    whole = Window(date.fromisoformat(str(start)), date.fromisoformat(str(end)))
    windows = whole.split(step_days) if step_days else [whole]
    deferred = DeferredTimeline() if len(windows) > 1 else None  # one timeline rebuild per run, not per window
    try:
        results = [
            monitor_window(config, get_settings(), window, run, checked_at, deferred).to_dict() for window in windows
        ]
    finally:  # the windows checked before a failure are on the timeline too
        if deferred is not None and deferred.needed:
            rebuild_timeline(config, get_settings())
    for checked in results:
        if checked["status"] == "drift":
            window = f"{checked['window_start']}_{checked['window_end']}"
            notify(
                functools.partial(_drifted, dataset, checked),
                key=f"{dataset}/drift/{window}/v{checked.get('champion_version')}",
            )
    result = dict(results[-1])
    if len(results) > 1:
        result["windows"] = [{k: r[k] for k in _WINDOW_SUMMARY} for r in results]
    return save_result(dataset, run, "monitor", result)


def _drifted(dataset: str, checked: Result) -> Notification:
    from pipelines.core.notifications import message

    return message.drift_detected(
        dataset,
        window=f"[{checked['window_start']}, {checked['window_end']})",
        champion_version=checked.get("champion_version"),
        drift_share=checked.get("drift_share"),
        drifted_features=checked.get("drifted_features") or [],
        message=checked.get("message", ""),
        evidence_url=checked.get("mlflow_run_url"),
        report_dir=checked.get("report_dir"),
    )


def _retraining(dataset: str, decided: Result) -> Notification:
    from pipelines.core.notifications import message

    conf = decided.get("training_conf") or {}
    window = f"[{conf['window_start']}, {conf['window_end']})" if conf.get("window_start") else None
    return message.retraining_decided(
        dataset,
        window_end=str(decided["window_end"]),
        trigger=decided.get("trigger"),
        summary=decided["summary"],
        reasons=decided.get("reasons") or [],
        training_dag_id=decided["training_dag_id"],
        training_run_id=decided.get("training_run_id"),
        training_window=window,
        evidence_url=conf.get("evidence"),
        training_run_url=_airflow_run_url(decided["training_dag_id"], decided.get("training_run_id")),
    )


def _airflow_run_url(dag_id: str, run_id: str | None) -> str | None:
    from pipelines.core.notifications.message import airflow_link

    return airflow_link(get_settings().airflow_ui_url, dag_id, run_id) if run_id else None


def decide_retraining(
    dataset: str, run: RunContext, window_end: str | date, active_training_runs: int, decided_at: datetime
) -> Result:
    """Apply the retraining policy to the monitoring history up to ``window_end``; record the decision."""
    return decide_windows(dataset, run, [window_end], active_training_runs, decided_at)


def decide_checked(
    dataset: str, run: RunContext, checked: Result, active_training_runs: int, decided_at: datetime
) -> Result:
    """:func:`decide_windows` on every window that :func:`monitor` checked (its ``windows``, else its one window)."""
    ends = [window["window_end"] for window in checked.get("windows") or [checked]]
    return decide_windows(dataset, run, ends, active_training_runs, decided_at)


def decide_windows(
    dataset: str,
    run: RunContext,
    window_ends: Sequence[str | date],
    active_training_runs: int,
    decided_at: datetime,
) -> Result:
    """Apply the retraining policy to each window of a monitoring run, in order; record every decision.

    The result is the decision to act on (the window that decided to retrain, else the last one), with every
    window's verdict under ``windows`` when there are several.
    """
    from pipelines.monitoring.decide import decide_in_order, to_trigger
    from pipelines.monitoring.decide import decide_retraining as decide_window

    config = dataset_config(dataset)
    settings = get_settings()
    decided = decide_in_order(
        [date.fromisoformat(str(end)) for end in window_ends],
        active_training_runs,
        lambda end, active: decide_window(config, settings, end, run, active, decided_at),
    )
    result = to_trigger(decided).to_dict()
    if result["retrain"] and not result["reused"]:
        notify(lambda: _retraining(dataset, result), key=f"{dataset}/{result['training_run_id']}")
    if len(decided) > 1:
        result["windows"] = [{"window_end": d.window_end, "retrain": d.retrain, "summary": d.summary} for d in decided]
    return save_result(dataset, run, "decide", result)


def prepare_reference(dataset: str, version: str | None = None) -> Result:
    """Prepare (once) the monitoring reference of ``version``, by default the champion."""
    from pipelines.core import registry
    from pipelines.monitoring.reference import record_reference

    config = dataset_config(dataset)
    settings = get_settings()
    name = config.model.registered_name
    if version is None:
        champion = registry.alias_version(settings, name, registry.CHAMPION)
        if champion is None:
            raise NotFoundError(f"{name} has no champion: name the version")
        version = str(champion.version)
    return record_reference(config, settings, name, version)


def lineage(dataset: str, version: str | None = None) -> Result:
    """The record of a model version (the champion's by default): data, suite, code, environment, config, seed,
    evaluation, gate, approval, deployment, serving and live performance, and why it was trained."""
    from pipelines.trace.lineage import lineage as record

    return record(dataset_config(dataset), get_settings(), version)


def reproduce(dataset: str, version: str | None = None) -> Result:
    """Refit a version from its MLflow record alone and compare its holdout predictions with the recorded ones."""
    from pipelines.trace.reproduce import reproduce as rebuild

    return rebuild(dataset_config(dataset), get_settings(), version).to_dict()


def apply_retention(dataset: str, at: datetime) -> Result:
    """Remove what the dataset's retention policy does not keep, as of ``at``; what was kept and removed, and why."""
    from pipelines.monitoring.retention import apply_retention as apply

    return apply(dataset_config(dataset), get_settings(), at).to_dict()
