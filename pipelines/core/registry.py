"""Thin helpers over the MLflow tracking server and model registry: lookups, links, tags."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pipelines.core.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous-champion"
# MLflow 3.x's UI reads this experiment tag to choose the model-training view (runs, metrics, comparisons) over the
# GenAI one (traces, judges, prompts); the UI's own experiment-type selector writes the same tag and value.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
# MLflow 3.17's sidebar follows a workflow toggle (URL parameter, else the browser's last choice, else GenAI):
# links the loop hands out carry the model-training one.
_UI_WORKFLOW = "?workflowType=machine_learning"


@contextmanager
def quiet_model_io() -> Iterator[None]:
    """Around a model save or load: silence Airflow's deprecated-attribute warnings.

    skops (MLflow's scikit-learn format, imported by the first save or load) looks its default trusted functions
    up in every loaded module; inside an Airflow task that touches each of Airflow's deprecated attributes, and
    every warning became a task-log line (1,160 per task that saves or loads a model, seconds of its time). The
    model itself is saved and loaded exactly as before.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The `airflow\.\S+` (attribute )?is deprecated")
        yield


def client(settings: Settings) -> MlflowClient:
    """An MLflow client bound to the configured tracking server (also set as the process default)."""
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def experiment_id(settings: Settings, name: str) -> str:
    """The id of experiment ``name``, created on first use; tagged as a model-training experiment (also one that
    already existed without the tag)."""
    mlf = client(settings)
    found = mlf.get_experiment_by_name(name)
    if found is None:
        return str(
            mlf.create_experiment(
                name,
                artifact_location=_artifact_location(settings, name),
                tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND},
            )
        )
    if found.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:
        mlf.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    return str(found.experiment_id)


def _artifact_location(settings: Settings, experiment: str) -> str | None:
    """A tracking server decides where artifacts go; a local store gets them under the runtime folder, not cwd."""
    if settings.mlflow_tracking_uri.startswith(("http://", "https://", "databricks")):
        return None
    return (settings.home / "mlflow" / "artifacts" / experiment).resolve().as_uri()


def find_run_id(settings: Settings, experiment: str, tags: dict[str, str]) -> str | None:
    """The newest run of ``experiment`` carrying all ``tags``, if any (makes steps rerunnable)."""
    mlf = client(settings)
    exp = mlf.get_experiment_by_name(experiment)
    if exp is None:
        return None
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = mlf.search_runs(
        [exp.experiment_id], filter_string=query, order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0].info.run_id if runs else None


def version_of_run(settings: Settings, model_name: str, run_id: str) -> ModelVersion | None:
    """The registered version created from ``run_id``, if any."""
    versions = client(settings).search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    return versions[0] if versions else None


def alias_version(settings: Settings, model_name: str, alias: str) -> ModelVersion | None:
    """The version behind ``alias``, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client(settings).get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None


def set_version_tags(settings: Settings, model_name: str, version: str, tags: dict[str, object]) -> None:
    """Write ``tags`` (stringified) on a model version."""
    mlf = client(settings)
    for key, value in tags.items():
        mlf.set_model_version_tag(model_name, version, key, str(value))


def run_url(settings: Settings, experiment_id_: str, run_id: str) -> str:
    """The MLflow UI page of a run."""
    return f"{settings.mlflow_ui_url.rstrip('/')}/#/experiments/{experiment_id_}/runs/{run_id}{_UI_WORKFLOW}"


def version_url(settings: Settings, model_name: str, version: str) -> str:
    """The MLflow UI page of a model version."""
    return f"{settings.mlflow_ui_url.rstrip('/')}/#/models/{model_name}/versions/{version}{_UI_WORKFLOW}"
