"""The workers of a multi-process service (``SERVING_WORKERS=N``), kept in step through a folder of their own.

uvicorn runs N worker processes on one port; each has its own catalog (alias watchers), predictors and prediction-log
writer process. A request to ``POST /admin/reload`` lands on one of them: that worker writes a reload request into
the folder and every worker picks it up within a poll (0.25 s). Each worker publishes what it serves (dataset ->
version) in ``<pid>.json``, so that ``GET /models`` can report every worker and ``deploy`` waits until all of them
answer with the new version. Files of workers that are gone are ignored and removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from pipelines.core.processes import pid_alive

log = logging.getLogger(__name__)

RELOAD_PREFIX = "reload-"
RELOAD_KEEP_SECONDS = 120.0


class WorkerBoard:
    """One worker's view of the folder shared by the workers of a service."""

    def __init__(self, folder: Path, pid: int | None = None) -> None:
        self.folder = folder
        self.pid = pid or os.getpid()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._started = time.time_ns()  # reload requests older than this worker are not its business
        self._seen: set[str] = set()

    def publish(self, serving: dict[str, str | None], log_counts: dict[str, int]) -> None:
        """Record what this worker serves now and its prediction-log counters (written whole, then renamed:
        readers never see half a file)."""
        path = self.folder / f"{self.pid}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"serving": serving, "log": log_counts}))
        tmp.replace(path)

    def workers(self) -> dict[str, dict[str, Any]]:
        """What every live worker published (``serving``: dataset -> version, ``log``: counters), by process id."""
        found: dict[str, dict[str, Any]] = {}
        for path in self.folder.glob("*.json"):
            if path.name.startswith(RELOAD_PREFIX) or not path.stem.isdigit():
                continue
            if not pid_alive(int(path.stem)):
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            try:
                found[path.stem] = json.loads(path.read_text())
            except (OSError, ValueError):  # being replaced right now: its next publication will do
                continue
        return found

    def broadcast_reload(self, dataset: str | None) -> None:
        """Ask the other workers to rescan and check ``dataset``'s alias (every alias: None)."""
        name = f"{RELOAD_PREFIX}{time.time_ns()}-{self.pid}.json"
        tmp = self.folder / f"{name}.tmp"
        tmp.write_text(json.dumps({"dataset": dataset}))
        tmp.replace(self.folder / name)

    def reload_requests(self) -> list[str | None]:
        """The reloads asked since the last call (their datasets; None: all); old requests are cleared away."""
        asked: list[tuple[int, str | None]] = []
        now = time.time_ns()
        for path in self.folder.glob(f"{RELOAD_PREFIX}*.json"):
            try:
                stamp = int(path.name.removeprefix(RELOAD_PREFIX).split("-", 1)[0])
            except ValueError:
                continue
            if now - stamp > RELOAD_KEEP_SECONDS * 1e9:
                with contextlib.suppress(OSError):
                    path.unlink()
                self._seen.discard(path.name)
                continue
            if stamp <= self._started or path.name in self._seen or path.name.endswith(f"-{self.pid}.json"):
                continue  # old, seen, or this worker's own (it reloaded when it was asked)
            try:
                asked.append((stamp, json.loads(path.read_text()).get("dataset")))
            except (OSError, ValueError):
                continue
            self._seen.add(path.name)
        return [dataset for _, dataset in sorted(asked, key=lambda item: item[0])]


def versions_of(workers: dict[str, dict[str, Any]], dataset: str) -> dict[str, str | None]:
    """The version each worker serves for ``dataset``."""
    return {pid: published.get("serving", {}).get(dataset) for pid, published in sorted(workers.items())}


def log_totals(workers: dict[str, dict[str, Any]]) -> dict[str, int]:
    """The prediction-log counters of every worker, summed (written, dropped, queued, write errors)."""
    totals = {"written": 0, "dropped": 0, "queued": 0, "write_errors": 0}
    for published in workers.values():
        for key in totals:
            totals[key] += int(published.get("log", {}).get(key, 0))
    return totals
