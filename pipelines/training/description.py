"""The Markdown descriptions data scientists read in the MLflow registry.

A model version's description says what it was fit on (source, window, rows, content hash), how it compared with
the champion of its evaluation, why its run happened (manual, schedule, drift with the evidence's link), and what
the loop decided since: the gate and its reasons, the approval (who, when, how, why) and the deployment. It is
rendered whole from the facts MLflow holds (run tags and metrics, version tags), never appended to, so every step
that changes a fact rewrites it the same way and a rerun leaves it as it was. The registered model's description
says what the dataset is and what the model predicts, from the dataset's config.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipelines.core import registry
from pipelines.core.config import LOWER_IS_BETTER, METRICS, DatasetConfig
from pipelines.core.settings import Settings

if TYPE_CHECKING:
    from mlflow.entities import Run

log = logging.getLogger(__name__)

_REASONS = {
    "manual": "started by a person (manual trigger)",
    "schedule": "the training schedule",
    "scheduled": "the training schedule",
}


@dataclass(frozen=True)
class VersionFacts:
    """What a model version's description says, as MLflow records it (missing facts are ``None`` or empty)."""

    model_name: str
    version: str
    task: str
    dataset: str
    source: str
    window: str
    rows: str
    rows_train: int | None
    rows_holdout: int | None
    content_hash: str
    reason: str
    dag_id: str | None = None
    airflow_run_id: str | None = None
    evidence_url: str | None = None
    run_url: str | None = None
    candidate: dict[str, float] = field(default_factory=dict)
    champion: dict[str, float] = field(default_factory=dict)
    compared_with: str | None = None
    evaluation_notes: str = ""
    gate_decision: str | None = None
    gate_reasons: tuple[str, ...] = ()
    approval: dict[str, str] = field(default_factory=dict)
    deployment: dict[str, str] = field(default_factory=dict)


def render_version_description(facts: VersionFacts) -> str:
    """The version's Markdown description: data, why, evaluation, gate, approval, deployment."""
    lines = [
        f"## {facts.model_name} v{facts.version}: {facts.task} model of `{facts.dataset}`",
        "",
        "### Data",
        f"- source: {facts.source}",
        f"- window: {facts.window}",
        f"- rows: {facts.rows}"
        + (
            f" ({facts.rows_train} for training, {facts.rows_holdout} held out)"
            if facts.rows_train is not None and facts.rows_holdout is not None
            else ""
        ),
        f"- content hash: `{facts.content_hash}`",
        "",
        "### Why this run happened",
        f"- {_reason(facts.reason)}",
    ]
    if facts.evidence_url:
        lines.append(f"- evidence: [monitoring run]({facts.evidence_url})")
    if facts.dag_id:
        lines.append(f"- Airflow: `{facts.dag_id}` run `{facts.airflow_run_id}`")
    if facts.run_url:
        lines.append(f"- [MLflow run (metrics, plots, comparison)]({facts.run_url})")
    lines += ["", "### Holdout metrics", *_metrics_table(facts)]
    if facts.evaluation_notes:
        lines.append(f"\nNotes: {facts.evaluation_notes}")
    lines += ["", "### Gate"]
    if facts.gate_decision:
        lines.append(f"**{facts.gate_decision}**")
        lines += [f"- {reason}" for reason in facts.gate_reasons]
    else:
        lines.append("not gated yet")
    lines += ["", "### Approval", _approval(facts.approval)]
    lines += ["", "### Deployment", _deployment(facts.deployment)]
    return "\n".join(lines) + "\n"


def render_model_description(config: DatasetConfig) -> str:
    """The registered model's Markdown description: the dataset and the task, from the dataset's config."""
    from pipelines.data.sources import source_description

    target = config.target
    what = f"`{target.label}`"
    if target.rule is not None:
        what += f" (`{target.column}` {target.rule.op} {target.rule.threshold:g})"
    elif config.task == "binary" and target.positive is not None:
        what += f" (positive class: `{target.positive}`)"
    features = ", ".join(f"`{f.name}` ({f.type})" for f in config.features)
    return (
        "\n".join(
            [
                f"## {config.model.registered_name}",
                "",
                config.description.strip() or f"The `{config.name}` dataset.",
                "",
                f"- task: {config.task}, predicting {what}",
                f"- dataset: `{config.name}` from {source_description(config)}",
                f"- features ({len(config.features)}): {features}",
                f"- estimator: `{config.model.estimator}`",
                f"- experiment: `{config.model.experiment}`; the deployed version is the alias `{registry.CHAMPION}`",
                "",
                "Each version's description holds its data, its metrics against the champion, the gate's reasons, "
                "the approval and the deployment.",
            ]
        )
        + "\n"
    )


def version_facts(config: DatasetConfig, settings: Settings, name: str, version: str) -> VersionFacts:
    """Read the version's facts from MLflow: its run's tags and metrics and its own tags."""
    from pipelines.data.sources import source_description

    mlf = registry.client(settings)
    registered = mlf.get_model_version(name, version)
    vtags = dict(registered.tags or {})
    run: Run | None = mlf.get_run(registered.run_id) if registered.run_id else None
    tags = {**(run.data.tags if run else {}), **vtags}
    metrics = dict(run.data.metrics) if run else {}
    compared = tags.get("evaluation.champion_version")
    return VersionFacts(
        model_name=name,
        version=str(version),
        task=config.task,
        dataset=config.name,
        source=source_description(config),
        window=tags.get("data.window", "unknown"),
        rows=tags.get("data.rows", "unknown"),
        rows_train=_int(metrics.get("rows_train")),
        rows_holdout=_int(metrics.get("rows_holdout")),
        content_hash=tags.get("data.version", "unknown"),
        reason=tags.get("run.reason", "unknown"),
        dag_id=tags.get("airflow.dag_id"),
        airflow_run_id=tags.get("airflow.run_id"),
        evidence_url=tags.get("run.evidence") or None,
        run_url=registry.run_url(settings, run.info.experiment_id, run.info.run_id) if run else None,
        candidate=_prefixed(metrics, "holdout_"),
        champion=_prefixed(metrics, "champion_holdout_"),
        compared_with=None if compared in (None, "", "none") else compared,
        evaluation_notes=tags.get("evaluation.notes", ""),
        gate_decision=vtags.get("gate.decision"),
        gate_reasons=tuple(r.strip() for r in vtags.get("gate.reasons", "").split(" | ") if r.strip()),
        approval={k.removeprefix("approval."): v for k, v in vtags.items() if k.startswith("approval.")},
        deployment={k.removeprefix("deploy."): v for k, v in vtags.items() if k.startswith("deploy.")},
    )


def describe_version(config: DatasetConfig, settings: Settings, name: str, version: str) -> str:
    """Rewrite the version's description from what MLflow holds now (written only when it changed)."""
    text = render_version_description(version_facts(config, settings, name, version))
    mlf = registry.client(settings)
    if (mlf.get_model_version(name, version).description or "") != text:
        mlf.update_model_version(name, version, description=text)
        log.info("%s v%s: description updated", name, version)
    return text


def describe_model(config: DatasetConfig, settings: Settings) -> str:
    """Set the registered model's description from the dataset's config (written only when it changed)."""
    name = config.model.registered_name
    text = render_model_description(config)
    mlf = registry.client(settings)
    if (mlf.get_registered_model(name).description or "") != text:
        mlf.update_registered_model(name, description=text)
        log.info("%s: registered model description updated", name)
    return text


def _reason(reason: str) -> str:
    if reason in _REASONS:
        return _REASONS[reason]
    if reason.startswith(("drift", "performance")) or ":" in reason:
        return f"retraining decided by monitoring: {reason}"
    return f"reason: {reason}"


def _metrics_table(facts: VersionFacts) -> list[str]:
    if not facts.candidate:
        return ["not evaluated yet"]
    champion = f"champion v{facts.compared_with}" if facts.compared_with else "champion"
    names = [m for m in METRICS if m in facts.candidate] or sorted(facts.candidate)
    rows = [f"| metric | candidate | {champion} | difference |", "|---|---|---|---|"]
    for metric in names:
        value, other = facts.candidate[metric], facts.champion.get(metric)
        if other is None or math.isnan(other):
            rows.append(f"| {metric} | {value:.4f} | – | – |")
            continue
        better = (value - other) * (-1 if metric in LOWER_IS_BETTER else 1)
        mark = " (better)" if better > 0 else " (worse)" if better < 0 else ""
        rows.append(f"| {metric} | {value:.4f} | {other:.4f} | {value - other:+.4f}{mark} |")
    if not facts.compared_with:
        rows.append("\nNo champion to compare with.")
    return rows


def _approval(approval: dict[str, str]) -> str:
    status = approval.get("status")
    if not status:
        return "not decided yet"
    comment = approval.get("comment", "")
    line = f"**{status}** by {approval.get('by', 'unknown')} at {approval.get('at', 'unknown')}"
    line += f" ({approval.get('mode', 'unknown')})"
    return line + (f": {comment}" if comment and comment != "-" else "")


def _deployment(deployment: dict[str, str]) -> str:
    status = deployment.get("status")
    if not status:
        return "not deployed"
    if status == "champion":
        previous = deployment.get("previous_version", "none")
        at = f" since {deployment['at']}" if deployment.get("at") else ""
        return f"**champion**{at} (replaced {'v' + previous if previous not in ('', 'none') else 'none'})"
    if status == "rolled_back":
        return f"**rolled back** at {deployment.get('rolled_back_at', 'unknown')}"
    problems = deployment.get("problems", "")
    return f"**{status}**" + (f": {problems}" if problems else "")


def _prefixed(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {k.removeprefix(prefix): v for k, v in metrics.items() if k.startswith(prefix)}


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)
