"""Retention against the real things it prunes: run partitions, GX results and Data Docs of real training runs,
and Evidently-sized reports in real MLflow runs of the monitoring experiment, with a real retraining decision."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from pipelines import steps
from pipelines.core import registry
from pipelines.core.runs import RunContext
from pipelines.core.settings import Settings
from pipelines.data.validation.run import data_docs_site_dir, validated_run_keys
from pipelines.monitoring import store
from pipelines.monitoring.monitor import DATASET_TAG, WINDOW_TAG, report_root
from pipelines.monitoring.retention import REMOVED_TAG
from tests.conftest import REPO_ROOT
from tests.stack import train_champion

pytestmark = pytest.mark.integration

AT = datetime(2026, 1, 1, tzinfo=UTC)
REPORT = "<html>" + "x" * 200_000 + "</html>"  # an HTML report's stand-in size: 200 kB


def _policy(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The wine config with a tight policy: the newest run partition, the newest monitored window, no age limit."""
    raw = yaml.safe_load((REPO_ROOT / "pipelines" / "conf" / "datasets" / "wine.yaml").read_text())
    raw["retention"] = {"keep_training_runs": 1, "keep_monitoring_reports": 1, "min_age_hours": 0}
    folder = tmp_path / "datasets"
    folder.mkdir()
    (folder / "wine.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MLOPS_DATASETS_DIR", str(folder))
    from pipelines.core.settings import get_settings

    get_settings.cache_clear()


def _monitoring_run(settings: Settings, window: str) -> str:
    """A window's MLflow run as ``monitor`` leaves it (tags, ``report/`` HTML), and its local report folder."""
    config = steps.dataset_config("wine")
    mlf = registry.client(settings)
    exp = registry.experiment_id(settings, config.monitoring_experiment)
    run_id = mlf.create_run(exp, tags={DATASET_TAG: "wine", WINDOW_TAG: window}).info.run_id
    local = report_root(settings, config) / window
    local.mkdir(parents=True)
    (local / "drift.html").write_text(REPORT)
    (local / "summary.json").write_text("{}")
    mlf.log_artifacts(run_id, str(local), artifact_path="report")
    mlf.set_terminated(run_id)
    return run_id


def test_retention_keeps_the_champions_runs_the_newest_and_the_evidence_and_removes_the_rest(
    isolated_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _policy(isolated_settings, monkeypatch, tmp_path)
    steps.seed("wine")
    # given three training runs (v1, v2, v3 deployed in turn: v3 champion, v2 previous champion)
    for run_id in ("r1", "r2", "r3"):
        chain = train_champion("wine", RunContext(dag_id="train_wine", run_id=run_id, reason="test"), None, None, AT)
        assert "deploy" in chain, chain["gate"]["reasons"]
    keys = ["train_wine__r1", "train_wine__r2", "train_wine__r3"]
    partitions = isolated_settings.data_dir / "wine"
    assert sorted(p.name for p in partitions.iterdir()) == keys
    assert validated_run_keys(isolated_settings, "wine") == keys
    # and three monitored windows, the oldest cited as the evidence of a retraining decision
    runs = {w: _monitoring_run(isolated_settings, w) for w in ("2026-01-01_2026-01-02", "2026-01-02_2026-01-03")}
    runs["2026-01-03_2026-01-04"] = _monitoring_run(isolated_settings, "2026-01-03_2026-01-04")
    evidence = registry.client(isolated_settings).get_run(runs["2026-01-01_2026-01-02"])
    cited = registry.run_url(isolated_settings, evidence.info.experiment_id, evidence.info.run_id)
    store.save_decision(
        isolated_settings.warehouse_url,
        {
            "dataset": "wine",
            "window_end": date(2026, 1, 2),
            "retrain": True,
            "trigger": "drift",
            "summary": "drift",
            "reasons": ["drift in 3 windows"],
            "champion_version": "1",
            "training_run_id": "retrain__wine__2026-01-02",
            "training_conf": {"evidence": cited},
            "run_key": "monitor_wine__x",
            "decided_at": AT,
        },
    )

    # when the policy is applied well after everything's age limit
    result = steps.apply_retention("wine", AT + timedelta(days=400))

    # then r1's partition, GX result and Data Docs page are gone; r2 stays (previous champion), r3 (champion, newest)
    assert result["runs_removed"] == ["train_wine__r1"]
    assert result["reasons"]["train_wine__r2"] == "trained the previous-champion (v2)"
    assert sorted(p.name for p in partitions.iterdir()) == keys[1:]
    assert validated_run_keys(isolated_settings, "wine") == keys[1:]
    assert not (data_docs_site_dir(isolated_settings) / "validations" / "wine" / "train_wine__r1").exists()
    index = (data_docs_site_dir(isolated_settings) / "index.html").read_text()
    assert "train_wine__r1" not in index and "train_wine__r3" in index
    # and of the windows' reports: the newest and the cited one stay, the middle one is removed here and in MLflow
    assert result["reports_removed"] == ["2026-01-02_2026-01-03"]
    assert result["reasons"]["2026-01-01_2026-01-02"] == "cited as the evidence of a retraining decision"
    root = report_root(isolated_settings, steps.dataset_config("wine"))
    assert not (root / "2026-01-02_2026-01-03" / "drift.html").exists()
    assert (root / "2026-01-02_2026-01-03" / "summary.json").exists()  # the numbers are kept
    mlf = registry.client(isolated_settings)
    assert [f.path for f in mlf.list_artifacts(runs["2026-01-02_2026-01-03"], "report")] == []
    assert REMOVED_TAG in mlf.get_run(runs["2026-01-02_2026-01-03"]).data.tags
    assert len(mlf.list_artifacts(runs["2026-01-01_2026-01-02"], "report")) == 2
    assert result["bytes_freed"] > 400_000  # two copies of one 200 kB report, and r1's snapshot

    # when it is applied again, then nothing more is removed
    again = steps.apply_retention("wine", AT + timedelta(days=400))
    assert again["runs_removed"] == [] and again["reports_removed"] == [] and again["bytes_freed"] == 0
