"""``monitor``: one window of what the prediction service answered, checked against the champion's reference.

The window's logged inputs and answers (the task's prediction column) and, where known, outcomes go through
Evidently; a window is a range of ``event_time``, or of ``served_at`` for a dataset without a time column. The
HTML reports and a JSON summary are written to ``<home>/monitoring/<dataset>/<start>_<end>/`` and logged to the
monitoring experiment in MLflow (one run per window, reused when the window is checked again), the key numbers as
metrics of that run and as points of the dataset's timeline run, so the MLflow UI charts them over time. A window with
too few predictions gives ``insufficient_data``, never a drift alarm.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.core import registry
from pipelines.core.config import DatasetConfig
from pipelines.core.runs import RunContext, Window
from pipelines.core.settings import Settings
from pipelines.monitoring import store
from pipelines.monitoring.drift import PREDICTED_CLASS, drift_report, performance_report, prediction_column
from pipelines.monitoring.outcomes import labelled_predictions, log_time, trailing_performance
from pipelines.monitoring.reference import load_reference

log = logging.getLogger(__name__)

WINDOW_TAG = "monitoring.window"
DATASET_TAG = "monitoring.dataset"
TIMELINE_TAG = "monitoring.timeline"
EPOCH = date(1970, 1, 1)
# The champion's live figures each window stores over the days of traffic ending with it (the ops console's
# "last 7 and 30 days", read from the last monitored window rather than recomputed on every page view).
LIVE_PERIODS = (7, 30)


@dataclass(frozen=True)
class MonitorResult:
    """A window's verdict and where its evidence is."""

    dataset: str
    window_start: str
    window_end: str
    status: str
    champion_version: str | None
    rows: int
    labelled: int
    drift_share: float | None = None
    dataset_drift: bool = False
    drifted_features: list[str] = field(default_factory=list)
    prediction_drift: bool | None = None
    live_metrics: dict[str, float] = field(default_factory=dict)
    live_periods: dict[str, dict[str, Any]] = field(default_factory=dict)
    message: str = ""
    report_dir: str = ""
    mlflow_run_id: str = ""
    mlflow_run_url: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def live_window(config: DatasetConfig, settings: Settings, window: Window) -> pd.DataFrame:
    """The window's logged records: the features as the model saw them, the task's prediction column (see
    :func:`pipelines.monitoring.drift.prediction_column`) and the serving version."""
    from pipelines.serving.prediction_log import read_predictions

    frame = read_predictions(settings.warehouse_url, config.name, window.start_dt, window.end_dt, log_time(config))
    for feature in config.features:
        values = frame[feature.name] if feature.name in frame else pd.Series(None, index=frame.index, dtype=object)
        if feature.type == "numeric":
            frame[feature.name] = pd.to_numeric(values, errors="coerce").astype("float64")
        else:
            frame[feature.name] = values.astype(object).where(values.notna(), None)
    predicted = prediction_column(config.task)
    values = frame[predicted] if predicted in frame else pd.Series(None, index=frame.index, dtype=object)
    if predicted == PREDICTED_CLASS:
        frame[predicted] = values.astype(object).where(values.notna(), None).map(lambda v: v if v is None else str(v))
    else:
        frame[predicted] = pd.to_numeric(values, errors="coerce").astype("float64")
    return frame


def _trailing_outcomes(config: DatasetConfig, settings: Settings, window: Window, version: str) -> pd.DataFrame:
    """The champion's predictions with known outcomes over the ``performance_days`` ending with the window: one
    day of outcomes gives a noisy ROC AUC, and a week is what the champion's holdout score compares with."""
    start = window.end_dt - timedelta(days=config.monitoring.performance_days)
    return labelled_predictions(config, settings, min(start, window.start_dt), window.end_dt, version)


def live_periods(config: DatasetConfig, settings: Settings, window: Window, version: str) -> dict[str, dict[str, Any]]:
    """The champion's traffic and metrics over each of :data:`LIVE_PERIODS` days ending with the window, keyed by
    the number of days: ``predictions``, ``labelled`` and the task's ``metrics`` on the labelled part."""
    found = trailing_performance(config, settings, window.end_dt, version, LIVE_PERIODS)
    return {
        str(days): {
            "predictions": p.predictions,
            "labelled": p.labelled,
            "metrics": {name: float(v) for name, v in p.metrics.items() if v is not None and math.isfinite(v)},
        }
        for days, p in found.items()
    }


def _scorable(labelled: pd.DataFrame, config: DatasetConfig) -> bool:
    """Enough known outcomes to score: ``min_labelled`` of them, and both classes (binary) or two (multiclass)."""
    if len(labelled) < config.monitoring.min_labelled:
        return False
    if config.task == "binary":
        return bool(labelled[config.target.label].nunique() == 2)
    return config.task == "regression" or bool(labelled[config.target.label].nunique() >= 2)


def report_root(settings: Settings, config: DatasetConfig) -> Path:
    """Where the dataset's monitoring reports are written, one folder per window."""
    return settings.home / "monitoring" / config.name


def report_dir(settings: Settings, config: DatasetConfig, window: Window) -> Path:
    """The window's partition for reports and summary."""
    return report_root(settings, config) / f"{window.start}_{window.end}"


@dataclass
class DeferredTimeline:
    """A check of several windows in one run: a rebuild of the timeline run that any of them needs is done once, by
    :func:`rebuild_timeline` at the end, instead of once per window (each rebuild reads every window run)."""

    needed: bool = False


def monitor_window(
    config: DatasetConfig,
    settings: Settings,
    window: Window,
    run: RunContext,
    checked_at: datetime,
    deferred: DeferredTimeline | None = None,
) -> MonitorResult:
    """Check ``window`` of the prediction log against the champion's reference; store and log the result. With
    ``deferred``, a rebuild of the timeline run is left to the caller (:class:`DeferredTimeline`)."""
    name = config.model.registered_name
    champion = registry.alias_version(settings, name, registry.CHAMPION)
    live = live_window(config, settings, window)
    out = report_dir(settings, config, window)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.html"):
        stale.unlink()
    base: dict[str, Any] = {"dataset": config.name, "window_start": str(window.start), "window_end": str(window.end)}
    if champion is None:
        result = MonitorResult(
            **base, status="no_champion", champion_version=None, rows=len(live), labelled=0,
            message=f"{name} has no champion: nothing to compare the window with",
        )  # fmt: skip
        return _finish(config, settings, window, run, checked_at, result, {}, out, deferred)
    version = str(champion.version)
    labelled = _trailing_outcomes(config, settings, window, version)
    base["live_periods"] = live_periods(config, settings, window, version)
    minimum = config.monitoring.min_rows
    if len(live) < minimum:
        result = MonitorResult(
            **base, status="insufficient_data", champion_version=version, rows=len(live), labelled=len(labelled),
            message=f"insufficient data: {len(live)} predictions logged in {window}, fewer than the {minimum} "
            "monitoring.min_rows needs for a drift verdict",
        )  # fmt: skip
        log.warning(result.message)
        return _finish(config, settings, window, run, checked_at, result, {}, out, deferred)

    reference = load_reference(config, settings, name, version)
    seed = config.model.seed + (window.start - EPOCH).days
    # Prediction drift compares answers of the same model: only the records the champion answered.
    current = live.copy()
    current.loc[current["model_version"] != version, prediction_column(config.task)] = None
    drift, drift_snapshot = drift_report(reference.frame, current, config, reference.thresholds, sample_seed=seed)
    drift_snapshot.save_html(str(out / "drift.html"))
    details: dict[str, Any] = {"drift": drift.to_dict(), "reference": reference.info}
    live_metrics: dict[str, float] = {}
    days = config.monitoring.performance_days
    if _scorable(labelled, config):
        live_metrics, perf_snapshot = performance_report(labelled, config)
        if perf_snapshot is not None:
            perf_snapshot.save_html(str(out / "performance.html"))
        details["performance"] = {"days": days, "labelled": len(labelled), **live_metrics}
    else:
        details["performance_skipped"] = (
            f"{len(labelled)} outcomes known for v{version} in the last {days} days "
            f"(monitoring.min_labelled {config.monitoring.min_labelled})"
        )
    status = "drift" if drift.dataset_drift else "ok"
    message = (
        f"{status}: {len(drift.drifted_features)} of {len(config.drift_features)} counted features drifted "
        f"(share {drift.drift_share:.2f}, dataset drift at {config.monitoring.drift.drift_share:.2f})"
        + (f": {', '.join(drift.drifted_features)}" if drift.drifted_features else "")
    )
    missing = [name for name in config.drift_features if drift.features[name].score is None]
    if missing:
        # a feed that stopped is a data problem to fix, not a reason to retrain
        status = "insufficient_data"
        message = f"insufficient data: no value of {', '.join(missing)} in {window} (a data problem, not drift)"
        log.warning(message)
    result = MonitorResult(
        **base,
        status=status,
        champion_version=version,
        rows=len(live),
        labelled=len(labelled),
        drift_share=drift.drift_share,
        dataset_drift=drift.dataset_drift,
        drifted_features=drift.drifted_features,
        prediction_drift=drift.prediction.drifted if drift.prediction else None,
        live_metrics=live_metrics,
        message=message,
    )
    log.info("%s %s: %s", config.name, window, message)
    return _finish(config, settings, window, run, checked_at, result, details, out, deferred)


def _finish(
    config: DatasetConfig,
    settings: Settings,
    window: Window,
    run: RunContext,
    checked_at: datetime,
    result: MonitorResult,
    details: dict[str, Any],
    out: Path,
    deferred: DeferredTimeline | None,
) -> MonitorResult:
    summary = {**result.to_dict(), **details, "report_dir": str(out)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    run_id, url = _log_to_mlflow(config, settings, window, run, result, details, out, checked_at, deferred)
    result = MonitorResult(
        **{**result.to_dict(), "report_dir": str(out), "mlflow_run_id": run_id, "mlflow_run_url": url}
    )
    store.save_result(
        settings.warehouse_url,
        {
            "dataset": config.name,
            "window_start": window.start,
            "window_end": window.end,
            "status": result.status,
            "champion_version": result.champion_version or "",
            "rows": result.rows,
            "labelled": result.labelled,
            "drift_share": result.drift_share,
            "live_metrics": result.live_metrics,
            "summary": json.loads(json.dumps(result.to_dict(), default=str)),
            "evidence_url": url,
            "run_key": run.key,
            "checked_at": checked_at,
        },
    )
    return result


def _metrics(result: MonitorResult, details: dict[str, Any]) -> dict[str, float]:
    metrics: dict[str, float] = {"rows": float(result.rows), "labelled": float(result.labelled)}
    if result.status == "insufficient_data":
        metrics["insufficient_data"] = 1.0
    if result.drift_share is not None:
        metrics["drift_share"] = result.drift_share
        metrics["dataset_drift"] = float(result.dataset_drift)
    drift = details.get("drift") or {}
    for feature, info in (drift.get("features") or {}).items():
        if info["score"] is not None:
            metrics[f"drift_score.{feature}"] = float(info["score"])
    if drift.get("prediction"):
        metrics["drift_score.prediction"] = float(drift["prediction"]["score"])
    metrics.update({f"live_{k}": v for k, v in result.live_metrics.items()})
    return metrics


def _log_to_mlflow(
    config: DatasetConfig,
    settings: Settings,
    window: Window,
    run: RunContext,
    result: MonitorResult,
    details: dict[str, Any],
    out: Path,
    checked_at: datetime,
    deferred: DeferredTimeline | None = None,
) -> tuple[str, str]:
    """One run per window in the monitoring experiment (reused on a rerun) and a point on the timeline run.

    The window's run holds the latest check's numbers (its points are stamped with the check's time, so a recheck's
    numbers become the run's latest). The timeline run holds one point per window and metric, at the window's step
    (days since 1970-01-01 of its start) and time (its end), so the MLflow UI charts each metric over the windows: a
    recheck with the same numbers adds nothing (MLflow keeps one copy of an identical point), a recheck with other
    numbers (outcomes arrived since, another champion) replaces the timeline run by one rebuilt from every window's
    run, since MLflow's metric history can only be appended to.
    """
    from mlflow.entities import Metric, RunTag

    experiment = config.monitoring_experiment
    exp_id = registry.experiment_id(settings, experiment)
    mlf = registry.client(settings)
    window_key = f"{window.start}_{window.end}"
    tags = {DATASET_TAG: config.name, WINDOW_TAG: window_key}
    run_id = registry.find_run_id(settings, experiment, tags)
    previous: dict[str, float] = {}
    if run_id is None:
        run_id = mlf.create_run(exp_id, run_name=f"{config.name} {window_key}", tags=tags).info.run_id
    else:
        previous = dict(mlf.get_run(run_id).data.metrics)
    all_tags = {
        **run.lineage_tags(),
        "monitoring.status": result.status,
        "monitoring.champion_version": result.champion_version or "none",
        "mlflow.note.content": result.message,
    }
    values = _metrics(result, details)
    step, timestamp = timeline_point(window_key)
    checked_ms = int(checked_at.timestamp() * 1000)
    window_metrics = [Metric(k, v, checked_ms, step) for k, v in values.items()]
    mlf.log_batch(run_id, metrics=window_metrics, tags=[RunTag(k, str(v)) for k, v in all_tags.items()])
    mlf.log_artifacts(run_id, str(out), artifact_path="report")
    mlf.set_terminated(run_id)
    timeline = registry.find_run_id(settings, experiment, {TIMELINE_TAG: config.name})
    if timeline is None or any(not _same(previous.get(k), v) for k, v in values.items() if k in previous):
        if deferred is not None:
            deferred.needed = True
        else:
            _rebuild_timeline(config, settings, exp_id, timeline)
    else:
        mlf.log_batch(timeline, metrics=[Metric(k, v, timestamp, step) for k, v in values.items()])
    return run_id, registry.run_url(settings, exp_id, run_id)


def timeline_point(window_key: str) -> tuple[int, int]:
    """A window's place on the timeline: its step (days from 1970-01-01 to its start) and time (its end, in ms)."""
    start, _, end = window_key.partition("_")
    step = (date.fromisoformat(start) - EPOCH).days
    return step, int(datetime.combine(date.fromisoformat(end), datetime.min.time()).timestamp() * 1000)


def _same(before: float | None, now: float) -> bool:
    return before is not None and (before == now or (math.isnan(before) and math.isnan(now)))


def rebuild_timeline(config: DatasetConfig, settings: Settings) -> str:
    """Replace the dataset's timeline run by one rebuilt from every window run's latest numbers (the end of a
    :class:`DeferredTimeline`); returns its run id."""
    experiment = config.monitoring_experiment
    exp_id = registry.experiment_id(settings, experiment)
    return _rebuild_timeline(
        config, settings, exp_id, registry.find_run_id(settings, experiment, {TIMELINE_TAG: config.name})
    )


def _rebuild_timeline(config: DatasetConfig, settings: Settings, exp_id: str, old: str | None) -> str:
    """A new timeline run with every window run's latest numbers; the old one (if any) is deleted."""
    from mlflow.entities import Metric

    mlf = registry.client(settings)
    if old is not None:
        mlf.delete_run(old)
    timeline: str = mlf.create_run(
        exp_id, run_name=f"{config.name} timeline", tags={TIMELINE_TAG: config.name, DATASET_TAG: config.name}
    ).info.run_id
    mlf.set_terminated(timeline)
    points = []
    query = f"tags.`{DATASET_TAG}` = '{config.name}'"
    for window_run in mlf.search_runs([exp_id], filter_string=query, max_results=50_000):
        window_key = window_run.data.tags.get(WINDOW_TAG)
        if window_key:
            step, timestamp = timeline_point(window_key)
            points += [Metric(k, v, timestamp, step) for k, v in window_run.data.metrics.items()]
    for first in range(0, len(points), 1000):  # MLflow takes at most 1,000 metrics a batch
        mlf.log_batch(timeline, metrics=points[first : first + 1000])
    log.info("%s: timeline run %s rebuilt from %d points", config.name, timeline, len(points))
    return timeline
