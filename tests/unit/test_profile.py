"""Proposed suites keep each column's type, and validation adds a numeric check where the config says numeric.

Pure functions only: profile dicts and suite dicts, no Great Expectations run (the integration tests run GX).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipelines.core.config import ROW_KEY, DatasetConfig
from pipelines.core.errors import ConfigError
from pipelines.data.validation.profile import (
    BOOL_TYPES,
    DATETIME_TYPES,
    NUMERIC_TYPES,
    STRING_TYPES,
    column_family,
    datetime_bounds,
    integer_bounds,
    profile_expectations,
    static_row_count_bounds,
    widened_bounds,
)
from pipelines.data.validation.report import describe_failure
from pipelines.data.validation.suite import NUMERIC_CHECK_NOTE, NUMERIC_REGEX, add_type_checks, numeric_columns

FEATURES = [
    {"name": "season", "type": "categorical"},
    {"name": "is_holiday", "type": "categorical"},
    {"name": "comment", "type": "categorical"},
    {"name": "opened", "type": "categorical"},
    {"name": "opened_text", "type": "categorical"},
    {"name": "amount", "type": "numeric"},
    {"name": "visits", "type": "numeric"},
    {"name": "member", "type": "numeric"},
]


def _config(target: dict[str, Any], source: dict[str, Any] | None = None) -> DatasetConfig:
    return DatasetConfig.model_validate(
        {
            "name": "shop",
            "source": source or {"kind": "file", "path": "{home}/shop.parquet"},
            "target": target,
            "features": FEATURES,
            "expectation_suite": "shop",
            "model": {"registered_name": "shop", "experiment": "shop", "estimator": "sklearn.linear_model.Ridge"},
            "gate": {},
            "retraining": {},
        }
    )


def _frame(rows: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    opened = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 365, rows), unit="D")
    return pd.DataFrame(
        {
            "season": rng.integers(1, 5, rows),  # integer-coded category 1..4
            "is_holiday": rng.integers(0, 2, rows).astype(bool),
            "comment": [f"customer note number {i} " + "x" * (i % 7) for i in range(rows)],  # free text
            "opened": opened,
            "opened_text": opened.strftime("%Y-%m-%d"),
            "amount": rng.normal(50.0, 10.0, rows).round(2),
            "visits": rng.integers(0, 30, rows),
            "member": pd.array([True, False, None] * (rows // 3), dtype="boolean"),
            "churned": rng.choice(["Yes", "No"], rows),
            "grade": rng.integers(0, 3, rows),
            "spend": rng.normal(100.0, 5.0, rows),
        }
    )


def _by(expectations: list[dict[str, Any]]) -> dict[tuple[str, str | None], dict[str, Any]]:
    return {(e["type"], e["kwargs"].get("column")): e["kwargs"] for e in expectations}


def test_integer_coded_categories_keep_their_integers() -> None:
    # given a category coded 1..4 and a multiclass label coded 0..2 as integers
    frame = _frame()
    config = _config({"task": "multiclass", "column": "grade"})

    # when a suite is proposed
    by = _by(profile_expectations(frame, config))

    # then their value sets hold ints, never strings, and the type stays numeric
    assert by[("expect_column_values_to_be_in_set", "season")]["value_set"] == [1, 2, 3, 4]
    assert all(type(v) is int for v in by[("expect_column_values_to_be_in_set", "season")]["value_set"])
    assert by[("expect_column_values_to_be_in_set", "grade")] == {"column": "grade", "value_set": [0, 1, 2]}
    assert by[("expect_column_values_to_be_in_type_list", "season")]["type_list"] == NUMERIC_TYPES
    # and the proposal is plain JSON (no numpy scalars)
    assert json.loads(json.dumps(profile_expectations(frame, config)))


def test_booleans_get_a_boolean_value_set_and_type() -> None:
    by = _by(profile_expectations(_frame(), _config({"task": "binary", "column": "churned", "positive": "Yes"})))
    holiday = by[("expect_column_values_to_be_in_set", "is_holiday")]["value_set"]
    assert holiday == [False, True] and all(type(v) is bool for v in holiday)
    assert by[("expect_column_values_to_be_in_type_list", "is_holiday")]["type_list"] == BOOL_TYPES
    # a nullable boolean declared numeric: booleans too, and its nulls allowed with a margin
    assert by[("expect_column_values_to_be_in_set", "member")]["value_set"] == [False, True]
    assert by[("expect_column_values_to_not_be_null", "member")]["mostly"] < 2 / 3
    assert ("expect_column_values_to_be_between", "member") not in by


def test_dates_get_iso_ranges_and_dates_as_text_a_format() -> None:
    by = _by(profile_expectations(_frame(), _config({"task": "binary", "column": "churned", "positive": "Yes"})))
    opened = by[("expect_column_values_to_be_between", "opened")]
    assert opened["min_value"] <= "2020-01-01T00:00:00" and opened["max_value"] >= "2020-12-30T00:00:00"
    assert pd.Timestamp(opened["min_value"]) == pd.Timestamp(opened["min_value"]).normalize()
    assert by[("expect_column_values_to_be_in_type_list", "opened")]["type_list"] == DATETIME_TYPES
    assert by[("expect_column_values_to_match_strftime_format", "opened_text")]["strftime_format"] == "%Y-%m-%d"
    assert ("expect_column_values_to_be_in_set", "opened_text") not in by


def test_free_text_gets_length_bounds_instead_of_a_value_set() -> None:
    frame = _frame()
    by = _by(profile_expectations(frame, _config({"task": "binary", "column": "churned", "positive": "Yes"})))
    assert ("expect_column_values_to_be_in_set", "comment") not in by
    lengths = by[("expect_column_value_lengths_to_be_between", "comment")]
    observed = frame["comment"].str.len()
    assert lengths["min_value"] <= observed.min() and lengths["max_value"] >= observed.max()
    assert by[("expect_column_values_to_be_in_type_list", "comment")]["type_list"] == STRING_TYPES


def test_numbers_keep_their_type_in_ranges() -> None:
    frame = _frame()
    by = _by(profile_expectations(frame, _config({"task": "regression", "column": "spend"})))
    visits, amount = (
        by[("expect_column_values_to_be_between", "visits")],
        by[("expect_column_values_to_be_between", "amount")],
    )
    assert type(visits["min_value"]) is int and type(visits["max_value"]) is int
    assert visits["min_value"] == 0 and visits["max_value"] >= frame["visits"].max()
    assert type(amount["min_value"]) is float and amount["min_value"] < frame["amount"].min()
    # the regression target: a range, no value set
    assert by[("expect_column_values_to_be_between", "spend")]["max_value"] > frame["spend"].max()
    assert ("expect_column_values_to_be_in_set", "spend") not in by


def test_string_label_keeps_its_classes_exactly() -> None:
    by = _by(profile_expectations(_frame(), _config({"task": "binary", "column": "churned", "positive": "Yes"})))
    assert by[("expect_column_values_to_be_in_set", "churned")] == {"column": "churned", "value_set": ["No", "Yes"]}


def test_nulls_make_not_null_tolerant_and_a_clean_column_strict() -> None:
    frame = _frame().assign(amount=lambda f: f["amount"].mask(f.index % 10 == 0))
    by = _by(profile_expectations(frame, _config({"task": "regression", "column": "spend"})))
    assert 0 < by[("expect_column_values_to_not_be_null", "amount")]["mostly"] < 0.9
    assert "mostly" not in by[("expect_column_values_to_not_be_null", "visits")]


def test_without_time_column_the_row_count_is_static_and_the_derived_key_is_not_profiled() -> None:
    frame = _frame().assign(**{ROW_KEY: [f"{i:016x}" for i in range(60)]})
    by = _by(profile_expectations(frame, _config({"task": "regression", "column": "spend"})))
    assert by[("expect_table_row_count_to_be_between", None)] == {"min_value": 30, "max_value": 600}
    assert ROW_KEY not in by[("expect_table_columns_to_match_set", None)]["column_set"]
    assert static_row_count_bounds(60) == (30, 600)


def test_a_missing_configured_column_is_named() -> None:
    with pytest.raises(ConfigError, match=r"\['visits'\]"):
        profile_expectations(_frame().drop(columns="visits"), _config({"task": "regression", "column": "spend"}))


def test_family_of_object_columns() -> None:
    assert column_family(pd.Series([1, 2, None], dtype=object)) == "numeric"
    assert column_family(pd.Series([True, None], dtype=object)) == "bool"
    assert column_family(pd.Series(["1", "far"], dtype=object)) == "string"
    assert column_family(pd.Series([1, "far"], dtype=object)) == "mixed"


def test_bounds_are_rounded_outwards_in_the_column_type() -> None:
    assert widened_bounds(0.001713, 0.03113) == (0.0, 0.0341)
    assert widened_bounds(-70.0, 1272.0) == (-210.0, 1410.0)
    assert integer_bounds(3, 3) == (2, 4)
    assert datetime_bounds(pd.Timestamp("2013-01-01 06:00"), pd.Timestamp("2013-01-01 08:00")) == (
        "2013-01-01T00:00:00",
        "2013-01-02T00:00:00",
    )


# --- type checks added at validation --------------------------------------------------------------------------

SUITE = {
    "name": "shop",
    "expectations": [
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "amount", "min_value": 0, "max_value": 99}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "amount"}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "visits", "min_value": 0, "max_value": 9}},
    ],
}


def test_a_declared_numeric_column_holding_text_gets_a_numeric_check_and_loses_its_range() -> None:
    # given a snapshot whose amount column was written as text ('far' among numbers)
    frame = _frame().assign(amount=lambda f: f["amount"].astype(str).where(f.index != 3, "far"))
    config = _config({"task": "regression", "column": "spend"})

    # when validation prepares the suite
    suite = add_type_checks(SUITE, frame, config)

    # then amount gets a numeric regex check, its range is left out, the other columns are untouched
    kinds = [(e["type"], e["kwargs"]["column"]) for e in suite["expectations"]]
    assert ("expect_column_values_to_match_regex", "amount") in kinds
    assert ("expect_column_values_to_be_between", "amount") not in kinds
    assert ("expect_column_values_to_not_be_null", "amount") in kinds
    assert ("expect_column_values_to_be_between", "visits") in kinds
    added = suite["expectations"][-1]
    assert added["kwargs"] == {"column": "amount", "regex": NUMERIC_REGEX} and added["notes"] == NUMERIC_CHECK_NOTE
    assert SUITE["expectations"][0]["kwargs"]["column"] == "amount" and len(SUITE["expectations"]) == 3


def test_numeric_columns_are_the_numeric_features_and_a_numeric_target() -> None:
    assert numeric_columns(_config({"task": "regression", "column": "spend"}))[-1] == "spend"
    assert "churned" not in numeric_columns(_config({"task": "binary", "column": "churned", "positive": "Yes"}))
    rule = _config({"task": "binary", "column": "spend", "rule": {"op": "gt", "threshold": 100}})
    assert "spend" in numeric_columns(rule)
    # a clean snapshot gets nothing added
    assert add_type_checks(SUITE, _frame(), rule) is SUITE


@pytest.mark.parametrize(
    ("value", "numeric"),
    [("12", True), ("-3.5", True), (" 1e3 ", True), (".5", True), ("NaN", True), ("far", False), ("12 km", False)],
)
def test_the_numeric_regex(value: str, numeric: bool) -> None:
    assert bool(pd.Series([value]).str.contains(NUMERIC_REGEX).iloc[0]) is numeric


def test_a_failed_numeric_check_reads_as_values_that_are_not_numbers() -> None:
    failure = describe_failure(
        {
            "success": False,
            "expectation_config": {
                "type": "expect_column_values_to_match_regex",
                "kwargs": {"column": "distance", "regex": NUMERIC_REGEX, "batch_id": "x"},
            },
            "result": {"unexpected_count": 1, "unexpected_percent": 0.01, "partial_unexpected_list": ["far"]},
            "exception_info": {"raised_exception": False, "exception_message": None},
        },
        ["distance"],
    )
    assert failure["column"] == "distance"
    assert failure["observed"] == (
        "1 values (0.0%) not numbers (the config declares the column numeric) (allowed 0%), e.g. 'far'"
    )
