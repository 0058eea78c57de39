"""``lineage``: one record of a model version, read from MLflow (run, version, artifacts) and the warehouse (audit
trail, artifact digests, retraining decisions, the prediction log): where its data came from, what validated it,
the code, environment and config it was fit with, how it compared, who approved it, when it was deployed, how it
does live, and why its training run happened.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from pipelines.core import artifact_digests, audit, registry
from pipelines.core.config import DatasetConfig
from pipelines.core.errors import PipelineError
from pipelines.core.settings import Settings
from pipelines.data.sources import source_description
from pipelines.monitoring import store
from pipelines.monitoring.outcomes import live_performance
from pipelines.training.train import CONFIG_ARTIFACT, PREDICTIONS_ARTIFACT

log = logging.getLogger(__name__)

SECTIONS = (
    "model",
    "why",
    "data",
    "suite",
    "code",
    "environment",
    "config",
    "evaluation",
    "gate",
    "approval",
    "artifact",
    "deployment",
    "serving",
    "live",
    "audit",
)


def resolve_version(config: DatasetConfig, settings: Settings, version: str | None) -> str:
    """``version``, or the champion's when none is given."""
    if version is not None:
        return str(version)
    champion = registry.alias_version(settings, config.model.registered_name, registry.CHAMPION)
    if champion is None:
        raise PipelineError(f"{config.model.registered_name} has no champion: name a version (--version N)")
    return str(champion.version)


def lineage(config: DatasetConfig, settings: Settings, version: str | None = None) -> dict[str, Any]:
    """The whole record of the version (the champion's when ``version`` is None), section by section."""
    from mlflow.exceptions import MlflowException

    name = config.model.registered_name
    version = resolve_version(config, settings, version)
    mlf = registry.client(settings)
    try:
        registered = mlf.get_model_version(name, version)
    except MlflowException as exc:
        raise PipelineError(f"{name} has no version {version}") from exc
    if not registered.run_id:
        raise PipelineError(f"{name} v{version} was not registered from a run: it has no lineage")
    run = mlf.get_run(registered.run_id)
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    vtags = registered.tags or {}
    events = [e for e in audit.history(settings.warehouse_url, name) if str(e["model_version"]) == version]
    champion = registry.alias_version(settings, name, registry.CHAMPION)
    is_champion = champion is not None and str(champion.version) == version
    record = {
        "model": {
            "name": name,
            "version": version,
            "task": config.task,
            "registered_at": _ms(registered.creation_timestamp),
            "mlflow_run": registry.run_url(settings, run.info.experiment_id, run.info.run_id),
            "mlflow_version": registry.version_url(settings, name, version),
        },
        "why": _why(config, settings, tags),
        "data": {
            "source": source_description(config),
            "window": tags.get("data.window", "unknown"),
            "rows": tags.get("data.rows") or _int(metrics.get("rows_snapshot")),
            "rows_train": _int(metrics.get("rows_train")),
            "rows_holdout": _int(metrics.get("rows_holdout")),
            "content_hash": tags.get("data.version", "unknown"),
            "snapshot": tags.get("data.snapshot_uri", "not in MLflow (trained before snapshots were stored there)"),
        },
        "suite": {
            "name": tags.get("suite.name", "unknown"),
            "sha256": tags.get("suite.sha256", "unknown"),
            "result": _validation(tags),
            "data_docs": tags.get("validation.data_docs", ""),
        },
        "code": {"commit": tags.get("code.commit", tags.get("git.commit", "unknown")), "dirty": tags.get("code.dirty")},
        "environment": {
            "python": tags.get("env.python", "unknown"),
            "platform": tags.get("env.platform", "unknown"),
            "lock_sha256": tags.get("env.lock_sha256", "unknown"),
            "packages": json.loads(tags.get("env.packages", "{}")),
        },
        "config": {
            "sha256": tags.get("config.sha256", "unknown"),
            "file": f"runs:/{run.info.run_id}/{CONFIG_ARTIFACT}",
            "overrides": json.loads(tags.get("run.overrides") or "{}"),
            "seed": params.get("seed"),
            "estimator": params.get("estimator"),
            "holdout_predictions": f"runs:/{run.info.run_id}/{PREDICTIONS_ARTIFACT}",
        },
        "evaluation": {
            "holdout": _prefixed(metrics, "holdout_"),
            "compared_with": tags.get("evaluation.champion_version", "none"),
            "champion_holdout": _prefixed(metrics, "champion_holdout_"),
            "notes": tags.get("evaluation.notes", ""),
        },
        "gate": {
            "decision": vtags.get("gate.decision", "not gated"),
            "reasons": [r.strip() for r in vtags.get("gate.reasons", "").split(" | ") if r.strip()],
        },
        "approval": _approval(events, vtags),
        "artifact": _digests(settings, name, version),
        "deployment": _deployment(events),
        "serving": {
            "champion_now": is_champion,
            "since": _serving_since(events) if is_champion else None,
            "current_champion": str(champion.version) if champion else None,
        },
        "live": _live(config, settings, version),
        "audit": [
            {
                "at": _iso(e["event_at"]),
                "event": e["event"],
                "actor": e["actor"],
                "mode": e["mode"],
                "comment": e["comment"],
                "run_key": e["run_key"],
            }
            for e in events
        ],
    }
    return record


def _why(config: DatasetConfig, settings: Settings, tags: dict[str, str]) -> dict[str, Any]:
    why: dict[str, Any] = {
        "reason": tags.get("run.reason", "unknown"),
        "dag_id": tags.get("airflow.dag_id"),
        "run_id": tags.get("airflow.run_id"),
        "run_key": tags.get("run.key"),
    }
    run_id = tags.get("airflow.run_id")
    decision = store.decision_for_training_run(settings.warehouse_url, config.name, run_id) if run_id else None
    if decision is not None:
        why["drift"] = {
            "window_end": str(decision["window_end"]),
            "trigger": decision["trigger"],
            "summary": decision["summary"],
            "reasons": list(decision["reasons"]),
            "evidence": (decision.get("training_conf") or {}).get("evidence"),
        }
    return why


def _validation(tags: dict[str, str]) -> str:
    success = tags.get("validation.success", "unknown")
    evaluated, failed = tags.get("validation.evaluated"), tags.get("validation.failed")
    verdict = {"True": "passed", "False": "failed"}.get(success, success)
    return f"{verdict} ({evaluated} expectations, {failed} failed)" if evaluated else verdict


def _approval(events: list[dict[str, Any]], vtags: dict[str, str]) -> dict[str, Any]:
    decided = [e for e in events if e["event"] in ("approved", "rejected", "timed_out")]
    if decided:
        last = decided[-1]
        return {
            "status": last["event"],
            "by": last["actor"],
            "at": _iso(last["event_at"]),
            "mode": last["mode"],
            "comment": last["comment"],
        }
    return {"status": vtags.get("approval.status", "not decided")}


def _digests(settings: Settings, name: str, version: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stage in artifact_digests.STAGES:
        found = artifact_digests.recorded(settings.warehouse_url, name, version, stage)
        out[f"{stage}_sha256"] = found.digest if found else None
        out[f"{stage}_files"] = len(found.files) if found else 0
    return out


def _deployment(events: list[dict[str, Any]]) -> dict[str, Any]:
    deployed = [e for e in events if e["event"] == "deployed"]
    if not deployed:
        return {"deployed": False}
    first = deployed[0]
    comment = str(first["comment"])
    previous = comment.removeprefix("replaced ").removeprefix("v") if comment.startswith("replaced ") else None
    return {
        "deployed": True,
        "at": _iso(first["event_at"]),
        "by": first["actor"],
        "previous_version": None if previous in (None, "none") else previous,
        "times": len(deployed),
        "rolled_back": [_iso(e["event_at"]) for e in events if e["event"] == "rolled_back"],
    }


def _serving_since(events: list[dict[str, Any]]) -> str | None:
    moves = [e for e in events if e["event"] in ("deployed", "rolled_back")]
    return _iso(moves[-1]["event_at"]) if moves else None


def _live(config: DatasetConfig, settings: Settings, version: str) -> dict[str, Any]:
    for perf in live_performance(config, settings):
        if perf.model_version == version:
            return {"predictions": perf.predictions, "labelled": perf.labelled, "metrics": dict(perf.metrics)}
    return {"predictions": 0, "labelled": 0, "metrics": {}}


def _prefixed(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {k.removeprefix(prefix): v for k, v in sorted(metrics.items()) if k.startswith(prefix)}


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _ms(value: int | None) -> str | None:
    from datetime import UTC

    return None if value is None else datetime.fromtimestamp(value / 1000, UTC).isoformat(timespec="seconds")


def _iso(value: Any) -> str:
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else str(value)


def render(record: dict[str, Any]) -> str:
    """The record as text for people: one heading per section, ``key: value`` lines under it."""
    model = record["model"]
    lines = [f"{model['name']} version {model['version']} ({model['task']})"]
    for section in SECTIONS[1:]:
        lines.append("")
        lines.append(f"{section}:")
        lines.extend(_lines(record[section], "  "))
    return "\n".join(lines)


def _lines(value: Any, indent: str) -> list[str]:
    if isinstance(value, dict):
        out = []
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                out.append(f"{indent}{key}:")
                out.extend(_lines(item, indent + "  "))
            else:
                out.append(f"{indent}{key}: {_scalar(item)}")
        return out
    if isinstance(value, list):
        if not value:
            return [f"{indent}(none)"]
        out = []
        for item in value:
            if isinstance(item, dict):
                out.append(
                    f"{indent}- " + ", ".join(f"{k} {_scalar(v)}" for k, v in item.items() if v not in ("", None))
                )
            else:
                out.append(f"{indent}- {_scalar(item)}")
        return out
    return [f"{indent}{_scalar(value)}"]


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return "(none)"
    return str(value)
