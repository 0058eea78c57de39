"""The prediction log's intake: one row per answered request, turned into the log's records after the fact.

The service's writer stores each answered request as it came, in ``prediction_requests``: its validated JSON body,
the model's outputs as bytes, a few ids. That is one row whatever the request's size, where a record per row cost
SQLite a b-tree insert into the table and each of its three indexes for every record: on a batch of 100 records
the writer process used 0.53 ms of CPU instead of 2.1 ms, measured on this machine (docs/serving.md).

:func:`materialize` turns the waiting requests into ``prediction_log`` records, oldest first, a chunk of requests
per transaction: the chunk's records inserted (records already stored ignored), then its requests deleted. Every
reader of the log calls it before reading, and the service's writer calls it whenever it has nothing else to do, so
the records table is complete whenever it is read. Running it from several processes at once is safe: a record is
stored once, a request deleted once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any

import orjson
import sqlalchemy as sa

from pipelines.core.warehouse import table_exists
from pipelines.serving.log_inserts import (
    FAST_DIALECTS,
    driver_row,
    insert_rows,
    insert_statement,
    is_bad_data,
    is_wide,
    row_dict,
    served_value,
)
from pipelines.serving.log_tables import (
    REQUESTS_TABLE,
    REQUESTS_UNIQUE,
    TABLE,
    create_table,
    prediction_requests_table,
)
from pipelines.serving.logged_request import LoggedRequest, records_of, rows_of

log = logging.getLogger(__name__)

_COLUMNS = (
    "dataset",
    "request_id",
    "served_at",
    "model_name",
    "model_version",
    "task",
    "classes",
    "size",
    "body",
    "outputs",
    "decisions",
)
# Requests kept in the intake because they cannot become records, reported once per process: the writer retries
# them whenever it is idle (a few times a second), and each retry must not log the same error again.
_REPORTED: set[tuple[str, str]] = set()
_SQLITE_ROWS_PER_STATEMENT = 1000  # 11 parameters a row: under SQLite's limit of 32,766 bound parameters
CHUNK_REQUESTS = 50  # requests turned into records per transaction


def request_row(request: LoggedRequest, text_times: bool) -> tuple[Any, ...]:
    """The ``prediction_requests`` row of ``request``, in ``_COLUMNS`` order, as the driver stores it."""
    return (
        request.dataset,
        request.request_id,
        served_value(request.served_at, text_times),
        request.model_name,
        str(request.model_version),
        request.task,
        orjson.dumps(list(request.classes)).decode() if request.classes else None,
        int(request.size),
        request.body,
        request.outputs,
        request.decisions,
    )


def insert_requests(conn: sa.Connection, dialect: str, requests: Sequence[LoggedRequest]) -> None:
    """Store ``requests``, one row each, ignoring a request already stored (same dataset and request id)."""
    if dialect == "sqlite":
        rows = [request_row(r, True) for r in requests]
        for start in range(0, len(rows), _SQLITE_ROWS_PER_STATEMENT):
            chunk = rows[start : start + _SQLITE_ROWS_PER_STATEMENT]
            conn.exec_driver_sql(_sqlite_insert(len(chunk)), tuple(chain.from_iterable(chunk)))
        return
    if dialect == "postgresql":
        from psycopg2.extras import execute_values

        rows = [request_row(r, False) for r in requests]
        statement = (
            f"INSERT INTO {REQUESTS_TABLE} ({', '.join(_COLUMNS)}) VALUES %s "
            f"ON CONFLICT ON CONSTRAINT {REQUESTS_UNIQUE} DO NOTHING"
        )
        with conn.connection.dbapi_connection.cursor() as cursor:  # type: ignore[union-attr]
            execute_values(cursor, statement, rows, page_size=500)
        return
    conn.execute(
        sa.insert(prediction_requests_table),
        [dict(zip(_COLUMNS, request_row(r, False), strict=True)) for r in requests],
    )


def _sqlite_insert(rows: int) -> str:
    values = ", ".join(["(" + ", ".join("?" * len(_COLUMNS)) + ")"] * rows)
    return (
        f"INSERT INTO {REQUESTS_TABLE} ({', '.join(_COLUMNS)}) VALUES {values} "
        "ON CONFLICT (dataset, request_id) DO NOTHING"
    )


def logged_request(row: Any) -> LoggedRequest:
    """The :class:`LoggedRequest` a stored row holds (a row of ``prediction_requests`` read through SQLAlchemy)."""
    return LoggedRequest(
        dataset=row.dataset,
        request_id=row.request_id,
        served_at=row.served_at,
        model_name=row.model_name,
        model_version=row.model_version,
        body=bytes(row.body),
        outputs=bytes(row.outputs),
        decisions=bytes(row.decisions),
        size=int(row.size),
        task=row.task,
        classes=tuple(orjson.loads(row.classes)) if row.classes else (),
    )


def materialize(
    engine: sa.Engine,
    dataset: str | None = None,
    *,
    chunk: int = CHUNK_REQUESTS,
    stop: Callable[[], bool] | None = None,
) -> int:
    """Turn the waiting requests (of ``dataset``, or of every dataset) into ``prediction_log`` records, oldest
    first, ``chunk`` requests per transaction, until none is left or ``stop()`` says so between chunks; the number
    of records written (records already stored count too).

    A chunk the database refuses (bad data, not an outage) is taken again one request at a time, and a request it
    still refuses stays stored, with an error logged, for someone to look at: nothing is deleted unwritten."""
    if not table_exists(engine, REQUESTS_TABLE):
        return 0
    if not table_exists(engine, TABLE):
        create_table(engine)
    table = prediction_requests_table
    total, after, one_by_one_until = 0, 0, 0
    while stop is None or not stop():
        size = 1 if after < one_by_one_until else chunk
        query = sa.select(table).where(table.c.id > after).order_by(table.c.id).limit(size)
        if dataset is not None:
            query = query.where(table.c.dataset == dataset)
        try:
            with engine.begin() as conn:
                rows = conn.execute(query).all()
                if not rows:
                    break
                done = _expand(conn, engine.dialect.name, rows)
                if done:
                    conn.execute(sa.delete(table).where(table.c.id.in_(done)))
        except Exception as exc:
            if not is_bad_data(exc):
                raise
            if size > 1:  # find the request at fault: this range again, one request at a time
                one_by_one_until = rows[-1].id
                continue
            _report(rows[0], f"the database refused its records: {str(exc).splitlines()[0][:300]}")
            done = []
        after = rows[-1].id
        total += sum(row.size for row in rows if row.id in done)
    return total


def _expand(conn: sa.Connection, dialect: str, rows: Sequence[Any]) -> list[int]:
    """Insert the records of ``rows`` (stored requests); the ids of the requests whose records are now stored.

    A request that cannot be read back stays stored, with an error logged: nothing is deleted unread."""
    fast = dialect in FAST_DIALECTS
    text_times = dialect == "sqlite"
    items: list[Any] = []
    done: list[int] = []
    for row in rows:
        try:
            request = logged_request(row)
            items.extend(rows_of(request, text_times) if fast else [row_dict(r) for r in records_of(request)])
        except Exception as exc:
            _report(row, f"it could not be read back: {exc}")
            continue
        done.append(row.id)
    if not items:
        return done
    if fast:
        wide = is_wide(items)
        insert_rows(conn, dialect, [driver_row(r, text_times, wide) for r in items] if wide else items, wide)
    else:
        conn.execute(insert_statement(dialect), items)
    return done


def _report(row: Any, reason: str) -> None:
    """Log, once per process, why a stored request stays in the intake."""
    key = (row.dataset, row.request_id)
    if key in _REPORTED:
        return
    if len(_REPORTED) > 10_000:
        _REPORTED.clear()
    _REPORTED.add(key)
    log.error(
        "prediction log: stored request %s of %s kept in %s, not turned into records: %s",
        row.request_id,
        row.dataset,
        REQUESTS_TABLE,
        reason,
    )


def waiting(engine: sa.Engine, dataset: str | None = None) -> int:
    """How many records wait in requests not yet turned into ``prediction_log`` records."""
    if not table_exists(engine, REQUESTS_TABLE):
        return 0
    table = prediction_requests_table
    query = sa.select(sa.func.coalesce(sa.func.sum(table.c.size), 0))
    if dataset is not None:
        query = query.where(table.c.dataset == dataset)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())
