"""``reproduce``: rebuild a registered version's training from its MLflow record alone and compare predictions.

What is read: the version's run (tags), the config file it was fit with (overrides applied, seed included), the
snapshot stored in MLflow under its content hash, and the holdout predictions the fitted model made at training
time. Nothing else: no warehouse, no local run partition, no registered model file (nothing is deserialised but
a parquet file, a YAML file validated by the config schema and a numpy array loaded without pickle), so it runs
on any machine that can reach the MLflow server. The rebuilt model is fit in this process and never registered;
the comparison is logged as a run of the experiment ``<model experiment>-reproductions``.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.core import registry
from pipelines.core.config import DatasetConfig, check_estimator, load_config_file
from pipelines.core.environment import differences, environment
from pipelines.core.errors import PipelineError
from pipelines.core.settings import Settings
from pipelines.data.extract import load_snapshot
from pipelines.data.features import holdout_split, prepare
from pipelines.data.snapshot_store import fetch_snapshot
from pipelines.trace.lineage import resolve_version
from pipelines.training.modeling import build_model, predictions
from pipelines.training.train import CONFIG_ARTIFACT, PREDICTIONS_ARTIFACT

log = logging.getLogger(__name__)


@dataclass
class Reproduction:
    """How a rebuilt model's holdout predictions compare with the ones recorded at training."""

    model_name: str
    model_version: str
    run_id: str
    data_version: str
    seed: int
    holdout_rows: int
    bit_equal: bool
    max_abs_difference: float
    differing_values: int
    environment_differences: list[str] = field(default_factory=list)
    scratch_run_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """A few lines for people: the verdict, and what differs in the environment when not equal."""
        head = (
            f"{self.model_name} v{self.model_version} (run {self.run_id}), rebuilt from data {self.data_version} "
            f"with seed {self.seed}: "
        )
        if self.bit_equal:
            verdict = f"bit-equal predictions on all {self.holdout_rows} holdout rows"
        else:
            verdict = (
                f"NOT equal: {self.differing_values} values of {self.holdout_rows} holdout rows differ, "
                f"the largest by {self.max_abs_difference:.6g}"
            )
        env = self.environment_differences
        lines = [head + verdict, "environment: " + ("same as recorded" if not env else "differs from the record:")]
        lines += [f"  {line}" for line in env]
        return "\n".join(lines)


def reproduce(config: DatasetConfig, settings: Settings, version: str | None = None) -> Reproduction:
    """Refit the version (the champion when None) from its record and compare its holdout predictions."""
    import mlflow
    from mlflow.exceptions import MlflowException

    name = config.model.registered_name
    version = resolve_version(config, settings, version)
    mlf = registry.client(settings)
    try:
        run_id = mlf.get_model_version(name, version).run_id
        if not run_id:
            raise PipelineError(f"{name} v{version} was not registered from a run: it cannot be reproduced")
        tags = mlf.get_run(run_id).data.tags
    except MlflowException as exc:
        raise PipelineError(f"{name} v{version}: no such version or run in MLflow ({exc})") from exc
    missing = [t for t in ("data.snapshot_uri", "data.version") if t not in tags]
    if missing:
        raise PipelineError(f"{name} v{version}: its run records no {', '.join(missing)}: it cannot be reproduced")
    with tempfile.TemporaryDirectory(prefix="reproduce-") as tmp:
        folder = Path(tmp)
        recorded = _recorded_config(mlflow, run_id, config.name, folder)
        snapshot = fetch_snapshot(settings, tags["data.snapshot_uri"], tags["data.version"], folder / "data")
        expected = np.load(
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=PREDICTIONS_ARTIFACT, dst_path=tmp),
            allow_pickle=False,
        )
        frame = load_snapshot(snapshot)
    data = prepare(frame, recorded)
    train_mask, holdout_mask = holdout_split(data, recorded)
    model = build_model(recorded)
    log.info(
        "refitting %s v%s: %s on %d rows, seed %s",
        name,
        version,
        recorded.model.estimator,
        train_mask.sum(),
        recorded.model.seed,
    )
    model.fit(data.features[train_mask], data.target[train_mask])
    got = predictions(model, data.features[holdout_mask], recorded.task)
    result = _compare(expected, got)
    outcome = Reproduction(
        model_name=name,
        model_version=version,
        run_id=run_id,
        data_version=tags["data.version"],
        seed=recorded.model.seed,
        holdout_rows=int(holdout_mask.sum()),
        bit_equal=result[0],
        max_abs_difference=result[1],
        differing_values=result[2],
        environment_differences=differences(tags, environment()),
    )
    outcome.scratch_run_id = _log_scratch_run(config, settings, outcome)
    log.info(
        "%s v%s reproduced: %s (scratch run %s)",
        name,
        version,
        "bit-equal" if outcome.bit_equal else f"max difference {outcome.max_abs_difference:.6g}",
        outcome.scratch_run_id,
    )
    return outcome


def _recorded_config(mlflow: Any, run_id: str, dataset: str, folder: Path) -> DatasetConfig:
    """The config the version was fit with, validated as any config file is."""
    local = Path(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=CONFIG_ARTIFACT, dst_path=str(folder))
    )
    named = folder / f"{dataset}.yaml"  # a config file is named after its dataset
    local.replace(named)
    return check_estimator(load_config_file(named), named)


def _compare(expected: np.ndarray, got: np.ndarray) -> tuple[bool, float, int]:
    """(bit-equal, largest absolute difference, number of differing values)."""
    if expected.shape != got.shape:
        raise PipelineError(f"the rebuilt model predicts shape {got.shape}, the record holds {expected.shape}")
    equal = bool(np.array_equal(expected, got))
    if equal:
        return True, 0.0, 0
    diff = np.abs(expected.astype(float) - got.astype(float))
    return False, float(np.nanmax(diff)), int(np.count_nonzero(diff))


def _log_scratch_run(config: DatasetConfig, settings: Settings, outcome: Reproduction) -> str:
    """Record the comparison as a run of ``<experiment>-reproductions`` (no model: nothing is registered)."""
    mlf = registry.client(settings)
    experiment = registry.experiment_id(settings, f"{config.model.experiment}-reproductions")
    run = mlf.create_run(
        experiment,
        run_name=f"reproduce {outcome.model_name} v{outcome.model_version}",
        tags={
            "reproduce.model": outcome.model_name,
            "reproduce.version": outcome.model_version,
            "reproduce.run_id": outcome.run_id,
            "reproduce.bit_equal": str(outcome.bit_equal).lower(),
            "reproduce.environment_differences": "; ".join(outcome.environment_differences)[:5000] or "none",
            **environment(),
        },
    )
    mlf.log_metric(run.info.run_id, "max_abs_difference", outcome.max_abs_difference)
    mlf.log_metric(run.info.run_id, "differing_values", outcome.differing_values)
    mlf.set_terminated(run.info.run_id)
    return str(run.info.run_id)
