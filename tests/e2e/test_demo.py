"""End to end: ``make demo``'s own command, on a fresh runtime folder and free ports, then ``down``."""

from __future__ import annotations

import hashlib
import json
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipelines.stack import services
from pipelines.stack.settings import StackSettings
from tests.conftest import REPO_ROOT
from tests.stack import env_for, make_stack_settings

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(1800)  # the whole demo: about 12 minutes here, longer on a busy machine
def test_demo_deploys_then_drift_retrains_and_switches_through_airflow_then_down_stops_everything(
    tmp_path: Path,
) -> None:
    stack = make_stack_settings(tmp_path / "runtime")
    env = env_for(stack)
    try:
        # given a fresh runtime folder, when the demo runs (as `make demo` does)
        out = _python(env, 1500, "pipelines.stack", "demo")
        # then the first run trained v1, approved on the user's behalf, and the summary gives both URLs and the login
        assert "approving on your behalf through the REST API" in out.stderr
        assert "trained: flights-delay v1" in out.stdout
        assert stack.airflow_url in out.stdout and stack.mlflow_url in out.stdout
        # and the Airflow accounts of the people file were made, their passwords shown once and kept 0600
        passwords = json.loads((stack.airflow_home / "passwords.json").read_text())
        assert passwords["admin"] == stack.airflow_admin_password
        assert f"ann / {passwords['ann']}  (approver)" in out.stdout and f"vera / {passwords['vera']}" in out.stdout
        assert (stack.airflow_home / "passwords.json").stat().st_mode & 0o777 == 0o600
        assert "log in as ann to approve, omar to run, vera to look, admin to administer" in out.stdout
        assert "holdout: roc_auc 0." in out.stdout
        # and it replayed April and May through the service with monitor_flights checking every day (a run a week)
        replay = re.search(r"replay \[2013-04-01, 2013-0[5-7]-\d\d\): (\d+) days replayed \(0 done", out.stdout)
        assert replay, out.stdout
        assert re.search(rf"\({replay.group(1)} days checked in \d+ monitor_flights runs;", out.stdout), out.stdout
        assert "0 rejected" in out.stdout
        logged = re.search(r"predictions logged for that window, by version: v1 (\d+), v2 (\d+)", out.stdout)
        answered = re.search(r"requests, (\d+) records answered", out.stdout)
        assert logged and answered, out.stdout
        assert int(logged.group(1)) + int(logged.group(2)) == int(answered.group(1)) > 50_000, out.stdout
        # and the season's drift made the policy retrain: the timeline says when, and the new champion took over
        assert "drift started: 2013-05-20 (temp, dewp" in out.stdout, out.stdout
        assert "detected: window ending 2013-05-23: retrain (drift): drift in 3 consecutive windows" in out.stdout
        assert "retraining: train run retrain__flights__2013-05-23 success, approved by ann" in out.stdout
        assert re.search(r"new champion: v2 \(replacing v1\) serves from 2013-05-\d\d", out.stdout), out.stdout
        assert f"prediction service {stack.serving_url} serves flights-delay v2 (compiled predictor" in out.stdout
        assert "champion now: flights-delay v2 (trained on [2013-02-22, 2013-05-23); approved by ann" in out.stdout
        assert re.search(r"live performance before: v1 on 2013-04-01\.\..*roc_auc 0\.[6-9]", out.stdout), out.stdout
        assert re.search(r"live performance after: v2 on 2013-05-\d\d\.\..*roc_auc 0\.[6-9]", out.stdout), out.stdout
        assert "lineage  python -m pipelines lineage --dataset flights" in out.stdout
        # and the scheduler forked its task workers with the loop's libraries already imported, none missing
        scheduler_log = (stack.logs_dir / "airflow-scheduler.log").read_text()
        preloaded = re.search(r"preloaded \d+ modules for the task processes in [\d.]+ s \[", scheduler_log)
        assert preloaded, scheduler_log[-3000:]

        # and an ops person who opens the Models page in the Airflow UI sees the same story
        _assert_models_page(stack, passwords["vera"])

        # when a user asks for the champion's lineage, then one record answers every question an auditor has
        record = json.loads(_cli(env, "lineage", "--dataset", "flights", "--json").stdout)
        _assert_complete_lineage(record)
        text = _cli(env, "lineage", "--dataset", "flights").stdout
        assert (
            text.startswith("flights-delay version 2 (binary)") and "approval:\n  status: approved\n  by: ann" in text
        )

        # and when it is rebuilt from that record on a machine sharing only MLflow (no warehouse, no runtime folder)
        elsewhere = {
            **env,
            "MLOPS_HOME": str(tmp_path / "elsewhere"),
            "MLOPS_WAREHOUSE_URL": "postgresql+psycopg2://nobody@127.0.0.1:9/unreachable",
        }
        rebuilt = _cli(elsewhere, "reproduce", "--dataset", "flights", "--version", "2")
        # then its holdout predictions are bit-equal to the ones recorded when v2 was trained
        assert "bit-equal predictions on all" in rebuilt.stdout and "environment: same as recorded" in rebuilt.stdout
        assert not (tmp_path / "elsewhere" / "warehouse.db").exists()
    finally:
        # when `make down` runs, then every service is stopped
        _python(env, 120, "pipelines.stack", "down")
    assert all(state == "stopped" for state in services.status(stack).values())


def _assert_models_page(stack: StackSettings, password: str) -> None:
    """The flights card: champion v2 approved by ann, April to June monitored with the late-May drift, the policy's
    retraining decision and the switch to v2, each cell linking to its drift report (screenshots kept)."""
    from tests.browser import browser_page, log_in_to_airflow

    with browser_page("demo-models-page") as (page, steps):
        log_in_to_airflow(page, stack.airflow_url, "vera", password)
        page.goto(f"{stack.airflow_url}/plugin/models")
        card = page.frame_locator("iframe").locator("#dataset-flights")
        card.locator(".version", has_text="v2").wait_for()
        steps.shot(page, "models page in the airflow ui")
        # the page itself, whole (the picture in the README)
        page.goto(f"{stack.airflow_url}/mlops/models")
        steps.shot(page, "models page")
        flights = page.locator("#dataset-flights")
        text = flights.inner_text()
        assert "approved by ann (manual)" in text and "previous champion v1" in text, text
        assert "last 7 days" in text and "last 30 days" in text
        months = flights.locator(".month .label").all_inner_texts()
        assert months[:2] == ["Apr 2013", "May 2013"], months
        states = {
            str(c.get_attribute("aria-label")).split(": ")[0]: str(c.get_attribute("class")).split()[-1]
            for c in flights.locator("a.cell").all()
        }
        assert states["2013-05-20"] == "drift" and states["2013-05-22"] == "retraining", states
        assert "new_champion" in states.values() and "ok" in states.values(), states
        assert all(
            "/artifacts/report/drift.html" in str(c.get_attribute("href")) for c in flights.locator("a.cell").all()
        )
        decisions = flights.locator(".decisions").inner_text()
        assert "2013-05-23" in decisions and "drift in 3 consecutive windows" in decisions, decisions
        audit_trail = flights.locator(".audit").inner_text()
        assert "deployed" in audit_trail and "approved" in audit_trail


def _python(env: dict[str, str], timeout: int, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m <module> <args>`` as a user runs it in the repository; fails the test on a non-zero exit."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pipelines <args>`` beside the stack."""
    return _python(env, 600, "pipelines", *args)


def _assert_complete_lineage(r: dict[str, Any]) -> None:
    """Every field issue 15 names, for the demo's champion (v2, trained because drift called for it)."""
    assert r["model"]["version"] == "2" and r["model"]["name"] == "flights-delay"
    why = r["why"]
    assert str(why["reason"]).startswith("drift") and why["dag_id"] == "train_flights"
    assert why["drift"]["window_end"] == "2013-05-23" and why["drift"]["evidence"]
    data = r["data"]
    assert data["window"] == "[2013-02-22, 2013-05-23)" and int(str(data["rows"])) > 10_000
    assert re.fullmatch(r"[0-9a-f]{16}", str(data["content_hash"]))
    assert str(data["snapshot"]).startswith("runs:/") and str(data["snapshot"]).endswith(
        f"{data['content_hash']}.parquet"
    )
    suite = r["suite"]
    assert suite["name"] == "flights" and re.fullmatch(r"[0-9a-f]{64}", str(suite["sha256"]))
    assert str(suite["result"]).startswith("passed") and "data-docs" in str(suite["data_docs"])
    assert re.fullmatch(r"[0-9a-f]{40}", str(r["code"]["commit"])) and r["code"]["dirty"] in ("true", "false")
    env = r["environment"]
    assert env["lock_sha256"] == hashlib.sha256((REPO_ROOT / "requirements.lock").read_bytes()).hexdigest()
    assert env["python"] == platform.python_version() and "scikit-learn" in env["packages"]
    config = r["config"]
    assert re.fullmatch(r"[0-9a-f]{64}", str(config["sha256"])) and str(config["file"]).startswith("runs:/")
    assert config["seed"] == "42" and config["overrides"] == {}
    evaluation = r["evaluation"]
    assert evaluation["compared_with"] == "1" and "roc_auc" in evaluation["holdout"]
    assert "roc_auc" in evaluation["champion_holdout"]
    assert r["gate"]["decision"] == "passed" and r["gate"]["reasons"]
    approval = r["approval"]
    assert approval["status"] == "approved" and approval["by"] == "ann" and approval["mode"] == "manual"
    assert "drift-triggered candidate approved" in str(approval["comment"])
    artifact = r["artifact"]
    assert artifact["approved_sha256"] == artifact["trained_sha256"] and artifact["approved_files"]
    deployment = r["deployment"]
    assert deployment["deployed"] is True and deployment["previous_version"] == "1" and deployment["at"]
    assert r["serving"]["champion_now"] is True and r["serving"]["since"]
    live = r["live"]
    assert int(str(live["predictions"])) > 0 and int(str(live["labelled"])) > 0 and "roc_auc" in live["metrics"]
    events = [e["event"] for e in r["audit"]]
    assert events[:2] == ["approved", "deployed"], events
