"""The shipped examples of every task type, trained and deployed through the real Airflow scheduler.

``flights_minutes`` (regression on the demo's staged flights), ``wine`` (multiclass, a Parquet file written once by
``seed``, no time column) and ``breast_cancer`` (binary with string labels, staged, no time and no key column) each
run validate -> train -> evaluate -> gate -> approve (policy) -> deploy as ``train_<name>`` on the shared stack, and
their MLflow runs show their task's metrics and plots. The three runs are triggered together and followed to the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from mlflow import MlflowClient

from pipelines import steps
from pipelines.stack.dag_runs import client, wait_for_dag
from pipelines.stack.settings import StackSettings
from tests.integration.conftest import EXAMPLES, SHARED
from tests.stack import pointed_at

pytestmark = [pytest.mark.integration, SHARED]

# What each example's run must show: its metrics (on the holdout) and its plots (under evaluation/).
EXPECTED: dict[str, dict[str, Any]] = {
    "flights_minutes": {
        "model": "flights-delay-minutes",
        "metrics": {"holdout_rmse", "holdout_mae", "holdout_r2", "holdout_mean_error", "train_rmse"},
        "plots": {"predicted_vs_actual.png", "residuals.png", "error_by_slice.png"},
        "params": {"task": "regression"},
    },
    "wine": {
        "model": "wine-cultivar",
        "metrics": {
            "holdout_accuracy",
            "holdout_f1_macro",
            "holdout_log_loss",
            "holdout_roc_auc_ovr",
            "holdout_min_class_recall",
            "holdout_recall.class_0",
        },
        "plots": {"confusion_matrix.png"},
        "params": {"task": "multiclass", "classes": "class_0,class_1,class_2", "split": "random"},
    },
    "breast_cancer": {
        "model": "breast-cancer-diagnosis",
        "metrics": {"holdout_roc_auc", "holdout_pr_auc", "holdout_recall", "holdout_accuracy"},
        "plots": {"confusion_matrix.png", "roc.png", "precision_recall.png", "calibration.png"},
        "params": {"task": "binary", "positive_class": "malignant", "split": "random"},
    },
}
# flights_minutes trains on the months the shared flights champion seeded.
CONF: dict[str, dict[str, Any]] = {
    "flights_minutes": {"window_start": "2013-01-01", "window_end": "2013-04-01"},
    "wine": {},
    "breast_cancer": {},
}


@pytest.fixture(scope="module")
def runs(shared_stack: StackSettings, flights_champion: dict[str, Any]) -> Iterator[dict[str, dict[str, Any]]]:
    """Each example seeded as a user would, then its training DAG triggered; every run followed to its end."""
    with pointed_at(shared_stack):
        steps.seed("wine", None, None)
        steps.seed("breast_cancer", None, None)
        api = client(shared_stack)
        started = {}
        for name in EXAMPLES:
            wait_for_dag(api, f"train_{name}")
            api.unpause(f"train_{name}")
            started[name] = api.trigger(f"train_{name}", {"reason": "example test", **CONF[name]})
        out = {}
        for name, run_id in started.items():
            state = api.follow(f"train_{name}", run_id, timeout=900, on_change=lambda _: None, interval=1.0)
            out[name] = {
                "state": state,
                "tasks": api.task_states(f"train_{name}", run_id),
                "train": api.xcom(f"train_{name}", run_id, "train"),
            }
        yield out


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_through_airflow_and_shows_its_task(
    name: str, runs: dict[str, dict[str, Any]], shared_stack: StackSettings
) -> None:
    expected = EXPECTED[name]
    run = runs[name]
    # then every step of train_<name> succeeded, approved by policy, and nothing was refused
    assert run["state"] == "success", run["tasks"]
    for task in ("extract", "validate", "train", "evaluate", "gate", "approve_by_policy", "deploy"):
        assert run["tasks"][task] == "success", (task, run["tasks"])
    assert run["tasks"]["refuse"] == "skipped" and run["tasks"]["approve"] == "skipped"

    # and its version is the champion, approved by the policy
    mlf = MlflowClient(tracking_uri=shared_stack.mlflow_url, registry_uri=shared_stack.mlflow_url)
    champion = mlf.get_model_version_by_alias(expected["model"], "champion")
    assert champion.version == run["train"]["model_version"]
    assert champion.tags["approval.by"] == "policy" and champion.tags["deploy.status"] == "champion"
    assert champion.tags["task"] == expected["params"]["task"]

    # and its MLflow run shows the task's metrics, params and plots
    data = mlf.get_run(run["train"]["run_id"]).data
    assert expected["metrics"] <= set(data.metrics), sorted(data.metrics)
    assert expected["params"].items() <= data.params.items(), data.params
    plots = {f.path.rsplit("/", 1)[-1] for f in mlf.list_artifacts(run["train"]["run_id"], "evaluation")}
    assert expected["plots"] <= plots, plots
    # and no metric of another task leaks in (a regression run has no ROC AUC, a classifier no RMSE)
    foreign = {"holdout_roc_auc", "holdout_accuracy"} if name == "flights_minutes" else {"holdout_rmse"}
    assert not foreign & set(data.metrics)
