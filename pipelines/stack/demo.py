"""``make demo``: start the stack, seed the warehouse, run ``train_<dataset>`` through Airflow, print a summary.

The run is triggered through Airflow's REST API, so the real scheduler runs it. When the run reaches its
approval, the demo answers it through the REST API on the user's behalf and says so (``DEMO_APPROVAL=ui``
leaves it to a person in the Airflow UI instead).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import datetime

from pipelines.core.config import load_dataset_config
from pipelines.core.logging_setup import configure
from pipelines.core.people import Role
from pipelines.core.settings import REPO_ROOT
from pipelines.stack import services
from pipelines.stack.dag_runs import DemoResult, champion, run_training
from pipelines.stack.processes import StackError
from pipelines.stack.settings import StackSettings
from pipelines.stack.story import run_story, timeline_lines

log = logging.getLogger(__name__)


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
        lines += timeline_lines(result.timeline)
    lines += [
        "",
        f"  Airflow  {stack.airflow_url}  (log in as {_logins(stack)};",
        f"           passwords in {stack.airflow_home / 'passwords.json'})",
        f"           this run: {stack.airflow_url}/dags/{result.dag_id}/runs/{result.run_id}",
        f"  MLflow   {stack.mlflow_url}",
        f"           experiment '{experiment}', registered model: {stack.mlflow_url}/#/models/{model_name}",
        f"           monitoring: experiment '{monitoring_experiment or experiment + '-monitoring'}' "
        "(a run per day; the 'timeline' run charts them)",
        f"  lineage  python -m pipelines lineage --dataset {result.dag_id.removeprefix('train_')}  (the champion's "
        "whole record; `reproduce` refits it from that record)",
        "",
        f"  `make demo` again adds a run; `make down` stops the services (state stays in {stack.home}).",
        "=" * 78,
    ]
    return "\n".join(lines)


def _logins(stack: StackSettings) -> str:
    """Who logs in for what: each role's people."""
    team = services.people(stack)
    roles: tuple[tuple[Role, str], ...] = (
        ("approver", "to approve"),
        ("operator", "to run"),
        ("viewer", "to look"),
        ("admin", "to administer"),
    )
    return ", ".join(f"{'/'.join(team.with_role(r))} {what}" for r, what in roles if team.with_role(r))


def _serving_lines(stack: StackSettings, result: DemoResult) -> list[str]:
    """What the prediction service answered during the replay, and how well, where outcomes are known."""
    import httpx

    from pipelines.monitoring.outcomes import live_performance
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
    dataset = stack.serving_dataset
    config = load_dataset_config(dataset)
    window = config.window
    if window is None:
        raise StackError(f"the demo's dataset {dataset!r} needs a time column and a default window")
    try:
        services.up(stack)
        services.act_as_pipeline(stack)
        seed(stack, dataset, str(window.start), str(window.end))
        result = run_training(
            stack,
            dataset,
            {"reason": "demo"},
            approval=stack.demo_approval,
            approval_comment="approved by `make demo` on the user's behalf (REST API)",
        )
        if result.state == "success" and stack.demo_replay_days > 0:
            result.timeline = run_story(
                stack,
                dataset,
                window.end,
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
