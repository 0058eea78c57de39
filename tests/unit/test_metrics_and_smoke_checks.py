"""Metric functions and the deploy smoke check on predictions."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipelines.core.runs import Window, partition_key
from pipelines.release.deploy import check_predictions
from pipelines.training.metrics import (
    classification_metrics,
    finite,
    multiclass_metrics,
    regression_metrics,
    slice_metrics,
)


def test_perfect_and_random_scores() -> None:
    y = np.array([0, 0, 1, 1])
    perfect = classification_metrics(y, np.array([0.1, 0.2, 0.8, 0.9]), threshold=0.5)
    assert perfect["roc_auc"] == 1.0 and perfect["f1"] == 1.0 and perfect["rows"] == 4
    flat = classification_metrics(y, np.full(4, 0.5), threshold=0.6)
    assert flat["roc_auc"] == 0.5 and flat["f1"] == 0.0


def test_single_class_slice_has_no_auc_but_keeps_other_metrics() -> None:
    features = pd.DataFrame({"origin": ["JFK", "JFK", "EWR", "EWR"]})
    out = slice_metrics(features, np.array([0, 0, 0, 1]), np.array([0.1, 0.3, 0.2, 0.9]), ["origin"], threshold=0.5)
    assert math.isnan(out["origin"]["JFK"]["roc_auc"])
    assert out["origin"]["EWR"]["roc_auc"] == 1.0
    assert "roc_auc" not in finite(out["origin"]["JFK"])


def test_check_predictions_names_each_problem() -> None:
    good = np.array([[0.2, 0.8], [0.5, 0.5]])
    assert check_predictions(good, 2) == []
    assert "shape" in check_predictions(np.array([0.8, 0.5]), 2)[0]
    assert check_predictions(np.array([[np.nan, 1.0], [0.5, 0.5]]), 2) == ["non-finite probabilities"]
    assert check_predictions(np.array([[0.7, 0.7], [0.5, 0.5]]), 2) == ["class probabilities do not sum to 1"]


def test_multiclass_metrics_per_class_and_unseen_classes() -> None:
    # given three classes and a holdout row whose class the model never saw
    proba = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.1, 0.3, 0.6], [0.3, 0.3, 0.4]])
    y = ["a", "b", "c", "b", "d"]
    # when scored
    out = multiclass_metrics(y, proba, ["a", "b", "c"])
    # then the unseen row is counted and scored wrong, without crashing the probabilistic metrics
    assert out["unseen_class_rows"] == 1 and out["rows"] == 5
    assert out["accuracy"] == 3 / 5
    assert out["recall.a"] == 1.0 and out["recall.b"] == 0.5 and out["min_class_recall"] == 0.5
    assert math.isfinite(out["log_loss"]) and math.isfinite(out["roc_auc_ovr"])
    assert 0 < out["f1_macro"] < 1


def test_multiclass_auc_is_undefined_when_a_class_is_absent() -> None:
    out = multiclass_metrics(["a", "a", "b"], np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]]), "abc")
    assert math.isnan(out["roc_auc_ovr"]) and out["accuracy"] == 1.0 and math.isnan(out["recall.c"])


def test_regression_metrics_and_slices() -> None:
    # given predictions one minute too high on one slice and exact on the other
    features = pd.DataFrame({"origin": ["JFK", "JFK", "EWR", "EWR"]})
    y, predicted = np.array([10.0, 20.0, 30.0, 40.0]), np.array([11.0, 21.0, 30.0, 40.0])
    # when scored overall and by slice
    overall = regression_metrics(y, predicted)
    slices = slice_metrics(features, y, predicted, ["origin"], task="regression")
    # then RMSE, MAE, R² and the bias say so
    assert overall["mae"] == 0.5 and math.isclose(overall["rmse"], math.sqrt(0.5)) and overall["mean_error"] == 0.5
    assert math.isclose(overall["r2"], 1 - 2 / 500)  # squared errors 2, total sum of squares 500
    assert slices["origin"]["JFK"]["mae"] == 1.0 and slices["origin"]["EWR"]["mae"] == 0.0


def test_check_predictions_per_task() -> None:
    three = np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
    assert check_predictions(three, 2, "multiclass") == []
    assert "shape" in check_predictions(three, 2, "binary")[0]
    assert check_predictions(np.array([1.5, -3.0]), 2, "regression") == []
    assert check_predictions(np.array([1.5, np.inf]), 2, "regression") == ["non-finite predicted values"]
    assert "2 predicted values" in check_predictions(np.array([1.5]), 2, "regression")[0]


def test_partition_keys_are_safe_and_windows_ordered() -> None:
    assert (
        partition_key("train_flights", "manual__2026-01-01T00:00:00+00:00")
        == "train_flights__manual__2026-01-01T00_00_00_00_00"
    )
    import datetime as dt

    import pytest

    with pytest.raises(ValueError, match="after its start"):
        Window(dt.date(2013, 2, 1), dt.date(2013, 1, 1))
