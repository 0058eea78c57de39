"""``deploy`` and ``rollback``: move the registry alias ``champion``, smoke-test it, put it back on failure.

The previous champion stays reachable behind the alias ``previous-champion`` (and in the new version's tag
``deploy.previous_version``), so ``rollback`` is one alias move.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np

from pipelines import audit, registry
from pipelines.config import DatasetConfig
from pipelines.errors import NotFoundError, SmokeTestError
from pipelines.runs import RunContext
from pipelines.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeployResult:
    """The champion after the step, the one it replaced, and what the smoke test measured."""

    model_name: str
    champion_version: str
    previous_version: str | None
    changed: bool
    smoke_rows: int
    smoke_batch_latency_ms: float
    smoke_single_p50_ms: float
    model_version_url: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SmokeReport:
    ok: bool
    problems: list[str]
    batch_latency_ms: float
    single_p50_ms: float


def check_predictions(proba: Any, rows: int) -> list[str]:
    """Problems with a batch of predicted class probabilities (empty when they are valid)."""
    arr = np.asarray(proba, dtype=float)
    problems = []
    if arr.ndim != 2 or arr.shape != (rows, 2):
        problems.append(f"expected probabilities of shape ({rows}, 2), got {arr.shape}")
        return problems
    if not np.isfinite(arr).all():
        problems.append("non-finite probabilities")
    elif (arr < 0).any() or (arr > 1).any():
        problems.append("probabilities outside [0, 1]")
    elif not np.allclose(arr.sum(axis=1), 1.0, atol=1e-6):
        problems.append("class probabilities do not sum to 1")
    return problems


def smoke_test(model_uri: str, sample: Any, max_latency_ms: float) -> SmokeReport:
    """Load ``model_uri`` as MLflow serves it (pyfunc) and check its predictions and latency on ``sample``."""
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(model_uri)
    start = time.perf_counter()
    proba = model.predict(sample)
    batch_ms = (time.perf_counter() - start) * 1000
    singles = []
    for i in range(min(len(sample), 20)):
        t0 = time.perf_counter()
        model.predict(sample.iloc[[i]])
        singles.append((time.perf_counter() - t0) * 1000)
    single_p50 = float(np.median(singles)) if singles else math.nan
    problems = check_predictions(proba, len(sample))
    if single_p50 > max_latency_ms:
        problems.append(f"single-record latency p50 {single_p50:.1f} ms exceeds {max_latency_ms:.0f} ms")
    return SmokeReport(ok=not problems, problems=problems, batch_latency_ms=batch_ms, single_p50_ms=single_p50)


def _smoke_sample(config: DatasetConfig, snapshot: dict[str, Any]) -> Any:
    from pipelines.extract import load_snapshot
    from pipelines.features import build_features

    frame = load_snapshot(snapshot["path"])
    return build_features(frame.tail(config.deploy.smoke_rows), config).reset_index(drop=True)


def deploy(
    config: DatasetConfig,
    settings: Settings,
    trained: dict[str, Any],
    snapshot: dict[str, Any],
    run: RunContext,
    deployed_at: datetime,
) -> DeployResult:
    """Point ``champion`` at the approved version and smoke-test it; on failure restore the alias and raise."""
    name, version = trained["model_name"], str(trained["model_version"])
    mlf = registry.client(settings)
    tags = mlf.get_model_version(name, version).tags
    if tags.get("approval.status") != "approved":
        raise SmokeTestError(
            f"{name} v{version} is not approved (approval.status={tags.get('approval.status')!r}): refusing to deploy"
        )
    current = registry.alias_version(settings, name, registry.CHAMPION)
    previous = str(current.version) if current is not None else None
    changed = previous != version
    if changed:
        mlf.set_registered_model_alias(name, registry.CHAMPION, version)
        log.info("alias %s: %s -> v%s", registry.CHAMPION, f"v{previous}" if previous else "none", version)
    else:
        previous = tags.get("deploy.previous_version") or None
        log.info("v%s is already the champion: alias not moved", version)

    try:
        report = smoke_test(
            f"models:/{name}@{registry.CHAMPION}", _smoke_sample(config, snapshot), config.deploy.max_latency_ms
        )
    except Exception as exc:  # a version that cannot even be loaded fails its smoke test: the alias goes back
        report = SmokeReport(
            ok=False,
            problems=[f"could not load or score: {type(exc).__name__}: {exc}"],
            batch_latency_ms=math.nan,
            single_p50_ms=math.nan,
        )
    problems, failure = list(report.problems), "smoke_test_failed"
    if not problems:
        problems, failure = _switch_service(config, settings, name, version), "serving_switch_failed"
    if problems:
        if changed:
            _restore_alias(settings, name, previous)
        registry.set_version_tags(
            settings, name, version, {"deploy.status": failure, "deploy.problems": "; ".join(problems)}
        )
        audit.record(
            settings.warehouse_url,
            audit.AuditEvent(
                event_at=deployed_at,
                dataset=config.name,
                model_name=name,
                model_version=version,
                event=failure,
                actor="deploy",
                mode="policy",
                comment="; ".join(problems),
                run_key=run.key,
            ),
        )
        raise SmokeTestError(
            f"deploying {name} v{version} failed ({'; '.join(problems)}); "
            f"champion restored to {('v' + previous) if previous else 'none'}"
        )

    if changed:
        if previous is not None:
            mlf.set_registered_model_alias(name, registry.PREVIOUS, previous)
        registry.set_version_tags(
            settings,
            name,
            version,
            {
                "deploy.status": "champion",
                "deploy.at": deployed_at.isoformat(),
                "deploy.previous_version": previous or "none",
                "deploy.run_key": run.key,
                "deploy.smoke_batch_latency_ms": f"{report.batch_latency_ms:.1f}",
                "deploy.smoke_single_p50_ms": f"{report.single_p50_ms:.2f}",
            },
        )
        _record_reference(config, settings, name, version)
        audit.record(
            settings.warehouse_url,
            audit.AuditEvent(
                event_at=deployed_at,
                dataset=config.name,
                model_name=name,
                model_version=version,
                event="deployed",
                actor=run.dag_id,
                mode="policy",
                comment=f"replaced {('v' + previous) if previous else 'none'}",
                run_key=run.key,
            ),
        )
    return DeployResult(
        model_name=name,
        champion_version=version,
        previous_version=previous,
        changed=changed,
        smoke_rows=config.deploy.smoke_rows,
        smoke_batch_latency_ms=round(report.batch_latency_ms, 2),
        smoke_single_p50_ms=round(report.single_p50_ms, 3),
        model_version_url=registry.version_url(settings, name, version),
    )


def _record_reference(config: DatasetConfig, settings: Settings, name: str, version: str) -> None:
    """Prepare the new champion's monitoring reference now (monitoring would otherwise do it on its first run)."""
    from pipelines.monitoring.reference import record_reference

    try:
        record_reference(config, settings, name, version)
    except Exception as exc:  # monitoring must not undo a good deployment: it prepares the reference itself later
        log.warning("could not record the monitoring reference of v%s now (%s): monitoring will retry", version, exc)


def _restore_alias(settings: Settings, name: str, previous: str | None) -> None:
    """Point ``champion`` back at ``previous`` (or remove it) and tell the service, if one runs."""
    mlf = registry.client(settings)
    if previous is not None:
        mlf.set_registered_model_alias(name, registry.CHAMPION, previous)
    else:
        mlf.delete_registered_model_alias(name, registry.CHAMPION)
    notify_service(settings)


def _switch_service(config: DatasetConfig, settings: Settings, name: str, version: str) -> list[str]:
    """Make the prediction service load the new champion and wait until it answers with it (problems, if any)."""
    from pipelines.serving.client import ServingClient, ServingError

    if not settings.serving_url:
        log.info("no prediction service configured (MLOPS_SERVING_URL): nothing to switch")
        return []
    with ServingClient(settings.serving_url, settings.serving_admin_token) as service:
        try:
            status = service.model()
        except Exception as exc:
            return [f"prediction service at {settings.serving_url} unreachable: {type(exc).__name__}: {exc}"]
        if status.get("name") != name:
            log.info(
                "the service at %s serves %s, not %s: nothing to switch", settings.serving_url, status.get("name"), name
            )
            return []
        try:
            answered = service.wait_for_version(name, version, config.serving.deploy_wait_seconds)
        except ServingError as exc:
            return [str(exc)]
    log.info(
        "the prediction service at %s answers with %s v%s since %s",
        settings.serving_url,
        name,
        version,
        answered.get("since"),
    )
    return []


def notify_service(settings: Settings) -> None:
    """Ask the prediction service to check the alias now (best effort: it also polls the alias)."""
    from pipelines.serving.client import ServingClient

    if not settings.serving_url:
        return
    try:
        with ServingClient(settings.serving_url, settings.serving_admin_token, timeout=10) as service:
            service.reload()
    except Exception as exc:
        log.warning(
            "could not reach the prediction service at %s (%s): it will notice the alias within its polling interval",
            settings.serving_url,
            exc,
        )


def rollback(
    config: DatasetConfig,
    settings: Settings,
    run: RunContext,
    at: datetime,
    to_version: str | None = None,
    reason: str = "",
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
        mlf.set_registered_model_alias(name, registry.CHAMPION, to_version)
        if old is not None:
            mlf.set_registered_model_alias(name, registry.PREVIOUS, old)
            registry.set_version_tags(
                settings, name, old, {"deploy.status": "rolled_back", "deploy.rolled_back_at": at.isoformat()}
            )
        registry.set_version_tags(settings, name, to_version, {"deploy.status": "champion"})
        notify_service(settings)
        audit.record(
            settings.warehouse_url,
            audit.AuditEvent(
                event_at=at,
                dataset=config.name,
                model_name=name,
                model_version=to_version,
                event="rolled_back",
                actor=run.dag_id,
                mode="manual",
                comment=reason or f"rolled back from v{old}",
                run_key=run.key,
            ),
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
