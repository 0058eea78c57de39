"""Evaluation plots, candidate against champion: ROC, precision-recall, calibration and confusion matrix for
classification; predicted against actual, residuals and error by slice for regression."""

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


def confusion_plot(y: np.ndarray, predicted: np.ndarray, labels: list[str], title: str) -> Figure:
    """Confusion matrix of one model's decided classes (``labels`` in display order), counts per cell."""
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = _figure()
    size = max(4.5, 0.6 * len(labels) + 2.5)
    fig.set_size_inches(size + 1, size)
    ConfusionMatrixDisplay.from_predictions(
        np.asarray(y, dtype=object).astype(str),
        np.asarray(predicted, dtype=object).astype(str),
        labels=labels,
        ax=ax,
        colorbar=False,
        xticks_rotation=45 if len(labels) > 4 else "horizontal",
    )
    ax.set_title(title)  # type: ignore[attr-defined]
    fig.tight_layout()
    return fig


def predicted_vs_actual_plot(y: np.ndarray, scores: dict[str, np.ndarray], target: str) -> Figure:
    """Predicted against actual values of each named model, with the identity line."""
    fig, ax = _figure()
    y = np.asarray(y, dtype=float)
    for label, predicted in scores.items():
        ax.scatter(y, predicted, s=6, alpha=0.35, label=label)  # type: ignore[attr-defined]
    low, high = float(np.nanmin(y)), float(np.nanmax(y))
    ax.plot([low, high], [low, high], linestyle=":", color="grey", label="perfect")  # type: ignore[attr-defined]
    ax.set(xlabel=f"actual {target}", ylabel=f"predicted {target}", title="Predicted vs actual (holdout)")  # type: ignore[attr-defined]
    ax.legend(loc="upper left")  # type: ignore[attr-defined]
    fig.tight_layout()
    return fig


def residuals_plot(y: np.ndarray, scores: dict[str, np.ndarray], target: str) -> Figure:
    """Residuals (predicted minus actual) against the prediction, for each named model."""
    fig, ax = _figure()
    y = np.asarray(y, dtype=float)
    for label, values in scores.items():
        predicted = np.asarray(values, dtype=float)
        ax.scatter(predicted, predicted - y, s=6, alpha=0.35, label=label)  # type: ignore[attr-defined]
    ax.axhline(0.0, linestyle=":", color="grey")  # type: ignore[attr-defined]
    ax.set(xlabel=f"predicted {target}", ylabel="residual (predicted - actual)", title="Residuals (holdout)")  # type: ignore[attr-defined]
    ax.legend(loc="upper left")  # type: ignore[attr-defined]
    fig.tight_layout()
    return fig


def error_by_slice_plot(slices: dict[str, dict[str, dict[str, float]]], metric: str, top: int = 15) -> Figure:
    """``metric`` per slice value of each slice column (the ``top`` largest slices of each), as horizontal bars."""
    fig, ax = _figure()
    labels, values = [], []
    for column, by_value in slices.items():
        largest = sorted(by_value.items(), key=lambda item: -item[1].get("rows", 0))[:top]
        for value, metrics in largest:
            labels.append(f"{column}={value}")
            values.append(metrics.get(metric, np.nan))
    fig.set_size_inches(6.5, max(3.0, 0.25 * len(labels) + 1.5))
    ax.barh(labels[::-1], values[::-1])  # type: ignore[attr-defined]
    ax.set(xlabel=f"{metric} (holdout)", title=f"{metric} by slice")  # type: ignore[attr-defined]
    fig.tight_layout()
    return fig
