"""Evaluation plots (ROC, precision-recall, calibration, confusion matrix), candidate against champion."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure() -> tuple[Figure, object]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=100)
    return fig, ax


def roc_plot(y: np.ndarray, scores: dict[str, np.ndarray]) -> Figure:
    """ROC curves of each named model on the same holdout."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = _figure()
    for label, proba in scores.items():
        fpr, tpr, _ = roc_curve(y, proba)
        ax.plot(fpr, tpr, label=f"{label} (AUC {roc_auc_score(y, proba):.3f})")  # type: ignore[attr-defined]
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")  # type: ignore[attr-defined]
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC (holdout)")  # type: ignore[attr-defined]
    ax.legend(loc="lower right")  # type: ignore[attr-defined]
    fig.tight_layout()
    return fig


def precision_recall_plot(y: np.ndarray, scores: dict[str, np.ndarray]) -> Figure:
    """Precision-recall curves of each named model."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig, ax = _figure()
    for label, proba in scores.items():
        precision, recall, _ = precision_recall_curve(y, proba)
        ax.plot(recall, precision, label=f"{label} (AP {average_precision_score(y, proba):.3f})")  # type: ignore[attr-defined]
    ax.axhline(float(np.mean(y)), linestyle=":", color="grey", label="base rate")  # type: ignore[attr-defined]
    ax.set(xlabel="Recall", ylabel="Precision", title="Precision-recall (holdout)")  # type: ignore[attr-defined]
    ax.legend(loc="upper right")  # type: ignore[attr-defined]
    fig.tight_layout()
    return fig


def calibration_plot(y: np.ndarray, scores: dict[str, np.ndarray]) -> Figure:
    """Reliability curves: mean predicted probability against observed frequency, by decile."""
    from sklearn.calibration import calibration_curve

    fig, ax = _figure()
    for label, proba in scores.items():
        observed, predicted = calibration_curve(y, proba, n_bins=10, strategy="quantile")
        ax.plot(predicted, observed, marker="o", label=label)  # type: ignore[attr-defined]
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfect")  # type: ignore[attr-defined]
    ax.set(xlabel="Mean predicted probability", ylabel="Observed frequency", title="Calibration (holdout)")  # type: ignore[attr-defined]
    ax.legend(loc="upper left")  # type: ignore[attr-defined]
    fig.tight_layout()
    return fig


def confusion_plot(y: np.ndarray, proba: np.ndarray, threshold: float, label: str) -> Figure:
    """Confusion matrix of one model at the decision threshold."""
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = _figure()
    ConfusionMatrixDisplay.from_predictions(
        y, (proba >= threshold).astype(int), ax=ax, colorbar=False, display_labels=["on time", "delayed"]
    )
    ax.set_title(f"{label} at threshold {threshold:g}")  # type: ignore[attr-defined]
    fig.tight_layout()
    return fig
