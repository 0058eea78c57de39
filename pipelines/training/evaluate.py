"""``evaluate``: score the candidate and the current champion on the same time-based holdout.

Logs to the candidate's MLflow run: holdout metrics (``holdout_*``) and the champion's on the same rows
(``champion_holdout_*``), per-slice metrics, ROC / precision-recall / calibration / confusion plots and a
comparison table, so a data scientist can compare the two in the MLflow UI.
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
from pipelines.core.settings import Settings
from pipelines.data.extract import load_snapshot
from pipelines.data.features import prepare, time_split
from pipelines.training.metrics import classification_metrics, finite, slice_metrics

log = logging.getLogger(__name__)

_SLICE_KEYS = ("rows", "roc_auc", "pr_auc", "f1", "positive_rate")


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


def _compact(slices: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    return {
        col: {val: finite({k: m[k] for k in _SLICE_KEYS}) for val, m in values.items()}
        for col, values in slices.items()
    }


def evaluate(
    config: DatasetConfig, settings: Settings, snapshot: dict[str, Any], trained: dict[str, Any]
) -> EvalResult:
    """Score candidate and champion on the holdout and log metrics, plots and tables to the candidate's run."""
    import mlflow

    frame = load_snapshot(snapshot["path"])
    data = prepare(frame, config)
    _, holdout = time_split(data, config.split.holdout_fraction)
    x, y = data.features[holdout].reset_index(drop=True), data.target[holdout].to_numpy()
    threshold = config.model.threshold

    registry.client(settings)
    candidate_model = mlflow.sklearn.load_model(trained["model_uri"])
    scores = {f"candidate v{trained['model_version']}": candidate_model.predict_proba(x)[:, 1]}
    candidate_proba = next(iter(scores.values()))
    candidate = finite(classification_metrics(y, candidate_proba, threshold))
    slices = _compact(slice_metrics(x, y, candidate_proba, config.slices, threshold))

    champion_version = registry.alias_version(settings, config.model.registered_name, registry.CHAMPION)
    champion: dict[str, float] | None = None
    champion_error: str | None = None
    notes: list[str] = []
    if champion_version is None:
        notes.append("no champion yet: first model of this registered model")
    elif str(champion_version.version) == str(trained["model_version"]):
        notes.append("the candidate is already the champion")
    else:
        try:
            champion_model = mlflow.sklearn.load_model(
                f"models:/{config.model.registered_name}/{champion_version.version}"
            )
            champion_proba = champion_model.predict_proba(x)[:, 1]
            champion = finite(classification_metrics(y, champion_proba, threshold))
            scores[f"champion v{champion_version.version}"] = champion_proba
        except Exception as exc:  # a champion built on other features cannot score this holdout
            champion_error = f"champion v{champion_version.version} could not score this holdout: {exc}"
            log.warning(champion_error)

    result = EvalResult(
        model_version=str(trained["model_version"]),
        holdout_rows=len(y),
        candidate=candidate,
        candidate_slices=slices,
        champion_version=str(champion_version.version) if champion_version else None,
        champion=champion,
        champion_error=champion_error,
        notes=notes,
    )
    _log(
        result,
        trained["run_id"],
        y,
        scores,
        candidate_proba,
        threshold,
        slice_metrics(x, y, candidate_proba, config.slices, threshold),
    )
    log.info(
        "holdout (%d rows): candidate %s; champion %s",
        len(y),
        {k: round(v, 4) for k, v in candidate.items()},
        {k: round(v, 4) for k, v in champion.items()} if champion else champion_error or "none",
    )
    return result


def _log(
    result: EvalResult,
    run_id: str,
    y: np.ndarray,
    scores: dict[str, np.ndarray],
    candidate_proba: np.ndarray,
    threshold: float,
    full_slices: dict[str, dict[str, dict[str, float]]],
) -> None:
    import matplotlib.pyplot as plt
    import mlflow

    from pipelines.training import plots

    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"holdout_{k}": v for k, v in result.candidate.items()})
        if result.champion:
            mlflow.log_metrics({f"champion_holdout_{k}": v for k, v in result.champion.items()})
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
        mlflow.log_table(pd.DataFrame(slice_rows), "evaluation/slices.json")
        for name, fig in (
            ("roc", plots.roc_plot(y, scores)),
            ("precision_recall", plots.precision_recall_plot(y, scores)),
            ("calibration", plots.calibration_plot(y, scores)),
            ("confusion_matrix", plots.confusion_plot(y, candidate_proba, threshold, "candidate")),
        ):
            mlflow.log_figure(fig, f"evaluation/{name}.png")
            plt.close(fig)
