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


# Monitoring per task: the prediction column, the reference without a time column, live metrics.

DIABETES: dict = {
    "name": "diabetes",
    "source": {
        "kind": "file",
        "path": "{home}/sources/diabetes.parquet",
        "seed": {"loader": "sklearn", "name": "load_diabetes"},
    },
    "target": {"task": "regression", "column": "progression"},
    "features": [
        {"name": n, "type": "numeric"} for n in ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")
    ],
    "expectation_suite": "diabetes",
    "model": {"registered_name": "diabetes", "experiment": "diabetes", "estimator": "sklearn.linear_model.Ridge"},
    "retraining": {"performance_floor": {"mae": 60.0}, "max_drop": {"rmse": 10.0}},
}


def _config(name: str, **monitoring: object):
    """A shipped dataset config (or the diabetes one above) with ``monitoring`` settings changed."""
    import copy

    import yaml

    from pipelines.core.config import DatasetConfig
    from tests.conftest import REPO_ROOT

    path = REPO_ROOT / "pipelines" / "conf" / "datasets" / f"{name}.yaml"
    raw = copy.deepcopy(DIABETES) if name == "diabetes" else yaml.safe_load(path.read_text())
    raw["monitoring"] = {**raw.get("monitoring", {}), **monitoring}
    return DatasetConfig.model_validate(raw)


def _trained(config):
    """The dataset's bundled rows and its configured model fitted on all of them."""
    from pipelines.data.features import prepare
    from pipelines.data.sources import load_source
    from pipelines.training.modeling import build_model

    frame = load_source(config)
    data = prepare(frame, config)
    return frame, build_model(config).fit(data.features, data.target)


@pytest.mark.parametrize(
    ("task", "column"), [("binary", "probability"), ("multiclass", "predicted_class"), ("regression", "prediction")]
)
def test_the_prediction_column_is_the_tasks_answer(task: str, column: str) -> None:
    from pipelines.monitoring.drift import prediction_column

    assert prediction_column(task) == column


def test_an_unknown_task_has_no_prediction_column() -> None:
    from pipelines.monitoring.drift import prediction_column

    with pytest.raises(ValueError, match="unknown task 'ranking'"):
        prediction_column("ranking")


def test_random_chunks_are_disjoint_equal_seeded_and_limited() -> None:
    from pipelines.monitoring.drift import random_chunks

    frame = pd.DataFrame({"x": np.arange(1_000)})
    # given 1,000 rows cut into chunks of 90, then 11 disjoint chunks of exactly 90 rows
    chunks = random_chunks(frame, 90, limit=30, seed=4)
    assert [len(c) for c in chunks] == [90] * 11
    values = np.concatenate([c["x"].to_numpy() for c in chunks])
    assert len(set(values)) == len(values) == 990
    # and each chunk spans the range (drawn at random, not consecutive rows)
    assert all(c["x"].max() - c["x"].min() > 500 for c in chunks)
    # and the same seed draws the same chunks, another seed others; the limit caps their number
    assert chunks[0]["x"].tolist() == random_chunks(frame, 90, limit=30, seed=4)[0]["x"].tolist()
    assert chunks[0]["x"].tolist() != random_chunks(frame, 90, limit=30, seed=5)[0]["x"].tolist()
    assert len(random_chunks(frame, 90, limit=3, seed=4)) == 3
    assert random_chunks(frame.head(50), 90, limit=30, seed=4) == []


def test_logged_class_probabilities_become_a_matrix_in_sorted_class_order() -> None:
    from pipelines.monitoring.drift import probability_matrix

    # given mappings as the database returns them (dicts), as text, and one missing a class
    logged = [{"b": 0.7, "a": 0.2, "c": 0.1}, '{"a": 0.5, "b": 0.25, "c": 0.25}', {"a": 1.0}]
    matrix, classes = probability_matrix(logged)
    # then the classes are sorted, each row in their order, a missing class 0
    assert classes == ["a", "b", "c"]
    assert matrix.tolist() == [[0.2, 0.7, 0.1], [0.5, 0.25, 0.25], [1.0, 0.0, 0.0]]
    empty, none = probability_matrix([])
    assert empty.shape == (0, 0) and none == []


def test_live_metrics_are_the_holdout_metrics_under_the_policy_names() -> None:
    from pipelines.core.config import TASK_METRICS
    from pipelines.monitoring.drift import live_metrics
    from pipelines.training.metrics import task_metrics

    rng = np.random.default_rng(3)
    proba = rng.dirichlet([2, 2, 2], size=200)
    labels = [["x", "y", "z"][i] for i in rng.integers(0, 3, 200)]
    # given multiclass answers, when scored live, then the values are task_metrics' under the TASK_METRICS names
    found = live_metrics("multiclass", labels, proba, classes=["x", "y", "z"])
    expected = task_metrics("multiclass", labels, proba, classes=["x", "y", "z"])
    assert set(found) == set(TASK_METRICS["multiclass"])
    assert all(found[k] == pytest.approx(expected[k], abs=1e-6) for k in found)
    # given regression answers, then rmse, mae and r2 (mean_error and rows are not policy metrics)
    y = rng.normal(50, 10, 200)
    found = live_metrics("regression", y, y + rng.normal(0, 5, 200))
    assert set(found) == {"rmse", "mae", "r2"} and 3 < found["rmse"] < 7
    # given a class missing from the labels, then the undefined one-vs-rest AUC is left out, not NaN
    found = live_metrics("multiclass", ["x"] * 10 + ["y"] * 10, proba[:20], classes=["x", "y", "z"])
    assert "roc_auc_ovr" not in found and "accuracy" in found


def test_a_multiclass_reference_without_time_column_is_calibrated_on_random_chunks() -> None:
    from pipelines.monitoring.reference import build_reference

    # given the wine example (no time column, 178 wines) with windows judged from 30 predictions
    config = _config("wine", min_rows=30)
    frame, model = _trained(config)
    # when its reference is built
    reference = build_reference(config, model, frame, "1")
    # then it holds every wine with its cultivar and the class the model predicts, as text
    assert len(reference.frame) == 178 and "day" not in reference.frame
    assert set(reference.frame["predicted_class"]) == {"class_0", "class_1", "class_2"}
    assert (reference.frame["predicted_class"] == reference.frame["cultivar"]).mean() > 0.9
    # and the thresholds were calibrated on 5 random chunks of 30 rows, the prediction column's too
    info = reference.info
    assert info["calibration"]["by"] == "random_chunks" and info["calibration"]["calibrated"]
    assert (info["calibration"]["chunks"], info["calibration"]["chunk_rows"]) == (5, 30)
    assert set(reference.thresholds) == {*config.feature_names, "predicted_class"}
    assert all(t >= 0.01 for t in reference.thresholds.values())
    assert info["task"] == "multiclass" and info["prediction_column"] == "predicted_class"
    assert sum(info["class_shares"].values()) == pytest.approx(1.0) and "first_day" not in info


def test_a_reference_too_small_for_chunks_uses_the_fixed_threshold_and_says_why() -> None:
    from pipelines.monitoring.reference import build_reference

    # given wine with the default monitoring.min_rows (300): 178 rows make no chunk of 300
    config = _config("wine")
    frame, model = _trained(config)
    reference = build_reference(config, model, frame, "1")
    # then every column has the configured threshold, and the info says it is fixed and why
    calibration = reference.info["calibration"]
    assert calibration["by"] == "fixed" and not calibration["calibrated"]
    assert "178 labelled rows make 0 chunks of 300 rows" in calibration["reason"]
    assert set(reference.thresholds.values()) == {config.monitoring.drift.threshold}


def test_a_regression_reference_holds_the_predicted_value() -> None:
    from pipelines.monitoring.reference import build_reference

    config = _config("diabetes", min_rows=40)
    frame, model = _trained(config)
    reference = build_reference(config, model, frame, "2")
    # then the prediction column is the model's value, the target's spread is summarised
    assert np.allclose(reference.frame["prediction"], model.predict(reference.frame[config.feature_names]))
    assert reference.info["calibration"]["by"] == "random_chunks" and reference.info["calibration"]["chunks"] == 11
    assert 100 < reference.info["target_mean"] < 200 and "prediction" in reference.thresholds


def test_multiclass_drift_judges_the_predicted_class_distribution() -> None:
    from pipelines.monitoring.drift import drift_report
    from pipelines.monitoring.reference import build_reference

    config = _config("wine", min_rows=30)
    frame, model = _trained(config)
    reference = build_reference(config, model, frame, "1")
    # given a window of 60 wines like the reference, and one where the model answered class_0 for all of them
    window = reference.frame.sample(60, random_state=2)
    stable, _ = drift_report(reference.frame, window, config, reference.thresholds)
    skewed, snapshot = drift_report(
        reference.frame, window.assign(predicted_class="class_0"), config, reference.thresholds
    )
    # then the predicted class is compared as categories, by the categorical stat test, drifted only when skewed
    assert stable.prediction is not None and skewed.prediction is not None
    assert stable.prediction.method == skewed.prediction.method == "jensenshannon"
    assert not stable.prediction.drifted
    assert skewed.prediction.drifted and skewed.prediction.score > stable.prediction.score
    assert "<html" in snapshot.get_html_str(as_iframe=False)[:2000].lower()


def test_regression_drift_judges_the_predicted_value_and_a_shift_of_the_features() -> None:
    from pipelines.monitoring.drift import drift_report
    from pipelines.monitoring.reference import build_reference

    config = _config("diabetes", min_rows=40)
    frame, model = _trained(config)
    reference = build_reference(config, model, frame, "2")
    window = reference.frame.sample(120, random_state=5)
    # given a window like the reference, and one with heavier patients (bmi shifted by two standard deviations)
    stable, _ = drift_report(reference.frame, window, config, reference.thresholds)
    shifted = window.assign(bmi=window["bmi"] + 2 * frame["bmi"].std())
    shifted["prediction"] = model.predict(shifted[config.feature_names])
    heavier, _ = drift_report(reference.frame, shifted, config, reference.thresholds)
    # then the predicted value is judged as a number, and it and bmi drift only in the shifted window
    assert stable.prediction is not None and heavier.prediction is not None
    assert stable.prediction.method == "wasserstein"
    assert not stable.prediction.drifted and not stable.features["bmi"].drifted
    assert heavier.prediction.drifted and heavier.features["bmi"].drifted


def test_live_performance_reports_of_multiclass_and_regression_use_the_holdout_metrics() -> None:
    from pipelines.monitoring.drift import performance_report
    from pipelines.training.metrics import task_metrics

    # given wine answers logged as the service does ({class: p} and the predicted class) with their outcomes
    config = _config("wine")
    frame, model = _trained(config)
    features = frame[config.feature_names]
    proba = model.predict_proba(features)
    classes = [str(c) for c in model.classes_]
    labelled = pd.DataFrame(
        {
            "predicted_class": np.asarray(classes, dtype=object)[proba.argmax(axis=1)],
            "probabilities": [dict(zip(classes, row, strict=True)) for row in proba],
            "cultivar": frame["cultivar"],
        }
    )
    # when their live performance is reported
    found, snapshot = performance_report(labelled, config)
    # then the numbers are the holdout's metrics, and Evidently rendered the classification report
    expected = task_metrics("multiclass", frame["cultivar"], proba, classes=classes)
    assert set(found) == {"log_loss", "accuracy", "f1_macro", "roc_auc_ovr", "min_class_recall"}
    assert all(found[k] == pytest.approx(expected[k], abs=1e-6) for k in found)
    assert snapshot is not None and "<html" in snapshot.get_html_str(as_iframe=False)[:2000].lower()

    # given diabetes answers (the predicted value) with their outcomes
    config = _config("diabetes")
    frame, model = _trained(config)
    predicted = model.predict(frame[config.feature_names])
    found, snapshot = performance_report(
        pd.DataFrame({"prediction": predicted, "progression": frame["progression"]}), config
    )
    expected = task_metrics("regression", frame["progression"], predicted)
    assert set(found) == {"rmse", "mae", "r2"}
    assert all(found[k] == pytest.approx(expected[k], abs=1e-6) for k in found)
    assert snapshot is not None


def test_drift_scores_and_calibration_equal_evidentlys_stat_tests_on_the_values_as_they_come(flights_config) -> None:
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    from pipelines.monitoring.drift import calibrate, drift_scores, feature_types, is_categorical, method_of

    # given a reference and five days of flights-shaped data in random order, with missing values
    rng = np.random.default_rng(3)
    numeric, categorical = feature_types(flights_config)

    def frame(rows: int, shift: float) -> pd.DataFrame:
        data = {c: rng.normal(shift, 1.0, rows).round(2) for c in numeric}
        data.update({c: rng.choice(["a", "b", "c", "d"], rows) for c in categorical})
        out = pd.DataFrame(data).assign(probability=rng.beta(2, 6, rows))
        out.loc[rng.choice(rows, rows // 10, replace=False), numeric[0]] = np.nan
        return out

    reference, days = frame(3000, 0.0), [frame(400, shift) for shift in (0.0, 0.05, 0.1, 0.2, 0.4)]

    def evidently(ref: pd.DataFrame, cur: pd.DataFrame) -> dict[str, float]:
        out = {}
        for column in cur.columns:
            kind = ColumnType.Categorical if is_categorical(flights_config, column) else ColumnType.Numerical
            r, c = ref[column].dropna(), cur[column].dropna()
            test = get_stattest(r, c, kind, method_of(flights_config, column))
            out[column] = float(test(r, c, kind, None).drift_score)
        return out

    # when each day is scored, then every score is Evidently's own on the unsorted values (to the last bits)
    expected = [evidently(reference, day) for day in days]
    for day, want in zip(days, expected, strict=True):
        found = drift_scores(reference, day, flights_config)
        assert found.keys() == want.keys()
        assert all(found[c] == pytest.approx(want[c], rel=1e-12, abs=1e-15) for c in want), (found, want)
    # and the calibration's worst day of each column is the highest of them
    _, info = calibrate(reference, iter(days), flights_config)
    worst = {c: max(scores[c] for scores in expected) for c in expected[0]}
    assert info["worst_day_scores"] == {c: round(v, 6) for c, v in worst.items()}
