"""The champion's monitoring reference: its own training snapshot, scored by itself, with calibrated thresholds.

Prepared once per model version, when it is deployed (``record_reference``): the snapshot's rows with a known
outcome become features + target + the model's probability, sampled uniformly to ``drift.reference_rows``; the
per-feature drift thresholds are calibrated on the snapshot's days. Both are logged as artifacts of the version's
training run (``monitoring/``) and tagged on the version, so any worker can fetch them; a local copy under
``<home>/monitoring/<dataset>/reference/v<version>/`` saves the download.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.core import registry
from pipelines.core.config import DatasetConfig
from pipelines.core.errors import NotFoundError, PipelineError
from pipelines.core.settings import Settings
from pipelines.monitoring.drift import DAY, PROBABILITY, calibrate, sample_rows

log = logging.getLogger(__name__)

ARTIFACT_DIR = "monitoring"
FRAME_FILE = "reference.parquet"
INFO_FILE = "reference.json"
TAG = "monitoring.reference"


@dataclass(frozen=True)
class Reference:
    """A version's reference rows and the thresholds its live windows are judged by."""

    version: str
    frame: pd.DataFrame
    thresholds: dict[str, float]
    info: dict[str, Any]


def local_dir(settings: Settings, config: DatasetConfig, version: str) -> Path:
    """Where a version's reference is kept on this machine."""
    return settings.home / "monitoring" / config.name / "reference" / f"v{version}"


def data_time_missing(config: DatasetConfig) -> bool:
    """Whether the dataset has no time column (its monitoring windows cannot be calibrated by day)."""
    return config.time_column is None


def build_reference(config: DatasetConfig, model: Any, snapshot: pd.DataFrame, version: str) -> Reference:
    """Score the snapshot's labelled rows with ``model``, sample them and calibrate the thresholds on its days."""
    from pipelines.data.features import prepare

    if config.task != "binary" or data_time_missing(config):
        raise PipelineError(
            f"dataset {config.name!r}: drift monitoring against a reference is built for binary targets with a time "
            f"column; {config.task} without daily windows is not monitored yet"
        )
    data = prepare(snapshot, config)
    assert data.time is not None
    frame = data.features.copy()
    frame[config.target.label] = data.target.to_numpy()
    frame[PROBABILITY] = model.predict_proba(data.features)[:, 1]
    frame[DAY] = data.time.dt.normalize().to_numpy()
    drift = config.monitoring.drift
    sample = sample_rows(frame, drift.reference_rows, config.model.seed).reset_index(drop=True)
    days = (group for _, group in frame.groupby(DAY, sort=True))
    thresholds, calibration = calibrate(sample, days, config)
    info = {
        "version": version,
        "rows": len(frame),
        "rows_kept": len(sample),
        "first_day": str(frame[DAY].min().date()),
        "last_day": str(frame[DAY].max().date()),
        "positive_rate": round(float(frame[config.target.label].mean()), 6),
        "calibration": calibration,
        "thresholds": thresholds,
    }
    log.info(
        "reference for v%s: %d of %d rows, %s..%s; thresholds %s",
        version,
        len(sample),
        len(frame),
        info["first_day"],
        info["last_day"],
        ", ".join(f"{k} {v:.3g}" for k, v in thresholds.items()),
    )
    return Reference(version=version, frame=sample, thresholds=thresholds, info=info)


def _write(reference: Reference, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{FRAME_FILE}.tmp"
    reference.frame.to_parquet(tmp, index=False)
    tmp.replace(folder / FRAME_FILE)
    (folder / INFO_FILE).write_text(json.dumps(reference.info, indent=2))


def _read(folder: Path) -> Reference:
    info = json.loads((folder / INFO_FILE).read_text())
    return Reference(
        version=str(info["version"]),
        frame=pd.read_parquet(folder / FRAME_FILE),
        thresholds={k: float(v) for k, v in info["thresholds"].items()},
        info=info,
    )


def record_reference(config: DatasetConfig, settings: Settings, name: str, version: str) -> dict[str, Any]:
    """Prepare ``version``'s reference from its training snapshot and log it to its run (idempotent)."""
    import mlflow.sklearn

    mlf = registry.client(settings)
    model_version = mlf.get_model_version(name, version)
    if model_version.tags.get(TAG):
        log.info("v%s already has its monitoring reference (%s)", version, model_version.tags[TAG])
        return {"version": version, "reference": model_version.tags[TAG], "reused": True}
    snapshot_path = model_version.tags.get("data.snapshot", "")
    if not snapshot_path or not Path(snapshot_path).is_file():
        raise NotFoundError(
            f"{name} v{version}: its training snapshot {snapshot_path or '(no data.snapshot tag)'} is not on this "
            "machine, so its monitoring reference cannot be prepared"
        )
    from pipelines.data.extract import load_snapshot

    model = mlflow.sklearn.load_model(f"models:/{name}/{version}")
    reference = build_reference(config, model, load_snapshot(snapshot_path), version)
    folder = local_dir(settings, config, version)
    _write(reference, folder)
    if model_version.run_id:
        mlf.log_artifacts(model_version.run_id, str(folder), artifact_path=ARTIFACT_DIR)
    uri = f"runs:/{model_version.run_id}/{ARTIFACT_DIR}" if model_version.run_id else str(folder)
    registry.set_version_tags(
        settings,
        name,
        version,
        {TAG: uri, "monitoring.reference_rows": reference.info["rows_kept"]},
    )
    return {"version": version, "reference": uri, "reused": False, "rows": reference.info["rows_kept"]}


def load_reference(config: DatasetConfig, settings: Settings, name: str, version: str) -> Reference:
    """``version``'s reference: the local copy, else downloaded from its run, else prepared now."""
    folder = local_dir(settings, config, version)
    if (folder / INFO_FILE).is_file() and (folder / FRAME_FILE).is_file():
        return _read(folder)
    mlf = registry.client(settings)
    model_version = mlf.get_model_version(name, version)
    if not model_version.tags.get(TAG):
        log.info("v%s has no monitoring reference yet (deployed before monitoring existed): preparing it", version)
        record_reference(config, settings, name, version)
        return _read(folder)
    import mlflow.artifacts

    with tempfile.TemporaryDirectory() as tmp:
        got = Path(mlflow.artifacts.download_artifacts(model_version.tags[TAG], dst_path=tmp))
        folder.mkdir(parents=True, exist_ok=True)
        for file in (FRAME_FILE, INFO_FILE):
            shutil.copy(got / file, folder / file)
    return _read(folder)
