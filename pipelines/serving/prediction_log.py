"""The prediction log: the table of every record the prediction service answered, and the queries on it.

Records are written by :mod:`pipelines.serving.log_writer` (off the request path); monitoring, the outcomes join
and the demo read them back here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from pipelines.core.warehouse import get_engine, table_exists

TABLE = "prediction_log"
UNIQUE_CONSTRAINT = "uq_prediction_log_record"
UNIQUE_COLUMNS = ("dataset", "request_id", "record_index")

_metadata = sa.MetaData()
prediction_log_table = sa.Table(
    TABLE,
    _metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("dataset", sa.String(64), nullable=False),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("record_index", sa.Integer, nullable=False),
    sa.Column("record_id", sa.String(200), nullable=True),
    sa.Column("served_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("event_time", sa.DateTime, nullable=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("features", sa.JSON, nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("decision", sa.Integer, nullable=False),
    sa.UniqueConstraint(*UNIQUE_COLUMNS, name=UNIQUE_CONSTRAINT),
    sa.Index("ix_prediction_log_dataset_event_time", "dataset", "event_time"),
    sa.Index("ix_prediction_log_dataset_record_id", "dataset", "record_id"),
)


def create_table(engine: sa.Engine) -> None:
    """Create the prediction log table (and its indexes) if it does not exist."""
    _metadata.create_all(engine, tables=[prediction_log_table])


FIXED_COLUMNS = (
    "request_id",
    "record_index",
    "record_id",
    "served_at",
    "event_time",
    "model_version",
    "probability",
    "decision",
)


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One answered record: who asked, which model answered, with which inputs, and the answer."""

    dataset: str
    request_id: str
    record_index: int
    record_id: str | None
    served_at: datetime
    event_time: datetime | None
    model_name: str
    model_version: str
    features: dict[str, Any]
    probability: float
    decision: int


# Queries used by the demo, monitoring and tests.


def version_sort_key(version: str) -> tuple[int, int, str]:
    """Sort key putting numeric model versions first, in numeric order."""
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def log_filter(
    dataset: str, start: datetime | None = None, end: datetime | None = None
) -> list[sa.ColumnElement[bool]]:
    """WHERE clauses selecting ``dataset``'s logged records with ``event_time`` in ``[start, end)`` when given."""
    table = prediction_log_table
    clauses = [table.c.dataset == dataset]
    if start is not None:
        clauses.append(table.c.event_time >= start)
    if end is not None:
        clauses.append(table.c.event_time < end)
    return clauses


def served_by_version(
    url: str, dataset: str, start: datetime | None = None, end: datetime | None = None
) -> dict[str, int]:
    """Logged records per model version, with ``event_time`` in ``[start, end)`` when given."""
    engine = get_engine(url)
    if not table_exists(engine, TABLE):
        return {}
    table = prediction_log_table
    query = sa.select(table.c.model_version, sa.func.count()).where(*log_filter(dataset, start, end))
    with engine.connect() as conn:
        rows = conn.execute(query.group_by(table.c.model_version)).all()
    return {version: int(n) for version, n in sorted(rows, key=lambda row: version_sort_key(row[0]))}


def count(url: str, dataset: str) -> int:
    """How many records of ``dataset`` are logged."""
    engine = get_engine(url)
    if not table_exists(engine, TABLE):
        return 0
    query = sa.select(sa.func.count()).select_from(prediction_log_table).where(*log_filter(dataset, None, None))
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def read_predictions(
    url: str, dataset: str, start: datetime | None = None, end: datetime | None = None
) -> pd.DataFrame:
    """Logged records (fixed columns, then one column per feature), by event time then arrival order."""
    engine = get_engine(url)
    if not table_exists(engine, TABLE):
        return _empty_predictions()
    table = prediction_log_table
    query = (
        sa.select(*(table.c[name] for name in FIXED_COLUMNS), table.c.features)
        .where(*log_filter(dataset, start, end))
        .order_by(table.c.event_time.asc().nulls_last(), table.c.id)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    if not rows:
        return _empty_predictions()
    frame = pd.DataFrame([row[:-1] for row in rows], columns=list(FIXED_COLUMNS))
    features = pd.DataFrame([row[-1] or {} for row in rows])
    features = features.rename(columns={c: f"feature_{c}" for c in features.columns if c in FIXED_COLUMNS})
    frame["served_at"] = pd.to_datetime(frame["served_at"], utc=True)
    frame["event_time"] = pd.to_datetime(frame["event_time"])
    return pd.concat([frame, features], axis=1)


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
        }
    )
