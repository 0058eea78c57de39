"""The promotion gate: a pure decision with a reason per check."""

from __future__ import annotations

from pipelines.core.config import GatePolicy, SliceFloor
from pipelines.release.gate import Scores, promotion_decision, should_promote

POLICY = GatePolicy(
    floors={"roc_auc": 0.65, "log_loss": 0.55},
    max_regression={"roc_auc": 0.02, "log_loss": 0.02},
    slice_floor=SliceFloor(metric="roc_auc", min=0.55, min_rows=300),
)
GOOD = {"roc_auc": 0.70, "pr_auc": 0.40, "log_loss": 0.49, "brier": 0.16, "f1": 0.39}


def test_first_model_passes_on_floors_alone() -> None:
    decision = should_promote(Scores(GOOD), None, POLICY)
    assert decision.passed
    assert "PASS no champion to compare with" in decision.reasons
    assert decision.failures == []


def test_floor_and_ceiling_failures_are_named() -> None:
    # given a candidate under the AUC floor and over the log-loss ceiling
    decision = should_promote(Scores({**GOOD, "roc_auc": 0.60, "log_loss": 0.60}), None, POLICY)
    # then it fails with both reasons, failures listed first
    assert not decision.passed
    assert decision.reasons[0].startswith("FAIL")
    assert any("roc_auc 0.6000 vs floor 0.6500" in r for r in decision.failures)
    assert any("log_loss 0.6000 vs ceiling 0.5500" in r for r in decision.failures)


def test_regression_against_champion_beyond_margin_fails() -> None:
    champion = Scores({**GOOD, "roc_auc": 0.75})
    decision = should_promote(Scores(GOOD), champion, POLICY)
    assert not decision.passed
    assert any("roc_auc 0.7000 vs champion 0.7500" in r and "got +0.0500" in r for r in decision.failures)


def test_small_regression_within_margin_passes() -> None:
    champion = Scores({**GOOD, "roc_auc": 0.71, "log_loss": 0.48})
    assert should_promote(Scores(GOOD), champion, POLICY).passed


def test_lower_is_better_metric_regression_direction() -> None:
    # given a candidate with a higher (worse) log loss than the champion by more than the margin
    champion = Scores({**GOOD, "log_loss": 0.40})
    decision = should_promote(Scores(GOOD), champion, POLICY)
    assert not decision.passed
    assert any(r.startswith("FAIL log_loss") and "lower is better" in r for r in decision.reasons)


def test_slice_floor_only_checks_slices_with_enough_rows() -> None:
    slices = {
        "carrier": {
            "UA": {"rows": 1000, "roc_auc": 0.50},
            "HA": {"rows": 20, "roc_auc": 0.10},
        },
        "origin": {"JFK": {"rows": 5000, "roc_auc": 0.70}},
    }
    decision = should_promote(Scores(GOOD, slices), None, POLICY)
    assert not decision.passed
    assert decision.failures == ["FAIL slice carrier=UA: roc_auc 0.5000 < 0.5500 (1000 rows)"]


def test_missing_metric_fails_its_check() -> None:
    decision = should_promote(Scores({"log_loss": 0.4}), None, POLICY)
    assert not decision.passed
    assert any(r.startswith("FAIL roc_auc nan") for r in decision.reasons)


def test_decide_reads_evaluation_output() -> None:
    evaluation = {"candidate": GOOD, "candidate_slices": {}, "champion": {**GOOD, "roc_auc": 0.80}}
    decision = promotion_decision(POLICY, evaluation)
    assert not decision.passed
    assert "gate failed" in decision.summary()


def test_regression_task_gate_uses_ceilings_for_errors() -> None:
    # given a regression policy: R² floor, RMSE regression margin, and an MAE ceiling per slice
    policy = GatePolicy(
        floors={"r2": 0.05},
        max_regression={"rmse": 1.0},
        slice_floor=SliceFloor(metric="mae", max=30.0, min_rows=100),
    )
    candidate = Scores(
        {"r2": 0.08, "rmse": 41.5, "mae": 24.0},
        {"origin": {"JFK": {"rows": 400, "mae": 22.0}, "EWR": {"rows": 500, "mae": 35.5}}},
    )
    # when compared with a champion whose RMSE is 2 minutes better
    decision = should_promote(candidate, Scores({"r2": 0.1, "rmse": 39.5}), policy)
    # then the larger error fails (lower is better), and the slice over its ceiling is named
    assert not decision.passed
    assert any("rmse 41.5000 vs champion 39.5000 (lower is better" in r for r in decision.failures)
    assert any("slice origin=EWR: mae 35.5000 > 30.0000 (500 rows)" in r for r in decision.failures)
    assert "PASS r2 0.0800 vs floor 0.0500" in decision.reasons


def test_multiclass_gate_on_accuracy_and_log_loss() -> None:
    policy = GatePolicy(floors={"accuracy": 0.85, "f1_macro": 0.8}, max_regression={"log_loss": 0.1})
    good = Scores({"accuracy": 0.93, "f1_macro": 0.92, "log_loss": 0.21})
    assert should_promote(good, Scores({"log_loss": 0.15}), policy).passed
    worse = should_promote(good, Scores({"log_loss": 0.05}), policy)
    assert not worse.passed and "log_loss 0.2100 vs champion 0.0500" in worse.failures[0]
