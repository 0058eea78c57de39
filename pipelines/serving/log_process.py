"""The prediction log written by a process of its own, so that logging does not share the service's GIL.

Measured with batches of 100 records: the service's event loop keeps the GIL busy, and a writer thread in the same
process could log only ~14,000 of the 46,000 records/s it answered. Here the request path hands over each answered
request as it came (the raw JSON body it already validated, the model's output and decisions as bytes, a few ids):
microseconds per request, whatever its size. A sender thread pipes them to a child process, which rebuilds the
records and runs the usual :class:`PredictionLogWriter` there, on the other core. Counters come back through
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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import repeat
from typing import Any

import numpy as np
import sqlalchemy as sa

from pipelines.serving.answers import predicted_index
from pipelines.serving.log_inserts import FAST_DIALECTS, PreparedRow, event_text, served_value
from pipelines.serving.log_writer import LogItem, PredictionLogWriter, WriterStats
from pipelines.serving.prediction_log import PredictionRecord

log = logging.getLogger(__name__)

# Shared counters written by the child: written, dropped, queued, write_errors, failing (0/1), alive (0/1).
_WRITTEN, _DROPPED, _QUEUED, _ERRORS, _FAILING, _ALIVE = range(6)
_ERROR_BYTES = 300
# The sender thread hands requests over every few milliseconds, or as soon as this many records wait: waking it for
# every request cost each single-record request a thread switch (and the GIL handed back and forth).
_SEND_SECONDS = 0.005
_SEND_RECORDS = 256


@dataclass(frozen=True)
class LoggedRequest:
    """One answered request, as the service hands it over: cheap to build and to pickle.

    ``outputs`` is the model's output as float64 bytes: P(positive) per record (binary), the class probabilities
    row by row (multiclass, ``size x len(classes)``) or the values (regression); ``decisions`` the binary decisions
    as int8 bytes (empty for the other tasks).
    """

    dataset: str
    request_id: str
    served_at: datetime
    model_name: str
    model_version: str
    body: bytes
    outputs: bytes
    decisions: bytes
    size: int
    task: str = "binary"
    classes: tuple[str, ...] = ()


def records_of(request: LoggedRequest) -> list[PredictionRecord]:
    """The request's records, rebuilt from its (already validated) body and the model's output."""
    import orjson

    payload = orjson.loads(request.body)
    records = payload["records"]
    ids = payload.get("ids") or [None] * request.size
    times = payload.get("event_times") or [None] * request.size
    if request.task == "binary":  # the common case, kept as lean as it was: no per-record work beyond the record
        proba = np.frombuffer(request.outputs, dtype=np.float64).tolist()
        decisions = np.frombuffer(request.decisions, dtype=np.int8).tolist()
        return [
            PredictionRecord(
                dataset=request.dataset,
                request_id=request.request_id,
                record_index=i,
                record_id=None if ids[i] is None else str(ids[i]),
                served_at=request.served_at,
                event_time=None if times[i] is None else datetime.fromisoformat(times[i]),
                model_name=request.model_name,
                model_version=request.model_version,
                features=records[i],
                probability=proba[i],
                decision=decisions[i],
            )
            for i in range(request.size)
        ]
    outputs = _task_outputs(request)
    return [
        PredictionRecord(
            dataset=request.dataset,
            request_id=request.request_id,
            record_index=i,
            record_id=None if ids[i] is None else str(ids[i]),
            served_at=request.served_at,
            event_time=None if times[i] is None else datetime.fromisoformat(times[i]),
            model_name=request.model_name,
            model_version=request.model_version,
            features=records[i],
            probability=None,
            decision=None,
            **outputs[i],
        )
        for i in range(request.size)
    ]


def rows_of(request: LoggedRequest, text_times: bool) -> list[PreparedRow]:
    """The request's rows as the driver inserts them (:func:`records_of` then ``tuple_row``, without the record
    objects in between: what is the same for the whole request is converted once)."""
    import orjson

    payload = orjson.loads(request.body)
    n = request.size
    ids = payload.get("ids") or [None] * n
    times = payload.get("event_times") or [None] * n
    head = (request.dataset, request.request_id)
    served = served_value(request.served_at, text_times)
    model = (request.model_name, str(request.model_version))
    events = [event_text(t, text_times) for t in times]
    record_ids = [None if x is None else str(x) for x in ids]
    features = [orjson.dumps(r, option=orjson.OPT_SERIALIZE_NUMPY).decode() for r in payload["records"]]
    if request.task == "binary":
        proba = np.frombuffer(request.outputs, dtype=np.float64).tolist()
        decisions = np.frombuffer(request.decisions, dtype=np.int8).tolist()
        dataset, request_id = head
        name, version = model
        columns = (repeat(dataset), repeat(request_id), range(n), record_ids, repeat(served), events)
        # zip builds the row tuples in C: a third of the cost of a comprehension unpacking into each row
        return list(map(PreparedRow, zip(*columns, repeat(name), repeat(version), features, proba, decisions)))
    outputs = _task_outputs(request)
    return [
        PreparedRow(
            (
                *head,
                i,
                record_ids[i],
                served,
                events[i],
                *model,
                features[i],
                None,
                None,
                outputs[i].get("prediction"),
                outputs[i].get("predicted_class"),
                None if "probabilities" not in outputs[i] else orjson.dumps(outputs[i]["probabilities"]).decode(),
            )
        )
        for i in range(n)
    ]


def _task_outputs(request: LoggedRequest) -> list[dict[str, Any]]:
    """Per record of a multiclass or regression request, its output columns in the prediction log."""
    values = np.frombuffer(request.outputs, dtype=np.float64)
    if request.task == "regression":
        return [{"prediction": v} for v in values.tolist()]
    if request.task == "multiclass":
        classes = request.classes
        proba = values.reshape(request.size, len(classes))
        predicted = [classes[i] for i in predicted_index(proba).tolist()]
        return [
            {"predicted_class": predicted[i], "probabilities": dict(zip(classes, row, strict=True))}
            for i, row in enumerate(proba.tolist())
        ]
    raise ValueError(f"request {request.request_id}: unknown task {request.task!r}")


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
    dialect = sa.engine.make_url(url).get_backend_name()
    prepare, text_times = dialect in FAST_DIALECTS, dialect == "sqlite"
    writer = PredictionLogWriter(url, max_queue=max_queue)
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
        for request in pickle.loads(message):
            try:
                records: Sequence[LogItem] = rows_of(request, text_times) if prepare else records_of(request)
            except Exception as exc:  # one malformed hand-over must not stop the logging of every later one
                writer.discard(request.size, f"request {request.request_id} could not be read back ({exc})")
                continue
            writer.submit(records)
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
