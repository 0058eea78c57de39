"""The retraining policy: a pure decision from monitoring history, with a reason per rule."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from pipelines.core.config import RetrainingPolicy
from pipelines.monitoring.retraining import (
    Retraining,
    RetrainingDecision,
    TrainingState,
    WindowResult,
    needs_retraining,
)

NOW = date(2013, 6, 10)
PREFIXES = ("TRIGGER ", "NO TRIGGER ", "BLOCK ", "OK ")


def _policy(**overrides: Any) -> RetrainingPolicy:
    values: dict[str, Any] = {
        "enabled": True,
        "drift_windows": 3,
        "performance_floor": {},
        "max_drop": {},
        "cooldown_days": 7,
        "max_retrainings": 2,
        "period_days": 30,
        "backoff_days": 14,
        "approval": "manual",
        "train_days": 90,
    }
    return RetrainingPolicy(**{**values, **overrides})


def _window(end: date, status: Any = "ok", champion: str = "3", live: dict[str, float] | None = None) -> WindowResult:
    return WindowResult(
        window_start=end - timedelta(days=1),
        window_end=end,
        status=status,
        champion_version=champion,
        drift_share=0.4 if status == "drift" else 0.1,
        live_metrics=live or {},
        evidence_url=f"mlflow://runs/{end}",
    )


def _days(*statuses: str, end: date = NOW, champion: str = "3") -> list[WindowResult]:
    """Daily windows with these statuses, the last one ending at ``end``."""
    n = len(statuses)
    return [_window(end - timedelta(days=n - 1 - i), s, champion) for i, s in enumerate(statuses)]


def _state(**overrides: Any) -> TrainingState:
    values: dict[str, Any] = {
        "now": NOW,
        "champion_version": "3",
        "champion_metrics": {"roc_auc": 0.76, "log_loss": 0.50},
        "active_training_runs": 0,
        "awaiting_approval": [],
        "retrainings": [],
    }
    return TrainingState(**{**values, **overrides})


def _retraining(day: date, outcome: Any = "deployed") -> Retraining:
    return Retraining(triggered_for=day, run_id=f"run-{day}", outcome=outcome)


def _lines(decision: RetrainingDecision, prefix: str) -> list[str]:
    return [r for r in decision.reasons if r.startswith(prefix)]


DRIFTING = _days("drift", "drift", "drift")


def test_drift_in_consecutive_windows_triggers_retraining() -> None:
    # given three drifting windows of the champion and nothing in the way
    decision = needs_retraining(DRIFTING, _state(), _policy())
    # then it retrains for drift, naming the streak, its dates and the evidence of the latest window
    assert decision.retrain
    assert decision.trigger == "drift"
    assert _lines(decision, "TRIGGER ") == [
        "TRIGGER drift in 3 consecutive windows: windows ending 2013-06-08, 2013-06-09, 2013-06-10, need 3; "
        "drift share 0.4000"
    ]
    assert decision.evidence_url == "mlflow://runs/2013-06-10"
    assert decision.summary() == "retrain (drift): drift in 3 consecutive windows"


def test_every_rule_gives_one_prefixed_line_in_rule_order() -> None:
    # given a policy with a floor and a max drop
    policy = _policy(performance_floor={"roc_auc": 0.65}, max_drop={"roc_auc": 0.05})
    live = [_window(NOW, "ok", live={"roc_auc": 0.74})]
    # when deciding
    decision = needs_retraining(live, _state(), policy)
    # then enabled, champion, drift, floor, drop and the five blocks each give a line with a known prefix
    assert len(decision.reasons) == 10
    assert all(r.startswith(PREFIXES) for r in decision.reasons)
    assert decision.reasons[:2] == ["OK retraining enabled by policy", "OK champion 3: triggers judged on its windows"]
    assert decision.reasons[5:] == [
        "OK no training run in progress",
        "OK no candidate awaiting approval",
        "OK cooldown: no earlier retraining",
        "OK 0 of max 2 retrainings in 30 days: retrainings for (2013-05-11, 2013-06-10]: none",
        "OK backoff: no rejected candidate since the last deployment",
    ]
    assert not decision.retrain
    assert decision.trigger is None


def test_disabled_policy_never_retrains_but_still_evaluates_the_triggers() -> None:
    # given drift that would trigger, under a disabled policy
    decision = needs_retraining(DRIFTING, _state(), _policy(enabled=False))
    # then no retraining, the reason says so, and the trigger is still recorded
    assert not decision.retrain
    assert decision.trigger == "drift"
    assert decision.reasons[0] == "BLOCK retraining disabled by policy: policy.enabled is false"
    assert decision.summary() == "no retraining: retraining disabled by policy"


def test_no_champion_means_nothing_to_compare_with() -> None:
    # given drifting windows but no champion
    decision = needs_retraining(DRIFTING, _state(champion_version=None, champion_metrics={}), _policy())
    # then no retraining and no trigger
    assert not decision.retrain
    assert decision.trigger is None
    assert "BLOCK no champion: nothing to compare windows with" in decision.reasons
    assert decision.evidence_url == ""
    assert decision.summary().startswith("no retraining: no champion; no trigger (")


def test_empty_history_does_not_trigger() -> None:
    decision = needs_retraining([], _state(), _policy(performance_floor={"roc_auc": 0.65}))
    assert not decision.retrain
    assert decision.trigger is None
    assert _lines(decision, "NO TRIGGER ") == [
        "NO TRIGGER drift in 0 of 3 consecutive windows: only 0 window(s) of champion 3 with enough data",
        "NO TRIGGER performance unknown: 0 of the 1 windows of champion 3 it is judged on have live metrics "
        "(too few known outcomes)",
    ]
    assert decision.evidence_url == ""


def test_fewer_windows_than_needed_do_not_trigger_drift_and_give_the_count() -> None:
    # given two drifting windows where three are needed
    decision = needs_retraining(_days("drift", "drift"), _state(), _policy())
    # then no trigger, with the count
    assert decision.trigger is None
    assert _lines(decision, "NO TRIGGER drift") == [
        "NO TRIGGER drift in 2 of 3 consecutive windows: only 2 window(s) of champion 3 with enough data"
    ]


def test_an_ok_window_breaks_the_drift_streak() -> None:
    # given drift, drift, ok, drift, drift: four drifting windows but not in a row
    decision = needs_retraining(_days("drift", "drift", "ok", "drift", "drift"), _state(), _policy())
    # then no trigger, naming the window that broke the streak
    assert decision.trigger is None
    assert _lines(decision, "NO TRIGGER drift") == [
        "NO TRIGGER drift in 2 of 3 consecutive windows: window ending 2013-06-08 had no drift"
    ]


def test_insufficient_data_windows_are_skipped_without_breaking_the_streak() -> None:
    # given drifting windows with insufficient-data windows between them and after them
    history = _days("drift", "insufficient_data", "drift", "insufficient_data", "drift", "insufficient_data")
    decision = needs_retraining(history, _state(), _policy())
    # then the three drifting windows form the streak; the evidence is the latest counted window
    assert decision.retrain
    assert _lines(decision, "TRIGGER ")[0].startswith(
        "TRIGGER drift in 3 consecutive windows: windows ending 2013-06-05, 2013-06-07, 2013-06-09"
    )
    assert decision.evidence_url == "mlflow://runs/2013-06-09"


def test_insufficient_data_windows_do_not_count_towards_the_streak() -> None:
    decision = needs_retraining(_days("insufficient_data", "drift", "drift"), _state(), _policy())
    assert decision.trigger is None
    assert "only 2 window(s)" in _lines(decision, "NO TRIGGER drift")[0]


def test_windows_of_an_older_champion_do_not_count() -> None:
    # given two drifting windows under champion 2, then two under the new champion 3
    history = _days("drift", "drift", end=NOW - timedelta(days=2), champion="2") + _days("drift", "drift")
    decision = needs_retraining(history, _state(), _policy())
    # then only the new champion's two windows count
    assert decision.trigger is None
    assert "drift in 2 of 3 consecutive windows" in _lines(decision, "NO TRIGGER drift")[0]


def test_windows_after_now_are_ignored() -> None:
    # given drift in the three windows after now and ok up to now
    history = _days("ok", "drift", "drift", "drift", end=NOW + timedelta(days=3))
    decision = needs_retraining(history, _state(), _policy())
    # then only the window up to now counts, and it is the evidence
    assert decision.trigger is None
    assert decision.evidence_url == "mlflow://runs/2013-06-10"


def test_duplicate_windows_keep_the_last_one_given() -> None:
    # given the latest window reported twice: first without drift, then (re-run) with drift
    history = [*DRIFTING[:2], _window(NOW, "ok"), DRIFTING[2]]
    assert needs_retraining(history, _state(), _policy()).trigger == "drift"
    # and the other way round
    history = [*DRIFTING, _window(NOW, "ok")]
    assert needs_retraining(history, _state(), _policy()).trigger is None


def test_live_metric_below_floor_triggers_performance() -> None:
    # given a live AUC under the floor
    history = [_window(NOW, "ok", live={"roc_auc": 0.61})]
    decision = needs_retraining(history, _state(), _policy(performance_floor={"roc_auc": 0.65}))
    # then it retrains for performance, naming value, floor and window
    assert decision.retrain
    assert decision.trigger == "performance"
    assert _lines(decision, "TRIGGER ") == ["TRIGGER roc_auc 0.6100 below floor 0.6500: live, window ending 2013-06-10"]
    assert decision.summary() == "retrain (performance): roc_auc 0.6100 below floor 0.6500"


def test_lower_is_better_metric_triggers_above_its_ceiling() -> None:
    # given a live log loss above the ceiling, and one below it
    policy = _policy(performance_floor={"log_loss": 0.60})
    above = needs_retraining([_window(NOW, live={"log_loss": 0.65})], _state(), policy)
    below = needs_retraining([_window(NOW, live={"log_loss": 0.55})], _state(), policy)
    # then only the one above triggers
    assert above.trigger == "performance"
    assert "TRIGGER log_loss 0.6500 above ceiling 0.6000: live, window ending 2013-06-10" in above.reasons
    assert below.trigger is None
    assert "NO TRIGGER log_loss 0.5500 within ceiling 0.6000: live, window ending 2013-06-10" in below.reasons


def test_drop_against_the_champion_beyond_the_margin_triggers() -> None:
    # given a live AUC 0.08 under the champion's holdout 0.76 with a max drop of 0.05
    history = [_window(NOW, live={"roc_auc": 0.68})]
    decision = needs_retraining(history, _state(), _policy(max_drop={"roc_auc": 0.05}))
    # then performance triggers, with the numbers
    assert decision.trigger == "performance"
    assert _lines(decision, "TRIGGER ") == [
        "TRIGGER roc_auc dropped +0.0800 > max 0.0500: live 0.6800 vs champion holdout 0.7600 (higher is better), "
        "window ending 2013-06-10"
    ]


def test_drop_direction_follows_lower_is_better() -> None:
    policy = _policy(max_drop={"log_loss": 0.05})
    # given a log loss 0.10 better (lower) than the champion's 0.50: no trigger
    better = needs_retraining([_window(NOW, live={"log_loss": 0.40})], _state(), policy)
    assert better.trigger is None
    assert any(r.startswith("NO TRIGGER log_loss drop -0.1000 within max 0.0500") for r in better.reasons)
    # given a log loss 0.10 worse (higher): trigger
    worse = needs_retraining([_window(NOW, live={"log_loss": 0.60})], _state(), policy)
    assert worse.trigger == "performance"
    assert any(r.startswith("TRIGGER log_loss dropped +0.1000 > max 0.0500") for r in worse.reasons)


def test_drop_exactly_at_the_margin_does_not_trigger() -> None:
    # given 0.76 - 0.71, which is 0.05000000000000004 in floats, against a max drop of 0.05
    history = [_window(NOW, live={"roc_auc": 0.71})]
    decision = needs_retraining(history, _state(), _policy(max_drop={"roc_auc": 0.05}))
    assert decision.trigger is None


def test_metric_missing_from_live_or_champion_metrics_is_unknown() -> None:
    # given a policy on pr_auc that neither the window nor the champion has, and on log_loss the window lacks
    policy = _policy(performance_floor={"pr_auc": 0.3}, max_drop={"pr_auc": 0.05, "roc_auc": 0.05})
    history = [_window(NOW, live={"roc_auc": 0.75})]
    decision = needs_retraining(history, _state(champion_metrics={"log_loss": 0.5}), policy)
    # then each is a no-trigger line saying it is unknown
    assert decision.trigger is None
    assert _lines(decision, "NO TRIGGER pr_auc") + _lines(decision, "NO TRIGGER roc_auc") == [
        "NO TRIGGER pr_auc unknown: no live value in the window ending 2013-06-10 (floor 0.3000)",
        "NO TRIGGER pr_auc drop unknown: no live value in the window ending 2013-06-10",
        "NO TRIGGER roc_auc drop unknown: the champion has no holdout roc_auc",
    ]


def test_performance_is_judged_on_the_latest_window_with_live_metrics() -> None:
    # given a bad AUC two days ago, then windows without enough outcomes for live metrics
    history = [_window(NOW - timedelta(days=2), live={"roc_auc": 0.60}), *_days("ok", "ok")]
    decision = needs_retraining(history, _state(), _policy(performance_floor={"roc_auc": 0.65}))
    # then that window triggers, and it is the evidence
    assert decision.trigger == "performance"
    assert "TRIGGER roc_auc 0.6000 below floor 0.6500: live, window ending 2013-06-08" in decision.reasons
    assert decision.evidence_url == "mlflow://runs/2013-06-08"


def test_performance_and_drift_both_listed_performance_wins() -> None:
    # given three drifting windows, the latest with an AUC under the floor
    history = [*DRIFTING[:2], _window(NOW, "drift", live={"roc_auc": 0.60})]
    decision = needs_retraining(history, _state(), _policy(performance_floor={"roc_auc": 0.65}))
    # then the trigger is performance and both reasons are listed
    assert decision.retrain
    assert decision.trigger == "performance"
    assert [r.split(":")[0] for r in _lines(decision, "TRIGGER ")] == [
        "TRIGGER drift in 3 consecutive windows",
        "TRIGGER roc_auc 0.6000 below floor 0.6500",
    ]


def test_active_training_run_blocks() -> None:
    decision = needs_retraining(DRIFTING, _state(active_training_runs=1), _policy())
    assert not decision.retrain
    assert decision.trigger == "drift"
    assert "BLOCK training run in progress: 1 queued or running training run(s)" in decision.reasons
    assert decision.summary() == "no retraining: training run in progress"


def test_candidate_awaiting_approval_blocks_naming_the_versions() -> None:
    decision = needs_retraining(DRIFTING, _state(awaiting_approval=["4", "5"]), _policy())
    assert not decision.retrain
    assert "BLOCK version(s) 4, 5 awaiting approval: a person has yet to approve or reject" in decision.reasons


def test_cooldown_blocks_a_trigger_and_gives_its_end() -> None:
    # given drift, and a retraining for a window 3 days ago with a 7-day cooldown
    state = _state(retrainings=[_retraining(date(2013, 5, 1)), _retraining(date(2013, 6, 7))])
    decision = needs_retraining(DRIFTING, state, _policy())
    # then blocked until 7 days after it
    assert not decision.retrain
    assert decision.trigger == "drift"
    assert "BLOCK cooldown until 2013-06-14: last retraining for 2013-06-07, 3 days ago < 7 days" in decision.reasons
    assert decision.summary() == "no retraining: cooldown until 2013-06-14"


def test_cooldown_is_over_exactly_cooldown_days_later() -> None:
    # given a retraining exactly 7 days before now, and one day less
    policy = _policy()
    over = needs_retraining(DRIFTING, _state(retrainings=[_retraining(NOW - timedelta(days=7))]), policy)
    under = needs_retraining(DRIFTING, _state(retrainings=[_retraining(NOW - timedelta(days=6))]), policy)
    # then the first is not blocked, the second is
    assert over.retrain
    assert "OK cooldown over since 2013-06-10: last retraining for 2013-06-03, 7 days ago >= 7 days" in over.reasons
    assert not under.retrain
    assert "BLOCK cooldown until 2013-06-11: last retraining for 2013-06-04, 6 days ago < 7 days" in under.reasons


def test_retraining_for_a_later_window_blocks_an_earlier_one() -> None:
    # given a replay of an earlier window after a later one already triggered a retraining
    state = _state(retrainings=[_retraining(NOW + timedelta(days=5))])
    decision = needs_retraining(DRIFTING, state, _policy(cooldown_days=0))
    assert not decision.retrain
    assert "BLOCK cooldown until 2013-06-15: last retraining for 2013-06-15, 5 days after this window" in (
        decision.reasons
    )


def test_max_retrainings_per_period_blocks() -> None:
    # given two retrainings in the last 30 days (max 2), past their cooldown, and one just outside the period
    retrainings = [_retraining(date(2013, 5, 11)), _retraining(date(2013, 5, 20)), _retraining(date(2013, 6, 1))]
    decision = needs_retraining(DRIFTING, _state(retrainings=retrainings), _policy())
    # then blocked until the older one leaves the period; the one exactly 30 days ago is not counted
    assert not decision.retrain
    assert decision.trigger == "drift"
    assert (
        "BLOCK 2 of max 2 retrainings in 30 days until 2013-06-19: "
        "retrainings for (2013-05-11, 2013-06-10]: 2013-05-20, 2013-06-01"
    ) in decision.reasons
    assert _lines(decision, "BLOCK ") == [r for r in decision.reasons if "retrainings in 30 days" in r]


def test_one_retraining_in_the_period_is_under_the_max() -> None:
    decision = needs_retraining(DRIFTING, _state(retrainings=[_retraining(date(2013, 5, 20))]), _policy())
    assert decision.retrain
    assert "OK 1 of max 2 retrainings in 30 days: retrainings for (2013-05-11, 2013-06-10]: 2013-05-20" in (
        decision.reasons
    )


def test_a_single_rejection_backs_off_backoff_days() -> None:
    # given a rejected candidate 10 days ago and a 14-day backoff (cooldown 7 is over)
    state = _state(retrainings=[_retraining(date(2013, 5, 31), "rejected")])
    decision = needs_retraining(DRIFTING, state, _policy())
    # then blocked until 14 days after it
    assert not decision.retrain
    assert (
        "BLOCK backoff until 2013-06-14: 1 rejection(s) in a row, the last for 2013-05-31; wait 14 x 2^0 = 14 days"
    ) in decision.reasons


def test_backoff_is_over_exactly_at_its_end() -> None:
    # given a rejection exactly 14 days before now, with a 14-day backoff
    state = _state(retrainings=[_retraining(NOW - timedelta(days=14), "rejected")])
    decision = needs_retraining(DRIFTING, state, _policy())
    # then the backoff is over
    assert decision.retrain
    assert (
        "OK backoff over since 2013-06-10: 1 rejection(s) in a row, the last for 2013-05-27; wait 14 x 2^0 = 14 days"
        in (decision.reasons)
    )


def test_two_rejections_in_a_row_double_the_backoff() -> None:
    # given two rejections, the last 20 days ago: one rejection would be over (14 days), two wait 28
    one = [_retraining(date(2013, 5, 21), "rejected")]
    two = [_retraining(date(2013, 4, 1), "rejected"), *one]
    policy = _policy(max_retrainings=5)
    decision_one = needs_retraining(DRIFTING, _state(retrainings=one), policy)
    decision_two = needs_retraining(DRIFTING, _state(retrainings=two), policy)
    # then one rejection lets it retrain, two block until 28 days after the last
    assert decision_one.retrain
    assert not decision_two.retrain
    assert (
        "BLOCK backoff until 2013-06-18: 2 rejection(s) in a row, the last for 2013-05-21; wait 14 x 2^1 = 28 days"
    ) in decision_two.reasons


def test_a_deployment_resets_the_backoff() -> None:
    # given two rejections, then a deployment
    retrainings = [
        _retraining(date(2013, 5, 1), "rejected"),
        _retraining(date(2013, 5, 15), "rejected"),
        _retraining(date(2013, 5, 25), "deployed"),
    ]
    policy = _policy(max_retrainings=5)
    decision = needs_retraining(DRIFTING, _state(retrainings=retrainings), policy)
    # then no backoff
    assert decision.retrain
    assert "OK backoff: no rejected candidate since the last deployment" in decision.reasons
    # and a rejection after the deployment starts again from a single backoff, not a fourfold one
    retrainings.append(_retraining(date(2013, 5, 28), "rejected"))
    decision = needs_retraining(DRIFTING, _state(retrainings=retrainings), policy)
    assert not decision.retrain
    assert (
        "BLOCK backoff until 2013-06-11: 1 rejection(s) in a row, the last for 2013-05-28; wait 14 x 2^0 = 14 days"
        in (decision.reasons)
    )


def test_failed_and_pending_neither_count_nor_reset_the_rejection_streak() -> None:
    # given rejected, rejected, failed, pending (given out of order): still two rejections in a row
    retrainings = [
        _retraining(date(2013, 5, 30), "pending"),
        _retraining(date(2013, 5, 10), "rejected"),
        _retraining(date(2013, 5, 25), "failed"),
        _retraining(date(2013, 5, 20), "rejected"),
        _retraining(date(2013, 4, 1), "deployed"),
    ]
    decision = needs_retraining(DRIFTING, _state(retrainings=retrainings), _policy(max_retrainings=5))
    assert not decision.retrain
    assert (
        "BLOCK backoff until 2013-06-17: 2 rejection(s) in a row, the last for 2013-05-20; wait 14 x 2^1 = 28 days"
        in (decision.reasons)
    )


def test_many_rejections_saturate_instead_of_overflowing() -> None:
    retrainings = [_retraining(date(2000, 1, 1) + timedelta(days=i), "rejected") for i in range(60)]
    decision = needs_retraining(DRIFTING, _state(retrainings=retrainings), _policy(max_retrainings=5))
    assert not decision.retrain
    assert any(r.startswith("BLOCK backoff until 9999-12-31: 60 rejection(s) in a row") for r in decision.reasons)


def test_blocks_are_listed_without_a_trigger_but_do_not_decide() -> None:
    # given no drift, with a training run in progress and a candidate awaiting approval
    decision = needs_retraining(
        _days("ok", "ok", "ok"), _state(active_training_runs=2, awaiting_approval=["4"]), _policy()
    )
    # then the blocks are listed, the trigger is none and the summary says so
    assert decision.trigger is None
    assert len(_lines(decision, "BLOCK ")) == 2
    assert decision.summary() == (
        "no retraining: no trigger (drift in 0 of 3 consecutive windows; performance not monitored)"
    )


def test_trigger_with_several_blocks_lists_them_all_in_the_summary() -> None:
    # given drift, a cooldown and the max per period both in the way
    retrainings = [_retraining(date(2013, 5, 20)), _retraining(date(2013, 6, 5))]
    decision = needs_retraining(DRIFTING, _state(retrainings=retrainings), _policy())
    assert decision.summary() == (
        "no retraining: cooldown until 2013-06-12; 2 of max 2 retrainings in 30 days until 2013-06-19"
    )


def test_to_dict_is_plain_data() -> None:
    decision = needs_retraining(DRIFTING, _state(), _policy())
    assert decision.to_dict() == {
        "retrain": True,
        "trigger": "drift",
        "reasons": decision.reasons,
        "evidence_url": "mlflow://runs/2013-06-10",
    }


def test_performance_averaged_over_several_windows_needs_all_of_them() -> None:
    # given a policy judging live AUC on the mean of the last 3 windows with outcomes
    policy = RetrainingPolicy(performance_floor={"roc_auc": 0.60}, performance_windows=3, drift_windows=5)
    state = _state(now=date(2013, 6, 4))
    one_bad_day = [
        _window(date(2013, 6, 1), "ok", live={"roc_auc": 0.70}),
        _window(date(2013, 6, 2), "ok", live={"roc_auc": 0.68}),
        _window(date(2013, 6, 3), "ok", live={"roc_auc": 0.50}),
    ]
    # when one bad day is averaged with two good ones
    decision = needs_retraining(one_bad_day, state, policy)
    # then the mean (0.6267) is above the floor: no trigger, and the reason names the windows averaged
    assert decision.trigger is None
    assert any("roc_auc 0.6267 within floor 0.6000" in r and "mean of 3 windows" in r for r in decision.reasons)
    # when the last three days are all bad
    bad_days = [*one_bad_day[:1], *(_window(date(2013, 6, d), "ok", live={"roc_auc": 0.55}) for d in (2, 3, 4))]
    decision = needs_retraining(bad_days, _state(now=date(2013, 6, 5)), policy)
    # then it triggers on the mean of those three
    assert decision.retrain and decision.trigger == "performance"
    # when only two windows have outcomes
    decision = needs_retraining(one_bad_day[1:], state, policy)
    # then performance is unknown, not judged on fewer windows
    assert any(r.startswith("NO TRIGGER performance unknown: 2 of the 3 windows") for r in decision.reasons)


def test_every_lower_is_better_metric_of_every_task_has_a_ceiling_and_the_others_a_floor() -> None:
    from pipelines.core.config import LOWER_IS_BETTER, TASK_METRICS

    # given each metric a policy may name, a live value 0.1 on the worse side of a bound 1.0
    for task, names in TASK_METRICS.items():
        for metric in names:
            lower = metric in LOWER_IS_BETTER
            live = {metric: 1.1 if lower else 0.9}
            # when the floor (a ceiling, for lower-is-better metrics) is applied
            decision = needs_retraining([_window(NOW, live=live)], _state(), _policy(performance_floor={metric: 1.0}))
            # then it triggers, in the metric's own direction
            word = "above ceiling" if lower else "below floor"
            assert decision.trigger == "performance", (task, metric)
            assert f"TRIGGER {metric} {live[metric]:.4f} {word} 1.0000: live, window ending 2013-06-10" in (
                decision.reasons
            )
    assert {"rmse", "mae", "log_loss", "brier"} <= LOWER_IS_BETTER


def test_regression_mae_floor_is_a_ceiling_in_minutes() -> None:
    # given the flights_minutes policy: retrain when the live mean absolute error exceeds 40 minutes
    policy = _policy(performance_floor={"mae": 40.0})
    state = _state(champion_metrics={"rmse": 38.2, "mae": 24.5, "r2": 0.06})
    # when the live MAE is 41.5 minutes, then it retrains for performance
    worse = needs_retraining([_window(NOW, live={"rmse": 60.0, "mae": 41.5, "r2": 0.01})], state, policy)
    assert worse.retrain and worse.trigger == "performance"
    assert _lines(worse, "TRIGGER ") == ["TRIGGER mae 41.5000 above ceiling 40.0000: live, window ending 2013-06-10"]
    # when it is 30 minutes, then not
    fine = needs_retraining([_window(NOW, live={"rmse": 45.0, "mae": 30.0, "r2": 0.05})], state, policy)
    assert fine.trigger is None
    assert "NO TRIGGER mae 30.0000 within ceiling 40.0000: live, window ending 2013-06-10" in fine.reasons


def test_regression_rmse_drop_compares_with_the_champion_holdout_rmse_lower_is_better() -> None:
    # given a champion whose holdout RMSE is 38.2 minutes and a max drop of 10 minutes
    policy = _policy(max_drop={"rmse": 10.0})
    state = _state(champion_metrics={"rmse": 38.2, "mae": 24.5, "r2": 0.06})
    # when the live RMSE is 49.0 (10.8 worse), then it triggers with the numbers and the direction
    worse = needs_retraining([_window(NOW, live={"rmse": 49.0})], state, policy)
    assert worse.trigger == "performance"
    assert _lines(worse, "TRIGGER ") == [
        "TRIGGER rmse dropped +10.8000 > max 10.0000: live 49.0000 vs champion holdout 38.2000 (lower is better), "
        "window ending 2013-06-10"
    ]
    # when it is 30.0 (better than the holdout), then the drop is negative and nothing triggers
    better = needs_retraining([_window(NOW, live={"rmse": 30.0})], state, policy)
    assert better.trigger is None
    assert any(r.startswith("NO TRIGGER rmse drop -8.2000 within max 10.0000") for r in better.reasons)


def test_multiclass_accuracy_drop_and_min_class_recall_floor() -> None:
    # given the wine policy (accuracy floor 0.8, max drop 0.1) and a floor on the worst class's recall
    policy = _policy(performance_floor={"accuracy": 0.8, "min_class_recall": 0.5}, max_drop={"accuracy": 0.1})
    state = _state(champion_metrics={"accuracy": 0.98, "f1_macro": 0.98, "log_loss": 0.07, "min_class_recall": 0.95})
    # when live accuracy is 0.85 (above the floor, 0.13 under the holdout) and the worst class is recalled at 0.4
    live = {"accuracy": 0.85, "f1_macro": 0.8, "log_loss": 0.4, "roc_auc_ovr": 0.95, "min_class_recall": 0.4}
    decision = needs_retraining([_window(NOW, live=live)], state, policy)
    # then the drop and the class floor trigger, the accuracy floor does not
    assert decision.retrain and decision.trigger == "performance"
    assert _lines(decision, "TRIGGER ") == [
        "TRIGGER min_class_recall 0.4000 below floor 0.5000: live, window ending 2013-06-10",
        "TRIGGER accuracy dropped +0.1300 > max 0.1000: live 0.8500 vs champion holdout 0.9800 (higher is better), "
        "window ending 2013-06-10",
    ]
    assert "NO TRIGGER accuracy 0.8500 within floor 0.8000: live, window ending 2013-06-10" in decision.reasons
