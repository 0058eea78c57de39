"""``rollback``: move ``champion`` back to the previous champion (or a named version), by hand."""

from __future__ import annotations

import logging
from datetime import datetime

from pipelines.core import audit, registry
from pipelines.core.config import DatasetConfig
from pipelines.core.errors import NotFoundError
from pipelines.core.runs import RunContext
from pipelines.core.settings import Settings
from pipelines.release.deploy import DeployResult, PredictionService
from pipelines.training.description import describe_version

log = logging.getLogger(__name__)


def rollback(
    config: DatasetConfig,
    settings: Settings,
    run: RunContext,
    at: datetime,
    to_version: str | None = None,
    reason: str = "",
    service: PredictionService | None = None,
) -> DeployResult:
    """Move ``champion`` back to ``to_version`` (default: ``previous-champion``); the replaced one becomes previous."""
    name = config.model.registered_name
    mlf = registry.client(settings)
    current = registry.alias_version(settings, name, registry.CHAMPION)
    if to_version is None:
        prev = registry.alias_version(settings, name, registry.PREVIOUS)
        if prev is None:
            raise NotFoundError(f"{name} has no {registry.PREVIOUS!r} alias: name the version to roll back to")
        to_version = str(prev.version)
    mlf.get_model_version(name, to_version)  # raises if it does not exist
    old = str(current.version) if current is not None else None
    if old == to_version:
        log.info("v%s is already the champion: nothing to roll back", to_version)
    else:
        _check_approved_files(config, settings, run, at, name, to_version)
        mlf.set_registered_model_alias(name, registry.CHAMPION, to_version)
        if old is not None:
            mlf.set_registered_model_alias(name, registry.PREVIOUS, old)
            registry.set_version_tags(
                settings, name, old, {"deploy.status": "rolled_back", "deploy.rolled_back_at": at.isoformat()}
            )
        registry.set_version_tags(settings, name, to_version, {"deploy.status": "champion"})
        for described in (to_version, old):
            if described is not None:
                describe_version(config, settings, name, described)
        if service is not None:
            service.reload()
        audit.record(
            settings.warehouse_url,
            "rolled_back",
            at=at,
            dataset=config.name,
            model_name=name,
            model_version=to_version,
            actor=run.dag_id,
            mode="manual",
            comment=reason or f"rolled back from v{old}",
            run_key=run.key,
        )
        log.info("rolled back %s: champion v%s -> v%s", name, old, to_version)
    return DeployResult(
        model_name=name,
        champion_version=to_version,
        previous_version=old,
        changed=old != to_version,
        smoke_rows=0,
        smoke_batch_latency_ms=0.0,
        smoke_single_p50_ms=0.0,
        model_version_url=registry.version_url(settings, name, to_version),
    )


def _check_approved_files(
    config: DatasetConfig, settings: Settings, run: RunContext, at: datetime, name: str, version: str
) -> None:
    """Refuse to roll back to a version that was never approved or whose files changed since (audit
    ``artifact_refused``): the service would refuse it anyway, and the champion must not point at it."""
    import tempfile

    from pipelines.core.artifact_digests import UntrustedModelError
    from pipelines.core.model_files import download_verified, expected_digest

    try:
        expected = expected_digest(settings.warehouse_url, name, version, "approved")
        with tempfile.TemporaryDirectory(prefix="rollback-") as tmp:
            download_verified(name, version, expected, tmp)
    except UntrustedModelError as exc:
        audit.record(
            settings.warehouse_url,
            "artifact_refused",
            at=at,
            dataset=config.name,
            model_name=name,
            model_version=version,
            actor="rollback",
            mode="policy",
            comment=f"not rolled back to: {exc}"[:2000],
            run_key=run.key,
        )
        raise
