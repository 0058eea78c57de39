"""Writing the prediction log off the request path: a bounded queue and one thread inserting batches.

The service's writer process calls :meth:`PredictionLogWriter.submit_requests` with answered requests (stored one
row each in ``prediction_requests``, turned into records later: :mod:`pipelines.serving.request_log`); records
(:meth:`PredictionLogWriter.submit`) go straight into ``prediction_log``. Submitting only appends to an in-memory
queue bounded in records. One background thread takes up to ``batch_size`` records at a time and inserts them in
one transaction, ignoring duplicates of ``(dataset, request_id, record_index)`` (a client retry or a replay is
stored once). When the database is down the thread keeps its batch and retries; the queue fills up to its bound
and further batches are dropped and counted. Every submitted record is, at all times, either written, still queued
(waiting or being written) or counted as dropped.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from pipelines.core.warehouse import get_engine
from pipelines.serving.log_inserts import (
    FAST_DIALECTS,
    PreparedRow,
    driver_row,
    insert_rows,
    insert_statement,
    is_bad_data,
    is_wide,
    row_dict,
)
from pipelines.serving.log_tables import (
    PredictionRecord,
    create_table,
)
from pipelines.serving.logged_request import LoggedRequest
from pipelines.serving.request_log import insert_requests, materialize

# What the writer takes: records, rows prepared for a SQLite or PostgreSQL warehouse, or whole answered requests.
LogItem = PredictionRecord | PreparedRow | LoggedRequest

log = logging.getLogger(__name__)

_LOG_EVERY_SECONDS = 10.0


@dataclass(frozen=True)
class WriterStats:
    """Counts in records: ``submitted == written + dropped + queued`` (``queued`` includes the batch in flight)."""

    submitted: int
    written: int
    dropped: int
    queued: int
    write_errors: int
    last_error: str | None


class _Throttle:
    """Lets one message through every ``interval`` seconds and counts the ones held back."""

    def __init__(self, interval: float = _LOG_EVERY_SECONDS) -> None:
        self._interval = interval
        self._last = -math.inf
        self._held = 0
        self._lock = threading.Lock()

    def allow(self) -> int | None:
        """How many messages were held back since the last one let through, or None to hold this one back."""
        now = time.monotonic()
        with self._lock:
            if now - self._last < self._interval:
                self._held += 1
                return None
            held, self._held, self._last = self._held, 0, now
            return held


class PredictionLogWriter:
    """Writes prediction records to the ``prediction_log`` table from one background thread."""

    def __init__(
        self,
        url: str,
        *,
        max_queue: int = 100_000,
        batch_size: int = 2_000,
        flush_interval: float = 0.25,
        retry_interval: float = 1.0,
        materialize_when_idle: bool = False,
    ) -> None:
        """``materialize_when_idle``: whenever its queue is empty, turn stored requests into records
        (:func:`pipelines.serving.request_log.materialize`), a chunk at a time, until work comes in."""
        if max_queue < 1 or batch_size < 1 or flush_interval <= 0 or retry_interval <= 0:
            raise ValueError("max_queue and batch_size must be >= 1, flush_interval and retry_interval > 0")
        self._url = url
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._retry_interval = retry_interval
        self._materialize_when_idle = materialize_when_idle
        self._lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._wake = threading.Event()
        self._abandon = threading.Event()
        self._pending: deque[tuple[LogItem, ...]] = deque()
        self._waiting = 0
        self._in_flight = 0
        self._submitted = 0
        self._written = 0
        self._dropped = 0
        self._write_errors = 0
        self._last_error: str | None = None
        self._failing = False
        self._accepting = True
        self._abandoned = False
        self._closed = False
        self._table_ready = False
        self._thread: threading.Thread | None = None
        self._drop_throttle = _Throttle()
        self._error_throttle = _Throttle()
        self._reject_throttle = _Throttle()

    def start(self) -> None:
        """Create the table (or note that the database is not reachable yet) and start the writer thread."""
        with self._lock:
            if self._thread is not None or not self._accepting:
                return
        try:
            self._ensure_table()
        except Exception as exc:
            self._note_error(exc, "creating the table")
        self._launch()

    def submit(self, records: Sequence[LogItem]) -> bool:
        """Queue ``records`` for writing without blocking; False (and counted dropped) when the queue is full."""
        return self._enqueue(records if isinstance(records, tuple) else tuple(records), len(records))

    def submit_requests(self, requests: Sequence[LoggedRequest]) -> bool:
        """Queue answered requests (their records counted) for ``prediction_requests``; False (and their records
        counted dropped) when the queue is full."""
        return self._enqueue(tuple(requests), sum(request.size for request in requests))

    def _enqueue(self, batch: tuple[LogItem, ...], n: int) -> bool:
        """Queue ``batch`` of ``n`` records unless the queue is full or closed (then count them dropped)."""
        if n == 0:
            return True
        with self._lock:
            self._submitted += n
            accepted = self._accepting and self._waiting + self._in_flight + n <= self._max_queue
            if accepted:
                self._pending.append(batch)
                self._waiting += n
                full = self._waiting >= self._batch_size
            else:
                self._dropped += n
                closed = not self._accepting
        if accepted:
            if full:
                self._wake.set()
            return True
        held = self._drop_throttle.allow()
        if held is not None:
            reason = "the writer is closed" if closed else f"the queue holds its maximum of {self._max_queue} records"
            log.warning(
                "prediction log: dropped %d records because %s (%d dropped in all; %d warnings held back)",
                n,
                reason,
                self.stats().dropped,
                held,
            )
        return False

    def discard(self, records: int, reason: str) -> None:
        """Count ``records`` that could not even be made into rows as submitted and dropped, and say why."""
        with self._lock:
            self._submitted += records
            self._dropped += records
        log.error("prediction log: dropped %d records: %s", records, reason)

    def stats(self) -> WriterStats:
        """The counters, read consistently."""
        with self._lock:
            return WriterStats(
                submitted=self._submitted,
                written=self._written,
                dropped=self._dropped,
                queued=self._waiting + self._in_flight,
                write_errors=self._write_errors,
                last_error=self._last_error,
            )

    def backlog(self) -> tuple[int, bool]:
        """Records waiting or being written, and whether the database is taking writes (no failure since the last
        success): the service slows down for a healthy writer that falls behind, never for a failing database."""
        with self._lock:
            return self._waiting + self._in_flight, not self._failing

    def close(self, timeout: float = 30.0) -> WriterStats:
        """Stop accepting, write what is queued within ``timeout`` seconds, count the rest dropped; idempotent."""
        with self._close_lock:
            if self._closed:
                return self.stats()
            with self._lock:
                self._accepting = False
                has_work = self._waiting + self._in_flight > 0
            if self._thread is None and has_work:
                self._launch()
            self._wake.set()
            if self._thread is not None:
                self._thread.join(timeout)
            with self._lock:
                lost = self._waiting + self._in_flight
                if lost:
                    self._abandoned = True
                    self._dropped += lost
                    self._pending.clear()
                    self._waiting = self._in_flight = 0
            self._abandon.set()
            self._closed = True
        final = self.stats()
        if lost:
            log.error(
                "prediction log: %d records lost: not written within %.1f s of closing (last error: %s)",
                lost,
                timeout,
                final.last_error,
            )
        else:
            log.info("prediction log closed: %d records written, %d dropped", final.written, final.dropped)
        return final

    # The writer thread.

    def _launch(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # a bug, not a database error: say so loudly; close() counts what is left as lost
            log.exception("prediction log: the writer thread stopped")

    def _loop(self) -> None:
        batch: list[LogItem] = []
        while not self._abandon.is_set():
            if not batch:
                self._wake.wait(self._flush_interval)
                with self._lock:
                    self._wake.clear()
                    batch = self._take_locked()
                    if self._waiting >= self._batch_size or (not self._accepting and self._waiting):
                        self._wake.set()
                    if not batch and not self._accepting:
                        return
                if not batch:
                    if self._materialize_when_idle and self._accepting:
                        self._materialize_idle()
                    continue
            batch = self._write(batch)
            if batch:
                self._abandon.wait(self._retry_interval)

    def _take_locked(self) -> list[LogItem]:
        """Move up to ``batch_size`` waiting records in flight (the caller holds the lock); requests are taken
        whole."""
        taken: list[LogItem] = []
        room = self._batch_size
        while self._pending and room > 0:
            head = self._pending.popleft()
            if isinstance(head[0], LoggedRequest):
                weight = _records(head)
            else:
                if len(head) > room:
                    self._pending.appendleft(head[room:])
                    head = head[:room]
                weight = len(head)
            taken.extend(head)
            room -= weight
        moved = self._batch_size - room
        self._waiting -= moved
        self._in_flight += moved
        return taken

    def _materialize_idle(self) -> None:
        """Turn stored requests into records while nothing else is waiting; errors are logged, not counted (the
        requests stay stored and are taken again)."""
        try:
            materialize(
                self._ensure_table(),
                stop=lambda: self._waiting > 0 or self._abandon.is_set() or not self._accepting,
            )
        except Exception as exc:
            held = self._error_throttle.allow()
            if held is not None:
                log.warning("prediction log: turning stored requests into records failed (%s)", _short(exc))

    def _ensure_table(self) -> sa.Engine:
        engine = get_engine(self._url)
        if not self._table_ready:
            create_table(engine)
            self._table_ready = True
        return engine

    def _write(self, batch: list[LogItem]) -> list[LogItem]:
        """Insert ``batch`` in one transaction; the records still to write (empty on success)."""
        requests = [item for item in batch if isinstance(item, LoggedRequest)]
        records = [item for item in batch if not isinstance(item, LoggedRequest)] if requests else batch
        try:
            engine = self._ensure_table()
            dialect = engine.dialect.name
            text_times = dialect == "sqlite"
            wide = is_wide(records)  # type: ignore[arg-type]
            rows: list[Any] = (
                [driver_row(r, text_times, wide) for r in records]  # type: ignore[arg-type]
                if dialect in FAST_DIALECTS
                else [row_dict(_record(r)) for r in records]
            )
        except Exception as exc:
            self._note_error(exc, f"converting {_records(batch)} records")
            return self._write_one_by_one(batch)
        try:
            with engine.begin() as conn:
                if requests:
                    insert_requests(conn, dialect, requests)
                inserted = insert_rows(conn, dialect, rows, wide) if rows else None
        except Exception as exc:
            self._note_error(exc, f"writing {_records(batch)} records")
            if not is_bad_data(exc):
                self._table_ready = False  # the table may have been dropped: check again on the next try
                return batch
            return self._write_one_by_one(batch)
        if inserted is not None and inserted < len(rows):
            log.debug("prediction log: %d of %d records were already stored", len(rows) - inserted, len(rows))
        self._settle(_records(batch))
        return []

    def _write_one_by_one(self, batch: list[LogItem]) -> list[LogItem]:
        """Isolate the records the database refuses; stop at the first error that is not about the data."""
        for i, record in enumerate(batch):
            if self._abandon.is_set():
                return batch[i:]
            try:
                row = None if isinstance(record, PreparedRow | LoggedRequest) else row_dict(record)
            except Exception as exc:
                self._reject(record, exc)
                continue
            try:
                engine = self._ensure_table()
                with engine.begin() as conn:
                    if isinstance(record, LoggedRequest):
                        insert_requests(conn, engine.dialect.name, [record])
                    elif row is None:  # a prepared row: the driver's insert, one row
                        insert_rows(
                            conn, engine.dialect.name, [record], isinstance(record, PreparedRow) and record.wide
                        )
                    else:
                        conn.execute(insert_statement(engine.dialect.name), [row])
            except Exception as exc:
                if not is_bad_data(exc):
                    self._note_error(exc, f"writing {_records(batch[i:])} records")
                    return batch[i:]
                self._reject(record, exc)
            else:
                self._settle(_records([record]))
        return []

    def _settle(self, written: int) -> None:
        with self._lock:
            self._written += written
            self._failing = False
            if self._abandoned:  # close() already counted these as lost: they made it after all
                self._dropped -= written
            else:
                self._in_flight -= written

    def _reject(self, record: LogItem, exc: BaseException) -> None:
        n = _records([record])
        with self._lock:
            if not self._abandoned:
                self._dropped += n
                self._in_flight -= n
        held = self._reject_throttle.allow()
        if held is not None and isinstance(record, LoggedRequest):
            log.error(
                "prediction log: the database refused request %s (%s, %d records): %s (%d more refusals not logged)",
                record.request_id,
                record.dataset,
                record.size,
                _short(exc),
                held,
            )
        elif held is not None and not isinstance(record, LoggedRequest):
            log.error(
                "prediction log: the database refused record %d of request %s (%s): %s (%d more refusals not logged)",
                record.record_index,
                record.request_id,
                record.dataset,
                _short(exc),
                held,
            )

    def _note_error(self, exc: BaseException, doing: str) -> None:
        with self._lock:
            self._write_errors += 1
            self._last_error = _short(exc)
            self._failing = True
            queued = self._waiting + self._in_flight
        held = self._error_throttle.allow()
        if held is not None:
            log.warning(
                "prediction log: %s failed (%s); %d records queued, retried every %.1f s while the database fails "
                "(%d warnings held back)",
                doing,
                _short(exc),
                queued,
                self._retry_interval,
                held,
            )


def _records(items: Sequence[LogItem]) -> int:
    """How many records ``items`` hold (a request holds its ``size``, anything else one)."""
    return sum(item.size if isinstance(item, LoggedRequest) else 1 for item in items)


def _record(item: LogItem) -> PredictionRecord:
    """A record for SQLAlchemy's insert (other dialects): prepared rows are only made for SQLite and PostgreSQL."""
    if isinstance(item, PreparedRow | LoggedRequest):
        raise TypeError("a prepared row reached a warehouse that is neither SQLite nor PostgreSQL")
    return item


def _short(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
