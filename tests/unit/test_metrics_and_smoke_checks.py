"""Metric functions and the deploy smoke check on predictions."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipelines.core.runs import Window, partition_key
from pipelines.release.deploy import check_predictions
from pipelines.training.metrics import classification_metrics, finite, slice_metrics


def test_perfect_and_random_scores() -> None:
    y = np.array([0, 0, 1, 1])
    perfect = classification_metrics(y, np.array([0.1, 0.2, 0.8, 0.9]), threshold=0.5)
    assert perfect["roc_auc"] == 1.0 and perfect["f1"] == 1.0 and perfect["rows"] == 4
    flat = classification_metrics(y, np.full(4, 0.5), threshold=0.6)
    assert flat["roc_auc"] == 0.5 and flat["f1"] == 0.0


def test_single_class_slice_has_no_auc_but_keeps_other_metrics() -> None:
    features = pd.DataFrame({"origin": ["JFK", "JFK", "EWR", "EWR"]})
    out = slice_metrics(features, np.array([0, 0, 0, 1]), np.array([0.1, 0.3, 0.2, 0.9]), ["origin"], 0.5)
    assert math.isnan(out["origin"]["JFK"]["roc_auc"])
    assert out["origin"]["EWR"]["roc_auc"] == 1.0
    assert "roc_auc" not in finite(out["origin"]["JFK"])


def test_check_predictions_names_each_problem() -> None:
    good = np.array([[0.2, 0.8], [0.5, 0.5]])
    assert check_predictions(good, 2) == []
    assert "shape" in check_predictions(np.array([0.8, 0.5]), 2)[0]
    assert check_predictions(np.array([[np.nan, 1.0], [0.5, 0.5]]), 2) == ["non-finite probabilities"]
    assert check_predictions(np.array([[0.7, 0.7], [0.5, 0.5]]), 2) == ["class probabilities do not sum to 1"]


def test_partition_keys_are_safe_and_windows_ordered() -> None:
    assert (
        partition_key("train_flights", "manual__2026-01-01T00:00:00+00:00")
        == "train_flights__manual__2026-01-01T00_00_00_00_00"
    )
    import datetime as dt

    import pytest

    with pytest.raises(ValueError, match="after its start"):
        Window(dt.date(2013, 2, 1), dt.date(2013, 1, 1))
