"""Pure helpers of monitoring: the sampling bound, uniform sampling, and how a triggered run's outcome is read."""

from __future__ import annotations

from datetime import date, timedelta

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


def _policy_decider(config, drifted_from: date):
    """``decide_one`` for a run of daily windows: the real retraining policy on a history where every window from
    ``drifted_from`` on drifted, with ``active`` training runs in progress."""
    from datetime import timedelta

    from pipelines.monitoring.decide import RetrainingRequest
    from pipelines.monitoring.retraining import TrainingState, WindowResult, needs_retraining

    def decide_one(end: date, active: int) -> RetrainingRequest:
        days = [end - timedelta(days=n) for n in range(10, 0, -1)]
        history = [
            WindowResult(day, day + timedelta(days=1), "drift", "1", 0.4)
            if day >= drifted_from
            else WindowResult(day, day + timedelta(days=1), "ok", "1", 0.0)
            for day in days
        ]
        state = TrainingState(end, "1", {"roc_auc": 0.7}, active, [], [])
        decision = needs_retraining(history, state, config.retraining)
        return RetrainingRequest(
            retrain=decision.retrain, trigger=decision.trigger, summary=decision.summary(), reasons=decision.reasons,
            window_end=str(end), champion_version="1", training_dag_id="train_flights",
            training_run_id=f"retrain__flights__{end}" if decision.retrain else None, training_conf=None,
        )  # fmt: skip

    return decide_one


def test_a_range_run_retrains_once_and_holds_the_later_windows_back_as_daily_runs_would(flights_config) -> None:
    from pipelines.monitoring.decide import decide_in_order, to_trigger

    # given a week of daily windows whose drift reaches three days in a row on its third day, no training running
    week = [date(2013, 5, 21) + timedelta(days=n) for n in range(7)]
    decide_one = _policy_decider(flights_config, drifted_from=date(2013, 5, 20))
    # when the windows are decided in order in one run
    decided = decide_in_order(week, 0, decide_one)
    # then the third window retrains, and every later one sees that training run in progress and is held back
    assert [d.retrain for d in decided] == [False, False, True, False, False, False, False]
    for later in decided[3:]:
        assert "BLOCK training run in progress: 1 queued or running training run(s)" in later.reasons
    # and the run acts on the window that decided to retrain
    assert to_trigger(decided).training_run_id == "retrain__flights__2013-05-23"


def test_a_range_run_without_a_retraining_acts_on_its_last_window(flights_config) -> None:
    from pipelines.monitoring.decide import decide_in_order, to_trigger

    week = [date(2013, 4, 2) + timedelta(days=n) for n in range(7)]
    decided = decide_in_order(week, 0, _policy_decider(flights_config, drifted_from=date(2014, 1, 1)))
    assert not any(d.retrain for d in decided)
    assert to_trigger(decided).window_end == "2013-04-08"


def test_a_range_is_split_into_consecutive_windows_the_last_one_shorter() -> None:
    from pipelines.core.runs import Window

    # given ten days split into windows of three, then four windows cover them in order, without gaps
    parts = Window(date(2013, 5, 1), date(2013, 5, 11)).split(3)
    assert [(w.start.day, w.end.day) for w in parts] == [(1, 4), (4, 7), (7, 10), (10, 11)]
    assert Window(date(2013, 5, 1), date(2013, 5, 8)).split(1)[-1] == Window(date(2013, 5, 7), date(2013, 5, 8))
    with pytest.raises(ValueError, match="at least one day"):
        Window(date(2013, 5, 1), date(2013, 5, 2)).split(0)


def test_a_rerun_range_keeps_its_retraining_and_counts_its_training_run_once(flights_config) -> None:
    from dataclasses import replace

    from pipelines.monitoring.decide import decide_in_order, to_trigger

    # given a range run rerun after its third window decided to retrain: that decision is reused, and its training
    # run, triggered by the first attempt, is queued or running (Airflow counts it: one active run)
    week = [date(2013, 5, 21) + timedelta(days=n) for n in range(7)]
    policy = _policy_decider(flights_config, drifted_from=date(2013, 5, 20))
    kept = replace(decide_in_order(week, 0, policy)[2], reused=True)

    def decide_one(end: date, active: int):
        return kept if end == date.fromisoformat(kept.window_end) else policy(end, active)

    # when the windows are decided again in order
    decided = decide_in_order(week, 1, decide_one)
    # then the retraining stays the one the run acts on, and every later window sees that one training run, once
    assert [d.retrain for d in decided] == [False, False, True, False, False, False, False]
    assert to_trigger(decided).training_run_id == "retrain__flights__2013-05-23"
    for later in decided[3:]:
        assert "BLOCK training run in progress: 1 queued or running training run(s)" in later.reasons
