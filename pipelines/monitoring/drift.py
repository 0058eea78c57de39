"""Drift of a window of live inputs against a champion's reference, computed by Evidently.

Two things are Evidently's here: the per-feature drift scores (its stat tests, ``wasserstein`` and
``jensenshannon`` by default) and the report (``DataDriftPreset`` over the counted features, ``ValueDrift`` for
the others and for the predicted probability, ``ClassificationPreset`` on the rows whose outcome is known).
What is ours is the choice of settings: per-feature thresholds calibrated on the reference's own day-to-day
spread (a single day of weather always looks far from a season of it), which features count, the share of them
that makes dataset drift, and a uniform sample of large windows with a stated error bound.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.config import DatasetConfig

log = logging.getLogger(__name__)

PROBABILITY = "probability"
DAY = "day"
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


def method_of(config: DatasetConfig, column: str) -> str:
    """The Evidently stat test a column is judged by."""
    _, categorical = feature_types(config)
    drift = config.monitoring.drift
    return drift.cat_method if column in categorical else drift.num_method


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


def drift_scores(reference: pd.DataFrame, current: pd.DataFrame, config: DatasetConfig) -> dict[str, float]:
    """Evidently's drift score of every feature (and the probability, when both have it); NaN for an empty one."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    numeric, categorical = feature_types(config)
    columns = [*numeric, *categorical] + ([PROBABILITY] if PROBABILITY in reference and PROBABILITY in current else [])
    scores: dict[str, float] = {}
    for column in columns:
        kind = ColumnType.Categorical if column in categorical else ColumnType.Numerical
        ref, cur = reference[column].dropna(), current[column].dropna()
        if cur.empty or ref.empty:
            scores[column] = math.nan
            continue
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
    calibration, every column gets the configured ``threshold``.
    """
    drift = config.monitoring.drift
    numeric, categorical = feature_types(config)
    columns = [*numeric, *categorical] + ([PROBABILITY] if PROBABILITY in reference else [])
    if not drift.calibrate:
        return {c: drift.threshold for c in columns}, {"calibrated": False, "threshold": drift.threshold}
    worst: dict[str, float] = dict.fromkeys(columns, 0.0)
    count = 0
    for day in days:
        count += 1
        for column, score in drift_scores(reference, day, config).items():
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
    from evidently.presets import DataDriftPreset

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
    with_prediction = (
        drift.prediction_drift and PROBABILITY in used and PROBABILITY in reference and used[PROBABILITY].notna().any()
    )
    columns = [*scored_num, *scored_cat] + ([PROBABILITY] if with_prediction else [])
    num_columns = scored_num + ([PROBABILITY] if with_prediction else [])

    metrics: list[Any] = []
    if counted_scored:
        metrics.append(
            DataDriftPreset(
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
        metrics.append(ValueDrift(column=PROBABILITY, method=drift.num_method, threshold=thresholds[PROBABILITY]))
    report = Report(metrics, include_tests=False)
    with warnings.catch_warnings():
        # a day window may hold one value of a column (precip 0 all day): Evidently's plots divide by its spread
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = report.run(
            current_data=_dataset(used[columns], num_columns, scored_cat, None),
            reference_data=_dataset(reference[columns], num_columns, scored_cat, None),
        )
    scores = _value_drift_scores(json.loads(snapshot.json()))
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
        score = scores[PROBABILITY]
        prediction = FeatureDrift(
            round(score, 6), thresholds[PROBABILITY], score >= thresholds[PROBABILITY], False, drift.num_method
        )
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


def performance_report(labelled: pd.DataFrame, config: DatasetConfig) -> tuple[dict[str, float], Any]:
    """Evidently's classification report on the live rows whose outcome is known.

    No reference side: the champion's scores on its own training rows are in-sample, so the comparison that
    means something is with its holdout metrics (the retraining policy's ``max_drop``).
    """
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


def _value_drift_scores(report: dict[str, Any]) -> dict[str, float]:
    """Per-column scores from a report's ``ValueDrift`` metrics (the drift preset adds one per column)."""
    scores: dict[str, float] = {}
    for metric in report["metrics"]:
        cfg = metric["config"]
        if cfg["type"].endswith(":ValueDrift"):
            scores[cfg["column"]] = float(metric["value"])
    return scores
