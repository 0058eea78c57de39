"""Drift of a window of live inputs against a champion's reference, computed by Evidently.

Two things are Evidently's here: the per-feature drift scores (its stat tests, ``wasserstein`` and
``jensenshannon`` by default) and the report (``DataDriftPreset`` over the counted features, ``ValueDrift`` for
the others and for the prediction column, ``ClassificationPreset`` or ``RegressionPreset`` on the rows whose
outcome is known). The prediction column is the task's: the positive class's probability (binary, numeric), the
predicted class (multiclass, categorical) or the predicted value (regression, numeric).
What is ours is the choice of settings: per-feature thresholds calibrated on the reference's own day-to-day
spread (a single day of weather always looks far from a season of it), which features count, the share of them
that makes dataset drift, and a uniform sample of large windows with a stated error bound.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.config import TASK_METRICS, DatasetConfig

log = logging.getLogger(__name__)

PROBABILITY = "probability"
PREDICTED_CLASS = "predicted_class"
PREDICTION = "prediction"
PROBABILITIES = "probabilities"
DAY = "day"
_PREDICTION_COLUMNS = {"binary": PROBABILITY, "multiclass": PREDICTED_CLASS, "regression": PREDICTION}
MIN_THRESHOLD = 0.01
DKW_CONFIDENCE = 0.999


@dataclass(frozen=True)
class FeatureDrift:
    """One column's drift: Evidently's score against the threshold it was judged by."""

    score: float | None
    threshold: float
    drifted: bool
    counted: bool
    method: str
    note: str = ""


@dataclass(frozen=True)
class DriftResult:
    """The verdict of one window, and what it was computed on."""

    rows: int
    rows_used: int
    sampled: bool
    sample_error_bound: float | None
    drift_share: float
    dataset_drift: bool
    drifted_features: list[str]
    features: dict[str, FeatureDrift]
    prediction: FeatureDrift | None
    performance: dict[str, float] = field(default_factory=dict)
    labelled: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def feature_types(config: DatasetConfig) -> tuple[list[str], list[str]]:
    """(numeric, categorical) feature names, in config order."""
    numeric = [f.name for f in config.features if f.type == "numeric"]
    categorical = [f.name for f in config.features if f.type == "categorical"]
    return numeric, categorical


def prediction_column(task: str) -> str:
    """The column holding what the model answered, in the reference and in a window: ``probability`` (binary,
    P(positive)), ``predicted_class`` (multiclass) or ``prediction`` (regression, the value)."""
    try:
        return _PREDICTION_COLUMNS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(_PREDICTION_COLUMNS)}") from None


def is_categorical(config: DatasetConfig, column: str) -> bool:
    """Whether ``column`` (a feature or the prediction column) is compared as categories."""
    _, categorical = feature_types(config)
    return column in categorical or (config.task == "multiclass" and column == PREDICTED_CLASS)


def method_of(config: DatasetConfig, column: str) -> str:
    """The Evidently stat test a column is judged by."""
    drift = config.monitoring.drift
    return drift.cat_method if is_categorical(config, column) else drift.num_method


def dkw_bound(rows_used: int, confidence: float = DKW_CONFIDENCE) -> float:
    """Dvoretzky-Kiefer-Wolfowitz: with ``confidence``, a column's empirical CDF in a uniform sample of
    ``rows_used`` rows is within this distance of the whole window's everywhere (so any one category's share is
    within it, all of a column's categories at once within twice it)."""
    return math.sqrt(math.log(2.0 / (1.0 - confidence)) / (2.0 * rows_used))


def sample_rows(frame: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    """``frame`` itself when small enough, else a uniform sample of ``limit`` rows without replacement."""
    if len(frame) <= limit:
        return frame
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(frame), size=limit, replace=False))
    return frame.iloc[picked]


def judged_columns(reference: pd.DataFrame, config: DatasetConfig) -> list[str]:
    """The columns a threshold is needed for: the features, then the prediction column when ``reference`` has it."""
    numeric, categorical = feature_types(config)
    predicted = prediction_column(config.task)
    return [*numeric, *categorical] + ([predicted] if predicted in reference else [])


def drift_scores(reference: pd.DataFrame, current: pd.DataFrame, config: DatasetConfig) -> dict[str, float]:
    """Evidently's drift score of every feature (and the prediction column, when both have it); NaN for an empty
    one."""
    columns = _scored_columns(reference, current, config)
    return _column_scores(_values(reference, columns, config), _values(current, columns, config), config)


def _scored_columns(reference: pd.DataFrame, current: pd.DataFrame, config: DatasetConfig) -> list[str]:
    numeric, categorical = feature_types(config)
    predicted = prediction_column(config.task)
    return [*numeric, *categorical] + ([predicted] if predicted in reference and predicted in current else [])


def _values(frame: pd.DataFrame, columns: Sequence[str], config: DatasetConfig) -> dict[str, pd.Series]:
    """Each column's values without the missing ones, as the stat tests take them; numeric ones sorted.

    A drift score depends on a column's values, not on their order, and Evidently's numeric tests sort them first
    (``wasserstein``, ``ks``): sorted input is sorted again in linear time. The scores are the same up to the last
    bits of floating-point sums (the reference's spread), about 2.5x faster; :func:`calibrate` sorts its
    reference once for every day it scores.
    """
    out = {}
    for column in columns:
        values = frame[column].dropna()
        if not is_categorical(config, column):
            values = pd.Series(np.sort(values.to_numpy()), name=column)
        out[column] = values
    return out


def _column_scores(
    reference: dict[str, pd.Series], current: dict[str, pd.Series], config: DatasetConfig
) -> dict[str, float]:
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    scores: dict[str, float] = {}
    for column, cur in current.items():
        ref = reference[column]
        if cur.empty or ref.empty:
            scores[column] = math.nan
            continue
        kind = ColumnType.Categorical if is_categorical(config, column) else ColumnType.Numerical
        method = method_of(config, column)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = get_stattest(ref, cur, kind, method)(ref, cur, kind, None)
        scores[column] = float(result.drift_score)
    return scores


def calibrate(
    reference: pd.DataFrame, days: Iterable[pd.DataFrame], config: DatasetConfig
) -> tuple[dict[str, float], dict[str, Any]]:
    """Per-column thresholds: ``calibration_margin`` x the worst score of any single reference day.

    Every day of the champion's own training data is compared with the reference as a live window would be;
    a live window must drift further than any of them did (times the margin) to count as drifted. Without
    calibration, every column gets the configured ``threshold``. ``days`` may be any windows of the training
    data (:func:`random_chunks` without a time column); the info counts them as ``days``.
    """
    drift = config.monitoring.drift
    columns = judged_columns(reference, config)
    if not drift.calibrate:
        return {c: drift.threshold for c in columns}, {"calibrated": False, "threshold": drift.threshold}
    worst: dict[str, float] = dict.fromkeys(columns, 0.0)
    reference_values = _values(reference, columns, config)  # once, not once a day
    count = 0
    for day in days:
        count += 1
        day_values = _values(day, _scored_columns(reference, day, config), config)
        for column, score in _column_scores(reference_values, day_values, config).items():
            if math.isfinite(score):
                worst[column] = max(worst[column], score)
    if count == 0:
        raise ValueError("cannot calibrate drift thresholds on a reference without days")
    thresholds = {c: round(max(MIN_THRESHOLD, drift.calibration_margin * worst[c]), 6) for c in columns}
    info = {
        "calibrated": True,
        "days": count,
        "margin": drift.calibration_margin,
        "worst_day_scores": {c: round(v, 6) for c, v in worst.items()},
    }
    return thresholds, info


def random_chunks(frame: pd.DataFrame, rows: int, limit: int, seed: int) -> list[pd.DataFrame]:
    """Up to ``limit`` disjoint chunks of exactly ``rows`` rows, drawn at random (seeded) from ``frame``.

    They stand in for days when the data has no time column: a live window of ``rows`` rows (the fewest
    ``monitoring.min_rows`` lets through) from the same distribution as the training data scores about as far
    from the reference as one of these chunks does.
    """
    count = min(limit, len(frame) // rows) if rows > 0 else 0
    order = np.random.default_rng(seed).permutation(len(frame))
    return [frame.iloc[np.sort(order[i * rows : (i + 1) * rows])] for i in range(count)]


def _dataset(frame: pd.DataFrame, numeric: list[str], categorical: list[str], target: str | None) -> Any:
    from evidently import BinaryClassification, DataDefinition, Dataset

    definition = DataDefinition(
        numerical_columns=numeric,
        categorical_columns=categorical,
        classification=[BinaryClassification(target=target, prediction_probas=PROBABILITY)] if target else None,
    )
    return Dataset.from_pandas(frame, data_definition=definition)


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    config: DatasetConfig,
    thresholds: dict[str, float],
    *,
    sample_seed: int = 0,
) -> tuple[DriftResult, Any]:
    """Run Evidently's drift report for ``current`` against ``reference``; returns the verdict and the snapshot.

    Features with no value at all in the window cannot be scored (Evidently refuses an empty column): they are
    reported as drifted with a note. Windows over ``drift.sample_rows`` rows are sampled uniformly first.
    """
    from evidently import Report
    from evidently.metrics import ValueDrift

    drift = config.monitoring.drift
    numeric, categorical = feature_types(config)
    counted = config.drift_features
    rows = len(current)
    used = sample_rows(current, drift.sample_rows, sample_seed)
    empty = [c for c in [*numeric, *categorical] if used[c].notna().sum() == 0]
    scored_num = [c for c in numeric if c not in empty]
    scored_cat = [c for c in categorical if c not in empty]
    counted_scored = [c for c in counted if c not in empty]
    # prediction drift compares the champion with itself: a window it did not answer has nothing to compare
    predicted = prediction_column(config.task)
    with_prediction = (
        drift.prediction_drift and predicted in used and predicted in reference and used[predicted].notna().any()
    )
    columns = [*scored_num, *scored_cat] + ([predicted] if with_prediction else [])
    predicted_categorical = is_categorical(config, predicted)
    num_columns = scored_num + ([predicted] if with_prediction and not predicted_categorical else [])
    cat_columns = scored_cat + ([predicted] if with_prediction and predicted_categorical else [])

    metrics: list[Any] = []
    if counted_scored:
        metrics.append(
            _drift_table_preset()(
                columns=counted_scored,
                num_method=drift.num_method,
                cat_method=drift.cat_method,
                per_column_threshold={c: thresholds[c] for c in counted_scored},
                drift_share=drift.drift_share,
                include_tests=False,
            )
        )
    for column in [c for c in [*scored_num, *scored_cat] if c not in counted_scored]:
        metrics.append(ValueDrift(column=column, method=method_of(config, column), threshold=thresholds[column]))
    if with_prediction:
        metrics.append(
            ValueDrift(column=predicted, method=method_of(config, predicted), threshold=thresholds[predicted])
        )
    report = Report(metrics, include_tests=False)
    with warnings.catch_warnings():
        # a day window may hold one value of a column (precip 0 all day): Evidently's plots divide by its spread
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = report.run(
            current_data=_dataset(used[columns], num_columns, cat_columns, None),
            reference_data=_dataset(reference[columns], num_columns, cat_columns, None),
        )
    # the same stat tests on the same rows as the report's (its table shows these numbers)
    scores = drift_scores(reference, used, config)
    features: dict[str, FeatureDrift] = {}
    for column in [*numeric, *categorical]:
        method, threshold = method_of(config, column), thresholds[column]
        if column in empty:
            features[column] = FeatureDrift(None, threshold, True, column in counted, method, "no value in the window")
            continue
        score = scores[column]
        features[column] = FeatureDrift(round(score, 6), threshold, score >= threshold, column in counted, method)
    prediction = None
    if with_prediction:
        score, threshold = scores[predicted], thresholds[predicted]
        prediction = FeatureDrift(round(score, 6), threshold, score >= threshold, False, method_of(config, predicted))
    drifted = [c for c in counted if features[c].drifted]
    share = len(drifted) / len(counted) if counted else 0.0
    result = DriftResult(
        rows=rows,
        rows_used=len(used),
        sampled=len(used) < rows,
        sample_error_bound=round(dkw_bound(len(used)), 6) if len(used) < rows else None,
        drift_share=round(share, 6),
        dataset_drift=bool(counted) and share >= drift.drift_share,
        drifted_features=drifted,
        features=features,
        prediction=prediction,
    )
    return result, snapshot


def performance_report(labelled: pd.DataFrame, config: DatasetConfig) -> tuple[dict[str, float], Any | None]:
    """The task's live metrics on the rows whose outcome is known, and Evidently's report of them (None when
    Evidently cannot render it).

    Binary: Evidently's ``ClassificationPreset`` on the probability, its numbers as they are. Multiclass and
    regression: Evidently's ``ClassificationPreset`` (per-class probabilities) or ``RegressionPreset`` renders the
    report, and the numbers are :func:`pipelines.training.metrics.task_metrics`'s, the functions that scored the
    holdout (Evidently's agree where both exist; only these know ``min_class_recall`` and a class unseen in
    training), under the names of ``TASK_METRICS``. No reference side: the champion's scores on its own training
    rows are in-sample, so the comparison that means something is with its holdout metrics (``max_drop``).
    """
    if config.task == "binary":
        return _binary_performance(labelled, config)
    target = config.target.label
    if config.task == "multiclass":
        proba, classes = probability_matrix(labelled[PROBABILITIES])
        labels = labelled[target].astype(str)
        found = live_metrics("multiclass", labels, proba, classes=classes)
        frame = pd.DataFrame(proba, columns=classes, index=labelled.index)
        frame[target] = labels
        frame[PREDICTED_CLASS] = np.asarray(classes, dtype=object)[proba.argmax(axis=1)] if classes else None
        return found, _evidently_performance(frame, config, classes)
    values = labelled[target].to_numpy(dtype=float)
    predicted = labelled[PREDICTION].to_numpy(dtype=float)
    found = live_metrics("regression", values, predicted)
    frame = pd.DataFrame({target: values, PREDICTION: predicted}, index=labelled.index)
    return found, _evidently_performance(frame, config, [])


def live_metrics(
    task: str, y_true: Any, predictions: np.ndarray, *, classes: Sequence[Any] = (), threshold: float = 0.5
) -> dict[str, float]:
    """The task's policy metrics (``TASK_METRICS`` names) of ``predictions``, the finite ones, as the holdout's."""
    from pipelines.training.metrics import task_metrics

    values = task_metrics(task, y_true, predictions, classes=classes, threshold=threshold)
    return {
        name: round(float(values[name]), 6)
        for name in TASK_METRICS[task]
        if name in values and math.isfinite(values[name])
    }


def probability_matrix(values: Iterable[Any]) -> tuple[np.ndarray, list[str]]:
    """Logged multiclass probabilities (``{class: p}`` per record, as dicts or JSON text) as an ``n x k`` matrix
    and its classes, sorted; a class missing from a record's mapping counts as 0."""
    rows = [
        {str(k): float(v) for k, v in (json.loads(value) if isinstance(value, str) else value or {}).items()}
        for value in values
    ]
    classes = sorted({name for row in rows for name in row})
    matrix = np.array([[row.get(name, 0.0) for name in classes] for row in rows], dtype=float)
    return matrix.reshape(len(rows), len(classes)), classes


def _binary_performance(labelled: pd.DataFrame, config: DatasetConfig) -> tuple[dict[str, float], Any]:
    from evidently import Report
    from evidently.presets import ClassificationPreset

    target = config.target.label
    current = labelled[[target, PROBABILITY]].astype({target: "int64"})
    report = Report([ClassificationPreset(probas_threshold=config.model.threshold)], include_tests=False)
    snapshot = report.run(current_data=_dataset(current, [PROBABILITY], [], target), reference_data=None)
    names = {"RocAuc": "roc_auc", "LogLoss": "log_loss", "Precision": "precision", "Recall": "recall", "F1Score": "f1"}
    names["Accuracy"] = "accuracy"
    found: dict[str, float] = {}
    for metric in json.loads(snapshot.json())["metrics"]:
        kind = metric["config"]["type"].rsplit(":", 1)[-1]
        if kind in names and isinstance(metric["value"], int | float) and math.isfinite(metric["value"]):
            found[names[kind]] = round(float(metric["value"]), 6)
    return found, snapshot


def _evidently_performance(frame: pd.DataFrame, config: DatasetConfig, classes: list[str]) -> Any | None:
    """Evidently's multiclass (``classes``: the probability columns) or regression report of ``frame``."""
    from evidently import DataDefinition, Dataset, MulticlassClassification, Regression, Report
    from evidently.presets import ClassificationPreset, RegressionPreset

    target = config.target.label
    if config.task == "multiclass":
        definition = DataDefinition(
            numerical_columns=classes,
            categorical_columns=[target, PREDICTED_CLASS],
            classification=[
                MulticlassClassification(target=target, prediction_labels=PREDICTED_CLASS, prediction_probas=classes)
            ],
        )
        preset: Any = ClassificationPreset()
    else:
        definition = DataDefinition(
            numerical_columns=[target, PREDICTION], regression=[Regression(target=target, prediction=PREDICTION)]
        )
        preset = RegressionPreset()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Report([preset], include_tests=False).run(
                current_data=Dataset.from_pandas(frame, data_definition=definition), reference_data=None
            )
    except Exception as exc:  # the report is evidence; the numbers above do not depend on it
        log.warning("Evidently could not build the %s performance report of %s: %s", config.task, config.name, exc)
        return None


@cache
def _drift_table_preset() -> type:
    """Evidently's ``DataDriftPreset`` without the ``ValueDrift`` metric it adds per column.

    The preset's page is its dataset-drift counter and drift table (rendered from Evidently's own drift metrics);
    each per-column ``ValueDrift`` also builds plotly figures that the page never shows, about half of a day
    window's report time (docs/benchmarks.md, "A monitored window's drift report"). The page is the same without them.
    """
    from evidently.metrics import DriftedColumnsCount
    from evidently.presets import DataDriftPreset

    class DriftTablePreset(DataDriftPreset):  # type: ignore[misc]
        def generate_metrics(self, context: Any) -> Sequence[Any]:
            return [m for m in super().generate_metrics(context) if isinstance(m, DriftedColumnsCount)]

    return DriftTablePreset
