"""Proposing a suite: profile a window of the dataset (pure) and write the proposal for a person to review."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.core.config import DatasetConfig
from pipelines.core.errors import ConfigError
from pipelines.core.runs import Window
from pipelines.core.settings import Settings
from pipelines.data.validation.suite import build_expectations, write_suite

log = logging.getLogger(__name__)


# pandas dtypes GX accepts per family (``expect_column_values_to_be_in_type_list``).
NUMERIC_TYPES = ["int64", "int32", "float64", "float32", "Int64Dtype", "Float64Dtype"]
STRING_TYPES = ["str", "StringDtype"]
DATETIME_TYPES = ["datetime64[ns]", "datetime64[us]", "datetime64[ms]"]
# Profiler margins: what a proposal allows beyond what it observed (a person then reviews it).
NULL_MARGIN = 0.05
RANGE_MARGIN = 0.1
VALUE_SET_MAX = 50
VALUE_SET_MOSTLY = 0.99


def _floor2(value: float) -> float:
    return math.floor(round(value * 100, 6)) / 100


def _ceil2(value: float) -> float:
    return math.ceil(round(value * 100, 6)) / 100


def mostly_not_null(null_share: float) -> float | None:
    """``mostly`` for a not-null expectation: twice the observed null share plus a margin (None: no nulls seen)."""
    if null_share <= 0:
        return None
    allowed = min(0.99, 2 * null_share + NULL_MARGIN)
    return max(0.01, _floor2(1 - allowed))


def widened_bounds(low: float, high: float, margin: float = RANGE_MARGIN) -> tuple[float, float]:
    """Observed ``[low, high]`` widened by ``margin`` of the range on each side (never below 0 if ``low >= 0``)."""
    span = (high - low) or abs(high) or 1.0
    lo, hi = low - margin * span, high + margin * span
    if low >= 0:
        lo = max(0.0, lo)
    return _floor2(lo), _ceil2(hi)


def row_count_bounds(times: pd.Series) -> tuple[int, int]:
    """Row-count bounds from rows per day: half the quietest day up to a year and a half of the busiest."""
    daily = pd.to_datetime(times).dt.normalize().value_counts()
    return max(1, int(daily.min()) // 2), math.ceil(int(daily.max()) * 366 * 1.5)


def type_list(series: pd.Series) -> list[str]:
    """The GX type list of the column's family (numeric, datetime, string)."""
    if pd.api.types.is_datetime64_any_dtype(series):
        return DATETIME_TYPES
    if pd.api.types.is_bool_dtype(series):
        return ["bool"]
    if pd.api.types.is_numeric_dtype(series):
        return NUMERIC_TYPES
    return STRING_TYPES


def _expectation(kind: str, observed: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "kwargs": {k: v for k, v in kwargs.items() if v is not None},
        "meta": {"observed": observed} if observed else {},
    }


def _profile_column(series: pd.Series, kind: str) -> list[dict[str, Any]]:
    """Type, not-null and range or value-set expectations of one column (``kind``: numeric/categorical/...)."""
    name = str(series.name)
    null_share = round(float(series.isna().mean()), 4)
    out = [
        _expectation(
            "expect_column_values_to_be_in_type_list",
            {"dtype": str(series.dtype)},
            column=name,
            type_list=type_list(series),
        ),
        _expectation(
            "expect_column_values_to_not_be_null",
            {"null_share": null_share},
            column=name,
            mostly=None if kind in ("key", "time") else mostly_not_null(null_share),
        ),
    ]
    values = series.dropna()
    if kind in ("numeric", "target") and pd.api.types.is_numeric_dtype(series) and not values.empty:
        low, high = float(values.min()), float(values.max())
        lo, hi = widened_bounds(low, high)
        out.append(
            _expectation(
                "expect_column_values_to_be_between", {"min": low, "max": high}, column=name, min_value=lo, max_value=hi
            )
        )
    distinct = sorted(str(v) for v in values.unique())
    if kind == "categorical" and 0 < len(distinct) <= VALUE_SET_MAX:
        out.append(
            _expectation(
                "expect_column_values_to_be_in_set",
                {"distinct": len(distinct)},
                column=name,
                value_set=distinct,
                mostly=VALUE_SET_MOSTLY,
            )
        )
    if kind == "key":
        out.append(_expectation("expect_column_values_to_be_unique", column=name))
    return out


def profiled_columns(config: DatasetConfig) -> dict[str, str]:
    """The columns a proposal profiles and their kind: key, time, target, then the non-derived features."""
    kinds = {config.source.key_column: "key", config.source.time_column: "time", config.target.source_column: "target"}
    for feature in config.features:
        if feature.derive is None:
            kinds.setdefault(feature.name, feature.type)
    return kinds


def profile_expectations(frame: pd.DataFrame, config: DatasetConfig) -> list[dict[str, Any]]:
    """Expectation dicts proposed from ``frame`` (column set, row count, and per profiled column)."""
    kinds = profiled_columns(config)
    missing = sorted(set(kinds) - set(frame.columns))
    if missing:
        raise ConfigError(f"dataset {config.name!r}: columns {missing} named in the config are not in the table")
    low, high = row_count_bounds(frame[config.source.time_column])
    out = [
        _expectation("expect_table_columns_to_match_set", column_set=sorted(map(str, frame.columns)), exact_match=True),
        _expectation("expect_table_row_count_to_be_between", {"rows": len(frame)}, min_value=low, max_value=high),
    ]
    for column, kind in kinds.items():
        out.extend(_profile_column(frame[column], kind))
    return out


def propose_suite(config: DatasetConfig, settings: Settings, window: Window, out: Path) -> Path:
    """Profile ``window`` of the dataset's table and write a proposed suite to ``out`` for a person to review."""
    from great_expectations import ExpectationSuite

    from pipelines.data.extract import read_dataset_window

    frame = read_dataset_window(config, settings, window)
    suite = ExpectationSuite(
        name=config.expectation_suite,
        expectations=build_expectations(profile_expectations(frame, config), f"proposal for {config.name}"),
        meta={
            "profiled": {
                "dataset": config.name,
                "table": config.source.table,
                "window": str(window),
                "rows": len(frame),
            }
        },
        notes="Proposed by `propose-suite` from the profiled window: review every bound before committing.",
    )
    path = write_suite(suite, out)
    log.info(
        "proposed %d expectations for suite %s from %d rows of %s -> %s",
        len(suite.expectations),
        suite.name,
        len(frame),
        window,
        path,
    )
    return path
