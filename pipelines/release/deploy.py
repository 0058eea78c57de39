"""``deploy``: move the registry alias ``champion`` to an approved version, smoke-test it, put it back on failure.

The previous champion stays reachable behind the alias ``previous-champion`` (and in the new version's tag
``deploy.previous_version``), so ``rollback`` is one alias move. The prediction service, when one runs, is reached
through :class:`PredictionService` (the serving stage implements it; the wiring in ``steps`` passes it in), so this
stage needs nothing from the stages after it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from pipelines.core import audit, registry
from pipelines.core.artifact_digests import UntrustedModelError
from pipelines.core.config import DatasetConfig
from pipelines.core.errors import SmokeTestError
from pipelines.core.model_files import (
    PREPROCESSING_TRUSTED_TYPES,
    checked_model_file,
    download_verified,
    expected_digest,
    trusted_types,
)
from pipelines.core.runs import RunContext
from pipelines.core.settings import Settings
from pipelines.training.description import describe_version

log = logging.getLogger(__name__)


class PredictionService(Protocol):
    """What deploy and rollback ask of the prediction service."""

    def switch_to(self, model_name: str, version: str, timeout: float) -> list[str]:
        """Make the service load ``version`` and wait until it answers with it; the problems, if any."""
        ...

    def reload(self) -> None:
        """Ask the service to check the alias now (best effort)."""
        ...


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


def check_predictions(output: Any, rows: int, task: str = "binary") -> list[str]:
    """Problems with a batch of predictions in the task's shape (empty when they are valid): class probabilities
    (``rows x 2`` for binary, ``rows x k`` for multiclass) that are finite, in [0, 1] and sum to 1, or finite values
    (regression)."""
    arr = np.asarray(output, dtype=float)
    if task == "regression":
        arr = arr.reshape(-1) if arr.ndim == 2 and arr.shape[1] == 1 else arr
        if arr.shape != (rows,):
            return [f"expected {rows} predicted values, got shape {arr.shape}"]
        return [] if np.isfinite(arr).all() else ["non-finite predicted values"]
    problems = []
    if arr.ndim != 2 or arr.shape[0] != rows or arr.shape[1] < 2 or (task == "binary" and arr.shape[1] != 2):
        columns = "2" if task == "binary" else "k >= 2"
        problems.append(f"expected probabilities of shape ({rows}, {columns}), got {arr.shape}")
        return problems
    if not np.isfinite(arr).all():
        problems.append("non-finite probabilities")
    elif (arr < 0).any() or (arr > 1).any():
        problems.append("probabilities outside [0, 1]")
    elif not np.allclose(arr.sum(axis=1), 1.0, atol=1e-6):
        problems.append("class probabilities do not sum to 1")
    return problems


def smoke_test(
    settings: Settings,
    name: str,
    version: str,
    sample: Any,
    max_latency_ms: float,
    task: str = "binary",
    trusted: Sequence[str] = (),
) -> SmokeReport:
    """Load ``models:/<name>/<version>`` as MLflow serves it (pyfunc), once its files are checked against its
    approved digest and as skops with only ``trusted`` types (:mod:`pipelines.core.model_files`), and check its
    predictions and latency on ``sample``. Raises :class:`UntrustedModelError` before deserialising anything else."""
    import tempfile

    import mlflow.pyfunc

    expected = expected_digest(settings.warehouse_url, name, version, "approved")
    with tempfile.TemporaryDirectory(prefix="smoke-") as tmp, registry.quiet_model_io():
        local = download_verified(name, version, expected, tmp)
        checked_model_file(local, [*PREPROCESSING_TRUSTED_TYPES, *trusted])
        model = mlflow.pyfunc.load_model(str(local))
    start = time.perf_counter()
    proba = model.predict(sample)
    batch_ms = (time.perf_counter() - start) * 1000
    singles = []
    for i in range(min(len(sample), 20)):
        t0 = time.perf_counter()
        model.predict(sample.iloc[[i]])
        singles.append((time.perf_counter() - t0) * 1000)
    single_p50 = float(np.median(singles)) if singles else math.nan
    problems = check_predictions(proba, len(sample), task)
    if single_p50 > max_latency_ms:
        problems.append(f"single-record latency p50 {single_p50:.1f} ms exceeds {max_latency_ms:.0f} ms")
    return SmokeReport(ok=not problems, problems=problems, batch_latency_ms=batch_ms, single_p50_ms=single_p50)


def _smoke_sample(config: DatasetConfig, snapshot: dict[str, Any]) -> Any:
    from pipelines.data.extract import load_snapshot
    from pipelines.data.features import build_features

    frame = load_snapshot(snapshot["path"])
    return build_features(frame.tail(config.deploy.smoke_rows), config).reset_index(drop=True)


def deploy(
    config: DatasetConfig,
    settings: Settings,
    trained: dict[str, Any],
    snapshot: dict[str, Any],
    run: RunContext,
    deployed_at: datetime,
    service: PredictionService | None = None,
) -> DeployResult:
    """Smoke-test the approved version itself, then point ``champion`` at it; raise if either fails.

    The smoke test loads ``models:/<name>/<version>`` before the alias moves, so a version that fails it is never
    visible to the service. With a ``service``, the deployment then waits until the service answers with the new
    version, and puts the alias back if it does not.
    """
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
    if not changed:
        previous = tags.get("deploy.previous_version") or None

    failure = "smoke_test_failed"
    try:
        report = smoke_test(
            settings,
            name,
            version,
            _smoke_sample(config, snapshot),
            config.deploy.max_latency_ms,
            config.task,
            trusted_types(config),
        )
    except UntrustedModelError as exc:  # not the approved files, or files that may not be deserialised
        failure = "artifact_refused"
        report = SmokeReport(ok=False, problems=[f"refused: {exc}"], batch_latency_ms=math.nan, single_p50_ms=math.nan)
    except Exception as exc:  # a version that cannot even be loaded fails its smoke test
        report = SmokeReport(
            ok=False,
            problems=[f"could not load or score: {type(exc).__name__}: {exc}"],
            batch_latency_ms=math.nan,
            single_p50_ms=math.nan,
        )
    if report.problems:  # the alias has not moved: the service never saw this version
        _refuse(config, settings, run, deployed_at, name, version, failure, list(report.problems))
        raise SmokeTestError(
            f"deploying {name} v{version} failed ({'; '.join(report.problems)}); "
            f"champion stays {f'v{current.version}' if current is not None else 'none'}"
        )

    if changed:
        mlf.set_registered_model_alias(name, registry.CHAMPION, version)
        log.info("alias %s: %s -> v%s", registry.CHAMPION, f"v{previous}" if previous else "none", version)
    else:
        log.info("v%s is already the champion: alias not moved", version)
    problems = service.switch_to(name, version, config.serving.deploy_wait_seconds) if service else []
    if problems:
        if changed:
            restore_alias(settings, name, previous, service)
        _refuse(config, settings, run, deployed_at, name, version, "serving_switch_failed", problems)
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
        audit.record(
            settings.warehouse_url,
            "deployed",
            at=deployed_at,
            dataset=config.name,
            model_name=name,
            model_version=version,
            actor=run.dag_id,
            mode="policy",
            comment=f"replaced {('v' + previous) if previous else 'none'}",
            run_key=run.key,
        )
    describe_version(config, settings, name, version)
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


def restore_alias(settings: Settings, name: str, previous: str | None, service: PredictionService | None) -> None:
    """Point ``champion`` back at ``previous`` (or remove it) and tell the service, if one runs."""
    mlf = registry.client(settings)
    if previous is not None:
        mlf.set_registered_model_alias(name, registry.CHAMPION, previous)
    else:
        mlf.delete_registered_model_alias(name, registry.CHAMPION)
    if service is not None:
        service.reload()


def _refuse(
    config: DatasetConfig,
    settings: Settings,
    run: RunContext,
    at: datetime,
    name: str,
    version: str,
    failure: str,
    problems: list[str],
) -> None:
    """Tag the version with why it was not deployed and write the failure to the audit trail."""
    registry.set_version_tags(
        settings, name, version, {"deploy.status": failure, "deploy.problems": "; ".join(problems)}
    )
    describe_version(config, settings, name, version)
    audit.record(
        settings.warehouse_url,
        failure,
        at=at,
        dataset=config.name,
        model_name=name,
        model_version=version,
        actor="deploy",
        mode="policy",
        comment="; ".join(problems),
        run_key=run.key,
    )
