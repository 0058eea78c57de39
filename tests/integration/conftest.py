"""One real stack for the integration modules: MLflow, the prediction service and Airflow, started once.

Every module that needs it runs in the xdist group ``shared-stack`` (one worker, one stack). Modules that change
state each work on a dataset of their own (a copy of the flights config with its own name, model, experiments
and, where a test alters source rows, its own table), so they never see each other's models, aliases or
monitoring history. ``flights_champion`` is the one trained champion that modules only read: version 1 of
``flights-delay``, trained on January-March 2013 and deployed to the stack's service. ``example_runs`` are the
shipped examples of the other task types (``flights_minutes``, ``wine``, ``breast_cancer``) trained and deployed
through Airflow once; their champions are read by the serving modules too. The stack's one prediction service
serves every dataset of the folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.core.runs import RunContext
from pipelines.stack.dag_runs import client, wait_for_dag
from pipelines.stack.settings import StackSettings
from tests.receivers import MailReceiver, WebhookReceiver, closed_port
from tests.stack import pointed_at, running_stack, train_champion, write_dataset

SHARED = pytest.mark.xdist_group("shared-stack")
SHIPPED_DATASETS = Path(__file__).resolve().parents[2] / "pipelines" / "conf" / "datasets"
EXAMPLES = ("flights_minutes", "wine", "breast_cancer")
AT = datetime(2026, 1, 1, tzinfo=UTC)
CHAMPION_MODEL = "flights-delay"
CONNECTION = "mlops_test_hook"  # the Airflow connection of the shared stack's "conn" notification channel


@pytest.fixture(scope="session")
def shared_datasets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The datasets of the shared stack, one (or two) per module that changes state."""
    folder = tmp_path_factory.mktemp("datasets")
    # monitor_flights (test_monitor_dag): the shipped flights config, monitored on demand; its model is the champion
    write_dataset(folder, "flights", table="flights", model=CHAMPION_MODEL)
    # test_monitoring: the same champion and source rows, its own monitoring history and experiment
    write_dataset(folder, "flights_monitoring", table="flights", model=CHAMPION_MODEL)
    # test_train_dag: its own models (it trains, rejects, deploys) and table (it corrupts a week of it)
    write_dataset(folder, "flights_train", table="flights_train", model="flights-delay-train")
    write_dataset(
        folder,
        "flights_quick",
        table="flights_train",
        model="flights-delay-quick",
        approval={"mode": "manual", "timeout_minutes": 1},
    )
    # test_serving: three versions of its own, moved around under concurrent requests
    write_dataset(folder, "flights_serving", table="flights_serving", model="flights-delay-serving")
    # test_example_datasets: the shipped examples of the other task types, as a user gets them
    for example in EXAMPLES:
        shutil.copy(SHIPPED_DATASETS / f"{example}.yaml", folder / f"{example}.yaml")
    # test_serving_tasks: the wine champion under a dataset of its own (its own prediction log rows and outcomes)
    wine = yaml.safe_load((SHIPPED_DATASETS / "wine.yaml").read_text())
    wine["name"] = "wine_serving"
    wine["monitoring"].update(min_rows=50, min_labelled=50)  # the requests there: one per bottle of the sample
    (folder / "wine_serving.yaml").write_text(yaml.safe_dump(wine, sort_keys=False))
    return folder


@dataclass(frozen=True)
class Receivers:
    """The shared stack's notification receivers: what its steps and DAGs sent, by webhook and by mail."""

    webhook: WebhookReceiver
    mail: MailReceiver
    file: Path


@pytest.fixture(scope="session")
def notification_receivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receivers]:
    """A webhook receiver and an SMTP server, the shared stack's channels beside its log and a webhook that is down
    (every run of the session must succeed anyway); their URLs in variables that reach every process of the stack,
    and the webhook's in an Airflow connection too (approval requests, sent by Airflow's workers)."""
    with WebhookReceiver() as hook, MailReceiver() as mail, pytest.MonkeyPatch.context() as env:
        env.setenv("MLOPS_TEST_WEBHOOK_URL", hook.url)
        env.setenv("MLOPS_TEST_DEAD_WEBHOOK_URL", f"http://127.0.0.1:{closed_port()}/hooks/dead-token")
        channels = [
            {"name": "log", "type": "log"},
            {"name": "hook", "type": "webhook", "url_env": "MLOPS_TEST_WEBHOOK_URL"},
            {"name": "mail", "type": "smtp", "host": "127.0.0.1", "port": mail.port, "sender": "mlops@example.com",
             "to": ["ops@example.com"], "kinds": ["approval_requested", "approval_timed_out", "task_failed"]},
            {"name": "dead", "type": "webhook", "url_env": "MLOPS_TEST_DEAD_WEBHOOK_URL", "timeout_seconds": 2},
            # the same webhook through an Airflow connection (made in Airflow by shared_stack), for what Airflow sends
            {"name": "conn", "type": "webhook", "connection": CONNECTION, "kinds": ["approval_requested"]},
        ]  # fmt: skip
        path = tmp_path_factory.mktemp("notifications") / "notifications.yaml"
        path.write_text(yaml.safe_dump({"channels": channels}, sort_keys=False))
        yield Receivers(hook, mail, path)


@pytest.fixture(scope="session")
def shared_stack(
    tmp_path_factory: pytest.TempPathFactory, shared_datasets: Path, notification_receivers: Receivers
) -> Iterator[StackSettings]:
    """MLflow, the prediction service (dataset ``flights``) and Airflow, on free ports, for the whole session; its
    notifications go to ``notification_receivers``."""
    home = tmp_path_factory.mktemp("shared-stack") / "runtime"
    with running_stack(home, shared_datasets, notifications_file=notification_receivers.file) as stack:
        api = client(stack)
        try:
            api.add_connection(CONNECTION, "http", host=notification_receivers.webhook.url)
        finally:
            api.close()
        yield stack


@pytest.fixture(scope="session")
def flights_champion(shared_stack: StackSettings) -> dict[str, Any]:
    """January-March 2013 seeded into ``flights``; v1 of ``flights-delay`` trained on it, approved by policy and
    deployed to the stack's service (its monitoring reference prepared at deploy). Read it, never move it."""
    from pipelines import steps

    with pointed_at(shared_stack):
        steps.seed("flights", "2013-01-01", "2013-04-01")
        run = RunContext(dag_id="tests", run_id="shared_champion", reason="test")
        chain = train_champion("flights", run, "2013-01-01", "2013-04-01", AT)
    assert chain["gate"]["passed"] and chain["deploy"]["champion_version"] == "1", chain["gate"]["summary"]
    return chain


# What each example trains on: flights_minutes two of the months the shared flights champion seeded (R² 0.08 there;
# one month: 0.03); the others their whole source.
EXAMPLE_CONF: dict[str, dict[str, Any]] = {
    "flights_minutes": {"window_start": "2013-01-01", "window_end": "2013-03-01"},
    "wine": {},
    "breast_cancer": {},
}


@pytest.fixture(scope="session")
def example_runs(shared_stack: StackSettings, flights_champion: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each example seeded as a user would, then its ``train_<name>`` DAG triggered in Airflow (the three at once)
    and followed to its end: per example, the run's state, its task states and its train task's result."""
    from pipelines import steps

    with pointed_at(shared_stack):
        steps.seed("wine", None, None)
        steps.seed("breast_cancer", None, None)
        api = client(shared_stack)
        started = {}
        for name in EXAMPLES:
            wait_for_dag(api, f"train_{name}")
            api.unpause(f"train_{name}")
            started[name] = api.trigger(f"train_{name}", {"reason": "example test", **EXAMPLE_CONF[name]})
        out = {}
        for name, run_id in started.items():
            state = api.follow(f"train_{name}", run_id, timeout=900, interval=1.0)
            out[name] = {
                "state": state,
                "tasks": api.task_states(f"train_{name}", run_id),
                "train": api.xcom(f"train_{name}", run_id, "train"),
            }
    return out
