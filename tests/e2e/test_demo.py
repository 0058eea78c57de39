"""End to end: ``make demo``'s own command, on a fresh runtime folder and free ports, then ``down``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.stack import services
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
        out = subprocess.run(
            [sys.executable, "-m", "pipelines.stack", "demo"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=1500,
            check=False,
        )
        # then the first run trained v1, approved on the user's behalf, and the summary gives both URLs and the login
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
        assert "approving on your behalf through the REST API" in out.stderr
        assert "trained: flights-delay v1" in out.stdout
        assert stack.airflow_url in out.stdout and stack.mlflow_url in out.stdout
        assert f"login: admin / {stack.airflow_admin_password}" in out.stdout
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
        assert "retraining: train run retrain__flights__2013-05-23 success, approved by admin" in out.stdout
        assert re.search(r"new champion: v2 \(replacing v1\) serves from 2013-05-\d\d", out.stdout), out.stdout
        assert f"prediction service {stack.serving_url} serves flights-delay v2 (compiled predictor" in out.stdout
        assert "champion now: flights-delay v2 (trained on [2013-02-22, 2013-05-23); approved by admin" in out.stdout
        assert re.search(r"live performance before: v1 on 2013-04-01\.\..*roc_auc 0\.[6-9]", out.stdout), out.stdout
        assert re.search(r"live performance after: v2 on 2013-05-\d\d\.\..*roc_auc 0\.[6-9]", out.stdout), out.stdout
    finally:
        # when `make down` runs, then every service is stopped
        down = subprocess.run(
            [sys.executable, "-m", "pipelines.stack", "down"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert down.returncode == 0, down.stderr
    assert all(state == "stopped" for state in services.status(stack).values())
