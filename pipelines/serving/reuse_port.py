"""Worker processes on one port, each with a listening socket of its own (``SO_REUSEPORT``).

uvicorn's own ``--workers`` hands every worker the same listening socket: whichever worker wakes first accepts every
connection waiting, so a client that opens its connections at once and keeps them alive (a load balancer's pool,
``wrk``) was served by one worker while the others idled (measured: 0.86 and 0.02 cores for 8 connections). With
a socket per worker, bound with ``SO_REUSEPORT``, the kernel spreads new connections over the workers' sockets.
A worker that dies is replaced on the same socket, which stays open in the parent meanwhile: connections that
arrive in between wait for the replacement instead of being refused.
"""

from __future__ import annotations

import logging
import socket

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors.multiprocess import Multiprocess, Process

log = logging.getLogger(__name__)


def supported() -> bool:
    """Whether this platform spreads connections over ``SO_REUSEPORT`` sockets (Linux does)."""
    import sys

    return hasattr(socket, "SO_REUSEPORT") and sys.platform.startswith("linux")


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets bound to ``host:port`` with ``SO_REUSEPORT``, inheritable by the worker processes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class ReusePortWorkers(Multiprocess):
    """uvicorn's supervisor (signals, health checks, restarts), worker ``i`` always on socket ``i``."""

    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        if len(sockets) != config.workers:
            raise ValueError(f"{config.workers} workers need as many sockets, got {len(sockets)}")
        super().__init__(config, sockets)

    def _worker(self, slot: int) -> Process:
        process = Process(self.config, [self.sockets[slot]])
        process.start()
        return process

    def init_processes(self) -> None:
        self.processes = [self._worker(slot) for slot in range(self.processes_num)]

    def keep_subprocess_alive(self) -> None:
        for slot, process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung or gone: make sure, then replace it on its socket
            process.join()
            if process.exitcode == STARTUP_FAILURE:  # the app cannot start: another worker would fail the same way
                log.error("serving worker %s failed to start: stopping the service", process.pid)
                self.should_exit.set()
                return
            log.warning(
                "serving worker %s (socket %d) stopped (exit code %s): starting another",
                process.pid,
                slot,
                process.exitcode,
            )
            self.processes[slot] = self._worker(slot)

    def restart_all(self) -> None:
        """On SIGHUP: each worker replaced in turn, on its socket."""
        for slot, process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            process.terminate()
            process.join()
            self.processes[slot] = self._worker(slot)
