"""The real ``monitor_flights`` DAG, run by the real Airflow scheduler against a real MLflow server and service.

On the shared stack (MLflow server, prediction service, Airflow api-server, scheduler, dag-processor, triggerer),
with the shared champion (trained on January-March 2013 with the pipeline's steps and deployed to the stack's
service); July days are replayed through that service (summer weather: temperature and dew point drift).
Monitoring runs are triggered through Airflow's REST API, one window each, in order, as ops (or the daily
schedule) would.

``train_flights`` stays paused here: a run triggered by monitoring is created and waits in the queue, so the
test sees exactly what monitoring started, and the run after it sees a training run in progress.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from pipelines.core import audit
from pipelines.core.runs import RunContext
from pipelines.core.settings import get_settings
from pipelines.stack.airflow_client import AirflowApiError, AirflowClient
from pipelines.stack.dag_runs import client, wait_for_dag
from pipelines.stack.settings import StackSettings
from tests.integration.conftest import SHARED, Receivers
from tests.stack import pointed_at, replay_days

pytestmark = [pytest.mark.integration, SHARED]

DATASET = "flights"
MONITOR = "monitor_flights"
TRAIN = "train_flights"
AT = datetime(2026, 1, 1, tzinfo=UTC)
JULY = [date(2013, 7, 1), date(2013, 7, 2), date(2013, 7, 3), date(2013, 7, 4)]


@pytest.fixture(scope="module")
def stack(shared_stack: StackSettings, flights_champion: dict[str, Any]) -> Iterator[StackSettings]:
    """The shared stack and champion, and four July days replayed through the stack's service."""
    with pointed_at(shared_stack):
        replay_run = RunContext(dag_id="replay_flights", run_id="test_monitor_dag", reason="replay")
        replayed = replay_days(DATASET, replay_run, JULY[0], JULY[-1] + timedelta(days=1), shared_stack.serving_url)
        assert replayed["days_replayed"] == 4, replayed
        yield shared_stack


@pytest.fixture(scope="module")
def api(stack: StackSettings) -> Iterator[AirflowClient]:
    api = client(stack)
    wait_for_dag(api, MONITOR)
    wait_for_dag(api, TRAIN)
    api.unpause(MONITOR)
    yield api
    api.close()


def _monitor(api: AirflowClient, day: date) -> tuple[str, str, dict[str, str | None]]:
    """Trigger ``monitor_flights`` for ``[day, day + 1)`` and follow it to the end: run id, state, task states."""
    conf = {"window_start": str(day), "window_end": str(day + timedelta(days=1))}
    run_id = api.trigger(MONITOR, conf, note=f"test: window {day}")
    state = api.follow(MONITOR, run_id, timeout=600)
    return run_id, state, api.task_states(MONITOR, run_id)


def _retrain_runs(api: AirflowClient) -> list[dict[str, Any]]:
    """``train_flights`` runs started by monitoring (their ids start with ``retrain__``)."""
    runs = api.runs(TRAIN)
    return [r for r in runs if str(r["dag_run_id"]).startswith("retrain__")]


def _assert_the_gate_knows_the_policy_triggered(training_run_id: str, window_end: date) -> None:
    """The gate applies retraining.approval to the run the policy triggered, from the warehouse, not the conf."""
    from pipelines.core.runs import RunContext
    from pipelines.steps import approval_mode, dataset_config

    config, settings = dataset_config(DATASET), get_settings()
    mode, why = approval_mode(config, settings, RunContext(TRAIN, training_run_id))
    assert mode == config.retraining.approval and why.startswith("retraining.approval") and str(window_end) in why
    assert approval_mode(config, settings, RunContext(TRAIN, "manual__x")) == (config.approval.mode, "approval.mode")


def _assert_people_were_told(
    receivers: Receivers, stack: StackSettings, day: date, evidence: str, training_run_id: str
) -> None:
    """The webhook received the day's drift and the decision to retrain, each with its evidence."""
    window = f"[{day}, {day + timedelta(days=1)})"
    drifted = receivers.webhook.wait_for(
        lambda b: b["kind"] == "drift_detected" and (b["dataset"], b["facts"]["window"]) == (DATASET, window), 30
    )
    assert drifted["dataset"] == DATASET and drifted["links"]["evidence"] == evidence
    assert "temp" in drifted["facts"]["drifted features"]
    decided = receivers.webhook.wait_for(
        lambda b: b["kind"] == "retraining_decided" and b["dataset"] == DATASET and training_run_id in b["text"], 30
    )
    assert decided["links"]["evidence"] == evidence and decided["facts"]["trigger"] == "drift"
    assert decided["links"]["training run"] == f"{stack.airflow_url}/dags/{TRAIN}/runs/{training_run_id}"
    assert any("TRIGGER drift in 3 consecutive windows" in line for line in decided["details"]), decided


def test_three_drifted_days_trigger_one_training_run_and_the_fourth_is_held_back(
    stack: StackSettings, api: AirflowClient, notification_receivers: Receivers
) -> None:
    # given four July days of predictions from a champion trained on January to March, and no retraining yet
    assert _retrain_runs(api) == []

    # when monitor_flights checks the first two days, in order
    for n, day in enumerate(JULY[:2], start=1):
        run_id, state, states = _monitor(api, day)
        # then each window drifts, and the retraining gate holds: not yet three windows in a row
        assert state == "success", states
        assert (states["check"], states["decide"], states["trigger_training"]) == ("success", "success", "skipped")
        assert api.xcom(MONITOR, run_id, "check")["status"] == "drift"
        decision = api.xcom(MONITOR, run_id, "decide", key="decision")
        assert decision["retrain"] is False, decision
        assert any(r.startswith(f"NO TRIGGER drift in {n} of 3 consecutive windows") for r in decision["reasons"])
    assert _retrain_runs(api) == []

    # when it checks the third day
    third, state, states = _monitor(api, JULY[2])
    third_end = JULY[2] + timedelta(days=1)

    # then the third drifted window in a row calls for retraining and trigger_training started train_flights
    assert state == "success", states
    assert (states["check"], states["decide"], states["trigger_training"]) == ("success", "success", "success")
    checked = api.xcom(MONITOR, third, "check")
    assert checked["status"] == "drift" and {"temp", "dewp"} <= set(checked["drifted_features"])
    decision = api.xcom(MONITOR, third, "decide", key="decision")
    assert decision["retrain"] is True and decision["trigger"] == "drift", decision["reasons"]
    expected_id = f"retrain__flights__{third_end}"
    assert decision["training_run_id"] == expected_id
    # and the training run has the id derived from the window, and a conf saying why, with the evidence
    training = api.run(TRAIN, expected_id)
    conf = training["conf"]
    assert conf["reason"].startswith("drift"), conf
    assert conf["evidence"] == checked["mlflow_run_url"]
    assert conf["evidence"].startswith(f"{stack.mlflow_url}/#/experiments/")
    assert conf["window_end"] == str(third_end)
    assert conf["window_start"] == str(third_end - timedelta(days=90))
    assert "overrides" not in conf  # no policy travels in a run's params
    _assert_the_gate_knows_the_policy_triggered(expected_id, third_end)
    assert training["state"] == "queued"  # train_flights is paused in this module
    assert third in str(training["note"])  # "triggered by the retraining policy of monitor_flights (<run id>)"
    assert [r["dag_run_id"] for r in _retrain_runs(api)] == [expected_id]
    # and the audit table says the policy triggered it
    events = audit.history(get_settings().warehouse_url, "flights-delay")
    triggered = [e for e in events if e["event"] == "retraining_triggered" and e["dataset"] == DATASET]
    assert len(triggered) == 1 and triggered[0]["actor"] == MONITOR
    assert expected_id in str(triggered[0]["comment"])
    # and people were told of the drift and of the decision, with the evidence
    _assert_people_were_told(notification_receivers, stack, JULY[2], checked["mlflow_run_url"], expected_id)

    # when monitor_flights checks a fourth drifted day, the day after
    fourth, state, states = _monitor(api, JULY[3])

    # then drift still calls for retraining, but the gate holds it back and says why
    assert state == "success", states
    assert (states["check"], states["decide"], states["trigger_training"]) == ("success", "success", "skipped")
    assert api.xcom(MONITOR, fourth, "check")["status"] == "drift"
    decision = api.xcom(MONITOR, fourth, "decide", key="decision")
    assert decision["retrain"] is False and decision["trigger"] == "drift", decision
    until = third_end + timedelta(days=7)
    assert f"BLOCK cooldown until {until}: last retraining for {third_end}, 1 days ago < 7 days" in decision["reasons"]
    assert "BLOCK training run in progress: 1 queued or running training run(s)" in decision["reasons"]
    assert decision["summary"] == f"no retraining: training run in progress; cooldown until {until}"
    # and no second training run was started
    assert [r["dag_run_id"] for r in _retrain_runs(api)] == [expected_id]
    with pytest.raises(AirflowApiError, match="404"):
        api.run(TRAIN, f"retrain__flights__{JULY[3] + timedelta(days=1)}")
