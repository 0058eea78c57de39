"""Retention: what the ``maintenance`` DAG keeps of a dataset's runtime files and reports, and removes the rest.

Three kinds of things grow with every run (the demo leaves about 500 MB):

- **run partitions** ``<home>/data/<dataset>/<run key>/`` (snapshot Parquet, step results) and the **GX results and
  Data Docs pages** of the same run keys;
- **Evidently HTML reports** of each monitored window (about 4.5 MB each): the local copy
  ``<home>/monitoring/<dataset>/<window>/*.html`` and the ``report/`` artifacts of the window's MLflow run.

The policy (``retention`` in the dataset's config) keeps the newest ``keep_training_runs`` partitions and
``keep_monitoring_reports`` windows, and always: the partitions of the runs that trained the champion and the
previous champion, the reports a retraining decision cites as its evidence, and anything younger than
``min_age_hours`` (a run may still wait for its approval). Metrics, tags, the audit trail, the snapshot stored in
MLflow (``lineage``) and the monitoring results table are never removed. Deciding is a pure function
(:func:`plan`); applying it removes only what the plan lists, so running it twice removes nothing the second time.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipelines.core import registry
from pipelines.core.config import DatasetConfig, RetentionPolicy
from pipelines.core.settings import Settings
from pipelines.monitoring import store
from pipelines.monitoring.monitor import DATASET_TAG, WINDOW_TAG, report_root

log = logging.getLogger(__name__)

REPORT_ARTIFACTS = "report"
REMOVED_TAG = "retention.report_removed"


@dataclass(frozen=True)
class Item:
    """One thing retention may remove: its key (run key or window), when it was made, and why it must stay."""

    key: str
    made_at: datetime
    protected_because: str = ""


@dataclass(frozen=True)
class Verdict:
    key: str
    keep: bool
    reason: str


def plan(items: list[Item], keep_newest: int, young_since: datetime) -> list[Verdict]:
    """Keep the ``keep_newest`` newest items, the protected ones and those made after ``young_since``; newest first."""
    verdicts = []
    for rank, item in enumerate(sorted(items, key=lambda i: (i.made_at, i.key), reverse=True)):
        if item.protected_because:
            verdicts.append(Verdict(item.key, True, item.protected_because))
        elif rank < keep_newest:
            verdicts.append(Verdict(item.key, True, f"among the {keep_newest} newest"))
        elif item.made_at > young_since:
            verdicts.append(Verdict(item.key, True, f"younger than {young_since.isoformat(timespec='minutes')}"))
        else:
            verdicts.append(Verdict(item.key, False, f"older than the {keep_newest} newest"))
    return verdicts


@dataclass
class RetentionResult:
    """What one application of the policy kept and removed for a dataset."""

    dataset: str
    runs_kept: list[str] = field(default_factory=list)
    runs_removed: list[str] = field(default_factory=list)
    reports_kept: list[str] = field(default_factory=list)
    reports_removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    reasons: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def apply_retention(config: DatasetConfig, settings: Settings, at: datetime) -> RetentionResult:
    """Apply the dataset's retention policy as of ``at`` (the maintenance run's logical time)."""
    policy: RetentionPolicy = config.retention
    young_since = at - timedelta(hours=policy.min_age_hours)
    result = RetentionResult(dataset=config.name)
    runs = plan(_run_items(config, settings), policy.keep_training_runs, young_since)
    for verdict in runs:
        result.reasons[verdict.key] = verdict.reason
        (result.runs_kept if verdict.keep else result.runs_removed).append(verdict.key)
    for key in result.runs_removed:
        result.bytes_freed += _remove_tree(settings.data_dir / config.name / key)
    if result.runs_removed:
        from pipelines.data.validation.run import forget_validations, validated_run_keys

        stale = sorted(set(result.runs_removed) & set(validated_run_keys(settings, config.expectation_suite)))
        result.bytes_freed += forget_validations(settings, config.expectation_suite, stale)
    windows, mlflow_runs = _report_items(config, settings)
    for verdict in plan(windows, policy.keep_monitoring_reports, young_since):
        result.reasons[verdict.key] = verdict.reason
        (result.reports_kept if verdict.keep else result.reports_removed).append(verdict.key)
    for window in result.reports_removed:
        result.bytes_freed += _remove_reports(settings, config, window, mlflow_runs.get(window), at)
    log.info(
        "retention of %s: %d run partitions kept, %d removed; %d windows' reports kept, %d removed; %.1f MB freed",
        config.name,
        len(result.runs_kept),
        len(result.runs_removed),
        len(result.reports_kept),
        len(result.reports_removed),
        result.bytes_freed / 1e6,
    )
    return result


def _run_items(config: DatasetConfig, settings: Settings) -> list[Item]:
    """Every run partition of the dataset, those of the champion's and previous champion's runs protected."""
    root = settings.data_dir / config.name
    if not root.is_dir():
        return []
    protected = {}
    for alias in (registry.CHAMPION, "previous-champion"):
        version = registry.alias_version(settings, config.model.registered_name, alias)
        if version is not None and version.tags.get("run.key"):
            protected[version.tags["run.key"]] = f"trained the {alias} (v{version.version})"
    return [Item(p.name, _mtime(p), protected.get(p.name, "")) for p in sorted(root.iterdir()) if p.is_dir()]


def _report_items(config: DatasetConfig, settings: Settings) -> tuple[list[Item], dict[str, str]]:
    """Every monitored window with a report (local or in MLflow), those cited as evidence protected, and the
    window's MLflow run id."""
    cited = {
        str(url)
        for decision in store.decisions(settings.warehouse_url, config.name, retrain_only=True)
        for url in [(decision.get("training_conf") or {}).get("evidence")]
        if url
    }
    local_root = report_root(settings, config)
    made: dict[str, datetime] = {}
    if local_root.is_dir():
        made = {p.name: _mtime(p) for p in local_root.iterdir() if p.is_dir() and any(p.glob("*.html"))}
    runs: dict[str, str] = {}
    protected: dict[str, str] = {}
    mlf = registry.client(settings)
    experiment = mlf.get_experiment_by_name(config.monitoring_experiment)
    if experiment is not None:
        query = f"tags.`{DATASET_TAG}` = '{config.name}'"
        for run in mlf.search_runs([experiment.experiment_id], filter_string=query, max_results=50_000):
            window = run.data.tags.get(WINDOW_TAG)
            if not window or REMOVED_TAG in run.data.tags:
                continue
            runs[window] = run.info.run_id
            made.setdefault(window, datetime.fromtimestamp((run.info.end_time or run.info.start_time) / 1000, UTC))
            if any(run.info.run_id in url for url in cited):
                protected[window] = "cited as the evidence of a retraining decision"
    items = [Item(window, when, protected.get(window, "")) for window, when in made.items()]
    return items, runs


def _remove_reports(settings: Settings, config: DatasetConfig, window: str, run_id: str | None, at: datetime) -> int:
    """Remove the window's local HTML reports and its MLflow run's ``report/`` artifacts (tagging the run)."""
    freed = 0
    folder = report_root(settings, config) / window
    for page in folder.glob("*.html") if folder.is_dir() else []:
        freed += page.stat().st_size
        page.unlink()
    if run_id is not None:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        mlf = registry.client(settings)
        repo = get_artifact_repository(mlf.get_run(run_id).info.artifact_uri)
        freed += sum(f.file_size or 0 for f in repo.list_artifacts(REPORT_ARTIFACTS) if not f.is_dir)
        repo.delete_artifacts(REPORT_ARTIFACTS)  # type: ignore[no-untyped-call]
        mlf.set_tag(run_id, REMOVED_TAG, f"{at.isoformat(timespec='seconds')} (retention.keep_monitoring_reports)")
    return freed


def _remove_tree(path: Path) -> int:
    if not path.is_dir():
        return 0
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    shutil.rmtree(path)
    return size


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)
