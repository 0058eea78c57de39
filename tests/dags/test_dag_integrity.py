"""DAG integrity: every DAG imports, has no cycle, sets retries and tags, and parsing is cheap and offline."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

from tests.conftest import REPO_ROOT

DAGS = REPO_ROOT / "dags"
HEAVY = ["mlflow", "sklearn", "pandas", "great_expectations", "evidently", "matplotlib", "pyarrow"]


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory):
    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow_home")))
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert dagbag.dags, "no DAG was found"


def test_one_training_dag_per_dataset_config(dagbag) -> None:
    configs = sorted(p.stem for p in (REPO_ROOT / "pipelines" / "conf" / "datasets").glob("*.yaml"))
    assert sorted(d for d in dagbag.dag_ids if d.startswith("train_")) == [f"train_{c}" for c in configs]


def test_no_cycles_retries_and_tags(dagbag) -> None:
    for dag in dagbag.dags.values():
        dag.check_cycle()
        assert dag.tags, f"{dag.dag_id} has no tags"
        assert dag.default_args.get("retries", 0) >= 1, f"{dag.dag_id} sets no default retries"
        for task in dag.tasks:
            assert isinstance(task.retries, int), f"{dag.dag_id}.{task.task_id} has no retries setting"


def test_training_dag_shape(dagbag) -> None:
    dag = dagbag.dags["train_flights"]
    assert dag.max_active_runs == 1, "two runs of the same model must never overlap"
    assert dag.catchup is False
    assert set(dag.params.keys()) >= {"window_start", "window_end", "reason", "overrides"}
    order = ["extract", "validate", "train", "evaluate", "gate", "route"]
    for upstream, downstream in itertools.pairwise(order):
        assert downstream in dag.get_task(upstream).downstream_task_ids
    assert dag.get_task("route").downstream_task_ids == {"approve", "approve_by_policy", "refuse"}
    assert dag.get_task("deploy").upstream_task_ids == {"approve", "approve_by_policy"}
    assert type(dag.get_task("approve")).__mro__[1].__name__ == "ApprovalOperator"
    # expected failures are final; transient steps retry
    assert dag.get_task("validate").retries == 0
    assert dag.get_task("extract").retries >= 1


def test_one_monitoring_dag_per_dataset_config(dagbag) -> None:
    configs = sorted(p.stem for p in (REPO_ROOT / "pipelines" / "conf" / "datasets").glob("*.yaml"))
    assert sorted(d for d in dagbag.dag_ids if d.startswith("monitor_")) == [f"monitor_{c}" for c in configs]


def test_monitoring_dag_shape(dagbag) -> None:
    dag = dagbag.dags["monitor_flights"]
    # daily by default, no catch-up, one window at a time (the policy reads the windows before it)
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert dag.schedule == "@daily"
    assert set(dag.params.keys()) >= {"window_start", "window_end", "step_days"}
    # a range run (step_days) is opt-in: a scheduled run checks its data interval as one window
    assert dag.params["step_days"] is None
    assert dag.get_task("check").downstream_task_ids == {"decide"}
    assert dag.get_task("decide").downstream_task_ids == {"trigger_training"}
    trigger = dag.get_task("trigger_training")
    assert isinstance(trigger, TriggerDagRunOperator)
    assert "note" in trigger.template_fields, "the note names the monitoring run that decided"
    assert trigger.trigger_dag_id == "train_flights"
    assert trigger.skip_when_already_exists, "a rerun must not start a second training run"


def test_parsing_touches_no_database_network_or_heavy_import(tmp_path: Path) -> None:
    """Parse every DAG file in a fresh interpreter where opening a socket or a database engine raises."""
    probe = textwrap.dedent(f"""
        import json, socket, sys
        def refuse(*a, **k):
            raise RuntimeError("network access during DAG parsing")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        import sqlalchemy.engine
        def no_connection(*a, **k):
            raise RuntimeError("database connection opened during DAG parsing")
        sqlalchemy.engine.Engine.connect = no_connection
        sqlalchemy.engine.Engine.raw_connection = no_connection
        import airflow.sdk  # the baseline every DAG file pays
        baseline = set(sys.modules)
        import importlib.util, pathlib
        for path in sorted(pathlib.Path({str(DAGS)!r}).glob("*.py")):
            spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        added = sorted({{m.split(".")[0] for m in set(sys.modules) - baseline}})
        print(json.dumps(added))
    """)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "PYTHONPATH": str(REPO_ROOT),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/must-not-exist/airflow.db",
    }
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    added = json.loads(out.stdout.strip().splitlines()[-1])
    assert not set(added) & set(HEAVY), f"DAG parsing imported heavy modules: {sorted(set(added) & set(HEAVY))}"
    assert not (tmp_path / "must-not-exist").exists()


def test_one_replay_dag_per_dataset_config_with_its_params(dagbag) -> None:
    configs = sorted(p.stem for p in (REPO_ROOT / "pipelines" / "conf" / "datasets").glob("*.yaml"))
    assert sorted(d for d in dagbag.dag_ids if d.startswith("replay_")) == [f"replay_{c}" for c in configs]
    dag = dagbag.dags["replay_flights"]
    assert dag.max_active_runs == 1 and dag.catchup is False and dag.schedule is None
    assert set(dag.params.keys()) == {"start", "end", "batch_size", "concurrency"}
    assert [t.task_id for t in dag.tasks] == ["replay"]
