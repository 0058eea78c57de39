"""Pure metric functions: overall and per-slice classification metrics on a holdout."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """ROC AUC, PR AUC, log loss, Brier score, and F1/precision/recall at ``threshold``."""
    y_true = np.asarray(y_true)
    proba = np.clip(np.asarray(proba, dtype=float), 1e-7, 1 - 1e-7)
    predicted = (proba >= threshold).astype(int)
    both_classes = len(np.unique(y_true)) == 2
    return {
        "rows": float(len(y_true)),
        "positive_rate": float(y_true.mean()) if len(y_true) else math.nan,
        "roc_auc": float(roc_auc_score(y_true, proba)) if both_classes else math.nan,
        "pr_auc": float(average_precision_score(y_true, proba)) if both_classes else math.nan,
        "log_loss": float(log_loss(y_true, proba, labels=[0, 1])),
        "brier": float(brier_score_loss(y_true, proba)),
        "f1": float(f1_score(y_true, predicted, zero_division=0)),
        "precision": float(precision_score(y_true, predicted, zero_division=0)),
        "recall": float(recall_score(y_true, predicted, zero_division=0)),
    }


def slice_metrics(
    features: pd.DataFrame, y_true: np.ndarray, proba: np.ndarray, slices: list[str], threshold: float
) -> dict[str, dict[str, dict[str, float]]]:
    """``{slice column: {value: metrics}}`` for every value of every slice column."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    y_true, proba = np.asarray(y_true), np.asarray(proba)
    for column in slices:
        values = features[column].astype(object).where(features[column].notna(), "<null>").to_numpy()
        out[column] = {
            str(value): classification_metrics(y_true[values == value], proba[values == value], threshold)
            for value in sorted(set(values), key=str)
        }
    return out


def finite(metrics: dict[str, Any]) -> dict[str, float]:
    """The entries of ``metrics`` that are finite numbers (what MLflow and JSON accept)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}
