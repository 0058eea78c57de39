"""``train``: fit the configured pipeline on the snapshot's training part and register it in MLflow.

Everything a data scientist needs to trust the model lands on the MLflow run: params, training metrics,
the model (signature, input example, explicit pip requirements), the snapshot as a dataset input with its
content hash, the config, the git commit and the Airflow DAG/run ids. The version registered from the run
carries the same lineage as tags. Rerunning ``train`` for the same run key reuses that run and version.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipelines.core import registry
from pipelines.core.config import DatasetConfig
from pipelines.core.environment import code_state, environment, file_sha256
from pipelines.core.runs import RunContext
from pipelines.core.settings import Settings
from pipelines.data.extract import load_snapshot
from pipelines.data.snapshot_store import store_snapshot
from pipelines.training.description import describe_model, describe_version

log = logging.getLogger(__name__)

STEP_TAG = "mlops.step"
MODEL_ARTIFACT = "model"
CONFIG_ARTIFACT = "config/dataset_config.yaml"  # the effective config (overrides applied) the model was fit with
PREDICTIONS_ARTIFACT = "reproduce/holdout_predictions.npy"  # what the fitted model predicted on the holdout
_SERVING_PACKAGES = ("scikit-learn", "pandas", "numpy", "scipy", "skops", "cloudpickle", "mlflow")


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` made: the MLflow run and the registered version, with links to both."""

    run_id: str
    experiment_id: str
    model_name: str
    model_version: str
    model_uri: str
    mlflow_run_url: str
    model_version_url: str
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def serving_metadata(config: DatasetConfig, settings: Settings, classes: list[Any]) -> dict[str, Any]:
    """What the prediction service needs besides the model: its input contract, task, classes and threshold."""
    from pipelines.data.validation.suite import load_suite
    from pipelines.training.contract import (
        CLASSES_KEY,
        METADATA_KEY,
        POSITIVE_KEY,
        TASK_KEY,
        THRESHOLD_KEY,
        contract_from_config,
    )

    contract = contract_from_config(config, load_suite(settings.expectations_dir, config.expectation_suite))
    metadata: dict[str, Any] = {METADATA_KEY: contract.to_dict(), TASK_KEY: config.task}
    if config.task == "binary":
        metadata[THRESHOLD_KEY] = config.model.threshold
        metadata[POSITIVE_KEY] = positive_label(config)
    if config.task == "multiclass":
        metadata[CLASSES_KEY] = [str(c) for c in classes]
    return metadata


def positive_label(config: DatasetConfig) -> str:
    """What the positive class means, in the data's terms (``malignant``, ``arr_delay gt 15``)."""
    target = config.target
    if target.rule is not None:
        return f"{target.column} {target.rule.op} {target.rule.threshold:g}"
    return str(target.positive)


def pip_requirements() -> list[str]:
    """Pinned serving requirements, read from the environment that trained the model."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in _SERVING_PACKAGES]


def train(
    config: DatasetConfig,
    settings: Settings,
    snapshot: dict[str, Any],
    validation: dict[str, Any],
    run: RunContext,
) -> TrainResult:
    """Fit on the training part of ``snapshot`` and log, register and tag the model (idempotent per run key)."""
    import mlflow
    from mlflow.models import infer_signature

    from pipelines.core.model_files import trusted_types
    from pipelines.data.features import holdout_split, prepare
    from pipelines.training.metrics import finite, task_metrics
    from pipelines.training.modeling import build_model, model_classes, predictions

    name = config.model.registered_name
    exp_id = registry.experiment_id(settings, config.model.experiment)
    existing = registry.find_run_id(settings, config.model.experiment, {"run.key": run.key, STEP_TAG: "train"})
    if existing is not None:
        version = registry.version_of_run(settings, name, existing)
        if version is not None:
            log.info("run key %s already trained: reusing run %s, version %s", run.key, existing, version.version)
            record_trained_digest(settings, name, str(version.version), run)  # if the earlier attempt stopped short
            describe_model(config, settings)
            describe_version(config, settings, name, str(version.version))
            return _result(settings, name, exp_id, existing, str(version.version), reused=True)

    frame = load_snapshot(snapshot["path"])
    data = prepare(frame, config)
    train_mask, holdout_mask = holdout_split(data, config)
    x_train, y_train = data.features[train_mask], data.target[train_mask]
    model = build_model(config)
    log.info(
        "training %s on %d rows (%d held out, %d excluded: %s)",
        config.model.estimator,
        len(x_train),
        int(holdout_mask.sum()),
        data.excluded,
        data.excluded_reason,
    )
    model.fit(x_train, y_train)
    classes = model_classes(model)
    train_scores = task_metrics(
        config.task,
        y_train,
        predictions(model, x_train, config.task),
        classes=classes,
        threshold=config.model.threshold,
    )

    holdout_predictions = predictions(model, data.features[holdout_mask], config.task)
    snapshot_uri = store_snapshot(config, settings, snapshot)
    config_text = yaml.safe_dump(config.model_dump(mode="json", exclude_unset=True), sort_keys=False)
    lineage = run.lineage_tags()
    data_tags = {
        "dataset": config.name,
        "data.version": snapshot["data_version"],
        "data.window": (
            f"[{snapshot['window_start']}, {snapshot['window_end']})" if snapshot["window_start"] else "whole source"
        ),
        "task": config.task,
        "data.snapshot": snapshot["path"],
        "data.snapshot_uri": snapshot_uri,
        "data.rows": str(snapshot.get("rows", len(frame))),
        "validation.success": str(validation.get("success")),
        "validation.data_docs": str(validation.get("data_docs_url", "")),
    }
    record_tags = {
        **_suite_tags(config, settings, validation),
        "config.sha256": hashlib.sha256(config_text.encode()).hexdigest(),
        **code_state(),
        **environment(),
    }
    mlflow.set_experiment(experiment_id=exp_id)
    run_tags = {**lineage, **data_tags, **record_tags, STEP_TAG: "train"}
    with mlflow.start_run(run_name=f"{run.dag_id}:{run.run_id}", tags=run_tags) as active:
        mlflow.log_params(
            {
                "task": config.task,
                "target": config.target.label,
                "estimator": config.model.estimator,
                **{f"model.{k}": v for k, v in config.model.params.items()},
                "seed": config.model.seed,
                **(
                    {"threshold": config.model.threshold, "positive_class": positive_label(config)}
                    if config.task == "binary"
                    else {}
                ),
                **({"classes": ",".join(map(str, classes))[:500]} if config.task == "multiclass" else {}),
                "features": ",".join(config.feature_names)[:6000],
                "window_start": snapshot["window_start"] or "all",
                "window_end": snapshot["window_end"] or "all",
                "split": config.split_method,
                "holdout_fraction": config.split.holdout_fraction,
            }
        )
        mlflow.log_metrics(
            {
                "rows_snapshot": float(len(frame)),
                "rows_excluded": float(data.excluded),
                "rows_train": float(len(x_train)),
                "rows_holdout": float(holdout_mask.sum()),
                **{f"train_{k}": v for k, v in finite(train_scores).items() if k != "rows" and "." not in k},
            }
        )
        _log_inputs(mlflow, config, snapshot, data.features, data.target, train_mask, holdout_mask)
        _log_record_artifacts(mlflow, config_text, holdout_predictions)
        example = x_train.head(5)
        signature = infer_signature(example, _output_example(model, example, config.task))
        with registry.quiet_model_io():
            info = mlflow.sklearn.log_model(
                model,
                name=MODEL_ARTIFACT,
                signature=signature,
                input_example=example,
                pip_requirements=pip_requirements(),
                pyfunc_predict_fn="predict" if config.task == "regression" else "predict_proba",
                skops_trusted_types=trusted_types(config),
                registered_model_name=name,
                tags={**lineage, **data_tags},
                metadata=serving_metadata(config, settings, classes),
            )
        run_id = active.info.run_id
    new_version = str(info.registered_model_version)
    registry.set_version_tags(settings, name, new_version, {**lineage, **data_tags, "mlflow.run_id": run_id})
    log.info("registered %s version %s from run %s", name, new_version, run_id)
    record_trained_digest(settings, name, new_version, run)
    describe_model(config, settings)
    describe_version(config, settings, name, new_version)
    return _result(settings, name, exp_id, run_id, new_version)


def record_trained_digest(settings: Settings, name: str, version: str, run: RunContext) -> str:
    """Record the sha256 of every file of the registered version in the warehouse as its ``trained`` digest (and as
    the ``artifact.sha256`` tag, for people: the warehouse's row is the one loads are checked against)."""
    from datetime import UTC, datetime

    import mlflow

    from pipelines.core import artifact_digests

    registered = registry.client(settings).get_model_version(name, version)
    with tempfile.TemporaryDirectory(prefix="trained-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=tmp)
        digest = artifact_digests.folder_digest(local)
    artifact_digests.record(
        settings.warehouse_url,
        name,
        version,
        "trained",
        digest,
        at=datetime.fromtimestamp(registered.creation_timestamp / 1000, UTC),
        actor=run.dag_id,
        run_key=run.key,
    )
    registry.set_version_tags(settings, name, version, {"artifact.sha256": digest.digest})
    return digest.digest


def _log_record_artifacts(mlflow: Any, config_text: str, holdout_predictions: np.ndarray) -> None:
    """What ``reproduce`` needs besides the snapshot: the effective config and the holdout predictions."""
    with tempfile.TemporaryDirectory() as tmp:
        for artifact, write in (
            (CONFIG_ARTIFACT, lambda path: path.write_text(config_text)),
            (PREDICTIONS_ARTIFACT, lambda path: np.save(path, holdout_predictions, allow_pickle=False)),
        ):
            folder, _, file_name = artifact.rpartition("/")
            path = Path(tmp) / file_name
            write(path)
            mlflow.log_artifact(str(path), artifact_path=folder)


def _suite_tags(config: DatasetConfig, settings: Settings, validation: dict[str, Any]) -> dict[str, str]:
    """The suite the snapshot was validated against: its name, the reviewed file's hash, and the result."""
    from pipelines.data.validation.suite import suite_path

    path = suite_path(settings.expectations_dir, config.expectation_suite)
    return {
        "suite.name": str(validation.get("suite") or config.expectation_suite),
        "suite.sha256": file_sha256(path) if path.is_file() else "missing",
        "validation.evaluated": str(validation.get("evaluated", "")),
        "validation.failed": str(validation.get("failed", "")),
    }


def _output_example(model: Any, example: Any, task: str) -> Any:
    """What the logged model's pyfunc ``predict`` returns: values, or one named probability column per class."""
    import pandas as pd

    if task == "regression":
        return pd.DataFrame({"prediction": model.predict(example)})
    return pd.DataFrame(model.predict_proba(example), columns=[str(c) for c in model.classes_])


def _log_inputs(
    mlflow: Any,
    config: DatasetConfig,
    snapshot: dict[str, Any],
    features: Any,
    target: Any,
    train_mask: Any,
    holdout_mask: Any,
) -> None:
    """Log the training and holdout parts as MLflow dataset inputs named by the data version."""
    frame = features.assign(**{config.target.label: target.to_numpy()})
    for context, mask in (("training", train_mask), ("evaluation", holdout_mask)):
        dataset = mlflow.data.from_pandas(
            frame[mask],
            source=snapshot["path"],
            targets=config.target.label,
            name=f"{config.name}@{snapshot['data_version']}:{context}",
            digest=f"{snapshot['data_version']}-{context[:5]}",
        )
        mlflow.log_input(dataset, context=context)


def _result(settings: Settings, name: str, exp_id: str, run_id: str, version: str, reused: bool = False) -> TrainResult:
    return TrainResult(
        run_id=run_id,
        experiment_id=exp_id,
        model_name=name,
        model_version=version,
        model_uri=f"models:/{name}/{version}",
        mlflow_run_url=registry.run_url(settings, exp_id, run_id),
        model_version_url=registry.version_url(settings, name, version),
        reused=reused,
    )
