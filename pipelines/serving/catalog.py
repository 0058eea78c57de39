"""Every dataset the service serves: one model store per configured dataset, found in the datasets folder.

The service serves the ``champion`` of every dataset config in ``settings.datasets_dir``, each with its own input
contract, model store (alias watcher, hot swap, refusal of a bad version) and metrics. The folder is scanned again
every ``poll_seconds`` and on ``POST /admin/reload``, so a dataset added later is served after the next poll without
a restart; a config that does not load is reported (``GET /models``) and skipped, never fatal to the others. A
dataset whose config now names another registered model gets a new store.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipelines.core.config import DatasetConfig, dataset_config_paths, load_dataset_config
from pipelines.core.model_files import trusted_types
from pipelines.core.settings import Settings
from pipelines.data.validation.suite import load_suite, suite_path
from pipelines.serving.model_store import LoadedModel, ModelStore
from pipelines.training.contract import InputContract, contract_from_config

log = logging.getLogger(__name__)

ChangeHook = Callable[[str, LoadedModel | None, LoadedModel], None]
FailureHook = Callable[[str, str, str, bool], None]  # dataset, version, error, untrusted


@dataclass
class ServedDataset:
    """One dataset as the service serves it: its config, its fallback contract and its model store."""

    config: DatasetConfig
    contract: InputContract
    store: ModelStore

    @property
    def name(self) -> str:
        return self.config.name

    def status(self) -> dict[str, Any]:
        """What ``GET /models`` shows of it: the store's status under the dataset's name and task."""
        return {"dataset": self.name, "task": self.config.task, **self.store.status()}


def fallback_contract(config: DatasetConfig, settings: Settings) -> InputContract:
    """The contract of a champion that carries none: the config's types, bounds from its suite when there is one."""
    has_suite = suite_path(settings.expectations_dir, config.expectation_suite).is_file()
    suite = load_suite(settings.expectations_dir, config.expectation_suite) if has_suite else None
    return contract_from_config(config, suite)


class Catalog:
    """The datasets served, kept in step with the datasets folder."""

    def __init__(
        self,
        settings: Settings,
        poll_seconds: float,
        on_change: ChangeHook | None = None,
        on_failure: FailureHook | None = None,
    ) -> None:
        self.settings = settings
        self.poll_seconds = poll_seconds
        self._on_change = on_change
        self._on_failure = on_failure
        self._datasets: dict[str, ServedDataset] = {}
        self._config_errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False

    def get(self, dataset: str) -> ServedDataset | None:
        """The served dataset called ``dataset`` (one dictionary read), or None."""
        return self._datasets.get(dataset)

    def datasets(self) -> list[ServedDataset]:
        return sorted(self._datasets.values(), key=lambda d: d.name)

    def config_errors(self) -> dict[str, str]:
        return dict(self._config_errors)

    def start(self) -> None:
        """Scan the folder, start every store (each loads its champion at once), then rescan every poll."""
        self._started = True
        self.scan()
        self._thread = threading.Thread(target=self._watch, name="dataset-scanner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for served in list(self._datasets.values()):
            served.store.stop()

    def reload(self, dataset: str | None = None) -> None:
        """Rescan the folder now and make one dataset's store (or every store) check its alias now."""
        self.scan()
        targets = list(self._datasets.values()) if dataset is None else [d for d in [self.get(dataset)] if d]
        for served in targets:
            served.store.request_reload()

    def scan(self) -> None:
        """Add the datasets whose config appeared, drop those whose config went, renew those that changed model."""
        with self._lock:
            found: dict[str, DatasetConfig] = {}
            errors: dict[str, str] = {}
            for path in dataset_config_paths(self.settings.datasets_dir):
                try:
                    found[path.stem] = load_dataset_config(path.stem, self.settings.datasets_dir)
                except Exception as exc:  # one broken config must not stop the others from being served
                    errors[path.stem] = f"{type(exc).__name__}: {exc}"
            for name, error in errors.items():
                if self._config_errors.get(name) != error:
                    log.error("dataset %s is not served: its config does not load: %s", name, error)
            self._config_errors = errors
            current = dict(self._datasets)
            for name in set(current) - set(found) - set(errors):
                log.info("dataset %s: its config is gone; no longer served", name)
                current.pop(name).store.stop()
            for name, config in found.items():
                served = current.get(name)
                if served is not None and served.config.model.registered_name == config.model.registered_name:
                    served.config = config
                    continue
                if served is not None:
                    served.store.stop()
                current[name] = self._serve(config)
                log.info("serving dataset %s (model %s, task %s)", name, config.model.registered_name, config.task)
            self._datasets = current

    def _serve(self, config: DatasetConfig) -> ServedDataset:
        name = config.name
        store = ModelStore(
            config.model.registered_name,
            self.settings.mlflow_tracking_uri,
            self.settings.warehouse_url,
            fallback_contract(config, self.settings),
            config.model.threshold,
            config.serving.alias_poll_seconds,
            on_change=None if self._on_change is None else self._change_hook(name),
            on_failure=None if self._on_failure is None else self._failure_hook(name),
            trusted=trusted_types(config),
        )
        if self._started:
            store.start()
        return ServedDataset(config=config, contract=store.fallback_contract, store=store)

    def _change_hook(self, name: str) -> Callable[[LoadedModel | None, LoadedModel], None]:
        hook = self._on_change
        assert hook is not None
        return lambda old, new: hook(name, old, new)

    def _failure_hook(self, name: str) -> Callable[[str, str, bool], None]:
        hook = self._on_failure
        assert hook is not None
        return lambda version, error, untrusted: hook(name, version, error, untrusted)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.scan()
            except Exception as exc:  # the scanner must outlive a folder that is briefly unreadable
                log.warning("scanning %s failed: %s: %s", self.settings.datasets_dir, type(exc).__name__, exc)
