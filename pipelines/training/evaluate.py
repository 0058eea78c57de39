"""``evaluate``: score the candidate and the current champion on the same holdout, with the task's metrics.

Logs to the candidate's MLflow run: holdout metrics (``holdout_*``) and the champion's on the same rows
(``champion_holdout_*``), per-slice metrics, the task's plots (ROC / precision-recall / calibration / confusion for
binary; confusion matrix for multiclass; predicted vs actual, residuals and error by slice for regression) and a
comparison table, so a data scientist can compare the two in the MLflow UI. The plots go to ``plots/``, the
tables to ``evaluation/``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core import registry
from pipelines.core.config import DatasetConfig
from pipelines.core.model_files import load_registered_model, trusted_types
from pipelines.core.settings import Settings
from pipelines.data.extract import load_snapshot
from pipelines.data.features import holdout_split, prepare
from pipelines.training.description import describe_version
from pipelines.training.metrics import SLICE_KEYS, finite, slice_metrics, task_metrics
from pipelines.training.modeling import model_classes, predictions

log = logging.getLogger(__name__)

PLOTS_DIR = "plots"  # one folder at the run's artifact root: the plots are one click from the run's Artifacts tab


@dataclass(frozen=True)
class Scored:
    """One model's predictions on the holdout, in the task's shape, and the classes they refer to."""

    label: str
    predictions: np.ndarray
    classes: list[Any]


@dataclass(frozen=True)
class EvalResult:
    """Holdout metrics of candidate and champion, and the candidate's per-slice metrics."""

    model_version: str
    holdout_rows: int
    candidate: dict[str, float]
    candidate_slices: dict[str, dict[str, dict[str, float]]]
    champion_version: str | None = None
    champion: dict[str, float] | None = None
    champion_error: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def comparison_table(candidate: dict[str, float], champion: dict[str, float] | None) -> pd.DataFrame:
    """One row per metric: candidate, champion and the difference."""
    rows = []
    for metric, value in candidate.items():
        other = (champion or {}).get(metric, math.nan)
        rows.append({"metric": metric, "candidate": value, "champion": other, "difference": value - other})
    return pd.DataFrame(rows)


def _compact(slices: dict[str, dict[str, dict[str, float]]], task: str) -> dict[str, dict[str, dict[str, float]]]:
    keys = SLICE_KEYS[task]
    return {
        col: {val: finite({k: m[k] for k in keys if k in m}) for val, m in values.items()}
        for col, values in slices.items()
    }


def _score(config: DatasetConfig, model: Any, x: pd.DataFrame, y: Any, label: str) -> tuple[Scored, dict[str, float]]:
    scored = Scored(label, predictions(model, x, config.task), model_classes(model))
    metrics = task_metrics(config.task, y, scored.predictions, classes=scored.classes, threshold=config.model.threshold)
    return scored, metrics


def evaluate(
    config: DatasetConfig, settings: Settings, snapshot: dict[str, Any], trained: dict[str, Any]
) -> EvalResult:
    """Score candidate and champion on the holdout and log metrics, plots and tables to the candidate's run."""

    frame = load_snapshot(snapshot["path"])
    data = prepare(frame, config)
    _, holdout = holdout_split(data, config)
    x, y = data.features[holdout].reset_index(drop=True), data.target[holdout].to_numpy()

    registry.client(settings)
    with registry.quiet_model_io():
        candidate_model = load_registered_model(
            settings.warehouse_url,
            trained["model_name"],
            str(trained["model_version"]),
            trusted_types(config),
            stage="trained",
        )
    candidate_scored, candidate_all = _score(config, candidate_model, x, y, f"candidate v{trained['model_version']}")
    candidate = finite(candidate_all)
    scored = [candidate_scored]
    full_slices = slice_metrics(
        x,
        y,
        candidate_scored.predictions,
        config.slices,
        task=config.task,
        classes=candidate_scored.classes,
        threshold=config.model.threshold,
    )

    champion_version = registry.alias_version(settings, config.model.registered_name, registry.CHAMPION)
    champion: dict[str, float] | None = None
    champion_error: str | None = None
    notes: list[str] = []
    if candidate.get("unseen_class_rows"):
        notes.append(
            f"{int(candidate['unseen_class_rows'])} holdout rows have a class the model never saw in training: "
            "counted wrong in accuracy and F1, left out of log loss and ROC AUC"
        )
    if champion_version is None:
        notes.append("no champion yet: first model of this registered model")
    elif str(champion_version.version) == str(trained["model_version"]):
        notes.append("the candidate is already the champion")
    else:
        try:
            with registry.quiet_model_io():
                champion_model = load_registered_model(
                    settings.warehouse_url,
                    config.model.registered_name,
                    str(champion_version.version),
                    trusted_types(config),
                )
            champion_scored, champion_all = _score(
                config, champion_model, x, y, f"champion v{champion_version.version}"
            )
            champion = finite(champion_all)
            scored.append(champion_scored)
        except Exception as exc:  # a champion built on other features cannot score this holdout
            champion_error = f"champion v{champion_version.version} could not score this holdout: {exc}"
            log.warning(champion_error)

    result = EvalResult(
        model_version=str(trained["model_version"]),
        holdout_rows=len(y),
        candidate=candidate,
        candidate_slices=_compact(full_slices, config.task),
        champion_version=str(champion_version.version) if champion_version else None,
        champion=champion,
        champion_error=champion_error,
        notes=notes,
    )
    _log(config, result, trained["run_id"], y, scored, full_slices)
    describe_version(config, settings, trained["model_name"], str(trained["model_version"]))
    log.info(
        "holdout (%d rows): candidate %s; champion %s",
        len(y),
        {k: round(v, 4) for k, v in candidate.items()},
        {k: round(v, 4) for k, v in champion.items()} if champion else champion_error or "none",
    )
    return result


def _log(
    config: DatasetConfig,
    result: EvalResult,
    run_id: str,
    y: np.ndarray,
    scored: list[Scored],
    full_slices: dict[str, dict[str, dict[str, float]]],
) -> None:
    import matplotlib.pyplot as plt
    import mlflow

    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"holdout_{k}": v for k, v in result.candidate.items()})
        if result.champion:
            mlflow.log_metrics({f"champion_holdout_{k}": v for k, v in result.champion.items()})
        if result.champion_version == result.model_version and "evaluation.champion_version" in (
            mlflow.get_run(run_id).data.tags
        ):
            log.info("v%s is the champion now: its evaluation against its own champion is kept", result.model_version)
            return
        mlflow.set_tags(
            {
                "evaluation.champion_version": result.champion_version or "none",
                "evaluation.notes": "; ".join(
                    result.notes + ([result.champion_error] if result.champion_error else [])
                ),
            }
        )
        mlflow.log_table(comparison_table(result.candidate, result.champion), "evaluation/comparison.json")
        slice_rows = [
            {"slice": col, "value": val, **finite(m)}
            for col, values in full_slices.items()
            for val, m in values.items()
        ]
        if slice_rows:
            mlflow.log_table(pd.DataFrame(slice_rows), "evaluation/slices.json")
        for name, fig in task_plots(config, y, scored, full_slices):
            mlflow.log_figure(fig, f"{PLOTS_DIR}/{name}.png")
            plt.close(fig)


def task_plots(
    config: DatasetConfig, y: np.ndarray, scored: list[Scored], full_slices: dict[str, dict[str, dict[str, float]]]
) -> list[tuple[str, Any]]:
    """The task's evaluation plots as ``(name, figure)``: the candidate is ``scored[0]``, the champion next."""
    from pipelines.training import plots
    from pipelines.training.train import positive_label

    candidate = scored[0]
    if config.task == "regression":
        values = {s.label: s.predictions for s in scored}
        figures = [
            ("predicted_vs_actual", plots.predicted_vs_actual_plot(y, values, config.target.label)),
            ("residuals", plots.residuals_plot(y, values, config.target.label)),
        ]
        if full_slices:
            figures.append(("error_by_slice", plots.error_by_slice_plot(full_slices, "mae")))
        return figures
    if config.task == "multiclass":
        names = [str(c) for c in candidate.classes]
        unseen = sorted({str(v) for v in y} - set(names))
        predicted = np.asarray(names, dtype=object)[np.asarray(candidate.predictions).argmax(axis=1)]
        return [("confusion_matrix", plots.confusion_plot(y, predicted, names + unseen, candidate.label))]
    probabilities = {s.label: s.predictions for s in scored}
    threshold = config.model.threshold
    positive = positive_label(config)
    decided = np.where(candidate.predictions >= threshold, positive, f"not {positive}")
    truth = np.where(np.asarray(y) == 1, positive, f"not {positive}")
    figures = [
        (
            "confusion_matrix",
            plots.confusion_plot(
                truth, decided, [f"not {positive}", positive], f"{candidate.label} at threshold {threshold:g}"
            ),
        ),
    ]
    if len(np.unique(y)) == 2:
        figures += [
            ("roc", plots.roc_plot(y, probabilities)),
            ("precision_recall", plots.precision_recall_plot(y, probabilities)),
            ("calibration", plots.calibration_plot(y, probabilities)),
        ]
    return figures
