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


def test_demo_trains_approves_and_deploys_through_airflow_then_down_stops_everything(tmp_path: Path) -> None:
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
            timeout=900,
            check=False,
        )
        # then it ends with a champion, the approval it gave on the user's behalf, both URLs and the login
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
        assert "approving on your behalf through the REST API" in out.stderr
        assert "champion: flights-delay v1 (approved by admin, manual; gate passed)" in out.stdout
        assert stack.airflow_url in out.stdout and stack.mlflow_url in out.stdout
        assert f"login: admin / {stack.airflow_admin_password}" in out.stdout
        assert "holdout: roc_auc 0." in out.stdout
        # and after the deployment it replayed four weeks through the prediction service, which answered with v1
        assert f"prediction service {stack.serving_url} serves flights-delay v1 (compiled predictor" in out.stdout
        assert "replay [2013-04-01, 2013-04-29): 28 days replayed (0 done before)" in out.stdout
        assert "0 rejected" in out.stdout
        logged = re.search(r"predictions logged for that window, by version: v1 (\d+)", out.stdout)
        answered = re.search(r"requests, (\d+) records answered", out.stdout)
        assert logged and answered and int(logged.group(1)) == int(answered.group(1)) > 20_000, out.stdout
        assert re.search(r"live performance of v1 \(\d+ outcomes known\): roc_auc 0\.[6-9]", out.stdout), out.stdout
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
