"""The prediction log's tables: ``prediction_log`` (every record the service answered) and its intake
``prediction_requests`` (answered requests not yet turned into records), and the record they hold.

What a record holds depends on the model's task:

- binary: ``probability`` (of the positive class) and ``decision`` (0/1 at the model's threshold);
- multiclass: ``predicted_class`` (the most probable class) and ``probabilities`` (``{class: p}``);
  ``probability`` and ``decision`` stay null: they mean P(positive) and a 0/1 decision, which a multiclass model
  does not have (a reader wanting the confidence takes ``probabilities[predicted_class]``);
- regression: ``prediction`` (the predicted value); ``probability`` and ``decision`` stay null.

A table created by an older version (binary only: ``probability`` and ``decision`` NOT NULL, no task columns) is
upgraded in place by :func:`create_table`, its rows kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

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
    sa.Column("probability", sa.Float, nullable=True),
    sa.Column("decision", sa.Integer, nullable=True),
    sa.Column("prediction", sa.Float, nullable=True),
    sa.Column("predicted_class", sa.String(200), nullable=True),
    sa.Column("probabilities", sa.JSON(none_as_null=True), nullable=True),  # None: SQL NULL, not JSON null
    sa.UniqueConstraint(*UNIQUE_COLUMNS, name=UNIQUE_CONSTRAINT),
    sa.Index("ix_prediction_log_dataset_event_time", "dataset", "event_time"),
    sa.Index("ix_prediction_log_dataset_record_id", "dataset", "record_id"),
)


# The log's intake: one row per answered request (its validated body, the model's outputs), written on the serving
# path; :mod:`pipelines.serving.request_log` turns these rows into the records of ``prediction_log`` after the fact
# (readers do it before they read; the service's writer does it whenever it is idle). See docs/serving.md.
REQUESTS_TABLE = "prediction_requests"
REQUESTS_UNIQUE = "uq_prediction_requests_request"
prediction_requests_table = sa.Table(
    REQUESTS_TABLE,
    _metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("dataset", sa.String(64), nullable=False),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("served_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("task", sa.String(16), nullable=False),
    sa.Column("classes", sa.Text, nullable=True),  # multiclass: the class names, a JSON list
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),  # the request's JSON body: records, ids, event_times
    sa.Column("outputs", sa.LargeBinary, nullable=False),  # float64 bytes (see LoggedRequest)
    sa.Column("decisions", sa.LargeBinary, nullable=False),  # int8 bytes, binary only
    sa.UniqueConstraint("dataset", "request_id", name=REQUESTS_UNIQUE),
    # ids are never reused (SQLite would reuse them once the table is empty): a process turning requests into
    # records deletes the ids it read, and must not delete a request stored since under a recycled id
    sqlite_autoincrement=True,
)


# Columns added after the first version of the table (binary only), and the ones that became nullable then.
TASK_COLUMNS = ("prediction", "predicted_class", "probabilities")
NULLABLE_SINCE_TASKS = ("probability", "decision")


def create_table(engine: sa.Engine) -> None:
    """Create the prediction log's tables (records, and the requests not yet turned into records) if they do not
    exist; upgrade an older records table in place."""
    _metadata.create_all(engine, tables=[prediction_log_table, prediction_requests_table])
    upgrade_table(engine)


def upgrade_table(engine: sa.Engine) -> bool:
    """Bring a table of an older version up to this one, its rows kept (:mod:`pipelines.core.schema_upgrade`):
    add the task columns and drop NOT NULL from the binary-only ones. Whether it changed anything."""
    from pipelines.core.schema_upgrade import upgrade_table as upgrade

    return upgrade(engine, prediction_log_table, TASK_COLUMNS, NULLABLE_SINCE_TASKS)


FIXED_COLUMNS = (
    "request_id",
    "record_index",
    "record_id",
    "served_at",
    "event_time",
    "model_version",
    "probability",
    "decision",
    "prediction",
    "predicted_class",
    "probabilities",
)
LogTime = Literal["event_time", "served_at"]
LOG_TIMES: tuple[LogTime, ...] = ("event_time", "served_at")


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
    probability: float | None  # binary: P(positive class); None for the other tasks
    decision: int | None  # binary: 1 when probability >= the model's threshold; None for the other tasks
    prediction: float | None = None  # regression: the predicted value
    predicted_class: str | None = None  # multiclass: the most probable class
    probabilities: dict[str, float] | None = None  # multiclass: the probability of every class

    @property
    def is_binary(self) -> bool:
        """Whether the record holds a binary answer only (the table's original columns suffice)."""
        return self.prediction is None and self.predicted_class is None and self.probabilities is None
