"""Feature building, target derivation, the time split and the leakage guard."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.core.config import DatasetConfig
from pipelines.data.features import LeakageError, assert_no_leakage, build_features, prepare, time_split

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
    assert len(prepared.features) == len(prepared.time) == 6


def test_missing_feature_column_is_named(flights_config: DatasetConfig) -> None:
    with pytest.raises(KeyError, match="distance"):
        build_features(_flights().drop(columns=["distance"]), flights_config)


def test_time_split_holds_out_the_latest_rows(flights_config: DatasetConfig) -> None:
    prepared = prepare(_flights(), flights_config)
    train, holdout = time_split(prepared, 0.34)
    assert prepared.time[holdout].min() > prepared.time[train].max()
    assert holdout.sum() == 2
