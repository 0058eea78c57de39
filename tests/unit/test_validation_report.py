"""The pure parts of data validation: readable failures, the profiler's bounds, the suite file's format and URLs.

None of these import Great Expectations: they work on GX's JSON result dicts and on pandas frames.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipelines.core.config import load_config_file
from pipelines.core.settings import Settings
from pipelines.data.validation.profile import (
    NUMERIC_TYPES,
    STRING_TYPES,
    mostly_not_null,
    profile_expectations,
    row_count_bounds,
    widened_bounds,
)
from pipelines.data.validation.report import describe_failure, failure_message
from pipelines.data.validation.run import data_docs_site_dir, data_docs_url
from pipelines.data.validation.suite import suite_json
from pipelines.data.validation.summary import ValidationSummary
from tests.conftest import REPO_ROOT

COLUMNS = ["temp", "distance", "carrier"]


def _result(kind: str, kwargs: dict, result: dict | None = None, exception: dict | None = None) -> dict:
    """A failed expectation result as GX's ``ExpectationValidationResult.to_json_dict()`` shapes it."""
    return {
        "success": False,
        "expectation_config": {"type": kind, "kwargs": {**kwargs, "batch_id": "snapshots-flights"}},
        "result": result or {},
        "exception_info": exception or {"raised_exception": False, "exception_message": None},
    }


def test_null_burst_names_the_share_and_the_allowance() -> None:
    # given a not-null expectation that saw 38.2 % nulls where 5 % are allowed
    failure = describe_failure(
        _result(
            "expect_column_values_to_not_be_null",
            {"column": "temp", "mostly": 0.95},
            {"unexpected_count": 382, "unexpected_percent": 38.2},
        ),
        COLUMNS,
    )
    # then the failure names the expectation, the column and both shares, without the batch id
    assert failure["expectation"] == "expect_column_values_to_not_be_null"
    assert failure["column"] == "temp"
    assert failure["observed"] == "38.2% null (382 rows) (allowed 5.0%)"
    assert "batch_id" not in failure["details"]["kwargs"]


def test_out_of_range_values_are_shown_with_the_bounds_and_examples() -> None:
    failure = describe_failure(
        _result(
            "expect_column_values_to_be_between",
            {"column": "distance", "min_value": 1, "max_value": 6000},
            {"unexpected_count": 3, "unexpected_percent": 0.3, "partial_unexpected_list": [-5, -5, -9]},
        ),
        COLUMNS,
    )
    assert failure["observed"] == "3 values (0.3%) outside [1, 6000] (allowed 0%), e.g. -5, -9"


def test_an_error_on_a_missing_column_reads_as_a_missing_column() -> None:
    # given GX's per-metric exception for a column that is not in the snapshot
    exception = {
        "MetricConfigurationID(...)": {
            "exception_traceback": "Traceback ...",
            "exception_message": 'Error: The column "humid" in BatchData...',
        }
    }
    failure = describe_failure(
        _result("expect_column_values_to_not_be_null", {"column": "humid"}, None, exception), COLUMNS
    )
    # then it names the column, not a stack trace
    assert failure["observed"] == "column 'humid' is missing from the snapshot"
    assert "Traceback" not in json.dumps(failure["observed"])


def test_other_evaluation_errors_keep_their_first_line() -> None:
    exception = {"raised_exception": True, "exception_message": "values must be of the same type\nmore detail"}
    failure = describe_failure(
        _result("expect_column_values_to_be_between", {"column": "distance"}, None, exception), COLUMNS
    )
    assert failure["observed"] == "could not be evaluated: values must be of the same type"


def test_column_set_and_row_count_failures() -> None:
    columns = describe_failure(
        _result(
            "expect_table_columns_to_match_set",
            {"column_set": [*COLUMNS, "humid"]},
            {"observed_value": COLUMNS, "details": {"mismatched": {"missing": ["humid"], "unexpected": ["x"]}}},
        ),
        COLUMNS,
    )
    rows = describe_failure(
        _result("expect_table_row_count_to_be_between", {"min_value": 300, "max_value": 9}, {"observed_value": 12}),
        COLUMNS,
    )
    assert columns["column"] is None
    assert columns["observed"] == "missing columns ['humid']; unexpected columns ['x']"
    assert rows["observed"] == "12 rows (allowed 300..9)"


def test_failure_message_names_every_failure_and_the_data_docs() -> None:
    failures = (
        {"expectation": "expect_table_columns_to_match_set", "column": None, "observed": "missing columns ['temp']"},
        {"expectation": "expect_column_values_to_not_be_null", "column": "temp", "observed": "38.2% null"},
    )
    summary = ValidationSummary(
        success=False,
        suite="flights",
        run_key="t__r",
        snapshot="/s.parquet",
        evaluated=46,
        failed=2,
        data_docs_url="http://x/mlops/data-docs/index.html",
        data_docs_path="/d/index.html",
        failures=failures,
    )
    message = failure_message(summary)
    assert message.startswith("2 of 46 expectations of suite 'flights' failed on snapshot /s.parquet: ")
    assert "expect_table_columns_to_match_set(table): missing columns ['temp']" in message
    assert "expect_column_values_to_not_be_null(temp): 38.2% null" in message
    assert message.endswith("; Data Docs: http://x/mlops/data-docs/index.html")
    assert summary.to_dict()["failures"] == [dict(f) for f in failures]


@pytest.mark.parametrize(("null_share", "mostly"), [(0.0, None), (0.001, 0.94), (0.1181, 0.71), (0.9, 0.01)])
def test_mostly_allows_twice_the_observed_nulls_plus_a_margin(null_share: float, mostly: float | None) -> None:
    assert mostly_not_null(null_share) == mostly


def test_bounds_widen_by_a_tenth_of_the_range_and_stay_non_negative() -> None:
    assert widened_bounds(10.0, 110.0) == (0.0, 120.0)
    assert widened_bounds(-10.0, 10.0) == (-12.0, 12.0)
    assert widened_bounds(5.0, 5.0) == (4.5, 5.5)


def test_row_count_bounds_accept_a_quiet_day_up_to_a_long_year() -> None:
    # given 10 rows on one day and 4 on the next
    times = pd.Series(pd.to_datetime(["2013-01-01 08:00"] * 10 + ["2013-01-02 09:00"] * 4))
    # then half the quietest day up to 1.5 x 366 busiest days
    assert row_count_bounds(times) == (2, 5490)


def test_profile_proposes_typed_bounded_expectations_per_column(flights_config) -> None:
    # given a small frame with the flights columns the config names
    frame = pd.DataFrame(
        {
            "flight_id": ["a", "b", "c", "d"],
            "sched_dep": pd.to_datetime(["2013-01-01 06:00"] * 4),
            "arr_delay": [1.0, np.nan, 30.0, -3.0],
            "carrier": ["AA", "UA", "AA", "DL"],
            "origin": ["JFK"] * 4,
            "dest": ["BOS", "LAX", "SFO", "ORD"],
            "distance": [100, 200, 300, 400],
            **{
                c: [50.0, 51.0, np.nan, 52.0]
                for c in ("temp", "dewp", "humid", "wind_dir", "wind_speed", "precip", "pressure", "visib")
            },
        }
    )
    # when it is profiled
    expectations = profile_expectations(frame, flights_config)
    by = {(e["type"], e["kwargs"].get("column")): e["kwargs"] for e in expectations}
    # then the column set is exact, types and bounds are proposed, the key is unique and strict
    assert by[("expect_table_columns_to_match_set", None)] == {"column_set": sorted(frame.columns), "exact_match": True}
    assert by[("expect_column_values_to_be_in_type_list", "distance")]["type_list"] == NUMERIC_TYPES
    assert by[("expect_column_values_to_be_in_type_list", "carrier")]["type_list"] == STRING_TYPES
    assert by[("expect_column_values_to_be_between", "distance")] == {
        "column": "distance",
        "min_value": 70.0,
        "max_value": 430.0,
    }
    assert by[("expect_column_values_to_be_in_set", "carrier")]["value_set"] == ["AA", "DL", "UA"]
    assert ("expect_column_values_to_be_unique", "flight_id") in by
    assert "mostly" not in by[("expect_column_values_to_not_be_null", "flight_id")]
    assert by[("expect_column_values_to_not_be_null", "temp")]["mostly"] == 0.45
    assert ("expect_column_values_to_be_in_set", "dest") in by  # 4 distinct values: low cardinality here


SHIPPED_DATASETS = ["flights", "flights_minutes", "wine", "breast_cancer"]


@pytest.mark.parametrize("dataset", SHIPPED_DATASETS)
def test_committed_suite_is_canonical_and_covers_every_column_feature(dataset: str) -> None:
    # given a shipped dataset and its reviewed suite in the repository
    config = load_config_file(REPO_ROOT / "pipelines" / "conf" / "datasets" / f"{dataset}.yaml")
    path = REPO_ROOT / "expectations" / f"{config.expectation_suite}.json"
    data = json.loads(path.read_text())
    # then it is written in the stable order (so reviews show real changes only)
    assert path.read_text() == suite_json(data)
    assert data["name"] == config.expectation_suite
    assert 40 <= len(data["expectations"]) <= 110
    # and every feature read from a column, and the target column, has a type and a not-null expectation
    covered = {(e["type"], e["kwargs"].get("column")) for e in data["expectations"]}
    for column in [f.name for f in config.features if f.derive is None] + [config.target.column]:
        assert ("expect_column_values_to_be_in_type_list", column) in covered
        assert ("expect_column_values_to_not_be_null", column) in covered
    # and the target has its classes (classification on labels) or a range (regression, numeric rule)
    label = config.target.task == "multiclass" or config.target.positive is not None
    target_kind = "expect_column_values_to_be_in_set" if label else "expect_column_values_to_be_between"
    assert (target_kind, config.target.column) in covered
    if config.target.positive is not None:
        classes = next(
            e
            for e in data["expectations"]
            if (e["type"], e["kwargs"].get("column")) == (target_kind, config.target.column)
        )
        assert config.target.positive in classes["kwargs"]["value_set"]


def test_data_docs_url_is_served_by_the_airflow_plugin(tmp_path) -> None:
    settings = Settings(home=tmp_path, airflow_ui_url="http://airflow:8080/")
    assert data_docs_site_dir(settings).is_relative_to(settings.gx_dir)
    assert (
        data_docs_url(settings, "validations/flights/cli__r 1/x.html")
        == "http://airflow:8080/mlops/data-docs/validations/flights/cli__r%201/x.html"
    )
