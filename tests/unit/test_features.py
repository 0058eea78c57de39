"""Feature building, target derivation, the time split and the leakage guard."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.core.config import DatasetConfig
from pipelines.core.errors import ConfigError
from pipelines.data.features import (
    LeakageError,
    assert_no_leakage,
    build_features,
    prepare,
    random_split,
    time_split,
)

POST_DEPARTURE = ["dep_time", "dep_delay", "arr_time", "arr_delay", "air_time"]


def _flights(n: int = 8) -> pd.DataFrame:
    times = pd.date_range("2013-01-07 05:00", periods=n, freq="6h")
    return pd.DataFrame(
        {
            "flight_id": [f"f{i}" for i in range(n)],
            "sched_dep": times,
            "carrier": ["UA", "AA"] * (n // 2),
            "origin": ["JFK", "EWR"] * (n // 2),
            "dest": ["LAX"] * n,
            "distance": np.arange(n) * 100.0 + 200,
            "temp": np.linspace(20, 40, n),
            "dewp": 10.0,
            "humid": 50.0,
            "wind_dir": 180.0,
            "wind_speed": 5.0,
            "precip": 0.0,
            "pressure": 1013.0,
            "visib": 10.0,
            "dep_time": 600.0,
            "dep_delay": 3.0,
            "arr_time": 900.0,
            "air_time": 300.0,
            "arr_delay": [0.0, 30.0, np.nan, 16.0, 15.0, -5.0, np.nan, 100.0][:n],
        }
    )


def test_features_follow_config_and_never_include_post_departure_columns(flights_config: DatasetConfig) -> None:
    # given a frame that still holds every post-departure column
    features = build_features(_flights(), flights_config)
    # then only the configured features come out, in order, and none of them leaks
    assert list(features.columns) == flights_config.feature_names
    assert not set(POST_DEPARTURE) & set(features.columns)
    assert features["day_of_week"].tolist()[0] == 0  # 2013-01-07 was a Monday
    assert features["sched_hour"].tolist()[:2] == [5.0, 11.0]
    assert features["carrier"].dtype == object


def test_leakage_guard_fails_on_each_post_departure_column(flights_config: DatasetConfig) -> None:
    for column in POST_DEPARTURE:
        with pytest.raises(LeakageError, match=column):
            assert_no_leakage(["carrier", column], flights_config)


def test_shipped_config_declares_the_post_departure_columns_forbidden(flights_config: DatasetConfig) -> None:
    assert set(POST_DEPARTURE) <= set(flights_config.forbidden_columns)


def test_target_is_derived_and_cancelled_flights_are_counted_not_hidden(flights_config: DatasetConfig) -> None:
    prepared = prepare(_flights(), flights_config)
    # arr_delay > 15 is delayed; the two NaN rows (cancelled) are excluded and counted
    assert prepared.excluded == 2
    assert prepared.target.tolist() == [0, 1, 1, 0, 0, 1]
    assert prepared.time is not None and len(prepared.features) == len(prepared.time) == 6


def test_missing_feature_column_is_named(flights_config: DatasetConfig) -> None:
    with pytest.raises(KeyError, match="distance"):
        build_features(_flights().drop(columns=["distance"]), flights_config)


def test_time_split_holds_out_the_latest_rows(flights_config: DatasetConfig) -> None:
    prepared = prepare(_flights(), flights_config)
    train, holdout = time_split(prepared, 0.34)
    assert prepared.time is not None and prepared.time[holdout].min() > prepared.time[train].max()
    assert holdout.sum() == 2


def _with_target(config: DatasetConfig, **target: object) -> DatasetConfig:
    """``config`` with its target replaced (and the binary-only settings dropped for other tasks)."""
    data = config.model_dump(mode="json", exclude_unset=True)
    data["target"] = target
    if target.get("task") in {"multiclass", "regression"}:
        data["model"].pop("threshold", None)
        data["gate"] = {}
        data["retraining"] = {}
    return DatasetConfig.model_validate(data)


@pytest.mark.parametrize(
    ("labels", "positive", "expected"),
    [
        (["Yes", "No", None, "Yes"], "Yes", [1, 0, 1]),
        (["CH", "MM", "MM", None], "MM", [0, 1, 1]),
        ([1.0, 0.0, np.nan, 1.0], 1, [1, 0, 1]),
        ([True, False, True, False], True, [1, 0, 1, 0]),
        (["malignant", "benign", "benign", "malignant"], "malignant", [1, 0, 0, 1]),
    ],
)
def test_binary_target_from_labels_of_any_type(
    flights_config: DatasetConfig, labels: list[object], positive: object, expected: list[int]
) -> None:
    # given a label column and its positive class in the data's own terms
    config = _with_target(flights_config, task="binary", column="label", positive=positive)
    frame = _flights(4).assign(label=labels)
    # when prepared, then the positive class is 1, the rest 0, and rows without a label are excluded
    prepared = prepare(frame, config)
    assert prepared.target.tolist() == expected
    assert prepared.excluded == 4 - len(expected)


def test_unknown_positive_class_and_missing_label_column_are_named(flights_config: DatasetConfig) -> None:
    config = _with_target(flights_config, task="binary", column="label", positive="Yes")
    # given labels that never hold the positive class, then the error names the field, the value and what was seen
    with pytest.raises(ConfigError, match=r"flights\.yaml: target.positive 'Yes' does not occur.*\['N', 'Y'\]"):
        prepare(_flights(4).assign(label=["Y", "N", "Y", "N"]), config)
    # given no label column at all, then the error names the column
    with pytest.raises(ConfigError, match=r"target\.column .label. is not a column of the data"):
        prepare(_flights(4), config)


def test_multiclass_and_regression_targets(flights_config: DatasetConfig) -> None:
    # given integer-coded classes, then they become text labels (no '.0'), nulls excluded
    multi = _with_target(flights_config, task="multiclass", column="season")
    prepared = prepare(_flights(4).assign(season=[1.0, 2.0, np.nan, 4.0]), multi)
    assert prepared.target.tolist() == ["1", "2", "4"]
    # given a numeric column, then the regression target is the number itself
    regression = _with_target(flights_config, task="regression", column="arr_delay")
    assert prepare(_flights(), regression).target.tolist() == [0.0, 30.0, 16.0, 15.0, -5.0, 100.0]


def test_random_split_is_seeded_and_stratified() -> None:
    # given an imbalanced binary target
    target = pd.Series([0] * 80 + [1] * 20)
    # when split twice with the same seed, then the holdouts are identical and keep the class balance
    train, holdout = random_split(target, 0.25, seed=7, stratify=True)
    again = random_split(target, 0.25, seed=7, stratify=True)[1]
    assert (holdout == again).all() and holdout.sum() == 25 and not (train & holdout).any()
    assert target[holdout].sum() == 5
    # and another seed gives another holdout
    assert not (random_split(target, 0.25, seed=8, stratify=True)[1] == holdout).all()
