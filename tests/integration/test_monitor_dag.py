"""The real ``monitor_flights`` DAG, run by the real Airflow scheduler against a real MLflow server and service.

One stack (MLflow server, prediction service, Airflow api-server, scheduler, dag-processor, triggerer) is started
for the module on free ports in a temporary folder. The champion is trained on January-March 2013 with the
pipeline's steps against the stack's MLflow and deployed to the stack's service; July days are replayed through
that service (summer weather: temperature and dew point drift). Monitoring runs are triggered through Airflow's
REST API, one window each, in order, as ops (or the daily schedule) would.

``train_flights`` stays paused here: a run triggered by monitoring is created and waits in the queue, so the
test sees exactly what monitoring started, and the run after it sees a training run in progress.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pipelines import steps
from pipelines.core import audit
from pipelines.core.runs import RunContext
from pipelines.core.settings import get_settings
from pipelines.stack.airflow_client import AirflowApiError, AirflowClient
from pipelines.stack.dag_runs import client, wait_for_dag
from pipelines.stack.processes import wait_until
from pipelines.stack.settings import StackSettings
from tests.conftest import REPO_ROOT
from tests.stack import running_stack

pytestmark = pytest.mark.integration

DATASET = "flights"
MONITOR = "monitor_flights"
TRAIN = "train_flights"
AT = datetime(2026, 1, 1, tzinfo=UTC)
JULY = [date(2013, 7, 1), date(2013, 7, 2), date(2013, 7, 3), date(2013, 7, 4)]


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped flights config, with monitoring on demand only: the daily schedule would add a run for
    today's (empty) window, competing with the test's runs for the DAG's single active run."""
    folder = tmp_path_factory.mktemp("datasets")
    config = yaml.safe_load((REPO_ROOT / "pipelines" / "conf" / "datasets" / "flights.yaml").read_text())
    config["monitoring"]["schedule"] = None
    (folder / "flights.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Iterator[StackSettings]:
    """The stack, a champion trained on Jan-Mar 2013 and deployed, and four July days replayed through it."""
    with running_stack(tmp_path_factory.mktemp("stack"), datasets_dir) as running:
        steps.seed(DATASET, "2013-01-01", "2013-04-01")
        run = RunContext(dag_id="test_monitor_dag", run_id="champion", reason="test")
        snapshot = steps.extract(DATASET, run, "2013-01-01", "2013-04-01")
        validation = steps.validate(DATASET, run, snapshot)
        trained = steps.train(DATASET, run, snapshot, validation)
        evaluation = steps.evaluate(DATASET, run, snapshot, trained)
        gate = steps.gate(DATASET, run, trained, evaluation, validation, AT)
        assert gate["passed"], gate["summary"]
        steps.record_approval(DATASET, run, trained, status="approved", decided_by="policy", decided_at=AT, mode="auto")
        deployed = steps.deploy(DATASET, run, trained, snapshot, AT)  # waits until the stack's service answers
        assert deployed["champion_version"] == "1"
        replay_run = RunContext(dag_id="replay_flights", run_id="test_monitor_dag", reason="replay")
        replayed = steps.replay(DATASET, replay_run, JULY[0], JULY[-1] + timedelta(days=1))
        assert replayed["days_replayed"] == 4 and replayed["rejected"] == 0, replayed
        wait_until(
            lambda: httpx.get(f"{running.serving_url}/model", timeout=5).json()["prediction_log"]["queued"] == 0,
            "the prediction log to be written",
            60,
        )
        yield running


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
    state = api.follow(MONITOR, run_id, timeout=600, on_change=lambda _: None)
    return run_id, state, api.task_states(MONITOR, run_id)


def _retrain_runs(api: AirflowClient) -> list[dict[str, Any]]:
    """``train_flights`` runs started by monitoring (their ids start with ``retrain__``)."""
    runs = api.runs(TRAIN)
    return [r for r in runs if str(r["dag_run_id"]).startswith("retrain__")]


def test_three_drifted_days_trigger_one_training_run_and_the_fourth_is_held_back(
    stack: StackSettings, api: AirflowClient
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
    assert conf["overrides"] == {"approval": {"mode": "manual"}}
    assert training["state"] == "queued"  # train_flights is paused in this module
    assert third in str(training["note"])  # "triggered by the retraining policy of monitor_flights (<run id>)"
    assert [r["dag_run_id"] for r in _retrain_runs(api)] == [expected_id]
    # and the audit table says the policy triggered it
    events = audit.history(get_settings().warehouse_url, "flights-delay")
    triggered = [e for e in events if e["event"] == "retraining_triggered"]
    assert len(triggered) == 1 and triggered[0]["actor"] == MONITOR
    assert expected_id in str(triggered[0]["comment"])

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
