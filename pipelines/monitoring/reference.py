"""The champion's monitoring reference: its own training snapshot, scored by itself, with calibrated thresholds.

Prepared once per model version, when it is deployed (``record_reference``): the snapshot's rows with a known
outcome become features + target + the model's prediction (:func:`pipelines.monitoring.drift.prediction_column`:
the positive class's probability, the predicted class or the predicted value, as the task has it), sampled
uniformly to ``drift.reference_rows``; the per-feature drift thresholds are calibrated on the snapshot's days, or,
without a time column, on equal-size seeded random chunks of it (see :func:`build_reference`). Both are logged as
artifacts of the version's
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

import numpy as np
import pandas as pd

from pipelines.core import registry
from pipelines.core.config import DatasetConfig
from pipelines.core.errors import NotFoundError
from pipelines.core.model_files import load_registered_model, trusted_types
from pipelines.core.settings import Settings
from pipelines.monitoring.drift import (
    DAY,
    calibrate,
    judged_columns,
    prediction_column,
    random_chunks,
    sample_rows,
)

log = logging.getLogger(__name__)

ARTIFACT_DIR = "monitoring"
FRAME_FILE = "reference.parquet"
INFO_FILE = "reference.json"
TAG = "monitoring.reference"
# Without a time column: at most this many random chunks stand in for the days of the calibration.
CALIBRATION_CHUNKS = 30
# Fewer chunks than this make no spread to calibrate on: the fixed threshold applies.
MIN_CALIBRATION_CHUNKS = 5


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


def model_predictions(model: Any, features: pd.DataFrame, task: str) -> np.ndarray:
    """What the model answers for ``features``, as the prediction log holds it: P(positive) (binary), the class
    of highest probability, as text (multiclass), or the predicted value (regression)."""
    from pipelines.training.modeling import model_classes, predictions

    predicted = predictions(model, features, task)
    if task != "multiclass":
        return predicted
    classes = np.asarray([str(c) for c in model_classes(model)], dtype=object)
    chosen: np.ndarray = classes[predicted.argmax(axis=1)]
    return chosen


def build_reference(config: DatasetConfig, model: Any, snapshot: pd.DataFrame, version: str) -> Reference:
    """Score the snapshot's labelled rows with ``model``, sample them and calibrate the drift thresholds.

    With a time column, the thresholds are calibrated on the snapshot's days, as live windows are days. Without
    one, live windows are days of serving (``served_at``) whose rows come from anywhere in the data: the days of
    the calibration are replaced by up to ``CALIBRATION_CHUNKS`` disjoint random chunks of ``monitoring.min_rows``
    rows each (seeded by ``model.seed``), the smallest window monitoring judges. When the snapshot holds fewer than
    ``MIN_CALIBRATION_CHUNKS`` such chunks, every column gets the fixed ``drift.threshold``. The info says which
    (``calibration.by``: ``day``, ``random_chunks`` or ``fixed``).
    """
    from pipelines.data.features import prepare

    data = prepare(snapshot, config)
    frame = data.features.copy()
    target = config.target.label
    frame[target] = data.target.to_numpy()
    frame[prediction_column(config.task)] = model_predictions(model, data.features, config.task)
    if data.time is not None:
        frame[DAY] = data.time.dt.normalize().to_numpy()
    drift = config.monitoring.drift
    sample = sample_rows(frame, drift.reference_rows, config.model.seed).reset_index(drop=True)
    thresholds, calibration = _calibrate(sample, frame, config)
    info: dict[str, Any] = {"version": version, "task": config.task, "rows": len(frame), "rows_kept": len(sample)}
    if data.time is not None:
        info["first_day"] = str(frame[DAY].min().date())
        info["last_day"] = str(frame[DAY].max().date())
    info.update(_target_summary(frame[target], config.task))
    info.update(
        {"prediction_column": prediction_column(config.task), "calibration": calibration, "thresholds": thresholds}
    )
    log.info(
        "reference for v%s: %d of %d rows%s; thresholds (%s) %s",
        version,
        len(sample),
        len(frame),
        f", {info['first_day']}..{info['last_day']}" if data.time is not None else "",
        calibration["by"],
        ", ".join(f"{k} {v:.3g}" for k, v in thresholds.items()),
    )
    return Reference(version=version, frame=sample, thresholds=thresholds, info=info)


def _calibrate(
    sample: pd.DataFrame, frame: pd.DataFrame, config: DatasetConfig
) -> tuple[dict[str, float], dict[str, Any]]:
    """Thresholds calibrated by day (time column), by random chunks, or fixed (see :func:`build_reference`)."""
    drift = config.monitoring.drift
    if DAY in frame or not drift.calibrate:
        days = (group for _, group in frame.groupby(DAY, sort=True)) if DAY in frame else iter(())
        thresholds, info = calibrate(sample, days, config)
        return thresholds, {**info, "by": "day" if info["calibrated"] else "fixed"}
    rows = config.monitoring.min_rows
    chunks = random_chunks(frame, rows, CALIBRATION_CHUNKS, config.model.seed)
    if len(chunks) < MIN_CALIBRATION_CHUNKS:
        reason = (
            f"no time column, and {len(frame)} labelled rows make {len(chunks)} chunks of {rows} rows "
            f"(monitoring.min_rows), fewer than the {MIN_CALIBRATION_CHUNKS} a calibration needs"
        )
        log.warning("dataset %s: %s; the fixed threshold %s applies", config.name, reason, drift.threshold)
        thresholds = dict.fromkeys(judged_columns(sample, config), drift.threshold)
        return thresholds, {"calibrated": False, "by": "fixed", "threshold": drift.threshold, "reason": reason}
    thresholds, info = calibrate(sample, chunks, config)
    info = {k: v for k, v in info.items() if k != "days"}
    return thresholds, {**info, "by": "random_chunks", "chunks": len(chunks), "chunk_rows": rows}


def _target_summary(target: pd.Series, task: str) -> dict[str, Any]:
    """What the reference's outcomes look like: the positive rate, the class shares, or the value's spread."""
    if task == "binary":
        return {"positive_rate": round(float(target.mean()), 6)}
    if task == "multiclass":
        shares = target.astype(str).value_counts(normalize=True).sort_index()
        return {"class_shares": {str(k): round(float(v), 6) for k, v in shares.items()}}
    values = target.astype(float)
    return {"target_mean": round(float(values.mean()), 6), "target_std": round(float(values.std()), 6)}


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

    with registry.quiet_model_io():
        model = load_registered_model(settings.warehouse_url, name, version, trusted_types(config))
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
