"""The registry descriptions: a model version's Markdown from its facts, the registered model's from its config."""

from __future__ import annotations

import dataclasses

from pipelines.core.config import load_dataset_config
from pipelines.monitoring.monitor import timeline_point
from pipelines.training.description import VersionFacts, render_model_description, render_version_description

TRAINED = VersionFacts(
    model_name="flights-delay",
    version="2",
    task="binary",
    dataset="flights",
    source="warehouse table 'flights'",
    window="[2013-03-02, 2013-05-31)",
    rows="25000",
    rows_train=20000,
    rows_holdout=5000,
    content_hash="abc123",
    reason="drift: 3 drifted windows in a row",
    dag_id="train_flights",
    airflow_run_id="retrain__2013-05-31",
    evidence_url="http://mlflow/#/experiments/3/runs/r9",
    run_url="http://mlflow/#/experiments/1/runs/r2",
)


def test_a_trained_version_names_its_data_and_why_it_was_trained_and_what_is_still_pending() -> None:
    # when a version just registered (not yet evaluated) is described
    text = render_version_description(TRAINED)
    # then its data and the drift evidence that caused the run are there, and each later step says it is pending
    assert "- window: [2013-03-02, 2013-05-31)" in text
    assert "- rows: 25000 (20000 for training, 5000 held out)" in text
    assert "- content hash: `abc123`" in text
    assert "retraining decided by monitoring: drift: 3 drifted windows in a row" in text
    assert "[monitoring run](http://mlflow/#/experiments/3/runs/r9)" in text
    assert "not evaluated yet" in text and "not gated yet" in text
    assert "not decided yet" in text and "not deployed" in text


def test_a_deployed_version_shows_metrics_against_its_champion_gate_reasons_approval_and_deployment() -> None:
    # given the facts of a version that went all the way through the loop
    facts = dataclasses.replace(
        TRAINED,
        candidate={"roc_auc": 0.71, "log_loss": 0.40, "rows": 5000.0},
        champion={"roc_auc": 0.69, "log_loss": 0.45},
        compared_with="1",
        gate_decision="passed",
        gate_reasons=("PASS roc_auc 0.7100 >= floor 0.6", "PASS log_loss no worse than the champion"),
        approval={"status": "approved", "by": "ann", "at": "2026-01-01T10:00:00", "mode": "manual", "comment": "ok"},
        deployment={"status": "champion", "at": "2026-01-01T10:05:00", "previous_version": "1"},
    )
    # when it is rendered
    text = render_version_description(facts)
    # then the task's metrics are compared with that champion, higher-is-better and lower-is-better both right
    assert "| metric | candidate | champion v1 | difference |" in text
    assert "| roc_auc | 0.7100 | 0.6900 | +0.0200 (better) |" in text
    assert "| log_loss | 0.4000 | 0.4500 | -0.0500 (better) |" in text
    assert "| rows |" not in text
    # and the gate's reasons, the approver and the deployment follow
    assert "**passed**\n- PASS roc_auc 0.7100 >= floor 0.6\n- PASS log_loss no worse than the champion" in text
    assert "**approved** by ann at 2026-01-01T10:00:00 (manual): ok" in text
    assert "**champion** since 2026-01-01T10:05:00 (replaced v1)" in text
    # and rendering the same facts again gives the same text (a rerun rewrites, never appends)
    assert render_version_description(facts) == text


def test_a_first_model_and_a_refused_deployment_say_so() -> None:
    facts = dataclasses.replace(
        TRAINED,
        reason="manual",
        evidence_url=None,
        candidate={"roc_auc": 0.7},
        deployment={"status": "smoke_test_failed", "problems": "latency 3 ms over 1 ms"},
    )
    text = render_version_description(facts)
    assert "started by a person (manual trigger)" in text and "monitoring run" not in text
    assert "| roc_auc | 0.7000 | – | – |" in text and "No champion to compare with." in text
    assert "**smoke_test_failed**: latency 3 ms over 1 ms" in text


def test_the_registered_model_is_described_from_the_dataset_config() -> None:
    # given the shipped flights config
    config = load_dataset_config("flights")
    # when its registered model is described
    text = render_model_description(config)
    # then the description says what the data is and what is predicted, from what, by what estimator
    assert text.startswith(f"## {config.model.registered_name}\n")
    assert config.description.strip() in text
    assert "- task: binary, predicting `is_delayed` (`arr_delay` gt 15)" in text
    assert "warehouse table 'flights'" in text and "`carrier` (categorical)" in text and "`temp` (numeric)" in text
    assert f"`{config.model.estimator}`" in text


def test_a_monitored_window_is_one_point_of_the_timeline_keyed_by_its_days() -> None:
    # a day's window: its step is the days since 1970-01-01 of its start, the next day's window is the next step
    step, at = timeline_point("2013-04-02_2013-04-03")
    later, later_at = timeline_point("2013-04-03_2013-04-04")
    assert step == 15797 and later == step + 1 and later_at - at == 86_400_000
