"""The MLOps Airflow plugin: from a training run in the Airflow UI to its evidence in one click.

- Extra links on the task instances of the ``train_<dataset>`` DAGs (``mlops_links``): "MLflow run" (train,
  evaluate, gate), "Model version" (train, gate, refuse, approve, approve_by_policy, deploy), "Data Docs"
  (validate).
- A FastAPI app under ``/mlops`` (``mlops_web``): ``/mlops/health``, the Great Expectations Data Docs at
  ``/mlops/data-docs/`` and the "Models" page at ``/mlops/models`` (``mlops_console``), for signed-in users only;
  "Models" and "Data Docs" entries in the UI's navigation (MLOps) and a "Model" tab on every DAG.

Every Airflow component imports this module (scheduler, workers, DAG processor, API server): importing it is
cheap and touches no database or network. The web app is built on first access, in the API server.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from mlops_links import LINKS
from mlops_web import DATA_DOCS_ROUTE, MODELS_ROUTE, URL_PREFIX


class MlopsPlugin(AirflowPlugin):
    """Extra links to MLflow and Data Docs, and the ``/mlops`` web app."""

    name = "mlops"
    # AirflowPlugin declares these as plain (mutable) class attributes.
    global_operator_extra_links = list(LINKS)  # noqa: RUF012
    external_views = [  # noqa: RUF012
        # With a url_route the UI shows the page inside itself (an iframe at /plugin/<url_route>); the UI lists a
        # DAG tab only when it has one.
        {
            "name": "Models",
            "href": f"{URL_PREFIX}{MODELS_ROUTE}",
            "destination": "nav",
            "category": "MLOps",
            "url_route": "models",
        },
        {"name": "Data Docs", "href": f"{URL_PREFIX}{DATA_DOCS_ROUTE}/", "destination": "nav", "category": "MLOps"},
        # A tab on every DAG: the card of the DAG's dataset (train_/monitor_/replay_/maintain_<dataset>).
        {
            "name": "Model",
            "href": f"{URL_PREFIX}{MODELS_ROUTE}/dag/{{DAG_ID}}",
            "destination": "dag",
            "url_route": "model",
        },
    ]

    @cached_property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]  # lazy: FastAPI costs ~0.2 s
        from mlops_web import create_app

        return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "mlops"}]
