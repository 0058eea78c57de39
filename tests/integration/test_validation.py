"""Data validation with real Great Expectations on a real SQLite warehouse: clean data passes with Data Docs,
bad batches fail with readable messages, a failed validation registers nothing, and proposed suites hold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import steps
from pipelines.core.config import DatasetConfig, load_config_file
from pipelines.core.errors import DataValidationError
from pipelines.core.runs import RunContext, Window
from pipelines.core.settings import Settings
from pipelines.data.seed import seed
from pipelines.data.sources import load_source
from pipelines.data.validation.profile import propose_suite
from pipelines.data.validation.run import data_docs_site_dir, gx_context_dir, validate_snapshot
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

START, END = "2013-01-01", "2013-01-15"
WINDOW = Window(pd.Timestamp(START).date(), pd.Timestamp(END).date())
RUN = RunContext(dag_id="t", run_id="r")


@pytest.fixture(scope="module")
def config() -> DatasetConfig:
    return load_config_file(REPO_ROOT / "pipelines" / "conf" / "datasets" / "flights.yaml")


@pytest.fixture(scope="module")
def source(config: DatasetConfig) -> pd.DataFrame:
    """The source rows of the test window, loaded once for the module (reading the source takes seconds)."""
    frame = load_source(config)
    in_window = (frame[config.source.time_column] >= WINDOW.start_dt) & (
        frame[config.source.time_column] < WINDOW.end_dt
    )
    return frame.loc[in_window].reset_index(drop=True)


def _seed(config: DatasetConfig, settings: Settings, frame: pd.DataFrame) -> None:
    seed(config, settings, WINDOW, source=frame)


def _validate(run: RunContext = RUN) -> dict:
    snapshot = steps.extract("flights", run, START, END)
    return steps.validate("flights", run, snapshot)


def test_clean_snapshot_passes_with_data_docs_keyed_by_run(isolated_settings, config, source) -> None:
    # given a warehouse holding two clean weeks
    _seed(config, isolated_settings, source)

    # when the run's snapshot is validated
    result = _validate()

    # then every expectation passes and the run's Data Docs page exists and is linked through the plugin
    assert result["success"] and result["failed"] == 0 and result["evaluated"] >= 40
    page = Path(result["data_docs_path"])
    assert page.is_file() and page.suffix == ".html"
    relative = page.relative_to(data_docs_site_dir(isolated_settings)).as_posix()
    assert relative.startswith(f"validations/flights/{RUN.key}/")
    assert result["data_docs_url"] == f"http://127.0.0.1:1/mlops/data-docs/{relative}"
    assert (data_docs_site_dir(isolated_settings) / "index.html").is_file()

    # when the same run is validated again and another run is validated
    again = _validate()
    other = _validate(RunContext(dag_id="t", run_id="other"))

    # then the rerun replaced its own result, and the other run's result sits beside it
    results = gx_context_dir(isolated_settings) / "uncommitted" / "validations" / "flights"
    assert len(list((results / RUN.key).iterdir())) == 1
    assert Path(again["data_docs_path"]).is_file() and not page.exists()
    assert Path(other["data_docs_path"]).is_file() and (results / "t__other").is_dir()
    # and GX wrote nothing into the repository
    assert not (REPO_ROOT / "gx").exists()


def _drop_temp(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["temp"])


def _distance_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(distance=frame["distance"].astype(str))


def _temp_null_burst(frame: pd.DataFrame) -> pd.DataFrame:
    burst = frame.copy()
    burst.loc[burst.sample(frac=0.4, random_state=0).index, "temp"] = np.nan
    return burst


def _negative_distance(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(distance=-frame["distance"])


@pytest.mark.parametrize(
    ("corrupt", "expectation", "column", "observed"),
    [
        (_drop_temp, "expect_table_columns_to_match_set", None, "missing columns ['temp']"),
        (_drop_temp, "expect_column_values_to_not_be_null", "temp", "column 'temp' is missing from the snapshot"),
        (_distance_as_text, "expect_column_values_to_be_in_type_list", "distance", "100.0%) not of a type in"),
        (_temp_null_burst, "expect_column_values_to_not_be_null", "temp", "% null ("),
        (_negative_distance, "expect_column_values_to_be_between", "distance", "outside [1.0, 6000.0]"),
    ],
    ids=["missing-column", "missing-column-per-expectation", "distance-as-text", "null-burst", "out-of-range"],
)
def test_bad_batch_fails_naming_expectation_and_column(
    isolated_settings, config, source, corrupt: Callable, expectation: str, column: str | None, observed: str
) -> None:
    # given a warehouse whose rows were corrupted upstream
    _seed(config, isolated_settings, corrupt(source))

    # when the run's snapshot is validated
    with pytest.raises(DataValidationError) as caught:
        _validate()

    # then the error names the failed expectation, its column and what was observed, and links the Data Docs
    error = caught.value
    assert f"{expectation}({column or 'table'}): " in str(error)
    failure = next(f for f in error.failures if f["expectation"] == expectation and f["column"] == column)
    assert observed in str(failure["observed"]) and observed in str(error)
    assert "Traceback" not in str(error)
    assert error.data_docs_url.startswith("http://127.0.0.1:1/mlops/data-docs/validations/flights/")
    assert str(error).endswith(f"Data Docs: {error.data_docs_url}")
    if corrupt is _temp_null_burst:
        assert [f["column"] for f in error.failures] == ["temp"]
        assert failure["details"]["unexpected_percent"] >= 40.0 and "(allowed 10.0%)" in failure["observed"]


def _far_distance(frame: pd.DataFrame) -> pd.DataFrame:
    """A source that mixed a word into a numeric column: 'far' among the distances (an object column)."""
    distance = frame["distance"].astype(object)
    distance.iloc[7] = "far"
    return frame.assign(distance=distance)


def test_a_word_in_a_numeric_column_fails_validation_naming_the_column_the_rule_and_the_value(
    isolated_settings, config, source
) -> None:
    # given a warehouse whose distance column holds 'far' among the numbers
    _seed(config, isolated_settings, _far_distance(source))

    # when the run's snapshot is taken and validated
    snapshot = steps.extract("flights", RUN, START, END)
    with pytest.raises(DataValidationError) as caught:
        steps.validate("flights", RUN, snapshot)

    # then validation fails (no crash) on a numeric check of distance, naming the rule and the value
    error = caught.value
    failure = next(f for f in error.failures if f["expectation"] == "expect_column_values_to_match_regex")
    assert failure["column"] == "distance"
    assert "not numbers (the config declares the column numeric)" in failure["observed"]
    assert "'far'" in failure["observed"] and failure["details"]["unexpected_count"] == 1
    assert "expect_column_values_to_match_regex(distance): 1 values" in str(error) and "'far'" in str(error)
    # and the range of the text column is not evaluated (GX cannot compare text with numbers): no evaluation error
    assert all("could not be evaluated" not in str(f["observed"]) for f in error.failures)
    assert {f["column"] for f in error.failures} == {"distance"}
    assert "Traceback" not in str(error)


def test_failed_validation_stops_the_cli_run_before_anything_is_registered(isolated_settings, config, source) -> None:
    # given a warehouse with negative distances
    _seed(config, isolated_settings, _negative_distance(source))

    # when the whole pipeline runs from the command line
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines",
            "run",
            "--dataset",
            "flights",
            "--run-id",
            "bad",
            "--start",
            START,
            "--end",
            END,
        ],
        cwd=REPO_ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    # then it exits 1 naming the failed expectation, and the registry holds no model
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "DataValidationError" in proc.stderr
    assert "expect_column_values_to_be_between(distance)" in proc.stderr
    import mlflow

    assert mlflow.MlflowClient(isolated_settings.mlflow_tracking_uri).search_registered_models() == []


def test_proposed_suite_loads_in_gx_and_passes_on_its_window(isolated_settings, config, source, tmp_path) -> None:
    # given a warehouse with two clean weeks
    _seed(config, isolated_settings, source)

    # when a suite is proposed from that window
    out = propose_suite(config, isolated_settings, WINDOW, tmp_path / "proposed" / "flights.json")

    # then it is GX's own suite format, with every feature column covered
    import great_expectations as gx

    data = json.loads(out.read_text())
    suite = gx.ExpectationSuite(**data)
    assert suite.name == config.expectation_suite
    assert len(suite.expectations) == len(data["expectations"]) >= 40
    columns = {e["kwargs"].get("column") for e in data["expectations"]}
    assert {f.name for f in config.features if f.derive is None} <= columns

    # and it passes on the window it was profiled on
    snapshot = steps.extract("flights", RUN, START, END)
    proposed = isolated_settings.model_copy(update={"expectations_dir": out.parent})
    summary = validate_snapshot(config, proposed, snapshot["path"], RUN)
    assert summary.success and summary.evaluated == len(data["expectations"])
