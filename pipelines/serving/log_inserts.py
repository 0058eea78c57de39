"""Prediction log rows and the INSERT statements that write them, per database dialect.

Rows are stored as SQLAlchemy would store them; the two dialects the warehouse runs on (SQLite, PostgreSQL) get
multi-row inserts straight through their driver, ignoring records already logged. A batch of binary records
writes the table's original columns only, exactly as before there were tasks; a batch holding a multiclass or
regression record writes the task columns too ("wide" rows).
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, date, datetime
from itertools import chain
from typing import Any

import orjson
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from pipelines.serving.log_tables import (
    TABLE,
    TASK_COLUMNS,
    UNIQUE_COLUMNS,
    UNIQUE_CONSTRAINT,
    PredictionRecord,
    prediction_log_table,
)


@functools.cache
def insert_statement(dialect: str) -> sa.Insert:
    """SQLAlchemy's INSERT of prediction log rows for ``dialect``, ignoring records already logged."""
    if dialect == "sqlite":
        return sqlite.insert(prediction_log_table).on_conflict_do_nothing(index_elements=list(UNIQUE_COLUMNS))
    if dialect == "postgresql":
        # RETURNING lets SQLAlchemy 2.1 send the batch as multi-row VALUES pages (twice as fast as executemany,
        # which it otherwise falls back to for an INSERT with ON CONFLICT).
        statement = postgresql.insert(prediction_log_table).on_conflict_do_nothing(constraint=UNIQUE_CONSTRAINT)
        return statement.returning(prediction_log_table.c.id)
    return sa.insert(prediction_log_table)


# The two dialects the warehouse runs on get multi-row inserts straight through their driver. Under load the
# service's event loop holds the GIL nearly all the time; SQLAlchemy's per-row parameter processing (~30 us a
# record) and sqlite3's executemany (which gives the GIL up and takes it back for every row, waiting up to the 5 ms
# switch interval each time) left the writer at ~800 records/s while the service answered 3,000 a second.
# Other dialects go through SQLAlchemy Core.
FAST_DIALECTS = frozenset({"sqlite", "postgresql"})
_COLUMNS = (
    "dataset",
    "request_id",
    "record_index",
    "record_id",
    "served_at",
    "event_time",
    "model_name",
    "model_version",
    "features",
    "probability",
    "decision",
)
_WIDE_COLUMNS = (*_COLUMNS, *TASK_COLUMNS)
NARROW, WIDE = len(_COLUMNS), len(_WIDE_COLUMNS)
_NO_TASK_VALUES = (None,) * len(TASK_COLUMNS)


class PreparedRow(tuple[Any, ...]):
    """A record already in its row's form for the driver's bulk insert: ``_COLUMNS`` order, then the task columns
    when it is wide (multiclass, regression). The writer process builds these straight from an answered request, a
    few microseconds a record, instead of a :class:`PredictionRecord` converted later."""

    __slots__ = ()

    @property
    def dataset(self) -> str:
        return str(self[0])

    @property
    def request_id(self) -> str:
        return str(self[1])

    @property
    def record_index(self) -> int:
        return int(self[2])

    @property
    def wide(self) -> bool:
        return len(self) == WIDE


def driver_row(item: PredictionRecord | PreparedRow, text_times: bool, wide: bool) -> tuple[Any, ...]:
    """The row of a record or of a prepared row, ``wide`` when the batch needs the task columns."""
    if isinstance(item, PreparedRow):
        return item if item.wide or not wide else (*item, *_NO_TASK_VALUES)
    return tuple_row(item, text_times, wide)


def served_value(served_at: datetime, text_times: bool) -> Any:
    """``served_at`` as :func:`tuple_row` stores it: UTC, as text for SQLite."""
    served_at = served_at.replace(tzinfo=UTC) if served_at.tzinfo is None else served_at.astimezone(UTC)
    return served_at.replace(tzinfo=None).isoformat(" ", "microseconds") if text_times else served_at


def event_value(event_time: datetime | None, text_times: bool) -> Any:
    """``event_time`` as :func:`tuple_row` stores it: the naive wall clock, as text for SQLite."""
    if event_time is None:
        return None
    if event_time.tzinfo is not None:
        event_time = event_time.replace(tzinfo=None)
    return event_time.isoformat(" ", "microseconds") if text_times else event_time


def event_text(text: str | None, text_times: bool) -> Any:
    """An event time as the request gave it (ISO 8601, already validated), as :func:`event_value` stores it. A
    plain ``YYYY-MM-DDTHH:MM:SS`` (or with a space), the usual form, becomes SQLite's text by slicing; any other
    form goes through ``datetime``."""
    if text is None:
        return None
    if (
        text_times
        and len(text) == 19
        and text[4] == "-"
        and text[7] == "-"
        and text[10] in "T "
        and text[13] == ":"
        and text[16] == ":"
        and text.isascii()
    ):
        return f"{text[:10]} {text[11:]}.000000"
    return event_value(datetime.fromisoformat(text), text_times)


_SQLITE_ROWS_PER_STATEMENT = 2000  # 14 parameters a wide row: under SQLite's limit of 32,766 bound parameters


@functools.cache
def _postgres_insert(wide: bool) -> str:
    """INSERT for psycopg2's ``execute_values``, ignoring records already stored."""
    columns = ", ".join(_WIDE_COLUMNS if wide else _COLUMNS)
    return f"INSERT INTO {TABLE} ({columns}) VALUES %s ON CONFLICT ON CONSTRAINT {UNIQUE_CONSTRAINT} DO NOTHING"


@functools.cache
def _sqlite_insert(rows: int, wide: bool = False) -> str:
    """INSERT of ``rows`` rows at once, ignoring records already stored."""
    columns = _WIDE_COLUMNS if wide else _COLUMNS
    values = ", ".join(["(" + ", ".join("?" * len(columns)) + ")"] * rows)
    return (
        f"INSERT INTO {TABLE} ({', '.join(columns)}) VALUES {values} "
        f"ON CONFLICT ({', '.join(UNIQUE_COLUMNS)}) DO NOTHING"
    )


def insert_rows(conn: sa.Connection, dialect: str, rows: list[Any], wide: bool = False) -> int | None:
    """Insert ``rows`` (tuples for the fast dialects, ``wide`` ones with the task columns; dicts otherwise); the
    number inserted when known."""
    if dialect == "sqlite":
        # Multi-row statements, not executemany: sqlite3 releases the GIL around each step, and a thread that
        # takes it back once per row waits up to the switch interval (5 ms) each time behind a busy event loop.
        for start in range(0, len(rows), _SQLITE_ROWS_PER_STATEMENT):
            chunk = rows[start : start + _SQLITE_ROWS_PER_STATEMENT]
            conn.exec_driver_sql(_sqlite_insert(len(chunk), wide), tuple(chain.from_iterable(chunk)))
        return None
    if dialect == "postgresql":
        from psycopg2.extras import execute_values

        with conn.connection.dbapi_connection.cursor() as cursor:  # type: ignore[union-attr]
            execute_values(cursor, _postgres_insert(wide), rows, page_size=1000)
        return None
    result = conn.execute(insert_statement(dialect), rows)
    return len(result.all()) if result.returns_rows else None


def _features_json(features: dict[str, Any]) -> str:
    """The features as JSON text: orjson for plain values (NaN becomes null), sanitised first otherwise."""

    try:
        return orjson.dumps(features, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:
        return orjson.dumps({str(k): _json_value(v) for k, v in features.items()}).decode()


def is_wide(records: list[PredictionRecord | PreparedRow]) -> bool:
    """Whether a batch needs the task columns (it holds a multiclass or regression record): a plain loop, the
    cheapest pass over a binary batch (~15 ns a record, 0.5 % of converting it)."""
    for r in records:
        if isinstance(r, PreparedRow):
            if len(r) == WIDE:
                return True
        elif r.prediction is not None or r.predicted_class is not None or r.probabilities is not None:
            return True
    return False


def tuple_row(record: PredictionRecord, text_times: bool, wide: bool = False) -> tuple[Any, ...]:
    """One row for the driver's bulk insert, in ``_COLUMNS`` order (``wide``: then the task columns), stored as
    SQLAlchemy would store it. A binary row needs its probability and decision (TypeError otherwise).

    ``text_times``: SQLite keeps date-times as text; SQLAlchemy writes them without offset (UTC here for
    ``served_at``, local wall clock for ``event_time``) and parses that format back.
    """
    served_at = record.served_at
    served_at = served_at.replace(tzinfo=UTC) if served_at.tzinfo is None else served_at.astimezone(UTC)
    event_time = record.event_time
    if event_time is not None and event_time.tzinfo is not None:
        event_time = event_time.replace(tzinfo=None)
    # isoformat with microseconds is the text SQLAlchemy writes (and compares against) for SQLite date-times
    served: Any = served_at.replace(tzinfo=None).isoformat(" ", "microseconds") if text_times else served_at
    event: Any = event_time.isoformat(" ", "microseconds") if text_times and event_time is not None else event_time
    if not isinstance(record.record_index, int):
        raise TypeError(f"record_index must be an int, got {type(record.record_index).__name__}")
    if wide:
        check_output(record)
        return (
            record.dataset,
            record.request_id,
            record.record_index,
            record.record_id,
            served,
            event,
            record.model_name,
            str(record.model_version),
            _features_json(record.features),
            *_task_values(record),
        )
    return (
        record.dataset,
        record.request_id,
        record.record_index,
        record.record_id,
        served,
        event,
        record.model_name,
        str(record.model_version),
        _features_json(record.features),
        float(record.probability),  # type: ignore[arg-type]  # None: TypeError, the record is refused
        int(record.decision),  # type: ignore[arg-type]
    )


def check_output(record: PredictionRecord) -> None:
    """Raise ValueError, naming the record, when it holds no answer of any task."""
    if record.is_binary and (record.probability is None or record.decision is None):
        raise ValueError(
            f"record {record.record_index} of request {record.request_id} holds no prediction: a binary record "
            "needs probability and decision, a multiclass one predicted_class, a regression one prediction"
        )


def _task_values(record: PredictionRecord) -> tuple[Any, ...]:
    """probability, decision, prediction, predicted_class, probabilities (JSON text) of a wide row."""
    return (
        None if record.probability is None else float(record.probability),
        None if record.decision is None else int(record.decision),
        None if record.prediction is None else float(record.prediction),
        None if record.predicted_class is None else str(record.predicted_class),
        None if record.probabilities is None else _probabilities_json(record.probabilities),
    )


def _probabilities_json(probabilities: dict[str, float]) -> str:
    """The class probabilities as JSON text (class names as strings)."""
    return orjson.dumps({str(k): float(v) for k, v in probabilities.items()}).decode()


def row_dict(record: PredictionRecord) -> dict[str, Any]:
    """One row as a dict of column values, for SQLAlchemy's INSERT (dialects other than SQLite and PostgreSQL)."""
    check_output(record)
    served_at = record.served_at
    served_at = served_at.replace(tzinfo=UTC) if served_at.tzinfo is None else served_at.astimezone(UTC)
    event_time = record.event_time
    if event_time is not None and event_time.tzinfo is not None:
        event_time = event_time.replace(tzinfo=None)  # naive wall clock, like the warehouse's time column
    return {
        "dataset": record.dataset,
        "request_id": record.request_id,
        "record_index": int(record.record_index),
        "record_id": record.record_id,
        "served_at": served_at,
        "event_time": event_time,
        "model_name": record.model_name,
        "model_version": str(record.model_version),
        "features": {str(k): _json_value(v) for k, v in record.features.items()},
        "probability": None if record.probability is None else float(record.probability),
        "decision": None if record.decision is None else int(record.decision),
        "prediction": None if record.prediction is None else float(record.prediction),
        "predicted_class": None if record.predicted_class is None else str(record.predicted_class),
        "probabilities": None
        if record.probabilities is None
        else {str(k): float(v) for k, v in record.probabilities.items()},
    }


def _json_value(value: Any) -> Any:
    """A JSON-safe feature value: None for NaN and missing values, plain Python for numpy scalars."""
    if value is None or type(value) in (str, int, bool):
        return value
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    item = getattr(value, "item", None)  # numpy scalars
    return _json_value(item()) if callable(item) else value


def is_bad_data(exc: BaseException) -> bool:
    """Whether the database refused the data itself (retrying the same rows cannot help)."""
    if isinstance(exc, sa.exc.DataError | sa.exc.IntegrityError | TypeError | ValueError):
        return True
    if type(exc).__module__.startswith("psycopg2"):  # raised by the raw cursor of the fast PostgreSQL path
        import psycopg2

        return isinstance(exc, psycopg2.DataError | psycopg2.IntegrityError)
    # A bind value that cannot be converted (e.g. not JSON serialisable) fails before reaching the database.
    return isinstance(exc, sa.exc.StatementError) and not isinstance(exc, sa.exc.DBAPIError)
