"""The prediction log: every record the prediction service answered, and the queries on it.

Requests are written by :mod:`pipelines.serving.log_writer` (off the request path) into the log's intake and turned
into records after the fact (:mod:`pipelines.serving.request_log`); monitoring, the outcomes join and the demo read
the records back here, each read first turning what waits in the intake into records (:func:`settle`). The tables
and the record type are defined in :mod:`pipelines.serving.log_tables` and importable from here too.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson
import pandas as pd
import sqlalchemy as sa

from pipelines.core.warehouse import get_engine, table_exists
from pipelines.serving.log_tables import (
    FIXED_COLUMNS,
    LOG_TIMES,
    NULLABLE_SINCE_TASKS,
    REQUESTS_TABLE,
    REQUESTS_UNIQUE,
    TABLE,
    TASK_COLUMNS,
    UNIQUE_COLUMNS,
    UNIQUE_CONSTRAINT,
    LogTime,
    PredictionRecord,
    create_table,
    prediction_log_table,
    prediction_requests_table,
    upgrade_table,
)
from pipelines.serving.request_log import materialize

__all__ = [
    "FIXED_COLUMNS",
    "LOG_TIMES",
    "NULLABLE_SINCE_TASKS",
    "REQUESTS_TABLE",
    "REQUESTS_UNIQUE",
    "TABLE",
    "TASK_COLUMNS",
    "UNIQUE_COLUMNS",
    "UNIQUE_CONSTRAINT",
    "LogTime",
    "PredictionRecord",
    "count",
    "create_table",
    "log_filter",
    "prediction_log_table",
    "prediction_requests_table",
    "read_predictions",
    "served_by_version",
    "settle",
    "upgrade_table",
    "version_sort_key",
]

log = logging.getLogger(__name__)


# Queries used by the demo, monitoring and tests.


def version_sort_key(version: str) -> tuple[int, int, str]:
    """Sort key putting numeric model versions first, in numeric order."""
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def log_filter(
    dataset: str, start: datetime | None = None, end: datetime | None = None, by: LogTime = "event_time"
) -> list[sa.ColumnElement[bool]]:
    """WHERE clauses selecting ``dataset``'s logged records with ``by`` in ``[start, end)`` when given.

    ``by``: ``event_time`` (the event's own wall-clock time, as sent by the client) or ``served_at`` (when the
    service answered, UTC: for a dataset without a time column). For ``served_at`` a naive bound is taken as UTC.
    """
    if by not in LOG_TIMES:
        raise ValueError(f"log_filter: by must be one of {LOG_TIMES}, got {by!r}")
    table = prediction_log_table
    column = table.c[by]
    if by == "served_at":
        start, end = _utc(start), _utc(end)
    clauses = [table.c.dataset == dataset]
    if start is not None:
        clauses.append(column >= start)
    if end is not None:
        clauses.append(column < end)
    return clauses


def _utc(moment: datetime | None) -> datetime | None:
    """``moment`` as an aware UTC date-time (naive: already UTC), as ``served_at`` is stored."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def settle(engine: sa.Engine, dataset: str | None = None) -> int:
    """Turn the answered requests still waiting in the log's intake into records (of ``dataset``, or of every
    dataset) before reading the log: see :func:`pipelines.serving.request_log.materialize`. The records written."""
    return materialize(engine, dataset)


def served_by_version(
    url: str, dataset: str, start: datetime | None = None, end: datetime | None = None, by: LogTime = "event_time"
) -> dict[str, int]:
    """Logged records per model version, with ``by`` in ``[start, end)`` when given (see :func:`log_filter`)."""
    engine = get_engine(url)
    settle(engine, dataset)
    if not table_exists(engine, TABLE):
        return {}
    table = prediction_log_table
    query = sa.select(table.c.model_version, sa.func.count()).where(*log_filter(dataset, start, end, by))
    with engine.connect() as conn:
        rows = conn.execute(query.group_by(table.c.model_version)).all()
    return {version: int(n) for version, n in sorted(rows, key=lambda row: version_sort_key(row[0]))}


def count(url: str, dataset: str) -> int:
    """How many records of ``dataset`` are logged."""
    engine = get_engine(url)
    settle(engine, dataset)
    if not table_exists(engine, TABLE):
        return 0
    query = sa.select(sa.func.count()).select_from(prediction_log_table).where(*log_filter(dataset, None, None))
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def read_predictions(
    url: str, dataset: str, start: datetime | None = None, end: datetime | None = None, by: LogTime = "event_time"
) -> pd.DataFrame:
    """Logged records with ``by`` in ``[start, end)`` (see :func:`log_filter`): the fixed columns, then one column
    per feature (``feature_<name>`` when a feature's name is a fixed column's), ordered by ``by`` then arrival.
    A table of an older version, not upgraded yet, reads with its missing task columns null."""
    engine = get_engine(url)
    settle(engine, dataset)
    if not table_exists(engine, TABLE):
        return _empty_predictions()
    table = prediction_log_table
    present = {c["name"] for c in sa.inspect(engine).get_columns(TABLE)}
    selected = [table.c[name] if name in present else sa.null().label(name) for name in FIXED_COLUMNS]
    # the features as their JSON text, decoded by orjson: SQLAlchemy's JSON type decodes each row with the standard
    # library's json, which took half the time of reading a window (1.25 million records: 23.2 s -> 12.5 s)
    query = (
        sa.select(*selected, sa.type_coerce(table.c.features, sa.Text))
        .where(*log_filter(dataset, start, end, by))
        .order_by(table.c[by].asc().nulls_last(), table.c.id)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    if not rows:
        return _empty_predictions()
    frame = pd.DataFrame([row[:-1] for row in rows], columns=list(FIXED_COLUMNS))
    features = pd.DataFrame([_features(row[-1]) for row in rows])
    features = features.rename(columns={c: f"feature_{c}" for c in features.columns if c in FIXED_COLUMNS})
    frame["served_at"] = pd.to_datetime(frame["served_at"], utc=True)
    frame["event_time"] = pd.to_datetime(frame["event_time"])
    return pd.concat([frame, features], axis=1)


def _features(text: Any) -> dict[str, Any]:
    """A logged record's features from their stored JSON (text; PostgreSQL's driver may hand over the object)."""
    if text is None:
        return {}
    if isinstance(text, dict):
        return text
    decoded = orjson.loads(text)
    return decoded if isinstance(decoded, dict) else {}


def _empty_predictions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "request_id": pd.Series(dtype=object),
            "record_index": pd.Series(dtype="int64"),
            "record_id": pd.Series(dtype=object),
            "served_at": pd.Series(dtype="datetime64[ns, UTC]"),
            "event_time": pd.Series(dtype="datetime64[ns]"),
            "model_version": pd.Series(dtype=object),
            "probability": pd.Series(dtype="float64"),
            "decision": pd.Series(dtype="int64"),
            "prediction": pd.Series(dtype="float64"),
            "predicted_class": pd.Series(dtype=object),
            "probabilities": pd.Series(dtype=object),
        }
    )
