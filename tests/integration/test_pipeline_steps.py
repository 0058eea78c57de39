"""The pipeline's steps without Airflow, against a real MLflow store, real GX and a real SQLite warehouse.

Covers what the DAG relies on: lineage and decisions on the model version, idempotent reruns, the gate
refusing a crippled model, the smoke test putting the alias back, and rollback. The module's two tests share one
runtime folder and its champion v1 (trained once); the second adds versions after the first's.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipelines import steps
from pipelines.cli import main
from pipelines.core import artifact_digests, audit, registry
from pipelines.core.errors import SmokeTestError
from pipelines.core.runs import RunContext
from pipelines.core.settings import Settings
from tests.conftest import REPO_ROOT, settings_in
from tests.stack import train_champion

pytestmark = pytest.mark.integration

# Two months: the smallest window on which the shipped gate policy (slice floors included) passes.
START, END = "2013-01-01", "2013-03-01"
AT = datetime(2026, 1, 1, tzinfo=UTC)
CRIPPLED = {"model": {"estimator": "sklearn.dummy.DummyClassifier", "params": {"strategy": "prior"}}}


def _run_all(run: RunContext, overrides: dict | None = None, start: str = START, end: str = END) -> dict:
    return train_champion("flights", run, start, end, AT, overrides)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The module's runtime folder: warehouse, MLflow store, snapshots and Data Docs."""
    with settings_in(tmp_path_factory.mktemp("pipeline-steps") / "runtime") as isolated:
        yield isolated


@pytest.fixture(scope="module")
def first(settings: Settings) -> dict:
    """January-March 2013 seeded; the pipeline's chain run on January and February as ``first``: v1, deployed."""
    steps.seed("flights", START, "2013-04-01")
    return _run_all(RunContext(dag_id="train_flights", run_id="first", reason="test"))


def _assert_described_for_data_scientists(settings, first: dict, tags: dict[str, str]) -> str:
    """The experiment is a model-training one, v1's description and the model's say what they should, the plots
    are one folder from the run's root; returns v1's description."""
    mlf = registry.client(settings)
    experiment = mlf.get_experiment(first["trained"]["experiment_id"])
    assert experiment.tags[registry.EXPERIMENT_KIND_TAG] == registry.MODEL_TRAINING_KIND
    description = mlf.get_model_version("flights-delay", "1").description
    assert f"- content hash: `{first['snapshot']['data_version']}`" in description
    assert f"- window: {tags['data.window']}" in description and f"- rows: {tags['data.rows']}" in description
    assert "reason: test" in description and "No champion to compare with." in description
    assert f"| roc_auc | {first['evaluation']['candidate']['roc_auc']:.4f} | – | – |" in description
    assert "### Gate\n**passed**\n- " in description
    assert "**approved** by policy at " in description and "**champion** since " in description
    assert "gt 15" in mlf.get_registered_model("flights-delay").description
    plots = {a.path for a in mlf.list_artifacts(first["trained"]["run_id"], "plots")}
    assert {"plots/roc.png", "plots/confusion_matrix.png"} <= plots, plots
    return description


def _assert_refused_and_described(settings, version: str) -> None:
    refused = registry.client(settings).get_model_version("flights-delay", version)
    assert refused.tags["gate.decision"] == "failed"
    assert "| metric | candidate | champion v1 | difference |" in refused.description
    assert "**failed**" in refused.description and "- FAIL " in refused.description
    assert "not decided yet" in refused.description and "not deployed" in refused.description


def test_training_deploys_a_champion_with_lineage_then_refuses_a_crippled_model(settings, first) -> None:
    # given a warehouse holding the first quarter of 2013, when the pipeline ran on January and February (first)
    # then version 1 is the champion and carries lineage, gate decision and approver
    assert first["gate"]["passed"], first["gate"]["reasons"]
    assert first["deploy"]["champion_version"] == "1"
    champion = registry.alias_version(settings, "flights-delay", registry.CHAMPION)
    assert champion is not None and str(champion.version) == "1"
    tags = champion.tags
    assert tags["airflow.dag_id"] == "train_flights" and tags["airflow.run_id"] == "first"
    assert tags["data.version"] == first["snapshot"]["data_version"]
    assert tags["git.commit"] and tags["gate.decision"] == "passed"
    assert tags["approval.status"] == "approved" and tags["approval.by"] == "policy"
    assert first["evaluation"]["candidate"]["roc_auc"] > 0.6
    assert first["snapshot"]["rows_without_outcome"] > 0
    # and the MLflow UI reads it as a model-training experiment, its version and model described for people
    v1_description = _assert_described_for_data_scientists(settings, first, tags)

    # when the same run is repeated, then nothing is duplicated and the alias does not move
    again = _run_all(RunContext(dag_id="train_flights", run_id="first", reason="test"))
    assert again["trained"]["model_version"] == "1" and again["trained"]["reused"]
    assert again["deploy"]["changed"] is False
    versions = registry.client(settings).search_model_versions("name = 'flights-delay'")
    assert [(str(v.version), v.description) for v in versions] == [("1", v1_description)]  # same facts, same text
    # and v1's files are bound to it: one trained and one approved digest in the warehouse, both the same files,
    # the approver on the approved one, and the tag people read showing the same sha256
    digests = artifact_digests.history(settings.warehouse_url, "flights-delay")
    assert [(d["model_version"], d["stage"], d["actor"]) for d in digests] == [
        ("1", "trained", "train_flights"),
        ("1", "approved", "policy"),
    ]
    assert digests[0]["digest"] == digests[1]["digest"] == tags["artifact.sha256"]
    assert "model.skops" in digests[0]["files"] and "MLmodel" in digests[0]["files"]

    # when a crippled model is trained on the same window
    worse = _run_all(RunContext(dag_id="train_flights", run_id="crippled", reason="test"), CRIPPLED)

    # then the gate refuses it with reasons, it is tagged, and the champion does not move
    assert not worse["gate"]["passed"]
    assert any("roc_auc" in r for r in worse["gate"]["reasons"] if r.startswith("FAIL"))
    assert "deploy" not in worse
    # (and its description compares it with champion v1 and gives the gate's failures, with nothing approved)
    _assert_refused_and_described(settings, worse["trained"]["model_version"])
    assert str(registry.alias_version(settings, "flights-delay", registry.CHAMPION).version) == "1"
    events = [(row["model_version"], row["event"]) for row in audit.history(settings.warehouse_url, "flights-delay")]
    assert ("1", "approved") in events and ("1", "deployed") in events and ("2", "gate_failed") in events

    # when the champion's lineage is asked for, then it names its data, suite, code, config and decisions
    record = steps.lineage("flights")
    assert record["model"]["version"] == "1" and record["why"]["run_id"] == "first"
    assert record["data"]["content_hash"] == first["snapshot"]["data_version"]
    assert record["data"]["snapshot"].startswith("runs:/") and record["gate"]["decision"] == "passed"
    assert record["approval"]["by"] == "policy" and record["deployment"]["previous_version"] is None
    assert record["artifact"]["approved_sha256"] == tags["artifact.sha256"]
    # and the two versions trained on the same window share one stored snapshot (content-addressed)
    assert steps.lineage("flights", "2")["data"]["snapshot"] == record["data"]["snapshot"]

    # when each version is rebuilt from its MLflow record, then both give bit-equal holdout predictions, the
    # crippled one with its run's overrides (the recorded config is the effective one)
    assert steps.reproduce("flights")["bit_equal"]
    crippled = steps.reproduce("flights", worse["trained"]["model_version"])
    assert crippled["bit_equal"] and crippled["holdout_rows"] > 1000
    assert steps.lineage("flights", "2")["config"]["estimator"] == "sklearn.dummy.DummyClassifier"

    # when the recorded predictions of v2 are changed in the artifact store, then reproduce says so and fails
    recorded = next((settings.home / "mlflow").rglob(f"{worse['trained']['run_id']}/**/holdout_predictions.npy"))
    values = np.load(recorded)
    values[7] += 1e-9
    np.save(recorded, values)
    assert main(["reproduce", "--dataset", "flights", "--version", "2"]) == 1
    changed = steps.reproduce("flights", "2")
    assert not changed["bit_equal"] and changed["differing_values"] == 1
    assert changed["max_abs_difference"] == pytest.approx(1e-9, rel=1e-3)


def test_a_candidate_failing_its_smoke_test_is_never_champion_and_rollback_works(
    settings, first, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.core.settings import get_settings

    # given champion v1 (first) and the versions the module made before
    assert str(registry.alias_version(settings, "flights-delay", registry.CHAMPION).version) == "1"
    before = len(registry.client(settings).search_model_versions("name = 'flights-delay'"))
    candidate, good = str(before + 1), str(before + 2)

    # given a candidate whose smoke test cannot pass: the flights config with a latency budget no model meets (a
    # config change: a run's overrides cannot loosen or tighten the deploy policy)
    config = yaml.safe_load((REPO_ROOT / "pipelines" / "conf" / "datasets" / "flights.yaml").read_text())
    config.setdefault("deploy", {})["max_latency_ms"] = 0.0001
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "flights.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("MLOPS_DATASETS_DIR", str(tmp_path / "datasets"))
    get_settings.cache_clear()
    seen: set[str] = set()  # every version the champion alias pointed at while the candidate was deployed
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            current = registry.alias_version(settings, "flights-delay", registry.CHAMPION)
            seen.add(str(current.version) if current else "none")
            done.wait(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with pytest.raises(SmokeTestError, match=r"latency.*champion stays v1"):
            _run_all(
                RunContext(dag_id="train_flights", run_id="too_slow", reason="test"),
                start="2013-01-15",
                end="2013-03-15",
            )
    finally:
        done.set()
        watcher.join(5)
    monkeypatch.delenv("MLOPS_DATASETS_DIR")
    get_settings.cache_clear()
    # then the champion is still version 1, and never pointed at the candidate (a service polling it never saw it)
    assert str(registry.alias_version(settings, "flights-delay", registry.CHAMPION).version) == "1"
    assert seen == {"1"}
    # and the failure is on record
    failed = registry.client(settings).get_model_version("flights-delay", candidate)
    assert failed.tags["deploy.status"] == "smoke_test_failed"

    # given a good second model deployed over version 1
    better = _run_all(
        RunContext(dag_id="train_flights", run_id="better", reason="test"), start="2013-01-20", end="2013-03-20"
    )
    assert better["deploy"]["champion_version"] == good and better["deploy"]["previous_version"] == "1"
    assert str(registry.alias_version(settings, "flights-delay", registry.PREVIOUS).version) == "1"

    # when ops roll back from a shell
    out = subprocess.run(
        [sys.executable, "-m", "pipelines", "rollback", "--dataset", "flights", "--comment", "bad in prod"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    # then version 1 is champion again and the good one is the one to go back to
    assert str(registry.alias_version(settings, "flights-delay", registry.CHAMPION).version) == "1"
    assert str(registry.alias_version(settings, "flights-delay", registry.PREVIOUS).version) == good
