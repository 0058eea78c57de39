"""Training snapshots kept in MLflow, content-addressed: one run per content hash, so the same data is kept once.

A snapshot's local file lives in the run partition of the machine that extracted it; what ``lineage`` points at
and what ``reproduce`` downloads is this copy: the artifact ``snapshot/<data_version>.parquet`` of the run tagged
``data.version = <data_version>`` in the experiment ``<model experiment>-snapshots``. A run is used only once its
upload finished (``snapshot.complete``), so an upload cut short is redone, never read.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pipelines.core import registry
from pipelines.core.config import DatasetConfig
from pipelines.core.errors import PipelineError
from pipelines.core.settings import Settings
from pipelines.data.extract import content_hash, load_snapshot

log = logging.getLogger(__name__)

ARTIFACT_DIR = "snapshot"


def snapshots_experiment(config: DatasetConfig) -> str:
    """The MLflow experiment holding the dataset's training snapshots."""
    return f"{config.model.experiment}-snapshots"


def store_snapshot(config: DatasetConfig, settings: Settings, snapshot: dict[str, Any]) -> str:
    """Upload the snapshot to MLflow unless its content hash is already there; its ``runs:/`` URI."""
    version = str(snapshot["data_version"])
    experiment = snapshots_experiment(config)
    found = registry.find_run_id(settings, experiment, {"data.version": version, "snapshot.complete": "true"})
    artifact = f"{ARTIFACT_DIR}/{version}.parquet"
    if found is not None:
        log.info("snapshot %s already in MLflow (run %s)", version[:12], found)
        return f"runs:/{found}/{artifact}"
    mlf = registry.client(settings)
    run = mlf.create_run(
        registry.experiment_id(settings, experiment),
        run_name=f"{config.name}@{version[:12]}",
        tags={
            "dataset": config.name,
            "data.version": version,
            "data.window": f"[{snapshot.get('window_start') or 'start'}, {snapshot.get('window_end') or 'end'})",
            "data.rows": str(snapshot.get("rows", "")),
        },
    )
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory(prefix="snapshot-") as tmp:
        named = Path(tmp) / f"{version}.parquet"
        shutil.copyfile(snapshot["path"], named)
        mlf.log_artifact(run_id, str(named), ARTIFACT_DIR)
    mlf.set_tag(run_id, "snapshot.complete", "true")
    mlf.set_terminated(run_id)
    log.info("snapshot %s stored in MLflow as run %s", version[:12], run_id)
    return f"runs:/{run_id}/{artifact}"


def fetch_snapshot(settings: Settings, uri: str, expected_version: str, folder: Path) -> Path:
    """Download a stored snapshot into ``folder`` and check its content hash; the local file."""
    import mlflow

    registry.client(settings)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder)))
    found = content_hash(load_snapshot(local))
    if found != expected_version:
        raise PipelineError(f"{uri}: its content hash is {found[:12]}, the record says {expected_version[:12]}")
    return local
