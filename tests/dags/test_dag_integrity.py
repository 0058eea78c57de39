"""DAG integrity: every DAG imports, has no cycle, sets retries and tags, and parsing is cheap and offline."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk.exceptions import AirflowFailException

from pipelines.core.config import load_config_file
from pipelines.core.settings import get_settings
from tests.conftest import REPO_ROOT

DAGS = REPO_ROOT / "dags"
SHIPPED = REPO_ROOT / "pipelines" / "conf" / "datasets"
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


@pytest.mark.parametrize("with_broken_configs", [False, True], ids=["shipped", "shipped+broken"])
def test_parsing_touches_no_database_network_or_heavy_import(tmp_path: Path, with_broken_configs: bool) -> None:
    """Parse every DAG file in a fresh interpreter where opening a socket or a database engine raises."""
    datasets_dir = _datasets_with_broken_configs(tmp_path / "datasets") if with_broken_configs else SHIPPED
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
        from airflow.sdk import DAG
        placeholders = []
        for path in sorted(pathlib.Path({str(DAGS)!r}).glob("*.py")):
            spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            placeholders += [d.dag_id for d in vars(module).values() if isinstance(d, DAG) and "config-error" in d.tags]
        added = sorted({{m.split(".")[0] for m in set(sys.modules) - baseline}})
        print(json.dumps({{"added": added, "placeholders": sorted(placeholders)}}))
    """)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "PYTHONPATH": str(REPO_ROOT),
        "MLOPS_DATASETS_DIR": str(datasets_dir),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/must-not-exist/airflow.db",
    }
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    parsed = json.loads(out.stdout.strip().splitlines()[-1])
    added = set(parsed["added"])
    assert not added & set(HEAVY), f"DAG parsing imported heavy modules: {sorted(added & set(HEAVY))}"
    assert not (tmp_path / "must-not-exist").exists()
    broken = ["broken_yaml", "wrong_metric"] if with_broken_configs else []
    prefixes = ("maintain", "monitor", "replay", "train")
    assert parsed["placeholders"] == sorted(f"{p}_{b}" for p in prefixes for b in broken)


def test_one_replay_dag_per_dataset_with_days_to_replay_with_its_params(dagbag) -> None:
    # given the shipped configs, of which only those with a time column and a staged/file/table source have days
    configs = [load_config_file(p) for p in sorted(SHIPPED.glob("*.yaml"))]
    replayable = [c.name for c in configs if c.time_column and c.source.kind in {"staged", "file", "table"}]
    assert "flights" in replayable and "wine" not in replayable

    # then exactly those have a replay DAG, with the window's params
    assert sorted(d for d in dagbag.dag_ids if d.startswith("replay_")) == [f"replay_{c}" for c in replayable]
    dag = dagbag.dags["replay_flights"]
    assert dag.max_active_runs == 1 and dag.catchup is False and dag.schedule is None
    assert set(dag.params.keys()) == {"start", "end", "batch_size", "concurrency"}
    assert [t.task_id for t in dag.tasks] == ["replay"]


BROKEN_YAML = "name: broken_yaml\ndescription: [an unclosed list\n"
WRONG_METRIC = {"from": "wine", "replace": ("floors: {accuracy: 0.85, f1_macro: 0.85}", "floors: {roc_auc: 0.9}")}


def _datasets_with_broken_configs(folder: Path) -> Path:
    """The shipped configs, one YAML syntax error (``broken_yaml``) and one multiclass config gated on roc_auc."""
    folder.mkdir(parents=True)
    for path in SHIPPED.glob("*.yaml"):
        (folder / path.name).write_text(path.read_text())
    (folder / "broken_yaml.yaml").write_text(BROKEN_YAML)
    wine = (SHIPPED / "wine.yaml").read_text()
    old, new = WRONG_METRIC["replace"]
    assert old in wine, "the wine example's gate changed: update WRONG_METRIC"
    (folder / "wrong_metric.yaml").write_text(wine.replace("name: wine", "name: wrong_metric").replace(old, new))
    return folder


@pytest.fixture
def broken_dagbag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The DAG folder parsed with the shipped configs plus two broken ones (settings re-read, then restored)."""
    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path / "airflow_home"))
    monkeypatch.setenv("MLOPS_DATASETS_DIR", str(_datasets_with_broken_configs(tmp_path / "datasets")))
    get_settings.cache_clear()
    from airflow.dag_processing.dagbag import DagBag

    yield DagBag(dag_folder=str(DAGS))
    get_settings.cache_clear()


def test_a_broken_config_leaves_every_other_dataset_its_dags(broken_dagbag) -> None:
    # given the shipped configs plus a YAML syntax error and a config gated on a metric of another task
    shipped = sorted(p.stem for p in SHIPPED.glob("*.yaml"))

    # when the DAG folder is parsed, then nothing fails to import
    assert broken_dagbag.import_errors == {}
    # and every shipped dataset keeps its real training and monitoring DAGs
    for name in shipped:
        for prefix in ("train", "monitor"):
            dag = broken_dagbag.dags[f"{prefix}_{name}"]
            assert "config-error" not in dag.tags, dag.dag_id
            assert name in dag.tags
    assert "extract" in broken_dagbag.dags["train_flights"].task_ids
    assert "replay" in broken_dagbag.dags["replay_flights"].task_ids


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("broken_yaml", "broken_yaml.yaml: not valid YAML"),
        ("wrong_metric", "wrong_metric.yaml: gate.floors: metric(s) ['roc_auc'] do not belong to a multiclass task"),
    ],
)
def test_a_broken_config_becomes_placeholder_dags_that_fail_with_its_error(broken_dagbag, name, expected) -> None:
    # given the DAG folder parsed with a broken config among the shipped ones
    for prefix in ("train", "monitor", "replay"):
        # then each of its DAGs is a manual placeholder tagged config-error, its doc showing the error
        dag = broken_dagbag.dags[f"{prefix}_{name}"]
        assert set(dag.tags) == {"config-error"}
        assert dag.schedule is None
        assert expected in dag.doc_md
        assert dag.task_ids == ["config_error"]
        task = dag.get_task("config_error")
        assert task.retries == 0, "a broken file does not fix itself"

        # when its one task runs, then it fails (for good) with the file and the field
        with pytest.raises(AirflowFailException, match=re.escape(expected)):
            task.python_callable()
