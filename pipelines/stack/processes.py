"""Background processes with pid files: start detached, check health, stop the whole process group."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pipelines.core.processes import pid_alive

T = TypeVar("T")
log = logging.getLogger(__name__)


class StackError(RuntimeError):
    """A service could not be started, or did not become healthy in time."""


@dataclass(frozen=True)
class Service:
    """One long-running process of the stack, and how to tell it is up."""

    name: str
    command: Sequence[str]
    env: Mapping[str, str]
    pid_file: Path
    log_file: Path
    port: int | None = None
    cwd: Path | None = None

    def pid(self) -> int | None:
        """The pid recorded for this service if that process is still alive, else None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def start(self) -> int:
        """Start detached in its own process group (so ``stop`` reaches its children); returns the pid."""
        running = self.pid()
        if running is not None:
            log.info("%s already running (pid %d)", self.name, running)
            return running
        if self.port is not None and not port_is_free(self.port):
            raise StackError(
                f"{self.name}: port {self.port} is already in use by another program; "
                "stop it or choose another port (see README: ports)"
            )
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            proc = subprocess.Popen(
                list(self.command),
                env=dict(self.env),
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        log.info("started %s (pid %d), log %s", self.name, proc.pid, self.log_file)
        return proc.pid

    def stop(self, timeout: float = 20.0) -> bool:
        """Terminate the service's process group; returns whether something was running."""
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.2)
        if _group_alive(pid):
            log.warning("%s did not stop within %.0f s: killing it", self.name, timeout)
            _signal_group(pid, signal.SIGKILL)
        log.info("stopped %s (pid %d)", self.name, pid)
        return True

    def tail(self, lines: int = 30) -> str:
        """The end of the service's log, for error messages."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid_alive(pgid) or _any_member(pgid)


def _any_member(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().split(") ", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) != 0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for tests and parallel stacks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], T],
    what: str,
    timeout: float,
    services: Sequence[Service] = (),
    interval: float = 1.0,
) -> T:
    """Poll ``check`` until it returns a true value, and return that value.

    An exception from ``check`` counts as "not yet". Fails early, with the log's end, if one of ``services`` died;
    on timeout, raises :class:`StackError` naming ``what`` (with the end of each service's log).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            result = check()
            if result:
                return result
        for service in services:
            if service.pid() is None:
                raise StackError(
                    f"{service.name} exited while waiting for {what}; end of {service.log_file}:\n{service.tail()}"
                )
        time.sleep(interval)
    tails = "\n".join(f"--- {s.log_file}\n{s.tail(15)}" for s in services)
    raise StackError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
