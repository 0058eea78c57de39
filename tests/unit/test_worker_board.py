"""The folder through which the workers of one service keep in step: reload requests and what each serves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipelines.serving.workers import WorkerBoard, log_totals, versions_of


def test_a_reload_asked_of_one_worker_reaches_every_other_once(tmp_path: Path) -> None:
    # given three workers of one service
    first, second, third = (WorkerBoard(tmp_path, pid) for pid in (101, 102, 103))
    # when the first is asked to reload wine, then flights
    first.broadcast_reload("wine")
    first.broadcast_reload(None)
    # then the others take both requests in order, once; the first does not take its own
    assert second.reload_requests() == ["wine", None]
    assert third.reload_requests() == ["wine", None]
    assert second.reload_requests() == [] and first.reload_requests() == []


def test_a_worker_started_later_ignores_older_reload_requests(tmp_path: Path) -> None:
    WorkerBoard(tmp_path, 101).broadcast_reload("wine")
    assert WorkerBoard(tmp_path, 104).reload_requests() == []


def test_what_each_live_worker_serves_is_read_back_and_a_dead_one_is_dropped(tmp_path: Path) -> None:
    # given this process and one that has exited, each having published what it serves
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    dead_pid = int(gone.stdout)
    WorkerBoard(tmp_path).publish({"wine": "3", "flights": None}, {"written": 5, "queued": 1})
    WorkerBoard(tmp_path, dead_pid).publish({"wine": "2"}, {"written": 7})
    # when the workers are read
    workers = WorkerBoard(tmp_path).workers()
    # then only the live one is there, with its versions and log counters; the dead one's file is gone
    assert list(workers) == [str(os.getpid())]
    assert versions_of(workers, "wine") == {str(os.getpid()): "3"}
    assert log_totals(workers) == {"written": 5, "dropped": 0, "queued": 1, "write_errors": 0}
    assert not (tmp_path / f"{dead_pid}.json").exists()
