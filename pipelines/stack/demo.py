"""``make demo``: start the stack, seed the warehouse, run ``train_<dataset>`` through Airflow, print a summary.

The run is triggered through Airflow's REST API, so the real scheduler runs it. When the run reaches its
approval, the demo answers it through the REST API on the user's behalf and says so (``DEMO_APPROVAL=ui``
leaves it to a person in the Airflow UI instead).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pipelines.config import load_dataset_config
from pipelines.logging_setup import configure
from pipelines.settings import REPO_ROOT
from pipelines.stack import services
from pipelines.stack.airflow_client import TERMINAL_RUN_STATES, AirflowApiError, AirflowClient
from pipelines.stack.processes import StackError
from pipelines.stack.settings import StackSettings

log = logging.getLogger(__name__)

APPROVAL_TASK = "approve"
_SHOWN_METRICS = ("holdout_roc_auc", "holdout_pr_auc", "holdout_log_loss", "holdout_brier", "holdout_f1")


@dataclass
class DemoResult:
    """What one demo run did, for the summary and for tests."""

    dag_id: str
    run_id: str
    state: str
    task_states: dict[str, str | None]
    approved_by: str | None = None
    champion_version: str | None = None
    champion_metrics: dict[str, float] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    replay: dict[str, Any] = field(default_factory=dict)
    timeline: Any = None


def seed(stack: StackSettings, dataset: str, start: str, end: str) -> None:
    """Load ``[start, end)`` into the warehouse with the pipeline's own ``seed`` command."""
    log.info("seeding the warehouse with %s [%s, %s)", dataset, start, end)
    out = subprocess.run(
        [sys.executable, "-m", "pipelines", "seed", "--dataset", dataset, "--start", start, "--end", end],
        env=services.stack_env(stack),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        raise StackError(f"seed failed:\n{out.stderr[-3000:]}")


def client(stack: StackSettings) -> AirflowClient:
    """A REST client logged in as the stack's admin."""
    return AirflowClient(stack.airflow_url, stack.airflow_admin_user, services.admin_password(stack))


def wait_for_dag(api: AirflowClient, dag_id: str, timeout: float = 180.0) -> None:
    """Wait until the dag-processor has parsed ``dag_id``; fail with the import errors if it cannot."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        errors = api.import_errors()
        if errors:
            raise StackError(
                "DAG files failed to import:\n"
                + "\n".join(f"{e['filename']}: {e['stack_trace'][-1500:]}" for e in errors)
            )
        try:
            api.dag(dag_id)
            return
        except AirflowApiError:
            time.sleep(2)
    raise StackError(f"Airflow did not parse {dag_id} within {timeout:.0f} s")


def _report(states: dict[str, str | None]) -> None:
    log.info("tasks: %s", ", ".join(f"{task}={state or 'none'}" for task, state in states.items()))


def run_training(
    stack: StackSettings,
    dataset: str,
    conf: dict[str, Any],
    *,
    approval: Literal["api", "ui"],
    approval_comment: str,
    timeout: float = 900.0,
) -> DemoResult:
    """Trigger ``train_<dataset>``, answer (or wait for) its approval, and follow it to the end."""
    dag_id = f"train_{dataset}"
    api = client(stack)
    try:
        wait_for_dag(api, dag_id)
        api.unpause(dag_id)
        run_id = api.trigger(dag_id, conf, note=f"started by `make demo` ({conf.get('reason', 'demo')})")
        log.info("triggered %s run %s: %s/dags/%s/runs/%s", dag_id, run_id, stack.airflow_url, dag_id, run_id)
        state = api.follow(
            dag_id,
            run_id,
            timeout=timeout,
            on_change=_report,
            stop_when=lambda s: s.get(APPROVAL_TASK) == "awaiting_input",
        )
        approved_by = None
        if state not in TERMINAL_RUN_STATES:
            approved_by = answer_approval(api, stack, dag_id, run_id, approval=approval, comment=approval_comment)
            state = api.follow(dag_id, run_id, timeout=timeout, on_change=_report)
        result = DemoResult(
            dag_id=dag_id,
            run_id=run_id,
            state=state,
            task_states=api.task_states(dag_id, run_id),
            approved_by=approved_by,
        )
        if result.task_states.get("train") == "success":
            result.training = api.xcom(dag_id, run_id, "train")
        return result
    finally:
        api.close()


def run_replay(
    stack: StackSettings, dataset: str, start: str, end: str, timeout: float = 900.0
) -> tuple[str, dict[str, Any]]:
    """Trigger ``replay_<dataset>`` for ``[start, end)`` and follow it; returns its run id and the task's result."""
    dag_id = f"replay_{dataset}"
    api = client(stack)
    try:
        wait_for_dag(api, dag_id)
        api.unpause(dag_id)
        run_id = api.trigger(dag_id, {"start": start, "end": end}, note="started by `make demo`")
        log.info(
            "replaying %s [%s, %s) through the prediction service: %s/dags/%s/runs/%s",
            dataset,
            start,
            end,
            stack.airflow_url,
            dag_id,
            run_id,
        )
        state = api.follow(dag_id, run_id, timeout=timeout, on_change=_report)
        if state != "success":
            raise StackError(f"{dag_id} run {run_id} ended {state}: see its task log in the Airflow UI")
        return run_id, dict(api.xcom(dag_id, run_id, "replay"))
    finally:
        api.close()


def answer_approval(
    api: AirflowClient, stack: StackSettings, dag_id: str, run_id: str, *, approval: str, comment: str
) -> str | None:
    detail = api.hitl_detail(dag_id, run_id, APPROVAL_TASK)
    url = f"{stack.airflow_url}/dags/{dag_id}/runs/{run_id}/tasks/{APPROVAL_TASK}/required_actions"
    log.info("approval requested: %s", detail.get("subject"))
    if approval == "ui":
        log.info(
            "waiting for a person to answer in the Airflow UI: Browse > Required Actions, or %s (log in as %s)",
            url,
            stack.airflow_admin_user,
        )
        return None
    log.info(
        "approving on your behalf through the REST API, as user %r. To decide yourself next time, run "
        "`DEMO_APPROVAL=ui make demo` and answer in the Airflow UI under Browse > Required Actions.",
        stack.airflow_admin_user,
    )
    api.answer(dag_id, run_id, APPROVAL_TASK, "Approve", {"comment": comment})
    return stack.airflow_admin_user


def champion(stack: StackSettings, model_name: str) -> tuple[str | None, dict[str, float], dict[str, str]]:
    """The version behind ``champion``, its holdout metrics and its tags."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    mlf = MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
    try:
        version = mlf.get_model_version_by_alias(model_name, "champion")
    except MlflowException:
        return None, {}, {}
    metrics = mlf.get_run(version.run_id).data.metrics if version.run_id else {}
    return str(version.version), {k: metrics[k] for k in _SHOWN_METRICS if k in metrics}, dict(version.tags)


def summary(
    stack: StackSettings, result: DemoResult, model_name: str, experiment: str, monitoring_experiment: str = ""
) -> str:
    """What a newcomer reads at the end of ``make demo``."""
    version, metrics, tags = champion(stack, model_name)
    result.champion_version, result.champion_metrics = version, metrics
    lines = [
        "",
        "=" * 78,
        f"{result.dag_id} run {result.run_id}: {result.state}",
        "  tasks: " + ", ".join(f"{t}={s}" for t, s in result.task_states.items()),
    ]
    if result.training:
        lines.append(f"  trained: {model_name} v{result.training.get('model_version')}")
    if version is None:
        lines.append(f"  no champion for {model_name} yet")
    else:
        lines += [
            f"  champion now: {model_name} v{version} (trained on {tags.get('data.window', '?')}; approved by "
            f"{tags.get('approval.by', '?')}, {tags.get('approval.mode', '?')}; gate {tags.get('gate.decision', '?')})",
            "  holdout: " + ", ".join(f"{k.removeprefix('holdout_')} {v:.4f}" for k, v in metrics.items()),
        ]
    lines += _serving_lines(stack, result)
    if result.timeline is not None:
        from pipelines.stack.story import timeline_lines

        lines += timeline_lines(result.timeline)
    lines += [
        "",
        f"  Airflow  {stack.airflow_url}  (login: {stack.airflow_admin_user} / {services.admin_password(stack)})",
        f"           this run: {stack.airflow_url}/dags/{result.dag_id}/runs/{result.run_id}",
        f"  MLflow   {stack.mlflow_url}",
        f"           experiment '{experiment}', registered model: {stack.mlflow_url}/#/models/{model_name}",
        f"           monitoring: experiment '{monitoring_experiment or experiment + '-monitoring'}' "
        "(a run per day; the 'timeline' run charts them)",
        "",
        f"  `make demo` again adds a run; `make down` stops the services (state stays in {stack.home}).",
        "=" * 78,
    ]
    return "\n".join(lines)


def _serving_lines(stack: StackSettings, result: DemoResult) -> list[str]:
    """What the prediction service answered during the replay, and how well, where outcomes are known."""
    import httpx

    from pipelines.outcomes import live_performance
    from pipelines.serving.prediction_log import served_by_version

    lines = [""]
    try:
        model = httpx.get(f"{stack.serving_url}/model", timeout=5).json()
        lines.append(
            f"  prediction service {stack.serving_url} serves {model.get('name')} v{model.get('version')} "
            f"({model.get('predictor')} predictor; API docs {stack.serving_url}/docs)"
        )
    except httpx.HTTPError as exc:
        lines.append(f"  prediction service {stack.serving_url} not answering: {exc}")
    if not result.replay:
        return lines
    rep = result.replay
    settings = services.pipeline_settings(stack)
    config = load_dataset_config(rep["dataset"], settings.datasets_dir)
    start, end = (datetime.fromisoformat(d.strip(" [)")) for d in rep["window"].split(","))
    served = served_by_version(settings.warehouse_url, rep["dataset"], start, end)
    lines += [
        f"  replay {rep['window']}: {rep['days_replayed']} days replayed ({rep['days_skipped']} done before), "
        f"{rep['requests']} requests, {rep['answered']} records answered, {rep['rejected']} rejected",
        "  predictions logged for that window, by version: "
        + (", ".join(f"v{v} {n}" for v, n in served.items()) or "none"),
    ]
    for perf in live_performance(config, settings, start, end):
        if perf.labelled:
            lines.append(
                f"  live performance of v{perf.model_version} ({perf.labelled} outcomes known): roc_auc "
                f"{_fmt(perf.roc_auc)}, log_loss {_fmt(perf.log_loss)}, precision {_fmt(perf.precision)}, "
                f"recall {_fmt(perf.recall)}"
            )
    return lines


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def main() -> int:
    """Entry point of ``make demo``."""
    configure(fmt="%(asctime)s %(message)s")
    stack = StackSettings()
    dataset = "flights"
    config = load_dataset_config(dataset)
    try:
        services.up(stack)
        seed(stack, dataset, str(config.window.start), str(config.window.end))
        result = run_training(
            stack,
            dataset,
            {"reason": "demo"},
            approval=stack.demo_approval,
            approval_comment="approved by `make demo` on the user's behalf (REST API)",
        )
        if result.state == "success" and stack.demo_replay_days > 0:
            from pipelines.stack.story import run_story

            result.timeline = run_story(
                stack,
                dataset,
                config.window.end,
                max_days=stack.demo_replay_days,
                days_after=stack.demo_days_after_switch,
                approval=stack.demo_approval,
                comment="drift-triggered candidate approved by `make demo` on the user's behalf (REST API)",
            )
            result.replay = result.timeline.replay
    except (StackError, TimeoutError) as exc:
        log.error("demo failed: %s", exc)
        log.error("service logs are in %s; `make down` stops what was started", stack.logs_dir)
        return 1
    text = summary(stack, result, config.model.registered_name, config.model.experiment, config.monitoring_experiment)
    sys.stdout.write(text + "\n")
    return 0 if result.state == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
