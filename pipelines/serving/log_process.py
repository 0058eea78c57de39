"""The prediction log written by a process of its own, so that logging does not share the service's GIL.

Measured with batches of 100 records: the service's event loop keeps the GIL busy, and a writer thread in the same
process could log only ~14,000 of the 46,000 records/s it answered. Here the request path hands over each answered
request as it came (the raw JSON body it already validated, the model's output and decisions as bytes, a few ids):
microseconds per request, whatever its size. A sender thread pipes them to a child process, which runs the usual
:class:`PredictionLogWriter` there, on the other core: it stores each request as one row and turns stored requests
into records whenever it is idle (:mod:`pipelines.serving.request_log`). Counters come back through
shared memory, so ``stats()`` and ``backlog()`` read the same numbers as before: every submitted record is written,
queued (here or in the child) or counted as dropped.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing as mp
import pickle
import signal
import threading
from collections import deque
from typing import Any

from pipelines.serving.log_writer import PredictionLogWriter, WriterStats
from pipelines.serving.logged_request import LoggedRequest, check_request, records_of, rows_of

__all__ = ["LoggedRequest", "ProcessLogWriter", "records_of", "rows_of"]

log = logging.getLogger(__name__)

# Shared counters written by the child: written, dropped, queued, write_errors, failing (0/1), alive (0/1).
_WRITTEN, _DROPPED, _QUEUED, _ERRORS, _FAILING, _ALIVE = range(6)
_ERROR_BYTES = 300
# The sender thread hands requests over every few milliseconds, or as soon as this many records wait: waking it for
# every request cost each single-record request a thread switch (and the GIL handed back and forth).
_SEND_SECONDS = 0.005
_SEND_RECORDS = 256


def _quiet_collector() -> None:
    """Keep Python's cyclic garbage collector off the writer's hot path.

    The writer holds up to ``max_queue`` rows (tuples) and creates hundreds of thousands a second; with the
    default thresholds the collector ran every 700 allocations and walked the rows waiting in the queue each time:
    a quarter of the process's CPU (alone: 0.82 -> 0.61 ms per 100-record request). Rows and requests form no
    reference cycles, so the collector now runs after 50,000 allocations instead, and the process's start-up
    objects (the libraries it imported) are frozen out of its sight.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _child(url: str, max_queue: int, reader: Any, counters: Any, error: Any) -> None:
    """The writer process: receive pickled request lists, write their records, publish the counters."""
    from pipelines.core.logging_setup import configure

    # A stop signal to the service's process group reaches this process too: it must not die with records in
    # hand. It ends when the service says so, or when the service is gone (end of the pipe): then it writes out.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure()
    _quiet_collector()
    writer = PredictionLogWriter(url, max_queue=max_queue, materialize_when_idle=True)
    writer.start()
    stop = threading.Event()

    def publish() -> None:
        stats = writer.stats()
        queued, healthy = writer.backlog()
        with counters.get_lock():
            counters[_WRITTEN], counters[_DROPPED], counters[_QUEUED] = stats.written, stats.dropped, queued
            counters[_ERRORS], counters[_FAILING] = stats.write_errors, 0 if healthy else 1
        if stats.last_error:
            error.value = stats.last_error.encode()[: _ERROR_BYTES - 1]

    def publisher() -> None:
        while not stop.wait(0.05):
            publish()

    threading.Thread(target=publisher, name="log-counters", daemon=True).start()
    timeout = 30.0
    while True:
        try:
            message = reader.recv_bytes()
        except EOFError:  # the service went away without saying goodbye: write what we have
            break
        if message.startswith(b"close:"):
            timeout = float(message.removeprefix(b"close:"))
            break
        requests = []
        for request in pickle.loads(message):
            try:
                check_request(request)
            except ValueError as exc:  # one malformed hand-over must not stop the logging of every later one
                writer.discard(request.size, f"request {request.request_id} cannot become records ({exc})")
                continue
            requests.append(request)
        writer.submit_requests(requests)
    writer.close(timeout=timeout)
    stop.set()
    publish()
    with counters.get_lock():
        counters[_ALIVE] = 0


class ProcessLogWriter:
    """The service's side of the writer process: ``submit_request`` never blocks and never touches the database."""

    def __init__(self, url: str, *, max_queue: int = 100_000) -> None:
        self._url = url
        self._max_queue = max_queue
        self._ctx = mp.get_context("spawn")
        self._counters = self._ctx.Array("q", 6)
        self._error = self._ctx.Array("c", _ERROR_BYTES)
        self._reader, self._sender_end = self._ctx.Pipe(duplex=False)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: deque[LoggedRequest] = deque()
        self._pending_records = 0
        self._submitted = 0
        self._dropped_here = 0
        self._accepting = True
        self._process: Any = None
        self._sender: threading.Thread | None = None

    def start(self) -> None:
        """Start the writer process and the sender thread."""
        self._counters[_ALIVE] = 1
        self._process = self._ctx.Process(
            target=_child,
            name="prediction-log-writer",
            daemon=True,
            args=(self._url, self._max_queue, self._reader, self._counters, self._error),
        )
        self._process.start()
        self._sender = threading.Thread(target=self._send_loop, name="prediction-log-sender", daemon=True)
        self._sender.start()

    def submit_request(self, request: LoggedRequest) -> bool:
        """Queue an answered request for logging; False (its records counted dropped) when the backlog is full."""
        with self._lock:
            backlog = (
                self._submitted - int(self._counters[_WRITTEN]) - int(self._counters[_DROPPED]) - self._dropped_here
            )
            self._submitted += request.size
            if not self._accepting or backlog + request.size > self._max_queue:
                self._dropped_here += request.size
                return False
            self._pending.append(request)
            self._pending_records += request.size
            wake = self._pending_records >= _SEND_RECORDS
        if wake:
            self._wake.set()
        return True

    def _send_loop(self) -> None:
        while True:
            self._wake.wait(_SEND_SECONDS)
            self._wake.clear()
            with self._lock:
                batch = list(self._pending)
                self._pending.clear()
                size = self._pending_records
                self._pending_records = 0
                closing = not self._accepting
            if batch:
                try:
                    self._sender_end.send_bytes(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
                except OSError:  # the writer process is gone: these records cannot be logged any more
                    with self._lock:
                        self._dropped_here += size
            if closing:
                with self._lock:
                    if not self._pending:
                        return

    def stats(self) -> WriterStats:
        """The counters of both sides, as one writer's: queued is whatever is neither written nor dropped."""
        with self._lock:
            submitted, dropped_here = self._submitted, self._dropped_here
        written, dropped = int(self._counters[_WRITTEN]), int(self._counters[_DROPPED]) + dropped_here
        error = self._error.value.decode(errors="replace") or None  # type: ignore[attr-defined]
        return WriterStats(
            submitted=submitted,
            written=written,
            dropped=dropped,
            queued=max(0, submitted - written - dropped),
            write_errors=int(self._counters[_ERRORS]),
            last_error=error,
        )

    def alive(self) -> bool:
        """Whether the writer process is running (False before ``start``, after ``close``, or once it died)."""
        return self._process is not None and self._process.is_alive() and bool(self._counters[_ALIVE])

    def backlog(self) -> tuple[int, bool]:
        """Records not yet written, and whether the database is taking writes."""
        return self.stats().queued, not self._counters[_FAILING]

    def close(self, timeout: float = 30.0) -> WriterStats:
        """Stop accepting, hand everything to the writer process, let it flush within ``timeout``; idempotent."""
        with self._lock:
            if not self._accepting:
                return self.stats()
            self._accepting = False
        self._wake.set()
        if self._sender is not None:
            self._sender.join(timeout)
        if self._process is not None and self._process.is_alive():
            with contextlib.suppress(OSError):
                self._sender_end.send_bytes(f"close:{timeout}".encode())
            self._process.join(timeout + 5)
            if self._process.is_alive():
                log.error("the prediction-log writer process did not finish within %.0f s: stopping it", timeout)
                self._process.terminate()
        final = self.stats()
        lost = final.submitted - final.written - final.dropped
        if lost > 0:  # what the child could not report as written or dropped is lost: count it
            with self._lock:
                self._dropped_here += lost
            final = self.stats()
            log.error("prediction log: %d records lost when the writer process stopped", lost)
        return final
