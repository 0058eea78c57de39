"""Pure metric functions for every task type: overall and per-slice, on a holdout or on live outcomes.

Predictions come in the task's own shape: the positive class's probability (binary), a probability per class in
the model's class order (multiclass), or the predicted value (regression).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)

# The slice metrics kept in results and used by the gate's slice floor, per task.
SLICE_KEYS: dict[str, tuple[str, ...]] = {
    "binary": ("rows", "roc_auc", "pr_auc", "f1", "recall", "precision", "accuracy", "log_loss", "positive_rate"),
    "multiclass": ("rows", "accuracy", "f1_macro", "log_loss", "roc_auc_ovr", "min_class_recall"),
    "regression": ("rows", "rmse", "mae", "r2", "mean_error"),
}


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """Binary: ROC AUC, PR AUC, log loss, Brier score, and F1/precision/recall/accuracy at ``threshold``."""
    y_true = np.asarray(y_true)
    proba = np.clip(np.asarray(proba, dtype=float), 1e-7, 1 - 1e-7)
    predicted = (proba >= threshold).astype(int)
    both_classes = len(np.unique(y_true)) == 2
    empty = len(y_true) == 0
    return {
        "rows": float(len(y_true)),
        "positive_rate": float(y_true.mean()) if len(y_true) else math.nan,
        "roc_auc": float(roc_auc_score(y_true, proba)) if both_classes else math.nan,
        "pr_auc": float(average_precision_score(y_true, proba)) if both_classes else math.nan,
        "log_loss": math.nan if empty else float(log_loss(y_true, proba, labels=[0, 1])),
        "brier": math.nan if empty else float(brier_score_loss(y_true, proba)),
        "f1": float(f1_score(y_true, predicted, zero_division=0)),
        "precision": float(precision_score(y_true, predicted, zero_division=0)),
        "recall": float(recall_score(y_true, predicted, zero_division=0)),
        "accuracy": math.nan if empty else float(accuracy_score(y_true, predicted)),
    }


def multiclass_metrics(y_true: Sequence[Any], proba: np.ndarray, classes: Sequence[Any]) -> dict[str, float]:
    """Multiclass: log loss, accuracy, macro F1, macro one-vs-rest ROC AUC, recall per class and the worst one.

    Rows whose label is not one of the model's ``classes`` (a class unseen in training) are counted in
    ``unseen_class_rows`` and scored as wrong in accuracy and F1; the probabilistic metrics skip them.
    """
    labels = np.asarray([str(v) for v in y_true], dtype=object)
    names = [str(c) for c in classes]
    seen = np.isin(labels, names)
    out: dict[str, float] = {"rows": float(len(labels)), "unseen_class_rows": float((~seen).sum())}
    if not len(labels):
        return {**out, "accuracy": math.nan, "f1_macro": math.nan, "log_loss": math.nan, "roc_auc_ovr": math.nan}
    proba = np.asarray(proba, dtype=float).reshape(len(labels), len(names))
    predicted = np.asarray(names, dtype=object)[proba.argmax(axis=1)]
    out["accuracy"] = float(accuracy_score(labels, predicted))
    out["f1_macro"] = float(f1_score(labels, predicted, labels=names, average="macro", zero_division=0))
    known, known_proba = labels[seen], np.clip(proba[seen], 1e-12, 1.0)
    known_proba = known_proba / known_proba.sum(axis=1, keepdims=True) if len(known) else known_proba
    out["log_loss"] = float(log_loss(known, known_proba, labels=names)) if len(known) else math.nan
    present = sorted(set(known))
    if len(present) == len(names) and len(names) > 2:
        out["roc_auc_ovr"] = float(roc_auc_score(known, known_proba, multi_class="ovr", average="macro", labels=names))
    elif len(present) == 2 and len(names) == 2:
        out["roc_auc_ovr"] = float(roc_auc_score(known == names[1], known_proba[:, 1]))
    else:
        out["roc_auc_ovr"] = math.nan  # not every class occurs: the one-vs-rest average is undefined
    recalls = recall_score(labels, predicted, labels=names, average=None, zero_division=np.nan)
    for name, value in zip(names, np.atleast_1d(recalls), strict=True):
        out[f"recall.{name}"] = float(value)
    finite_recalls = [float(v) for v in np.atleast_1d(recalls) if math.isfinite(float(v))]
    out["min_class_recall"] = min(finite_recalls) if finite_recalls else math.nan
    return out


def regression_metrics(y_true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Regression: RMSE, MAE, R² and the mean error (prediction minus truth: the bias)."""
    y_true = np.asarray(y_true, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    if not len(y_true):
        return {"rows": 0.0, "rmse": math.nan, "mae": math.nan, "r2": math.nan, "mean_error": math.nan}
    return {
        "rows": float(len(y_true)),
        "rmse": float(math.sqrt(mean_squared_error(y_true, predicted))),
        "mae": float(mean_absolute_error(y_true, predicted)),
        "r2": float(r2_score(y_true, predicted)) if len(y_true) > 1 else math.nan,
        "mean_error": float(np.mean(predicted - y_true)),
    }


def task_metrics(
    task: str,
    y_true: Any,
    predictions: np.ndarray,
    *,
    classes: Sequence[Any] = (),
    threshold: float = 0.5,
) -> dict[str, float]:
    """The task's metrics (see :data:`pipelines.core.config.TASK_METRICS`) of ``predictions`` against ``y_true``."""
    if task == "binary":
        return classification_metrics(np.asarray(y_true), predictions, threshold)
    if task == "multiclass":
        return multiclass_metrics(list(y_true), predictions, classes)
    if task == "regression":
        return regression_metrics(np.asarray(y_true), predictions)
    raise ValueError(f"unknown task {task!r}")


def slice_metrics(
    features: pd.DataFrame,
    y_true: Any,
    predictions: np.ndarray,
    slices: list[str],
    *,
    task: str = "binary",
    classes: Sequence[Any] = (),
    threshold: float = 0.5,
) -> dict[str, dict[str, dict[str, float]]]:
    """``{slice column: {value: metrics}}`` for every value of every slice column."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    y_arr, pred = np.asarray(list(y_true), dtype=object if task == "multiclass" else None), np.asarray(predictions)
    for column in slices:
        values = features[column].astype(object).where(features[column].notna(), "<null>").to_numpy()
        out[column] = {
            str(value): task_metrics(
                task, y_arr[values == value], pred[values == value], classes=classes, threshold=threshold
            )
            for value in sorted(set(values), key=str)
        }
    return out


def finite(metrics: dict[str, Any]) -> dict[str, float]:
    """The entries of ``metrics`` that are finite numbers (what MLflow and JSON accept)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}
