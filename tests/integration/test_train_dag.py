"""The real ``train_<dataset>`` DAG, run by the real Airflow scheduler against a real MLflow server.

On the shared stack (MLflow server, Airflow api-server, scheduler, dag-processor, triggerer), with datasets of
this module's own (``flights_train``, ``flights_quick``: copies of the flights config with their own models and
source table). Runs are triggered and approvals answered through Airflow's REST API, as ops (and ``make demo``) do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pipelines import steps
from pipelines.core import audit, registry
from pipelines.core.settings import get_settings
from pipelines.stack.airflow_client import AirflowApiError, AirflowClient
from pipelines.stack.dag_runs import (
    APPROVAL_TASK,
    answer_when_parked,
    client,
    scheduler_saw_parked_exit,
    wait_for_dag,
)
from pipelines.stack.processes import wait_until
from pipelines.stack.settings import StackSettings
from tests.integration.conftest import SHARED, Receivers
from tests.receivers import MailReceiver
from tests.stack import pointed_at

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.browser import Steps

pytestmark = [pytest.mark.integration, SHARED]

DATASET = "flights_train"
DAG = f"train_{DATASET}"
MODEL = "flights-delay-train"
# Two months: the smallest window on which the shipped gate policy (slice floors included) passes.
WINDOW = {"window_start": "2013-01-01", "window_end": "2013-03-01"}
CRIPPLED = {"model": {"estimator": "sklearn.dummy.DummyClassifier", "params": {"strategy": "prior"}}}
APPROVER = "ann"  # the approver of the shipped people file: the only user Airflow lets answer an approval
QUICK = "flights_quick"  # a second dataset made of config only: 1-minute approvals, its own model


@pytest.fixture(scope="module")
def stack(shared_stack: StackSettings) -> Iterator[StackSettings]:
    with pointed_at(shared_stack):
        steps.seed(DATASET, "2013-01-01", "2013-03-08")
        yield shared_stack


@pytest.fixture(scope="module")
def api(stack: StackSettings) -> Iterator[AirflowClient]:
    api = client(stack)
    wait_for_dag(api, DAG)
    api.unpause(DAG)
    yield api
    api.close()


@pytest.fixture(scope="module", autouse=True)
def unanswered(api: AirflowClient) -> tuple[str, str]:
    """A run of the second dataset's DAG whose approval nobody answers, started before this module's tests so that
    its 1-minute approval timeout runs while they do: the DAG id and run id."""
    # given a second dataset config and no code change, when Airflow parses the DAG folder
    dag_id = f"train_{QUICK}"
    wait_for_dag(api, dag_id)
    api.unpause(dag_id)
    return dag_id, api.trigger(dag_id, {"reason": "nobody answers", **WINDOW})


def _champion_version() -> str | None:
    found = registry.alias_version(get_settings(), MODEL, registry.CHAMPION)
    return str(found.version) if found else None


def _version_tags(version: str) -> dict[str, str]:
    return dict(registry.client(get_settings()).get_model_version(MODEL, version).tags)


def _run_until_approval(api: AirflowClient, conf: dict) -> tuple[str, dict[str, str | None]]:
    run_id = api.trigger(DAG, conf)
    api.follow(DAG, run_id, timeout=600, stop_when=lambda s: s.get(APPROVAL_TASK) == "awaiting_input")
    return run_id, api.task_states(DAG, run_id)


def test_a_run_approved_in_airflow_deploys_the_champion_with_its_lineage(stack: StackSettings, api) -> None:
    """Ann, an approver, finds the request on the Models page, opens it and clicks Approve with a comment."""
    from pipelines.stack import services
    from tests.browser import browser_page, log_in_to_airflow

    # given a warehouse holding January to early March 2013 and no model yet
    assert _champion_version() is None

    # when the training DAG runs through the scheduler up to its approval
    run_id, states = _run_until_approval(api, {"reason": "integration test", **WINDOW})
    assert states["gate"] == "success" and states[APPROVAL_TASK] == "awaiting_input", states
    # (a person is never faster than the scheduler's processing of the parked task's exit: see answer_when_parked)
    wait_until(
        lambda: scheduler_saw_parked_exit(stack.logs_dir / "airflow-scheduler.log", DAG, run_id, APPROVAL_TASK),
        "the scheduler to process the parked approval",
        300,
        interval=0.5,
    )
    with browser_page("approve-in-the-airflow-ui") as (page, steps):
        log_in_to_airflow(page, stack.airflow_url, APPROVER, services.password_of(stack, APPROVER))
        # then the Models page, inside the Airflow UI, lists the request as waiting, with its subject and deadline
        page.goto(f"{stack.airflow_url}/plugin/models")
        models = page.frame_locator("iframe")
        waiting = models.locator("#pending a", has_text=f"Promote {MODEL} v1 to champion?")
        waiting.wait_for()
        assert "left" in models.locator("#pending").inner_text()
        steps.shot(page, "models page with a waiting approval")
        # and when ann opens it from there, writes a comment and clicks Approve
        waiting.click()
        page.wait_for_url(lambda url: f"/dags/{DAG}/runs/" in url and url.endswith("/required_actions"))
        page.locator("#element_comment").fill("clicked in the browser: looks good")
        steps.shot(page, "approval request with a comment")
        page.get_by_role("button", name="Approve", exact=True).click()
        state = api.follow(DAG, run_id, timeout=600)
        steps.shot(page, "approval answered")

        # then the run succeeds through every step and version 1 is the champion
        task_states = api.task_states(DAG, run_id)
        assert state == "success", task_states
        for task in ("extract", "validate", "train", "evaluate", "gate", "route", "approve", "deploy"):
            assert task_states[task] == "success", (task, task_states)
        assert task_states["refuse"] == "skipped"
        assert _champion_version() == "1"

        # and the DAG's Model tab shows the champion, who approved it and why, and nothing waiting
        page.goto(f"{stack.airflow_url}/dags/{DAG}")
        page.get_by_role("link", name="Model", exact=True).click()
        card = page.frame_locator("iframe").locator(f"#dataset-{DATASET}")
        card.locator(".version", has_text="v1").wait_for()
        text = card.inner_text()
        assert "approved by ann (manual)" in text and "clicked in the browser: looks good" in text
        assert "Nothing is waiting." in page.frame_locator("iframe").locator("#pending").inner_text()
        steps.shot(page, "the dag's model tab")

        # and a data scientist finds the run in MLflow's model-training view and the version described
        _open_in_mlflow(page, steps, run_id)

    # and the version's tags hold the lineage, the gate decision and the approver with the comment typed in
    tags = _version_tags("1")
    assert tags["airflow.dag_id"] == DAG and tags["airflow.run_id"] == run_id
    assert tags["run.reason"] == "integration test"
    assert tags["data.window"] == "[2013-01-01, 2013-03-01)" and len(tags["data.version"]) == 16
    assert tags["gate.decision"] == "passed"
    assert tags["approval.status"] == "approved" and tags["approval.by"] == APPROVER
    assert tags["approval.mode"] == "manual" and tags["approval.comment"] == "clicked in the browser: looks good"
    assert tags["deploy.status"] == "champion"

    # and the audit table says who approved it
    events = audit.history(get_settings().warehouse_url, MODEL)
    assert ("1", "approved", APPROVER) in [(e["model_version"], e["event"], e["actor"]) for e in events]


def _open_in_mlflow(page: Page, steps: Steps, run_id: str) -> None:
    """A data scientist opens the training run's experiment (model-training view: runs listed) and version 1's page
    (its description: data, gate, approval with the approver and comment)."""
    settings = get_settings()
    mlf = registry.client(settings)
    training_run = mlf.get_run(mlf.get_model_version(MODEL, "1").run_id)
    experiment = training_run.info.experiment_id
    page.goto(f"{settings.mlflow_ui_url}/#/experiments/{experiment}?workflowType=machine_learning")
    page.get_by_role("link", name=f"{DAG}:{run_id}").first.wait_for()
    assert page.get_by_text("Model training", exact=True).first.is_visible()
    steps.shot(page, "mlflow experiment in the model-training view")
    page.goto(registry.version_url(settings, MODEL, "1"))
    page.get_by_text(f"{MODEL} v1", exact=False).first.wait_for()
    body = page.locator("body").inner_text()
    assert "Why this run happened" in body and "Holdout metrics" in body, body[:2000]
    assert "approved by ann at" in body and "clicked in the browser: looks good" in body, body[:2000]
    steps.shot(page, "mlflow model version description")


def test_a_crippled_model_is_refused_by_the_gate_and_the_champion_stays(stack: StackSettings, api) -> None:
    # given version 1 is the champion
    before = _champion_version()
    assert before is not None

    # when a run trains a model that cannot rank flights (a constant prior)
    run_id = api.trigger(DAG, {"reason": "crippled", "overrides": CRIPPLED, **WINDOW})
    state = api.follow(DAG, run_id, timeout=600)

    # then the run ends cleanly on the refuse branch, without any approval or deployment
    states = api.task_states(DAG, run_id)
    assert state == "success", states
    assert states["gate"] == "success" and states["refuse"] == "success"
    assert states["approve"] == "skipped" and states["deploy"] == "skipped"
    refused = api.xcom(DAG, run_id, "refuse")
    assert refused["deployed"] is False and "roc_auc" in refused["summary"]

    # and the refused version is tagged, and the champion has not moved
    version = api.xcom(DAG, run_id, "train")["model_version"]
    assert _version_tags(version)["gate.decision"] == "failed"
    assert _champion_version() == before
    # and the overrides it was trained with are on its MLflow run and in the audit trail
    trained = api.xcom(DAG, run_id, "train")
    run_tags = registry.client(get_settings()).get_run(trained["run_id"]).data.tags
    assert json.loads(run_tags["run.overrides"]) == CRIPPLED
    events = audit.history(get_settings().warehouse_url, MODEL)
    recorded = [e for e in events if e["event"] == "overrides" and e["model_version"] == version]
    assert len(recorded) == 1 and "DummyClassifier" in str(recorded[0]["comment"])


def test_a_run_whose_overrides_loosen_policy_fails_at_its_first_task(stack: StackSettings, api) -> None:
    # given the champion, when a run asks to approve itself by policy (tried on a stack before this was refused)
    before = _champion_version()
    run_id = api.trigger(DAG, {"reason": "self-approval", "overrides": {"approval": {"mode": "auto"}}, **WINDOW})
    state = api.follow(DAG, run_id, timeout=300)
    # then the run fails at its first task, once (no retry), and nothing after it ran
    states = api.task_states(DAG, run_id)
    assert state == "failed" and states["extract"] == "failed", states
    assert all(states[t] in ("upstream_failed", "skipped", None) for t in ("train", "gate", "deploy")), states
    # and the task's log names the key refused
    assert "overrides may not change approval.mode" in api.task_log(DAG, run_id, "extract")
    assert _champion_version() == before


def test_a_rejected_candidate_is_tagged_and_never_deployed(stack: StackSettings, api) -> None:
    before = _champion_version()
    # given a good candidate waiting for approval
    run_id, states = _run_until_approval(api, {"reason": "to reject", **WINDOW})
    assert states[APPROVAL_TASK] == "awaiting_input", states
    detail = api.hitl_detail(DAG, run_id, APPROVAL_TASK)
    assert "Gate: passed" in detail["body"] and "MLflow run" in detail["body"]

    # when a viewer, an operator or the admin tries to answer it, then Airflow refuses: only approvers may
    for user in ("vera", "omar", stack.airflow_admin_user):
        other = client(stack, user)
        try:
            with pytest.raises(AirflowApiError, match="403"):
                other.answer(DAG, run_id, APPROVAL_TASK, "Approve", {"comment": f"{user} says yes"})
        finally:
            other.close()
    assert api.task_states(DAG, run_id)[APPROVAL_TASK] == "awaiting_input"

    # when the approver rejects it in Airflow with a comment
    approver = client(stack, APPROVER)
    try:
        answer_when_parked(approver, stack, DAG, run_id, APPROVAL_TASK, "Reject", {"comment": "not this week"})
    finally:
        approver.close()
    state = api.follow(DAG, run_id, timeout=300)

    # then deploy is skipped, the version says who rejected it and why, and the champion stays
    states = api.task_states(DAG, run_id)
    assert state == "success" and states["deploy"] == "skipped", states
    version = api.xcom(DAG, run_id, "train")["model_version"]
    tags = _version_tags(version)
    assert tags["approval.status"] == "rejected" and tags["approval.comment"] == "not this week"
    assert tags["approval.by"] == APPROVER
    assert "deploy.status" not in tags
    assert _champion_version() == before


def test_bad_data_stops_the_run_at_validation(stack: StackSettings, api, tmp_path: Path) -> None:
    import sqlalchemy as sa

    from pipelines.core.warehouse import get_engine

    versions_before = len(registry.client(get_settings()).search_model_versions(f"name = '{MODEL}'"))
    # given a week of the warehouse where distances became negative
    engine = get_engine(get_settings().warehouse_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE flights_train SET distance = -distance"
                " WHERE sched_dep >= '2013-03-01' AND sched_dep < '2013-03-08'"
            )
        )

    # when the training DAG runs on that week
    run_id = api.trigger(DAG, {"reason": "bad data", "window_start": "2013-03-01", "window_end": "2013-03-08"})
    state = api.follow(DAG, run_id, timeout=300)

    # then validation fails, nothing downstream runs, and nothing is registered
    states = api.task_states(DAG, run_id)
    assert state == "failed" and states["validate"] == "failed", states
    assert all(states[t] in ("upstream_failed", None) for t in ("train", "evaluate", "gate", "deploy")), states
    assert len(registry.client(get_settings()).search_model_versions(f"name = '{MODEL}'")) == versions_before


def test_a_new_dataset_config_is_a_new_dag_and_an_unanswered_approval_times_out(
    stack: StackSettings, api: AirflowClient, unanswered: tuple[str, str]
) -> None:
    # given the second dataset's DAG, parsed from its config alone, and its run (started with the module)
    dag_id, run_id = unanswered
    # when its candidate waits for an approval that nobody gives within the 1-minute timeout
    state = api.follow(dag_id, run_id, timeout=900)

    # then the scheduler applies the default (Reject): nothing is deployed and the version says it timed out
    states = api.task_states(dag_id, run_id)
    assert state == "success" and states[APPROVAL_TASK] == "success" and states["deploy"] == "skipped", states
    version = api.xcom(dag_id, run_id, "train")["model_version"]
    tags = dict(registry.client(get_settings()).get_model_version("flights-delay-quick", version).tags)
    assert tags["approval.status"] == "timed_out" and tags["approval.by"] == "timeout"
    assert registry.alias_version(get_settings(), "flights-delay-quick", registry.CHAMPION) is None
    events = audit.history(get_settings().warehouse_url, "flights-delay-quick")
    assert [(e["model_version"], e["event"]) for e in events] == [(str(version), "timed_out")]


def test_people_were_notified_of_each_event_and_a_dead_receiver_failed_no_run(
    stack: StackSettings, api: AirflowClient, unanswered: tuple[str, str], notification_receivers: Receivers
) -> None:
    """What the runs of this module sent to the shared stack's receivers (a webhook, a mail server; a third
    webhook is down): every run above ended as its test expects, whatever the dead receiver did."""
    from urllib.parse import quote

    from pipelines.core.notifications import delivery_counts

    hook, mail = notification_receivers.webhook, notification_receivers.mail
    quick_dag, quick_run = unanswered
    api.follow(quick_dag, quick_run, timeout=900)

    def arrived(kind: str, dataset: str, **facts: str) -> dict:
        return hook.wait_for(
            lambda b: b["kind"] == kind and b["dataset"] == dataset and facts.items() <= b["facts"].items(), timeout=60
        )

    # then the approver was asked, with the request's link in Airflow, the metrics and the deadline
    asked = arrived("approval_requested", QUICK)
    link = f"{stack.airflow_url}/dags/{quick_dag}/runs/{quote(quick_run)}/tasks/{APPROVAL_TASK}/required_actions"
    assert asked["links"]["approval request"] == link and link in asked["text"]
    assert asked["facts"]["roc_auc"].startswith("0.") and asked["facts"]["deadline"].startswith("20")
    # and told when nobody answered in time
    timed_out = arrived("approval_timed_out", QUICK)
    assert "within 1 minutes" in timed_out["text"] and timed_out["links"]["approval request"] == link
    # and by mail too
    for kind in ("approval_requested", "approval_timed_out"):
        got = mail.wait_for(lambda m, kind=kind: m["X-MLOps-Kind"] == kind and m["X-MLOps-Dataset"] == QUICK, 30)
        assert link in MailReceiver.body(got)

    # and the deployment through Airflow, the gate's refusal (with its reasons) and the failed tasks were announced
    deployed = arrived("deployed", DATASET, champion="v1")
    assert deployed["facts"]["by"] == DAG
    assert deployed["links"]["Model version"] == registry.version_url(get_settings(), MODEL, "1")
    refused = arrived("candidate_refused", DATASET)
    assert "FAIL roc_auc" in refused["text"] and "roc_auc" in refused["facts"]
    failed = arrived("task_failed", DATASET, task="extract")
    assert "overrides may not change approval.mode" in failed["text"]
    assert (
        f"/dags/{DAG}/runs/" in failed["links"]["task log"]
        and "/tasks/extract?try_number=1" in failed["links"]["task log"]
    )
    assert arrived("task_failed", DATASET, task="validate")
    assert mail.wait_for(lambda m: m["X-MLOps-Kind"] == "task_failed" and m["X-MLOps-Dataset"] == DATASET, 30)

    # and the approval request went out once per channel, under its run's key (a retried approval task would not
    # send it again), the failed extract under its try's
    import sqlalchemy as sa

    from pipelines.core.warehouse import get_engine

    with get_engine(get_settings().warehouse_url).connect() as conn:
        keys = conn.execute(sa.text("SELECT channel, dedup_key FROM notification_log WHERE status = 'delivered'")).all()
    assert keys.count(("hook", f"{quick_dag}/{quick_run}/approval_requested")) == 1, keys
    # and through the channel whose webhook URL is an Airflow connection, looked up by the worker that sent it
    assert keys.count(("conn", f"{quick_dag}/{quick_run}/approval_requested")) == 1, keys
    assert any(k and k.endswith("/extract/try1/task_failed") for _, k in keys), keys

    # and the receiver that is down was tried for each message, counted as failed, and failed no run
    counts = delivery_counts(get_settings().warehouse_url)
    assert counts.get(("dead", "failed"), 0) >= 6 and ("dead", "delivered") not in counts, counts
    assert counts.get(("hook", "failed"), 0) == 0 and counts[("hook", "delivered")] >= 6, counts
