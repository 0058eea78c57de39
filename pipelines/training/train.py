"""``train``: fit the configured pipeline on the snapshot's training part and register it in MLflow.

Everything a data scientist needs to trust the model lands on the MLflow run: params, training metrics,
the model (signature, input example, explicit pip requirements), the snapshot as a dataset input with its
content hash, the config, the git commit and the Airflow DAG/run ids. The version registered from the run
carries the same lineage as tags. Rerunning ``train`` for the same run key reuses that run and version.
"""

from __future__ import annotations

import importlib.metadata
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from pipelines.core import registry
from pipelines.core.config import DatasetConfig
from pipelines.core.runs import RunContext
from pipelines.core.settings import Settings
from pipelines.data.extract import load_snapshot

log = logging.getLogger(__name__)

STEP_TAG = "mlops.step"
MODEL_ARTIFACT = "model"
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


def serving_metadata(config: DatasetConfig, settings: Settings) -> dict[str, Any]:
    """What the prediction service needs besides the model: its input contract and decision threshold."""
    from pipelines.data.validation.suite import load_suite
    from pipelines.training.contract import METADATA_KEY, THRESHOLD_KEY, contract_from_config

    contract = contract_from_config(config, load_suite(settings.expectations_dir, config.expectation_suite))
    return {METADATA_KEY: contract.to_dict(), THRESHOLD_KEY: config.model.threshold}


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
    from sklearn.metrics import log_loss, roc_auc_score

    from pipelines.data.features import prepare, time_split
    from pipelines.training.modeling import build_model, trusted_types

    name = config.model.registered_name
    exp_id = registry.experiment_id(settings, config.model.experiment)
    existing = registry.find_run_id(settings, config.model.experiment, {"run.key": run.key, STEP_TAG: "train"})
    if existing is not None:
        version = registry.version_of_run(settings, name, existing)
        if version is not None:
            log.info("run key %s already trained: reusing run %s, version %s", run.key, existing, version.version)
            return _result(settings, name, exp_id, existing, str(version.version), reused=True)

    frame = load_snapshot(snapshot["path"])
    data = prepare(frame, config)
    train_mask, holdout_mask = time_split(data, config.split.holdout_fraction)
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
    proba_train = model.predict_proba(x_train)[:, 1]

    lineage = run.lineage_tags()
    data_tags = {
        "dataset": config.name,
        "data.version": snapshot["data_version"],
        "data.window": f"[{snapshot['window_start']}, {snapshot['window_end']})",
        "data.snapshot": snapshot["path"],
        "validation.success": str(validation.get("success")),
        "validation.data_docs": str(validation.get("data_docs_url", "")),
    }
    mlflow.set_experiment(experiment_id=exp_id)
    run_tags = {**lineage, **data_tags, STEP_TAG: "train"}
    with mlflow.start_run(run_name=f"{run.dag_id}:{run.run_id}", tags=run_tags) as active:
        mlflow.log_params(
            {
                "estimator": config.model.estimator,
                **{f"model.{k}": v for k, v in config.model.params.items()},
                "seed": config.model.seed,
                "threshold": config.model.threshold,
                "features": ",".join(config.feature_names),
                "window_start": snapshot["window_start"],
                "window_end": snapshot["window_end"],
                "holdout_fraction": config.split.holdout_fraction,
            }
        )
        mlflow.log_metrics(
            {
                "rows_snapshot": float(len(frame)),
                "rows_excluded": float(data.excluded),
                "rows_train": float(len(x_train)),
                "rows_holdout": float(holdout_mask.sum()),
                "train_positive_rate": float(y_train.mean()),
                "train_roc_auc": float(roc_auc_score(y_train, proba_train)),
                "train_log_loss": float(log_loss(y_train, proba_train)),
            }
        )
        _log_inputs(mlflow, config, snapshot, data.features, data.target, train_mask, holdout_mask)
        with tempfile.TemporaryDirectory() as tmp:
            cfg_path = Path(tmp) / "dataset_config.yaml"
            cfg_path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
            mlflow.log_artifact(str(cfg_path), artifact_path="config")
        example = x_train.head(5)
        signature = infer_signature(example, model.predict_proba(example))
        info = mlflow.sklearn.log_model(
            model,
            name=MODEL_ARTIFACT,
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
            pyfunc_predict_fn="predict_proba",
            skops_trusted_types=trusted_types(config),
            registered_model_name=name,
            tags={**lineage, **data_tags},
            metadata=serving_metadata(config, settings),
        )
        run_id = active.info.run_id
    new_version = str(info.registered_model_version)
    registry.set_version_tags(settings, name, new_version, {**lineage, **data_tags, "mlflow.run_id": run_id})
    log.info("registered %s version %s from run %s", name, new_version, run_id)
    return _result(settings, name, exp_id, run_id, new_version)


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
    frame = features.assign(**{config.target.name: target.to_numpy()})
    for context, mask in (("training", train_mask), ("evaluation", holdout_mask)):
        dataset = mlflow.data.from_pandas(
            frame[mask],
            source=snapshot["path"],
            targets=config.target.name,
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
