"""Ground truth and live performance: the real outcome of served records, once known, against what was predicted.

Outcomes arrive later than predictions (a flight lands hours after it was scored). ``record_outcomes`` labels the
source rows of a window (read only) with the dataset's target and stores them in ``ground_truth``, keyed by the
same record id the predictions carry (the dataset's key column, or the key derived from the row's content). The
outcome goes in the task's column: ``label`` (binary, 0/1), ``label_class`` (multiclass, the class as text) or
``label_value`` (regression). ``live_performance`` joins the prediction log with it in SQL and scores each model
version on the records whose outcome is known, with the task's metrics (those of the holdout).

A ``ground_truth`` table of an older version (binary only: ``label`` NOT NULL, no ``label_class``/``label_value``)
is upgraded in place the first time it is used, its rows kept (:func:`upgrade_table`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sklearn.metrics import brier_score_loss, f1_score, log_loss, precision_score, recall_score, roc_auc_score
from sqlalchemy.dialects import postgresql, sqlite

from pipelines.core.config import DatasetConfig
from pipelines.core.errors import ConfigError
from pipelines.core.runs import Window
from pipelines.core.settings import Settings
from pipelines.core.warehouse import get_engine, table_exists
from pipelines.data.features import build_target
from pipelines.data.sources import read_source, source_description
from pipelines.monitoring.drift import PREDICTED_CLASS, PREDICTION, PROBABILITIES, live_metrics, probability_matrix
from pipelines.serving.prediction_log import TABLE as PREDICTION_LOG_TABLE
from pipelines.serving.prediction_log import LogTime, log_filter, prediction_log_table, settle, version_sort_key

log = logging.getLogger(__name__)

TABLE = "ground_truth"
_CHUNK = 5_000

_metadata = sa.MetaData()
ground_truth_table = sa.Table(
    TABLE,
    _metadata,
    sa.Column("dataset", sa.String(64), primary_key=True),
    sa.Column("record_id", sa.String(200), primary_key=True),
    sa.Column("event_time", sa.DateTime, nullable=False),
    sa.Column("label", sa.Integer, nullable=True),
    sa.Column("label_class", sa.String(200), nullable=True),
    sa.Column("label_value", sa.Float, nullable=True),
    sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_ground_truth_dataset_event_time", "dataset", "event_time"),
)
# The column holding each task's outcome; the other two stay null.
LABEL_COLUMNS = {"binary": "label", "multiclass": "label_class", "regression": "label_value"}
# Columns added after the first version of the table (binary only), and the one that became nullable then.
TASK_COLUMNS = ("label_class", "label_value")
NULLABLE_SINCE_TASKS = ("label",)


@dataclass(frozen=True)
class OutcomeResult:
    """What ``record_outcomes`` stored for one window (``without_key``: rows with no record id, not stored)."""

    dataset: str
    window: str
    rows: int
    labelled: int
    without_outcome: int
    without_key: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VersionPerformance:
    """One model version on live traffic: how much it served and, on the labelled part, how well.

    ``metrics``: the task's metrics (``TASK_METRICS`` names, as on the holdout) for every task; the named
    attributes are the binary ones (None for the other tasks), precision/recall/F1 of the logged decisions.
    """

    dataset: str
    model_version: str
    predictions: int
    labelled: int
    positive_rate: float | None = None
    roc_auc: float | None = None
    log_loss: float | None = None
    brier: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def record_outcomes(
    config: DatasetConfig, settings: Settings, window: Window | None, observed_at: datetime
) -> OutcomeResult:
    """Store the known outcomes of the window's source rows (read only); re-running a window replaces it, never
    duplicates. Records are keyed by ``config.key_name`` (the key column, or the key derived from row content).

    A dataset without a time column has no windows: every labelled row of the source is stored, with
    ``observed_at`` as its event time, replacing the dataset's earlier outcomes.
    """
    if config.time_column is not None and window is None:
        raise ConfigError(f"dataset {config.name!r}: name the window of events whose outcomes to record")
    engine = get_engine(settings.warehouse_url)
    key_col, where = config.key_name, source_description(config)
    frame = read_source(config, settings, window if config.time_column else None)
    target, known = build_target(frame, config)
    keys = _record_ids(frame[key_col])
    has_key = keys.notna()
    if (~has_key).any():
        log.warning(
            "%d rows of %s in %s have no %s: their outcome cannot be joined and is not stored",
            int((~has_key).sum()),
            where,
            window,
            key_col,
        )
    stored = known & has_key
    observed = observed_at.replace(tzinfo=UTC) if observed_at.tzinfo is None else observed_at.astimezone(UTC)
    labels = pd.DataFrame(
        {
            "record_id": keys[stored],
            "event_time": (
                pd.to_datetime(frame.loc[stored, config.time_column])
                if config.time_column
                else pd.Series(pd.Timestamp(observed.replace(tzinfo=None)), index=frame.index[stored])
            ),
            "label": target[stored],
        }
    )
    duplicated = labels["record_id"].duplicated(keep="last")
    if duplicated.any():
        log.warning(
            "%d duplicate %s values in %s of %s: keeping the last row of each",
            int(duplicated.sum()),
            key_col,
            window,
            where,
        )
        labels = labels.loc[~duplicated]
    column, convert = LABEL_COLUMNS[config.task], _LABEL_TYPES[config.task]
    empty = dict.fromkeys(LABEL_COLUMNS.values())
    rows = [
        {
            "dataset": config.name,
            "record_id": key,
            "event_time": _naive(ts),
            **empty,
            column: convert(label),
            "observed_at": observed,
        }
        for key, ts, label in zip(labels["record_id"], labels["event_time"], labels["label"], strict=True)
    ]
    create_table(engine)
    table = ground_truth_table
    with engine.begin() as conn:
        deleted = conn.execute(
            sa.delete(table).where(
                table.c.dataset == config.name,
                *(
                    (table.c.event_time >= window.start_dt, table.c.event_time < window.end_dt)
                    if window is not None and config.time_column
                    else ()
                ),
            )
        ).rowcount
        statement = _upsert_statement(engine.dialect.name)
        for chunk in _chunks(rows, _CHUNK):
            written = conn.execute(statement, chunk)
            if written.returns_rows:
                written.all()
    if deleted:
        log.info("replaced %d ground-truth rows of %s in %s", deleted, config.name, window)
    result = OutcomeResult(
        dataset=config.name,
        window=str(window) if window is not None and config.time_column else "whole source",
        rows=len(frame),
        labelled=len(rows),
        without_outcome=int((~known).sum()),
        without_key=int((known & ~has_key).sum()),
    )
    log.info(
        "ground truth of %s in %s: %d rows, %d labelled, %d without outcome (%s)",
        config.name,
        window,
        result.rows,
        result.labelled,
        result.without_outcome,
        config.target.excluded_reason,
    )
    return result


def live_performance(
    config: DatasetConfig, settings: Settings, start: datetime | None = None, end: datetime | None = None
) -> list[VersionPerformance]:
    """Per model version: logged predictions (in ``[start, end)`` of event time, or of serving time without a time
    column, when given) scored on ground truth with the task's metrics."""
    engine = get_engine(settings.warehouse_url)
    settle(engine, config.name)
    if not table_exists(engine, PREDICTION_LOG_TABLE):
        return []
    create_table(engine)
    log_t = prediction_log_table
    where = log_filter(config.name, start, end, log_time(config))
    served_query = sa.select(log_t.c.model_version, sa.func.count()).where(*where).group_by(log_t.c.model_version)
    answers = _ANSWER_COLUMNS[config.task]
    labelled_query = _joined([log_t.c.model_version, *(log_t.c[c] for c in answers)], config).where(*where)
    with engine.connect() as conn:
        served = {version: int(n) for version, n in conn.execute(served_query).all()}
        joined = pd.DataFrame(conn.execute(labelled_query).all(), columns=["model_version", *answers, "label"])
    by_version = {str(version): group for version, group in joined.groupby("model_version", sort=False)}
    return [
        _score(config, version, served[version], by_version.get(version))
        for version in sorted(served, key=version_sort_key)
    ]


def trailing_performance(
    config: DatasetConfig, settings: Settings, end: datetime, version: str, periods: tuple[int, ...]
) -> dict[int, VersionPerformance]:
    """``version`` on live traffic over each of the ``periods`` (days) ending at ``end`` (event time, or serving
    time without a time column): one read of the longest period (every logged record, its outcome when known),
    each shorter period scored on its part."""
    from datetime import timedelta

    engine = get_engine(settings.warehouse_url)
    settle(engine, config.name)
    empty = {days: VersionPerformance(config.name, version, 0, 0) for days in periods}
    if not periods or not table_exists(engine, PREDICTION_LOG_TABLE):
        return empty
    create_table(engine)
    log_t, truth = prediction_log_table, ground_truth_table
    by = log_time(config)
    answers = _ANSWER_COLUMNS[config.task]
    label = truth.c[LABEL_COLUMNS[config.task]]
    query = (
        sa.select(log_t.c[by], *(log_t.c[c] for c in answers), label)
        .select_from(
            log_t.outerjoin(truth, sa.and_(truth.c.dataset == log_t.c.dataset, truth.c.record_id == log_t.c.record_id))
        )
        .where(*log_filter(config.name, end - timedelta(days=max(periods)), end, by), log_t.c.model_version == version)
    )
    with engine.connect() as conn:
        frame = pd.DataFrame(conn.execute(query).all(), columns=["at", *answers, "label"])
    moments = pd.to_datetime(frame["at"], utc=by == "served_at")
    bound = pd.Timestamp(end)
    if by == "served_at":
        bound = bound.tz_localize(UTC) if bound.tzinfo is None else bound.tz_convert(UTC)
    out = {}
    for days in periods:
        part = frame.loc[(moments >= bound - pd.Timedelta(days=days)).to_numpy()]
        known = part.loc[part["label"].notna()]
        out[days] = _score(config, version, len(part), known if len(known) else None)
    return out


def labelled_predictions(
    config: DatasetConfig, settings: Settings, start: datetime, end: datetime, version: str
) -> pd.DataFrame:
    """What ``version`` answered, and the known outcome (column ``target.label``), for every record in
    ``[start, end)`` (event time, or serving time without a time column): ``probability`` (binary),
    ``predicted_class`` and ``probabilities`` (multiclass) or ``prediction`` (regression)."""
    engine = get_engine(settings.warehouse_url)
    settle(engine, config.name)
    answers = _ANSWER_COLUMNS[config.task]
    columns = [*answers, config.target.label]
    if not table_exists(engine, PREDICTION_LOG_TABLE):
        return pd.DataFrame(columns=columns)
    create_table(engine)
    log_t = prediction_log_table
    query = _joined([log_t.c[c] for c in answers], config).where(
        *log_filter(config.name, start, end, log_time(config)), log_t.c.model_version == version
    )
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(query).all(), columns=columns)


# What each task's prediction log rows answer (the columns scored against the outcome).
_ANSWER_COLUMNS = {
    "binary": ["probability", "decision"],
    "multiclass": [PREDICTED_CLASS, PROBABILITIES],
    "regression": [PREDICTION],
}
_LABEL_TYPES: dict[str, Any] = {"binary": int, "multiclass": str, "regression": float}


def log_time(config: DatasetConfig) -> LogTime:
    """The prediction log's time a window ranges over: the event's, or the serving time without a time column."""
    return "event_time" if config.time_column is not None else "served_at"


def _joined(selected: list[Any], config: DatasetConfig) -> sa.Select[Any]:
    """SELECT ``selected`` and the task's outcome column from the prediction log joined to its known outcomes."""
    log_t, truth = prediction_log_table, ground_truth_table
    label = truth.c[LABEL_COLUMNS[config.task]]
    return (
        sa.select(*selected, label)
        .select_from(
            log_t.join(truth, sa.and_(truth.c.dataset == log_t.c.dataset, truth.c.record_id == log_t.c.record_id))
        )
        .where(label.is_not(None))
    )


def _score(config: DatasetConfig, version: str, predictions: int, labelled: pd.DataFrame | None) -> VersionPerformance:
    dataset = config.name
    if labelled is None or labelled.empty:
        return VersionPerformance(dataset=dataset, model_version=version, predictions=predictions, labelled=0)
    if config.task == "multiclass":
        proba, classes = probability_matrix(labelled[PROBABILITIES])
        metrics = live_metrics("multiclass", labelled["label"].astype(str), proba, classes=classes)
        return VersionPerformance(dataset, version, predictions, len(labelled), metrics=metrics)
    if config.task == "regression":
        y_value = labelled["label"].to_numpy(dtype=np.float64)
        metrics = live_metrics("regression", y_value, labelled[PREDICTION].to_numpy(dtype=np.float64))
        return VersionPerformance(dataset, version, predictions, len(labelled), metrics=metrics)
    y = labelled["label"].to_numpy(dtype=np.int64)
    p = labelled["probability"].to_numpy(dtype=np.float64)
    d = labelled["decision"].to_numpy(dtype=np.int64)
    return VersionPerformance(
        dataset=dataset,
        model_version=version,
        predictions=predictions,
        labelled=len(y),
        positive_rate=float(y.mean()),
        roc_auc=float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None,
        log_loss=float(log_loss(y, p, labels=[0, 1])),
        brier=float(brier_score_loss(y, p)),
        precision=float(precision_score(y, d, labels=[0, 1], zero_division=0)),
        recall=float(recall_score(y, d, labels=[0, 1], zero_division=0)),
        f1=float(f1_score(y, d, labels=[0, 1], zero_division=0)),
        metrics=live_metrics("binary", y, p, threshold=config.model.threshold),
    )


def create_table(engine: sa.Engine) -> None:
    """Create the ground-truth table if it does not exist; upgrade an older one in place."""
    _metadata.create_all(engine, tables=[ground_truth_table])
    upgrade_table(engine)


def upgrade_table(engine: sa.Engine) -> bool:
    """Bring a table of an older version up to this one, its rows kept (:mod:`pipelines.core.schema_upgrade`):
    add the task columns and drop NOT NULL from the binary-only ones. Whether it changed anything."""
    from pipelines.core.schema_upgrade import upgrade_table as upgrade

    return upgrade(engine, ground_truth_table, TASK_COLUMNS, NULLABLE_SINCE_TASKS)


def _record_ids(keys: pd.Series) -> pd.Series:
    """Record ids as strings (integral floats without ``.0``), None where the key is missing."""
    if pd.api.types.is_float_dtype(keys) and bool((keys.dropna() % 1 == 0).all()):
        keys = keys.astype("Int64")
    return keys.astype("string").astype(object).where(keys.notna(), None)


def _naive(ts: pd.Timestamp) -> datetime:
    value: datetime = ts.to_pydatetime()
    return value.replace(tzinfo=None)


def _upsert_statement(dialect: str) -> sa.Insert:
    table = ground_truth_table
    keys = ["dataset", "record_id"]
    if dialect == "sqlite":
        lite = sqlite.insert(table)
        return lite.on_conflict_do_update(index_elements=keys, set_=_replaced(lite.excluded))
    if dialect == "postgresql":
        pg = postgresql.insert(table)
        # RETURNING lets SQLAlchemy send multi-row VALUES pages instead of one statement per row.
        return pg.on_conflict_do_update(index_elements=keys, set_=_replaced(pg.excluded)).returning(table.c.record_id)
    return sa.insert(table)


def _replaced(excluded: Any) -> dict[str, Any]:
    return {
        "event_time": excluded.event_time,
        **{column: excluded[column] for column in LABEL_COLUMNS.values()},
        "observed_at": excluded.observed_at,
    }


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]
