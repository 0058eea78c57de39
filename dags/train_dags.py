"""Training DAGs, one per dataset config: ``train_<dataset>``.

extract -> validate -> train -> evaluate -> gate -> route -> approve (a person) | approve_by_policy | refuse
-> deploy. Each task makes one call into ``pipelines.steps`` and returns a small dict. Heavy libraries are
imported inside the tasks only; parsing this file reads the YAML configs and nothing else. A config that fails
to load becomes a placeholder DAG that fails with its error (``_config_errors.py``); the others are unaffected.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from pipelines.core.config import DatasetConfig

# Airflow puts the DAG folder on sys.path when it parses a bundle; a plain DagBag (tests, tools) does not.
if str(Path(__file__).parent) not in sys.path:
    sys.path.append(str(Path(__file__).parent))

from _config_errors import dataset_dags
from _notify import approval_requested, send_approval_timed_out, task_failed

log = logging.getLogger(__name__)

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "mlops",
    "retries": 2,
    "retry_delay": timedelta(seconds=20),
    "retry_exponential_backoff": True,
}


def _run_context() -> Any:
    """The pipeline's view of the current Airflow run (ids, reason, partition key)."""
    from pipelines.core.runs import RunContext

    ctx = get_current_context()
    evidence = str(ctx["params"].get("evidence") or "")
    return RunContext(
        dag_id=ctx["dag"].dag_id,
        run_id=ctx["run_id"],
        reason=str(ctx["params"].get("reason")),
        extra={"run.evidence": evidence} if evidence else {},
    )


def _window_params() -> tuple[str | None, str | None]:
    """The run's window params; a scheduled run without them trains up to its data interval's end."""
    ctx = get_current_context()
    params = ctx["params"]
    start, end = params.get("window_start"), params.get("window_end")
    interval_end = ctx.get("data_interval_end")
    if start or end or ctx["dag_run"].run_type != "scheduled" or interval_end is None:
        return start, end
    from pipelines import steps

    return steps.scheduled_window(ctx["dag"].dag_id.removeprefix("train_"), interval_end.date(), _overrides())


def _overrides() -> dict[str, Any]:
    return dict(get_current_context()["params"].get("overrides") or {})


def _started_at() -> datetime:
    start = get_current_context()["ti"].start_date
    assert start is not None
    return start


def _fail_without_retry(exc: Exception) -> AirflowFailException:
    """Expected pipeline failures (bad data, bad config, failed smoke test) are final: no retry."""
    return AirflowFailException(f"{type(exc).__name__}: {exc}")


class CandidateApprovalOperator(ApprovalOperator):
    """Airflow's ApprovalOperator that also records who decided, when and why, before acting on it."""

    def __init__(self, *, dataset: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dataset = dataset

    def execute(self, context: Any) -> Any:
        """Ask with the approvers' Airflow user ids as respondents (FAB's are numeric), then wait for the answer."""
        self.assigned_users = _respondent_ids(self.assigned_users or [])  # type: ignore[assignment]
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from pipelines import steps

        ti = context["ti"]
        trained = ti.xcom_pull(task_ids="train")
        if "error" in event or event.get("responded_by_user") is None:
            status, by, comment = "timed_out", "timeout", "no answer before the approval timeout"
            decided_at = event.get("responded_at") or ti.start_date
        else:
            user = event["responded_by_user"]
            by = str(user.get("name") or user.get("id")) if isinstance(user, dict) else str(user)
            status = "approved" if event["chosen_options"] == [self.APPROVE] else "rejected"
            comment = str((event.get("params_input") or {}).get("comment") or "")
            decided_at = event["responded_at"]
        steps.record_approval(
            self.dataset,
            _run_context(),
            trained,
            status=status,
            decided_by=str(by),
            decided_at=decided_at,
            mode="manual",
            comment=comment,
            overrides=_overrides(),
        )
        if status == "timed_out":
            send_approval_timed_out(self.dataset, context)
        return super().execute_complete(context, event)


def _respondents() -> list[dict[str, str]]:
    """The approvers of ``pipelines/conf/people.yaml``: the only users Airflow lets answer an approval (403 else)."""
    from pipelines.core.people import load_people
    from pipelines.core.settings import get_settings

    return [{"id": name, "name": name} for name in load_people(get_settings().people_file).approvers]


def _respondent_ids(named: list[Any]) -> list[dict[str, str]]:
    """The approvers as the auth manager knows them: their ids from the Variable the account set-up writes (FAB's
    numeric ids; absent with the simple auth manager, whose ids are the logins). An approver without an account is
    logged and left out; none with one fails the task, naming them."""
    from airflow.sdk import Variable

    from pipelines.core.errors import PipelineError
    from pipelines.core.people import USER_IDS_VARIABLE, respondents

    ids = Variable.get(USER_IDS_VARIABLE, default=None, deserialize_json=True)
    try:
        found, missing = respondents([user["name"] for user in named], ids)
    except PipelineError as exc:
        raise _fail_without_retry(exc) from exc
    for name in missing:
        log.warning("approver %s has no Airflow account yet: they cannot answer this approval", name)
    return found


def _window_defaults(config: DatasetConfig) -> tuple[str, str]:
    """The default window's ends, for the params' help; without a time column a run reads the whole source."""
    if config.window is None:
        return "none: the whole source", "none: the whole source"
    return str(config.window.start), str(config.window.end)


def build_training_dag(config: DatasetConfig) -> Any:
    """The training DAG of one dataset."""
    dataset = config.name
    default_start, default_end = _window_defaults(config)

    @dag(
        dag_id=f"train_{dataset}",
        dag_display_name=f"Train {dataset}",
        description=f"Validate, train, evaluate, gate, approve and deploy {config.model.registered_name}",
        doc_md=f"**{config.model.registered_name}**: {config.description}\n\n"
        "Params: `window_start`/`window_end` (ISO dates, default the config's window; a scheduled run trains on "
        "the `retraining.train_days` up to its data interval's end), `reason`, `evidence` (a link, set by "
        "monitoring), and `overrides` (what a run may tune: `model.estimator`, `model.params`, `model.seed`, "
        "`model.one_hot_min_frequency`, `model.scale_numeric`, `window`; any policy key fails the run).",
        schedule=config.schedule,
        start_date=datetime(2024, 1, 1),
        catchup=False,
        max_active_runs=1,
        default_args={**DEFAULT_ARGS, "on_failure_callback": task_failed(dataset)},
        tags=["training", dataset, *config.tags],
        params={
            "window_start": Param(
                None,
                type=["null", "string"],
                format="date",
                description=f"First day of the training window (default {default_start})",
            ),
            "window_end": Param(
                None,
                type=["null", "string"],
                format="date",
                description=f"Day after the window (default {default_end})",
            ),
            "reason": Param("manual", type="string", description="Why this run (manual, schedule, drift...)"),
            "evidence": Param("", type="string", description="Link to what called for this run (a drift report)"),
            "overrides": Param(
                {},
                type="object",
                description="Estimator, params, seed, window merged over the YAML; policy keys are refused",
            ),
        },
    )
    def training() -> None:
        @task(retries=3)
        def extract() -> dict[str, Any]:
            from pipelines import steps
            from pipelines.core.errors import PipelineError

            try:
                start, end = _window_params()
                return steps.extract(dataset, _run_context(), start, end, _overrides())
            except PipelineError as exc:
                raise _fail_without_retry(exc) from exc

        @task(retries=0)
        def validate(snapshot: dict[str, Any]) -> dict[str, Any]:
            from pipelines import steps
            from pipelines.core.errors import PipelineError

            try:
                return steps.validate(dataset, _run_context(), snapshot, _overrides())
            except PipelineError as exc:
                raise _fail_without_retry(exc) from exc

        @task(retries=1)
        def train(snapshot: dict[str, Any], validation: dict[str, Any]) -> dict[str, Any]:
            from pipelines import steps

            return steps.train(dataset, _run_context(), snapshot, validation, _overrides())

        @task(retries=1)
        def evaluate(snapshot: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
            from pipelines import steps

            return steps.evaluate(dataset, _run_context(), snapshot, trained, _overrides())

        @task(retries=1)
        def gate(trained: dict[str, Any], evaluation: dict[str, Any], validation: dict[str, Any]) -> dict[str, Any]:
            from pipelines import steps

            return steps.gate(dataset, _run_context(), trained, evaluation, validation, _started_at(), _overrides())

        @task.branch(retries=0)
        def route(decision: dict[str, Any]) -> str:
            if not decision["passed"]:
                return "refuse"
            return "approve_by_policy" if decision["approval_mode"] == "auto" else "approve"

        @task(retries=0)
        def refuse(decision: dict[str, Any]) -> dict[str, Any]:
            log.warning("candidate refused by the gate, not deployed: %s", decision["summary"])
            for reason in decision["reasons"]:
                log.warning("  %s", reason)
            return {
                "deployed": False,
                "summary": decision["summary"],
                "model_version_url": decision["model_version_url"],
                "mlflow_run_url": decision["mlflow_run_url"],
            }

        @task(retries=1)
        def approve_by_policy(trained: dict[str, Any]) -> dict[str, Any]:
            from pipelines import steps

            return steps.record_approval(
                dataset,
                _run_context(),
                trained,
                status="approved",
                decided_by="policy",
                decided_at=_started_at(),
                mode="auto",
                comment=f"gate passed; approval.mode is auto (run reason: {_run_context().reason})"[:2000],
                overrides=_overrides(),
            )

        approve = CandidateApprovalOperator(
            task_id="approve",
            dataset=dataset,
            subject=f"Promote {config.model.registered_name} v{{{{ ti.xcom_pull(task_ids='train')['model_version'] }}}}"
            " to champion?",
            body="{{ ti.xcom_pull(task_ids='gate')['approval_body'] }}",
            params={"comment": Param("", type="string", description="Why you approve or reject (audit trail)")},
            defaults="Reject",
            assigned_users=_respondents(),
            notifiers=[approval_requested(dataset)],
            response_timeout=timedelta(minutes=config.approval.timeout_minutes),
            retries=0,
        )

        @task(retries=0, trigger_rule="none_failed_min_one_success")
        def deploy() -> dict[str, Any]:
            """Runs after either approval path; its only upstreams are the approvals (none ran: skipped)."""
            from pipelines import steps
            from pipelines.core.errors import PipelineError

            ti = get_current_context()["ti"]
            trained, snapshot = ti.xcom_pull(task_ids="train"), ti.xcom_pull(task_ids="extract")
            try:
                return steps.deploy(dataset, _run_context(), trained, snapshot, _started_at(), _overrides())
            except PipelineError as exc:
                raise _fail_without_retry(exc) from exc

        snapshot = extract()
        validation = validate(snapshot)
        trained = train(snapshot, validation)
        evaluation = evaluate(snapshot, trained)
        decision = gate(trained, evaluation, validation)
        routed = route(decision)
        by_policy = approve_by_policy(trained)
        deployed = deploy()
        routed >> [refuse(decision), approve, by_policy]
        [approve, by_policy] >> deployed

    return training()


globals().update(dataset_dags("train", build_training_dag))
