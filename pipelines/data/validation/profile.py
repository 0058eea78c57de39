"""Proposing a suite: profile a window of the dataset (pure) and write the proposal for a person to review.

Every proposed expectation keeps the column's own type: value sets hold ints for integer-coded categories, floats
for floats, strings for strings and booleans for booleans; ranges are ints for integer columns and ISO strings
for datetime columns. Free text (long or high-cardinality strings) gets length bounds instead of a value set,
dates written as text a format check. A proposal passes on the data it was profiled from; a person then reviews
every bound (margins, physical limits) before committing it to ``expectations/``.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.core.config import DatasetConfig
from pipelines.core.errors import ConfigError
from pipelines.core.runs import Window
from pipelines.core.settings import Settings
from pipelines.data.validation.suite import build_expectations, source_columns, write_suite

log = logging.getLogger(__name__)


# pandas dtypes GX accepts per family (``expect_column_values_to_be_in_type_list``).
NUMERIC_TYPES = ["int64", "int32", "float64", "float32", "Int64Dtype", "Float64Dtype"]
STRING_TYPES = ["str", "StringDtype"]
DATETIME_TYPES = ["datetime64[ns]", "datetime64[us]", "datetime64[ms]"]
BOOL_TYPES = ["bool", "BooleanDtype"]
# Python types GX checks value by value in an object column holding numbers.
NUMERIC_OBJECT_TYPES = ["int", "float", "int64", "float64"]
# Profiler margins: what a proposal allows beyond what it observed (a person then reviews it).
NULL_MARGIN = 0.05
RANGE_MARGIN = 0.1
VALUE_SET_MAX = 50
VALUE_SET_MOSTLY = 0.99
# A string column is free text (length bounds, no value set) above this many distinct values or this length.
FREE_TEXT_LENGTH = 64
# A table without a time column is read whole: a run sees between half and this many times the profiled rows.
STATIC_ROW_FACTOR = 10
# Dates written as text, recognised when every value parses with one of these formats.
DATE_TEXT_FORMATS = {
    "%Y-%m-%d": re.compile(r"^\d{4}-\d{2}-\d{2}$"),
    "%Y-%m-%d %H:%M:%S": re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"),
    "%Y-%m-%dT%H:%M:%S": re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$"),
}
# What ``pandas.api.types.infer_dtype`` says of an object column, as a profiling family.
_INFERRED_FAMILY = {
    "boolean": "bool",
    "integer": "numeric",
    "floating": "numeric",
    "mixed-integer-float": "numeric",
    "string": "string",
    "datetime64": "datetime",
    "datetime": "datetime",
}


# --- bounds --------------------------------------------------------------------------------------------------


def mostly_not_null(null_share: float) -> float | None:
    """``mostly`` for a not-null expectation: twice the observed null share plus a margin (None: no nulls seen)."""
    if null_share <= 0:
        return None
    allowed = min(0.99, 2 * null_share + NULL_MARGIN)
    return max(0.01, math.floor(round((1 - allowed) * 100, 6)) / 100)


def _step(span: float) -> tuple[float, int]:
    """A rounding step between a thousandth and a hundredth of ``span``, and its number of decimals."""
    exponent = math.floor(math.log10(span)) - 2
    return 10.0**exponent, max(0, -exponent)


def widened_bounds(low: float, high: float, margin: float = RANGE_MARGIN) -> tuple[float, float]:
    """Observed ``[low, high]`` widened by ``margin`` of the range on each side, rounded outwards to a
    hundredth of the range or finer (never below 0 if ``low >= 0``)."""
    span = (high - low) or abs(high) or 1.0
    lo, hi = low - margin * span, high + margin * span
    if low >= 0:
        lo = max(0.0, lo)
    step, decimals = _step(span)
    return (
        round(math.floor(round(lo / step, 6)) * step, decimals),
        round(math.ceil(round(hi / step, 6)) * step, decimals),
    )


def integer_bounds(low: float, high: float, margin: float = RANGE_MARGIN) -> tuple[int, int]:
    """:func:`widened_bounds` for an integer column: whole numbers."""
    lo, hi = widened_bounds(low, high, margin)
    return math.floor(lo), math.ceil(hi)


def datetime_bounds(low: pd.Timestamp, high: pd.Timestamp, margin: float = RANGE_MARGIN) -> tuple[str, str]:
    """Observed ``[low, high]`` widened by ``margin`` of the range (at least a day), as ISO strings at midnight."""
    span = max(high - low, pd.Timedelta(days=1))
    lo, hi = (low - margin * span).floor("D"), (high + margin * span).ceil("D")
    return lo.isoformat(), hi.isoformat()


def row_count_bounds(times: pd.Series) -> tuple[int, int]:
    """Row-count bounds from rows per day: half the quietest day up to a year and a half of the busiest."""
    daily = pd.to_datetime(times).dt.normalize().value_counts()
    return max(1, int(daily.min()) // 2), math.ceil(int(daily.max()) * 366 * 1.5)


def static_row_count_bounds(rows: int) -> tuple[int, int]:
    """Row-count bounds of a source read whole (no time column): half the profiled rows up to ten times as many."""
    return max(1, rows // 2), max(1, rows) * STATIC_ROW_FACTOR


# --- column families -----------------------------------------------------------------------------------------


def column_family(series: pd.Series) -> str:
    """What the column holds: bool, numeric, datetime, string, date_text (dates written as text) or mixed."""
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "datetime"
    if pd.api.types.is_numeric_dtype(series):
        return "numeric"
    family = _INFERRED_FAMILY.get(pd.api.types.infer_dtype(series, skipna=True), "mixed")
    if family == "string" and date_text_format(series) is not None:
        return "date_text"
    return family


def date_text_format(series: pd.Series) -> str | None:
    """The strftime format every non-null value of a text column has (ISO dates), or None."""
    values = series.dropna().astype(str)
    if values.empty:
        return None
    return next((fmt for fmt, pattern in DATE_TEXT_FORMATS.items() if values.str.match(pattern).all()), None)


def type_list(series: pd.Series) -> list[str] | None:
    """The GX type list of the column's family (None: GX has no type name for it, e.g. tz-aware or mixed)."""
    family = column_family(series)
    is_object = series.dtype == object
    if family == "datetime":
        return None if is_object or isinstance(series.dtype, pd.DatetimeTZDtype) else DATETIME_TYPES
    if family == "bool":
        return BOOL_TYPES
    if family == "numeric":
        if is_object:
            return NUMERIC_OBJECT_TYPES
        own = type(series.dtype).__name__ if isinstance(series.dtype, pd.api.extensions.ExtensionDtype) else None
        own = own or str(series.dtype)
        return NUMERIC_TYPES if own in NUMERIC_TYPES else [*NUMERIC_TYPES, own]
    if family in ("string", "date_text"):
        return STRING_TYPES
    return None


def _native(value: Any) -> Any:
    """A numpy or pandas scalar as the plain Python value JSON and GX keep with its type."""
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value.item() if hasattr(value, "item") else value


def _sorted(values: set[Any]) -> list[Any]:
    """Values in order; by their text when their types do not compare (a mixed column)."""
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def is_free_text(values: pd.Series) -> bool:
    """Whether a text column is free text: too many distinct values or too long for a value set."""
    return values.nunique() > VALUE_SET_MAX or int(values.astype(str).str.len().max()) > FREE_TEXT_LENGTH


# --- expectations --------------------------------------------------------------------------------------------


def _expectation(
    kind: str, observed: dict[str, Any] | None = None, notes: str | None = None, **kwargs: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": kind,
        "kwargs": {k: v for k, v in kwargs.items() if v is not None},
        "meta": {"observed": observed} if observed else {},
    }
    if notes:
        out["notes"] = notes
    return out


def _value_set(name: str, values: pd.Series, mostly: float | None, notes: str | None = None) -> dict[str, Any]:
    distinct = _sorted({_native(v) for v in values.unique()})
    return _expectation(
        "expect_column_values_to_be_in_set",
        {"distinct": len(distinct)},
        notes,
        column=name,
        value_set=distinct,
        mostly=mostly,
    )


def _range(name: str, values: pd.Series, family: str) -> dict[str, Any]:
    """A range of the column's own type: ints, floats or ISO datetimes."""
    low, high = values.min(), values.max()
    if family == "datetime":
        lo_dt, hi_dt = datetime_bounds(pd.Timestamp(low), pd.Timestamp(high))
        observed = {"min": pd.Timestamp(low).isoformat(), "max": pd.Timestamp(high).isoformat()}
        return _expectation(
            "expect_column_values_to_be_between", observed, column=name, min_value=lo_dt, max_value=hi_dt
        )
    observed = {"min": _native(low), "max": _native(high)}
    integers = pd.api.types.is_integer_dtype(values) or pd.api.types.infer_dtype(values, skipna=True) == "integer"
    if integers:
        lo_i, hi_i = integer_bounds(float(low), float(high))
        return _expectation("expect_column_values_to_be_between", observed, column=name, min_value=lo_i, max_value=hi_i)
    lo, hi = widened_bounds(float(low), float(high))
    return _expectation("expect_column_values_to_be_between", observed, column=name, min_value=lo, max_value=hi)


def _text(name: str, values: pd.Series, mostly: float | None) -> dict[str, Any]:
    """A value set for a category, length bounds for free text."""
    if not is_free_text(values):
        return _value_set(name, values, mostly)
    lengths = values.astype(str).str.len()
    low, high = int(lengths.min()), int(lengths.max())
    lo, hi = integer_bounds(low, high)
    return _expectation(
        "expect_column_value_lengths_to_be_between",
        {"min_length": low, "max_length": high, "distinct": int(values.nunique())},
        "Free text (too many distinct values or too long for a value set): length bounds only.",
        column=name,
        min_value=lo,
        max_value=hi,
    )


def _content(name: str, values: pd.Series, kind: str, family: str) -> list[dict[str, Any]]:
    """The value expectation of a column: a value set, a range, a format or length bounds, by kind and family."""
    if values.empty:
        return []
    if kind == "label":
        note = "The classes the model knows: a new class is a change to review (and retrain on)."
        return [_value_set(name, values, None, note)]
    if family == "bool":
        return [_value_set(name, values, None if kind == "target" else VALUE_SET_MOSTLY)]
    if family == "date_text":
        fmt = date_text_format(values)
        return [_expectation("expect_column_values_to_match_strftime_format", column=name, strftime_format=fmt)]
    if family == "datetime":
        if kind == "time" or values.dtype == object:
            return []  # the time column moves with every window: no range
        return [_range(name, values, family)]
    if family == "numeric":
        if kind == "categorical" and values.nunique() <= VALUE_SET_MAX:
            return [_value_set(name, values, VALUE_SET_MOSTLY)]  # integer-coded category: its own numbers
        if kind in ("numeric", "target", "categorical"):
            return [_range(name, values, family)]
        return []
    if family == "string" and kind == "numeric":
        log.warning("column %r is declared numeric but holds text: validation checks that its values are numbers", name)
        return []
    if family == "string" and kind in ("categorical", "target"):
        return [_text(name, values, VALUE_SET_MOSTLY)]
    return []


def _profile_column(series: pd.Series, kind: str) -> list[dict[str, Any]]:
    """Type, not-null and value (set, range, format, lengths) expectations of one column.

    ``kind``: key, time, label (a classification target), target (a numeric target), numeric or categorical.
    """
    name = str(series.name)
    family = column_family(series)
    null_share = round(float(series.isna().mean()), 4)
    out = []
    types = type_list(series)
    if types is not None:
        out.append(
            _expectation(
                "expect_column_values_to_be_in_type_list", {"dtype": str(series.dtype)}, column=name, type_list=types
            )
        )
    else:
        log.warning(
            "column %r (%s, %s): no GX type name for it, no type expectation proposed", name, series.dtype, family
        )
    out.append(
        _expectation(
            "expect_column_values_to_not_be_null",
            {"null_share": null_share},
            column=name,
            mostly=mostly_not_null(null_share),
        )
    )
    values = series.dropna()
    out.extend(_content(name, values, kind, family))
    if kind == "key":
        if values.is_unique:
            out.append(_expectation("expect_column_values_to_be_unique", column=name))
        else:
            log.warning("key column %r is not unique in the profiled rows: no uniqueness proposed", name)
    return out


def profiled_columns(config: DatasetConfig) -> dict[str, str]:
    """The columns a proposal profiles and their kind: key, time, the target, then the non-derived features.

    The target is a ``label`` (value set) for a classification on labels, a ``target`` (range) for a regression
    or a binary rule on a numeric column.
    """
    target = config.target
    label = target.task == "multiclass" or (target.task == "binary" and target.rule is None)
    kinds: dict[str, str] = {}
    if config.source.key_column:
        kinds[config.source.key_column] = "key"
    if config.source.time_column:
        kinds.setdefault(config.source.time_column, "time")
    kinds.setdefault(target.column, "label" if label else "target")
    for feature in config.features:
        if feature.derive is None:
            kinds.setdefault(feature.name, feature.type)
    return kinds


def profile_expectations(frame: pd.DataFrame, config: DatasetConfig) -> list[dict[str, Any]]:
    """Expectation dicts proposed from ``frame`` (column set, row count, and per profiled column)."""
    frame = source_columns(frame, config)
    kinds = profiled_columns(config)
    missing = sorted(set(kinds) - set(frame.columns))
    if missing:
        raise ConfigError(f"dataset {config.name!r}: columns {missing} named in the config are not in the source")
    time_column = config.source.time_column
    low, high = row_count_bounds(frame[time_column]) if time_column else static_row_count_bounds(len(frame))
    out = [
        _expectation("expect_table_columns_to_match_set", column_set=sorted(map(str, frame.columns)), exact_match=True),
        _expectation("expect_table_row_count_to_be_between", {"rows": len(frame)}, min_value=low, max_value=high),
    ]
    for column, kind in kinds.items():
        out.extend(_profile_column(frame[column], kind))
    return out


def propose_suite(config: DatasetConfig, settings: Settings, window: Window | None, out: Path) -> Path:
    """Profile ``window`` of the dataset's source (the whole source without a time column) and write a proposed
    suite to ``out`` for a person to review."""
    from great_expectations import ExpectationSuite

    from pipelines.data.extract import read_dataset_window
    from pipelines.data.sources import source_description

    frame = read_dataset_window(config, settings, window)
    suite = ExpectationSuite(
        name=config.expectation_suite,
        expectations=build_expectations(profile_expectations(frame, config), f"proposal for {config.name}"),
        meta={
            "profiled": {
                "dataset": config.name,
                "source": source_description(config),
                "window": str(window) if window is not None else "the whole source",
                "rows": len(frame),
            }
        },
        notes="Proposed by `propose-suite` from the profiled rows: review every bound before committing.",
    )
    path = write_suite(suite, out)
    log.info(
        "proposed %d expectations for suite %s from %d rows of %s -> %s",
        len(suite.expectations),
        suite.name,
        len(frame),
        window or "the whole source",
        path,
    )
    return path
