"""Pure helpers of monitoring: the sampling bound, uniform sampling, and how a triggered run's outcome is read."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from pipelines.monitoring.decide import outcome_of, training_run_id
from pipelines.monitoring.drift import dkw_bound, sample_rows


def test_dkw_bound_shrinks_with_the_square_root_of_the_sample() -> None:
    # given 50,000 sampled rows at 99.9 % confidence, then every CDF is within 0.0087 of the window's
    assert dkw_bound(50_000) == pytest.approx(0.00872, abs=1e-5)
    # and four times the rows halve the bound
    assert dkw_bound(200_000) == pytest.approx(dkw_bound(50_000) / 2)


def test_small_windows_are_not_sampled_and_large_ones_uniformly_without_replacement() -> None:
    frame = pd.DataFrame({"x": np.arange(10_000)})
    # given a window under the limit, then it is used whole
    assert sample_rows(frame, 10_000, seed=1) is frame
    # given a larger one, then the sample has the limit's size, distinct rows in their order, reproducible by seed
    sample = sample_rows(frame, 1_000, seed=1)
    assert len(sample) == 1_000 and sample["x"].is_unique and sample["x"].is_monotonic_increasing
    assert sample["x"].tolist() == sample_rows(frame, 1_000, seed=1)["x"].tolist()
    assert sample["x"].tolist() != sample_rows(frame, 1_000, seed=2)["x"].tolist()
    # and it covers the range (a uniform sample's mean is near the window's)
    assert abs(sample["x"].mean() - frame["x"].mean()) < 500


def test_training_run_id_is_one_per_window() -> None:
    assert training_run_id("flights", date(2013, 5, 23)) == "retrain__flights__2013-05-23"


@pytest.mark.parametrize(
    ("tags", "active", "expected"),
    [
        (None, 1, "pending"),  # no version yet, the run is going
        (None, 0, "failed"),  # no version and nothing running: the run failed before registering one
        ({"gate.decision": "failed"}, 0, "rejected"),
        ({"gate.decision": "passed", "approval.status": "rejected"}, 0, "rejected"),
        ({"gate.decision": "passed", "approval.status": "timed_out"}, 0, "rejected"),
        ({"gate.decision": "passed"}, 1, "pending"),  # awaiting approval
        ({"gate.decision": "passed", "approval.status": "approved", "deploy.status": "champion"}, 0, "deployed"),
        ({"approval.status": "approved", "deploy.status": "rolled_back"}, 0, "deployed"),
        ({"approval.status": "approved", "deploy.status": "smoke_test_failed"}, 0, "failed"),
    ],
)
def test_outcome_of_a_triggered_training_run(tags: dict[str, str] | None, active: int, expected: str) -> None:
    assert outcome_of(tags, active) == expected
