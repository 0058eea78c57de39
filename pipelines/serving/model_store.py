"""The model the service answers with: the registry's ``champion``, loaded and swapped without a restart.

A background thread watches the alias (every ``alias_poll_seconds``, or at once when asked through
``POST /admin/reload``). When the alias points at another version, that version is downloaded, compiled (see
:mod:`pipelines.serving.predictors`) and smoke-tested while the current one keeps answering; only then does one
reference assignment switch every later request to it. A version that fails to load is reported (``/model``,
``/metrics``, the log) and not retried until asked again or the alias moves; the old version keeps serving.

The model's task (binary, multiclass, regression) and, for multiclass, its classes come from its MLmodel metadata
(``mlops.task``, binary for models trained before there were tasks; ``mlops.classes``, else the estimator's
``classes_``); the smoke test checks the output's shape and values for that task.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pipelines.core.artifact_digests import UntrustedModelError
from pipelines.core.model_files import (
    PREPROCESSING_TRUSTED_TYPES,
    download_verified,
    expected_digest,
    load_sklearn_model,
)
from pipelines.serving.parsing import Batch, parse_batch
from pipelines.serving.predictors import TASKS, Predictor, best_predictor
from pipelines.training.contract import (
    CLASSES_KEY,
    METADATA_KEY,
    TASK_KEY,
    THRESHOLD_KEY,
    InputContract,
    contract_from_signature,
)

log = logging.getLogger(__name__)

ALIAS = "champion"
PROBABILITY_SUM_TOLERANCE = 1e-6


class ModelLoadError(RuntimeError):
    """A model version could not be loaded or failed its smoke test; ``untrusted`` when its files were refused
    before anything was deserialised (not the approved files, not skops, untrusted types)."""

    def __init__(self, message: str, untrusted: bool = False) -> None:
        super().__init__(message)
        self.untrusted = untrusted


@dataclass(frozen=True)
class LoadedModel:
    """One servable version and what the service needs to answer with it."""

    name: str
    version: str
    run_id: str | None
    since: datetime
    predictor: Predictor
    contract: InputContract
    threshold: float
    load_seconds: float
    task: str = "binary"
    classes: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        """What ``/model`` shows: the version, its task (threshold for binary, classes for multiclass), the rest."""
        task_fields: dict[str, Any] = {"task": self.task}
        if self.task == "binary":
            task_fields["threshold"] = self.threshold
        if self.task == "multiclass":
            task_fields["classes"] = list(self.classes)
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "since": self.since.isoformat(),
            "predictor": self.predictor.kind,
            **task_fields,
            "contract": self.contract.source,
            "load_seconds": round(self.load_seconds, 2),
        }


def load_model_version(
    name: str,
    version: str,
    tracking_uri: str,
    warehouse_url: str,
    fallback_contract: InputContract,
    fallback_threshold: float,
    trusted: Sequence[str] = PREPROCESSING_TRUSTED_TYPES,
) -> LoadedModel:
    """Download ``models:/<name>/<version>``, check its files against the digest recorded when it was approved,
    load it with skops and the ``trusted`` types of the dataset's config (never with what its own files ask for),
    build its predictor and smoke-test it; raise ModelLoadError."""
    import time

    import mlflow
    from mlflow.models import Model

    started = time.perf_counter()
    mlflow.set_tracking_uri(tracking_uri)
    uri = f"models:/{name}/{version}"
    try:
        expected = expected_digest(warehouse_url, name, version, "approved")
        with tempfile.TemporaryDirectory(prefix="serving-") as tmp:
            local = str(download_verified(name, version, expected, tmp))  # before any of its files is read
            meta = Model.load(local)
            contract = _contract(meta, fallback_contract)
            metadata = meta.metadata or {}
            task = model_task(metadata, uri)
            threshold = float(metadata.get(THRESHOLD_KEY, fallback_threshold))
            example = _example(meta, local, contract)
            predictor: Predictor
            model = load_sklearn_model(local, trusted)  # refuses pickle, pyfunc and untrusted types
            classes = model_classes(metadata, model, task, uri)
            predictor = best_predictor(model, contract, example, task)
    except ModelLoadError:
        raise
    except UntrustedModelError as exc:
        raise ModelLoadError(f"{uri} was refused: {exc}", untrusted=True) from exc
    except Exception as exc:  # any failure to fetch or deserialize is a refused version, never a crash
        raise ModelLoadError(f"{uri} could not be loaded: {type(exc).__name__}: {exc}") from exc
    smoke_test(predictor, contract, example, uri, task, len(classes))
    return LoadedModel(
        name=name,
        version=str(version),
        run_id=meta.run_id,
        since=datetime.now(UTC),
        predictor=predictor,
        contract=contract,
        threshold=threshold,
        load_seconds=time.perf_counter() - started,
        task=task,
        classes=classes,
    )


def model_task(metadata: dict[str, Any], uri: str) -> str:
    """The task recorded with the model (``mlops.task``); binary for a model trained before tasks existed."""
    task = str(metadata.get(TASK_KEY, "binary"))
    if task not in TASKS:
        raise ModelLoadError(f"{uri} has an unknown task {task!r} in its metadata ({TASK_KEY}); known: {TASKS}")
    return task


def model_classes(metadata: dict[str, Any], model: Any, task: str, uri: str) -> tuple[str, ...]:
    """A multiclass model's classes in its probability columns' order, as strings: ``mlops.classes``, checked
    against the estimator's ``classes_`` when the estimator is at hand; empty for the other tasks."""
    if task != "multiclass":
        return ()
    recorded = metadata.get(CLASSES_KEY)
    fitted = None if model is None or not hasattr(model, "classes_") else [str(c) for c in model.classes_]
    if recorded is not None and fitted is not None and [str(c) for c in recorded] != fitted:
        raise ModelLoadError(f"{uri}: its metadata's classes ({CLASSES_KEY}) {recorded} are not the fitted {fitted}")
    classes = [str(c) for c in recorded] if recorded is not None else fitted
    if not classes or len(classes) < 2:
        raise ModelLoadError(f"{uri} is multiclass but names no classes ({CLASSES_KEY} in its metadata, or classes_)")
    if len(set(classes)) != len(classes):
        raise ModelLoadError(f"{uri}: its classes {classes} are not distinct as strings")
    return tuple(classes)


def _contract(meta: Any, fallback: InputContract) -> InputContract:
    """The contract written with the model; else the config's, if the signature agrees; else the signature's."""
    stored = (meta.metadata or {}).get(METADATA_KEY)
    signature_names = [c["name"] for c in meta.signature.inputs.to_dict()] if meta.signature else None
    if stored:
        contract = InputContract.from_dict(stored)
    elif signature_names is None or signature_names == fallback.names:
        contract = fallback
    else:
        contract = contract_from_signature(meta.signature.inputs.to_dict())
    if signature_names is not None and signature_names != contract.names:
        raise ModelLoadError(f"the model's signature takes {signature_names}, its contract {contract.names}")
    return contract


def _example(meta: Any, local: str, contract: InputContract) -> Batch | None:
    """The model's saved input example as a batch (None when it has none)."""
    try:
        frame = meta.load_input_example(local)
    except Exception:  # an example is a nicety; its absence is not an error
        return None
    if frame is None or not hasattr(frame, "to_dict"):
        return None
    records = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in frame.to_dict(orient="records")
    ]
    return parse_batch({"records": records}, contract, max_records=len(records) or 1)


def smoke_test(
    predictor: Predictor,
    contract: InputContract,
    example: Batch | None,
    uri: str,
    task: str = "binary",
    n_classes: int = 0,
) -> None:
    """Refuse a predictor whose output on the example (or probe records) is not valid for its task."""
    from pipelines.serving.predictors import probe_batch

    batch = example if example is not None else probe_batch(contract, {}, 20)
    try:
        out = np.asarray(predictor.predict(batch), dtype=float)
    except Exception as exc:
        raise ModelLoadError(f"{uri} failed its smoke test: {type(exc).__name__}: {exc}") from exc
    problem = output_problem(out, batch.size, task, n_classes)
    if problem:
        raise ModelLoadError(f"{uri} failed its smoke test ({task}): {problem}")


def output_problem(out: np.ndarray, size: int, task: str, n_classes: int = 0) -> str | None:
    """What is wrong with a predictor's output for ``size`` records of ``task``, or None when it is valid."""
    expected = (size, n_classes) if task == "multiclass" else (size,)
    if out.shape != expected:
        return f"output of shape {out.shape}, expected {expected}"
    if not np.isfinite(out).all():
        return "output holds NaN or infinite values"
    if task == "regression":
        return None
    if (out < 0).any() or (out > 1).any():
        return "probabilities not all in [0, 1]"
    if task == "multiclass":
        worst = float(np.max(np.abs(out.sum(axis=1) - 1.0))) if size else 0.0
        if worst > PROBABILITY_SUM_TOLERANCE:
            return f"class probabilities of a record sum to 1 +- {worst:.3g}"
    return None


class ModelStore:
    """Holds the version being served and keeps it in step with the registry alias."""

    def __init__(
        self,
        model_name: str,
        tracking_uri: str,
        warehouse_url: str,
        fallback_contract: InputContract,
        fallback_threshold: float,
        poll_seconds: float,
        on_change: Callable[[LoadedModel | None, LoadedModel], None] | None = None,
        on_failure: Callable[[str, str, bool], None] | None = None,
        trusted: Sequence[str] = PREPROCESSING_TRUSTED_TYPES,
    ) -> None:
        self.model_name = model_name
        self.trusted = tuple(trusted)
        self.tracking_uri = tracking_uri
        self.warehouse_url = warehouse_url
        self.fallback_contract = fallback_contract
        self.fallback_threshold = fallback_threshold
        self.poll_seconds = poll_seconds
        self._on_change = on_change
        self._on_failure = on_failure
        self._current: LoadedModel | None = None
        self._loading: dict[str, str] | None = None
        self._last_error: dict[str, str] | None = None
        self._failed_version: str | None = None
        self._checked = False  # the alias was read at least once
        self._champion: str | None = None  # the version behind the alias when last read
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def current(self) -> LoadedModel | None:
        """The version answering requests now (one atomic read)."""
        return self._current

    @property
    def settled(self) -> bool:
        """The alias was read and its version (if any) is the one serving: nothing owed to a client."""
        current = self._current
        return self._checked and (self._champion is None or current is not None)

    def start(self) -> None:
        """Start the watcher thread; it loads the champion at once."""
        self._thread = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def request_reload(self) -> dict[str, Any]:
        """Check the alias now (a version that failed before is tried again)."""
        with self._lock:
            self._failed_version = None
        self._wake.set()
        return self.status()

    def status(self) -> dict[str, Any]:
        current = self._current
        return {
            "name": self.model_name,
            "alias": ALIAS,
            "ready": current is not None,
            "champion": self._champion,
            **({"version": None} if current is None else current.describe()),
            "loading": self._loading,
            "last_error": self._last_error,
        }

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception as exc:  # the watcher must outlive any registry hiccup
                log.warning(
                    "checking the %s alias of %s failed (retrying in %.0f s): %s: %s",
                    ALIAS,
                    self.model_name,
                    self.poll_seconds,
                    type(exc).__name__,
                    str(exc)[:300],
                )
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def alias_version(self) -> str | None:
        """The version behind the alias, or None when there is none yet."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        try:
            mv = MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            ).get_model_version_by_alias(self.model_name, ALIAS)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
                return None
            raise
        return str(mv.version)

    def sync(self) -> LoadedModel | None:
        """Load the alias's version if it is not the one being served; returns the version serving after."""
        wanted = self.alias_version()
        self._champion, self._checked = wanted, True
        current = self._current
        with self._lock:
            if wanted is None or (current is not None and current.version == wanted) or wanted == self._failed_version:
                return current
            self._loading = {"version": wanted, "started_at": datetime.now(UTC).isoformat()}
        log.info("loading %s v%s (serving %s)", self.model_name, wanted, f"v{current.version}" if current else "none")
        try:
            loaded = load_model_version(
                self.model_name,
                wanted,
                self.tracking_uri,
                self.warehouse_url,
                self.fallback_contract,
                self.fallback_threshold,
                self.trusted,
            )
        except ModelLoadError as exc:
            with self._lock:
                self._loading = None
                self._failed_version = wanted
                self._last_error = {"version": wanted, "error": str(exc), "at": datetime.now(UTC).isoformat()}
            log.error(
                "refused %s v%s, still serving %s: %s",
                self.model_name,
                wanted,
                f"v{current.version}" if current else "nothing",
                exc,
            )
            if self._on_failure is not None:
                self._on_failure(wanted, str(exc), exc.untrusted)
            return current
        with self._lock:
            self._current = loaded
            self._loading = None
            if self._last_error and self._last_error.get("version") == wanted:
                self._last_error = None
        log.info(
            "now serving %s v%s (%s predictor, loaded in %.1f s)",
            self.model_name,
            loaded.version,
            loaded.predictor.kind,
            loaded.load_seconds,
        )
        if self._on_change is not None:
            self._on_change(current, loaded)
        return loaded
