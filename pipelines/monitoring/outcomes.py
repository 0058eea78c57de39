"""Ground truth and live performance: the real outcome of served records, once known, against what was predicted.

Outcomes arrive later than predictions (a flight lands hours after it was scored). ``record_outcomes`` labels the
source rows of a window (read only) with the dataset's target and stores them in ``ground_truth``, keyed by the
same record id the predictions carry (the dataset's key column, or the key derived from the row's content).
``live_performance`` joins the prediction log with it in SQL and scores each model version on the records whose
outcome is known.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
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
from pipelines.serving.prediction_log import TABLE as PREDICTION_LOG_TABLE
from pipelines.serving.prediction_log import log_filter, prediction_log_table, version_sort_key

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
    sa.Column("label", sa.Integer, nullable=False),
    sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_ground_truth_dataset_event_time", "dataset", "event_time"),
)


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
    """One model version on live traffic: how much it served and, on the labelled part, how well."""

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def record_outcomes(config: DatasetConfig, settings: Settings, window: Window, observed_at: datetime) -> OutcomeResult:
    """Store the known outcomes of the window's source rows (read only); re-running a window replaces it, never
    duplicates. Records are keyed by ``config.key_name`` (the key column, or the key derived from row content)."""
    if config.time_column is None:
        raise ConfigError(f"dataset {config.name!r}: outcomes need source.time_column (a window of events)")
    if config.task != "binary":
        raise ConfigError(
            f"dataset {config.name!r}: live outcomes are stored for binary targets only so far "
            f"(ground_truth.label is the 0/1 class); a {config.task} target's outcomes are not recorded"
        )
    engine = get_engine(settings.warehouse_url)
    time_col, key_col, where = config.time_column, config.key_name, source_description(config)
    frame = read_source(config, settings, window)
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
    labels = pd.DataFrame(
        {
            "record_id": keys[stored],
            "event_time": pd.to_datetime(frame.loc[stored, time_col]),
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
    observed = observed_at.replace(tzinfo=UTC) if observed_at.tzinfo is None else observed_at.astimezone(UTC)
    rows = [
        {
            "dataset": config.name,
            "record_id": key,
            "event_time": _naive(ts),
            "label": int(label),
            "observed_at": observed,
        }
        for key, ts, label in zip(labels["record_id"], labels["event_time"], labels["label"], strict=True)
    ]
    _metadata.create_all(engine, tables=[ground_truth_table])
    table = ground_truth_table
    with engine.begin() as conn:
        deleted = conn.execute(
            sa.delete(table).where(
                table.c.dataset == config.name,
                table.c.event_time >= window.start_dt,
                table.c.event_time < window.end_dt,
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
        window=str(window),
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
    """Per model version: logged predictions (event time in ``[start, end)`` when given) scored on ground truth."""
    engine = get_engine(settings.warehouse_url)
    if not table_exists(engine, PREDICTION_LOG_TABLE):
        return []
    _metadata.create_all(engine, tables=[ground_truth_table])
    log_t, truth = prediction_log_table, ground_truth_table
    where = log_filter(config.name, start, end)
    served_query = sa.select(log_t.c.model_version, sa.func.count()).where(*where).group_by(log_t.c.model_version)
    labelled_query = (
        sa.select(log_t.c.model_version, log_t.c.probability, log_t.c.decision, truth.c.label)
        .select_from(
            log_t.join(truth, sa.and_(truth.c.dataset == log_t.c.dataset, truth.c.record_id == log_t.c.record_id))
        )
        .where(*where)
    )
    with engine.connect() as conn:
        served = {version: int(n) for version, n in conn.execute(served_query).all()}
        joined = pd.DataFrame(
            conn.execute(labelled_query).all(), columns=["model_version", "probability", "decision", "label"]
        )
    by_version = {str(version): group for version, group in joined.groupby("model_version", sort=False)}
    return [
        _score(config.name, version, served[version], by_version.get(version))
        for version in sorted(served, key=version_sort_key)
    ]


def labelled_predictions(
    config: DatasetConfig, settings: Settings, start: datetime, end: datetime, version: str
) -> pd.DataFrame:
    """Probability and known outcome of every record ``version`` answered with event time in ``[start, end)``."""
    engine = get_engine(settings.warehouse_url)
    columns = ["probability", config.target.label]
    if not table_exists(engine, PREDICTION_LOG_TABLE):
        return pd.DataFrame(columns=columns)
    _metadata.create_all(engine, tables=[ground_truth_table])
    log_t, truth = prediction_log_table, ground_truth_table
    query = (
        sa.select(log_t.c.probability, truth.c.label)
        .select_from(
            log_t.join(truth, sa.and_(truth.c.dataset == log_t.c.dataset, truth.c.record_id == log_t.c.record_id))
        )
        .where(*log_filter(config.name, start, end), log_t.c.model_version == version)
    )
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(query).all(), columns=columns)


def _score(dataset: str, version: str, predictions: int, labelled: pd.DataFrame | None) -> VersionPerformance:
    if labelled is None or labelled.empty:
        return VersionPerformance(dataset=dataset, model_version=version, predictions=predictions, labelled=0)
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
    )


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
    return {"event_time": excluded.event_time, "label": excluded.label, "observed_at": excluded.observed_at}


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]
