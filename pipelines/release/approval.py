"""The approval step's logic: the evidence shown to the approver, and the record of their decision."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from pipelines.core import audit, registry
from pipelines.core.config import METRICS, DatasetConfig
from pipelines.core.runs import RunContext
from pipelines.core.settings import Settings
from pipelines.training.description import describe_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApprovalRecord:
    """Who decided what about which version, when, how (manual, auto, timeout) and why."""

    model_name: str
    model_version: str
    status: str  # approved | rejected | timed_out
    decided_by: str
    decided_at: str
    mode: str
    comment: str

    @property
    def approved(self) -> bool:
        return self.status == "approved"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def approval_body(
    trained: dict[str, Any], evaluation: dict[str, Any], decision: dict[str, Any], data_docs_url: str
) -> str:
    """Markdown shown in Airflow's Required Actions: metrics against the champion, gate reasons, links."""
    champion = evaluation.get("champion") or {}
    rows = "\n".join(
        f"| {m} | {evaluation['candidate'].get(m, float('nan')):.4f} | "
        + (f"{champion[m]:.4f}" if m in champion else "–")
        + " |"
        for m in METRICS
        if m in evaluation["candidate"]  # the task's own metrics (pipelines.core.config.TASK_METRICS)
    )
    champ = f"v{evaluation['champion_version']}" if evaluation.get("champion_version") else "none yet"
    reasons = "\n".join(f"- {r}" for r in decision["reasons"])
    return (
        f"### Promote {trained['model_name']} v{trained['model_version']} to champion?\n\n"
        f"Holdout of {evaluation['holdout_rows']} rows. Current champion: {champ}.\n\n"
        f"| metric | candidate | champion |\n|---|---|---|\n{rows}\n\n"
        f"**Gate: {'passed' if decision['passed'] else 'failed'}**\n\n{reasons}\n\n"
        f"- [MLflow run (metrics, plots, comparison)]({trained['mlflow_run_url']})\n"
        f"- [Model version]({trained['model_version_url']})\n"
        f"- [Data Docs (validation)]({data_docs_url})\n\n"
        "Approve to move the `champion` alias to this version; reject to keep the current champion. "
        "Add a comment for the audit trail."
    )


def record_approval(
    config: DatasetConfig,
    settings: Settings,
    trained: dict[str, Any],
    run: RunContext,
    *,
    status: str,
    decided_by: str,
    decided_at: datetime,
    mode: str,
    comment: str = "",
) -> ApprovalRecord:
    """Write the decision on the model version's tags and in the audit table (idempotent per run)."""
    if status not in ("approved", "rejected", "timed_out"):
        raise ValueError(f"approval status must be approved, rejected or timed_out, got {status!r}")
    if status == "approved":  # before anything says approved: the files must still be the ones trained
        record_approved_digest(config, settings, trained, run, decided_by=decided_by, decided_at=decided_at)
    rec = ApprovalRecord(
        model_name=trained["model_name"],
        model_version=str(trained["model_version"]),
        status=status,
        decided_by=decided_by,
        decided_at=decided_at.isoformat(),
        mode=mode,
        comment=comment,
    )
    registry.set_version_tags(
        settings,
        rec.model_name,
        rec.model_version,
        {
            "approval.status": rec.status,
            "approval.by": rec.decided_by,
            "approval.at": rec.decided_at,
            "approval.mode": rec.mode,
            "approval.comment": rec.comment or "-",
            "approval.run_key": run.key,
        },
    )
    describe_version(config, settings, rec.model_name, rec.model_version)
    audit.record(
        settings.warehouse_url,
        status,
        at=decided_at,
        dataset=config.name,
        model_name=rec.model_name,
        model_version=rec.model_version,
        actor=decided_by,
        mode=mode,
        comment=comment,
        run_key=run.key,
    )
    log.info(
        "%s v%s %s by %s (%s)%s",
        rec.model_name,
        rec.model_version,
        status,
        decided_by,
        mode,
        f": {comment}" if comment else "",
    )
    return rec


def record_approved_digest(
    config: DatasetConfig,
    settings: Settings,
    trained: dict[str, Any],
    run: RunContext,
    *,
    decided_by: str,
    decided_at: datetime,
) -> str:
    """Check the version's files are still those of its ``trained`` digest and record them as ``approved``: the
    digest deploy, the service and monitoring check before loading. A change is refused (audit
    ``artifact_refused``) and raises :class:`UntrustedModelError`."""
    import tempfile

    from pipelines.core import artifact_digests
    from pipelines.core.model_files import download_verified, expected_digest

    name, version = trained["model_name"], str(trained["model_version"])
    registry.client(settings)
    try:
        trained_digest = expected_digest(settings.warehouse_url, name, version, "trained")
        with tempfile.TemporaryDirectory(prefix="approve-") as tmp:
            local = download_verified(name, version, trained_digest, tmp)
            digest = artifact_digests.folder_digest(local)
        artifact_digests.record(
            settings.warehouse_url,
            name,
            version,
            "approved",
            digest,
            at=decided_at,
            actor=decided_by,
            run_key=run.key,
        )
    except artifact_digests.UntrustedModelError as exc:
        audit.record(
            settings.warehouse_url,
            "artifact_refused",
            at=decided_at,
            dataset=config.name,
            model_name=name,
            model_version=version,
            actor="approval",
            mode="policy",
            comment=f"not approved: {exc}"[:2000],
            run_key=run.key,
        )
        raise
    log.info("%s v%s: approved artifact sha256 %s", name, version, digest.digest)
    return digest.digest


def record_gate(
    config: DatasetConfig,
    settings: Settings,
    trained: dict[str, Any],
    decision: dict[str, Any],
    run: RunContext,
    decided_at: datetime,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Log the gate decision and its reasons to the MLflow run and as tags on the model version; the run's
    accepted overrides go on the MLflow run (``run.overrides``) and into the audit trail (``overrides``)."""
    import mlflow

    registry.client(settings)
    verdict = "passed" if decision["passed"] else "failed"
    with mlflow.start_run(run_id=trained["run_id"]):
        mlflow.set_tags(
            {
                "gate.decision": verdict,
                "gate.reasons": " | ".join(decision["reasons"])[:5000],
                "run.overrides": json.dumps(overrides or {}, sort_keys=True)[:5000],
            }
        )
        mlflow.log_dict(decision, "gate/decision.json")
    registry.set_version_tags(
        settings,
        trained["model_name"],
        str(trained["model_version"]),
        {
            "gate.decision": verdict,
            "gate.reasons": " | ".join(decision["reasons"])[:5000],
        },
    )
    describe_version(config, settings, trained["model_name"], str(trained["model_version"]))
    if overrides:
        audit.record(
            settings.warehouse_url,
            "overrides",
            at=decided_at,
            dataset=config.name,
            model_name=trained["model_name"],
            model_version=str(trained["model_version"]),
            actor=run.dag_id,
            mode="run",
            comment=f"trained with overrides {json.dumps(overrides, sort_keys=True)}"[:2000],
            run_key=run.key,
        )
    if not decision["passed"]:
        audit.record(
            settings.warehouse_url,
            "gate_failed",
            at=decided_at,
            dataset=config.name,
            model_name=trained["model_name"],
            model_version=str(trained["model_version"]),
            actor="gate",
            mode="policy",
            comment="; ".join(r for r in decision["reasons"] if r.startswith("FAIL"))[:2000],
            run_key=run.key,
        )
