"""Extra links on the training DAGs' task instances: "MLflow run", "Model version" and "Data Docs".

They are registered as *global* operator extra links (see ``mlops_plugin.py``). In Airflow 3.3 the API server
evaluates a global link when the UI asks for a task instance's links: it calls ``get_link(operator,
ti_key=...)`` with the serialized operator and the task instance key, in the API server process, on every
request. The worker does not evaluate them (it only pushes ``_link_<Class>`` XComs for links declared on the
operator class). So each link here reads the run's XCom return values from the metadata database itself.

Why global links rather than ``operator_extra_links``: they need no change in the DAG, work the same for
TaskFlow tasks and for the approval operator, and work for runs made before the plugin was installed. The
price: every task of every DAG lists the three names; the URL is null except on the tasks named below (the UI
shows no button for a null link).

This module is imported by every Airflow component that loads plugins: keep its top level cheap.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

log = logging.getLogger(__name__)

TRAINING_DAG_PREFIX = "train_"
RETURN_VALUE = "return_value"


def xcom_return_value(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
    """A task's return value in a run, read from the metadata database (None if the task returned nothing).

    Values pushed by the Task SDK are stored as JSON; they are decoded as plain JSON, never through Airflow's
    class-instantiating XCom decoder (the same choice as Airflow's own ``XComOperatorLink``).
    """
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        raw = session.scalar(
            select(XComModel.value).where(
                XComModel.dag_id == dag_id,
                XComModel.run_id == run_id,
                XComModel.task_id == task_id,
                XComModel.map_index == map_index,
                XComModel.key == RETURN_VALUE,
            )
        )
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def task_failed(ti_key: TaskInstanceKey) -> bool:
    """Whether the task instance ended in failure (so it pushed no return value)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    with create_session() as session:
        state = session.scalar(
            select(TaskInstance.state).where(
                TaskInstance.dag_id == ti_key.dag_id,
                TaskInstance.run_id == ti_key.run_id,
                TaskInstance.task_id == ti_key.task_id,
                TaskInstance.map_index == ti_key.map_index,
            )
        )
    return bool(state == TaskInstanceState.FAILED)


def web_url(value: object) -> str:
    """``value`` if it is an http(s) URL, else "" (the UI refuses other schemes anyway)."""
    if isinstance(value, str) and urlsplit(value).scheme in ("http", "https"):
        return value
    return ""


class TrainingRunLink(BaseOperatorLink):
    """A link read from one field of a task's return value, shown on some tasks of the training DAGs."""

    name: ClassVar[str] = ""
    on_tasks: ClassVar[frozenset[str]] = frozenset()
    source_task: ClassVar[str | None] = None
    """The task whose return value holds the URL; None: the task the link is shown on."""
    field: ClassVar[str] = ""

    def applies_to(self, ti_key: TaskInstanceKey) -> bool:
        return ti_key.dag_id.startswith(TRAINING_DAG_PREFIX) and ti_key.task_id in self.on_tasks

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        if not self.applies_to(ti_key):
            return ""
        # The API server builds all links of a task in one response: one failing link must not break the others.
        try:
            source = self.source_task or ti_key.task_id
            map_index = ti_key.map_index if source == ti_key.task_id else -1
            value = xcom_return_value(ti_key.dag_id, ti_key.run_id, source, map_index)
            return self.url(value.get(self.field) if isinstance(value, dict) else None, ti_key)
        except Exception:
            log.exception("could not build the %r link of %s", self.name, ti_key)
            return ""

    def url(self, value: object, ti_key: TaskInstanceKey) -> str:
        return web_url(value)


class MlflowRunLink(TrainingRunLink):
    """The MLflow run that trained the candidate (``mlflow_run_url`` of ``train``)."""

    name = "MLflow run"
    on_tasks = frozenset({"train", "evaluate", "gate"})
    source_task = "train"
    field = "mlflow_run_url"


class ModelVersionLink(TrainingRunLink):
    """The registered model version of the candidate (``model_version_url`` of ``train``)."""

    name = "Model version"
    on_tasks = frozenset({"train", "gate", "refuse", "approve", "approve_by_policy", "deploy"})
    source_task = "train"
    field = "model_version_url"


class DataDocsLink(TrainingRunLink):
    """The Great Expectations Data Docs of the run's validation, served by this plugin under ``/mlops``.

    ``validate`` returns ``data_docs_url``: a web URL is used as is; a ``file://`` URL or path inside the
    Data Docs site becomes its ``/mlops/data-docs/...`` page. A failed validation returns nothing: the link
    then opens the Data Docs index, whose newest validation result is the failure.
    """

    name = "Data Docs"
    on_tasks = frozenset({"validate"})
    field = "data_docs_url"

    def url(self, value: object, ti_key: TaskInstanceKey) -> str:
        from mlops_web import data_docs_href

        if isinstance(value, str) and value:
            return data_docs_href(value)
        if task_failed(ti_key):
            return data_docs_href("index.html")
        return ""


LINKS: list[TrainingRunLink] = [MlflowRunLink(), ModelVersionLink(), DataDocsLink()]
