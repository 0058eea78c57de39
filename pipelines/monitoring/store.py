"""Monitoring history in the warehouse: one row per monitored window, one per retraining decision.

Both are keyed by the data interval, so rerunning a window replaces its row instead of adding one.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from pipelines.core.warehouse import get_engine
from pipelines.monitoring.retraining import WindowResult

_metadata = sa.MetaData()
results_table = sa.Table(
    "monitoring_results",
    _metadata,
    sa.Column("dataset", sa.String(64), primary_key=True),
    sa.Column("window_start", sa.Date, primary_key=True),
    sa.Column("window_end", sa.Date, primary_key=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("champion_version", sa.String(32), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("labelled", sa.Integer, nullable=False),
    sa.Column("drift_share", sa.Float, nullable=True),
    sa.Column("live_metrics", sa.JSON, nullable=False),
    sa.Column("summary", sa.JSON, nullable=False),
    sa.Column("evidence_url", sa.Text, nullable=False),
    sa.Column("run_key", sa.String(250), nullable=False),
    sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
)
decisions_table = sa.Table(
    "retraining_decisions",
    _metadata,
    sa.Column("dataset", sa.String(64), primary_key=True),
    sa.Column("window_end", sa.Date, primary_key=True),
    sa.Column("retrain", sa.Boolean, nullable=False),
    sa.Column("trigger", sa.String(32), nullable=True),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("reasons", sa.JSON, nullable=False),
    sa.Column("champion_version", sa.String(32), nullable=True),
    sa.Column("training_run_id", sa.String(250), nullable=True),
    sa.Column("training_conf", sa.JSON, nullable=True),
    sa.Column("run_key", sa.String(250), nullable=False),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
)


def _engine(url: str) -> sa.Engine:
    engine = get_engine(url)
    _metadata.create_all(engine, tables=[results_table, decisions_table])
    return engine


def _upsert(conn: sa.Connection, table: sa.Table, row: dict[str, Any]) -> None:
    keys = [c.name for c in table.primary_key.columns]
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table).values(**row)
    conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_={k: v for k, v in row.items() if k not in keys}))


def save_result(url: str, row: dict[str, Any]) -> None:
    """Write one window's result (replacing an earlier check of the same window)."""
    with _engine(url).begin() as conn:
        _upsert(conn, results_table, row)


def history(url: str, dataset: str, until: date | None = None) -> list[WindowResult]:
    """The dataset's monitored windows, oldest first (ending on or before ``until`` when given)."""
    table = results_table
    query = sa.select(table).where(table.c.dataset == dataset)
    if until is not None:
        query = query.where(table.c.window_end <= until)
    with _engine(url).connect() as conn:
        rows = conn.execute(query.order_by(table.c.window_end, table.c.window_start)).mappings().all()
    return [
        WindowResult(
            window_start=row["window_start"],
            window_end=row["window_end"],
            status=row["status"],
            champion_version=row["champion_version"],
            drift_share=row["drift_share"],
            live_metrics=dict(_json(row["live_metrics"])),
            evidence_url=row["evidence_url"],
        )
        for row in rows
        if row["status"] in ("ok", "drift", "insufficient_data")
    ]


def results(url: str, dataset: str) -> list[dict[str, Any]]:
    """Every stored window result of ``dataset`` (all columns), oldest first."""
    table = results_table
    with _engine(url).connect() as conn:
        rows = conn.execute(
            sa.select(table).where(table.c.dataset == dataset).order_by(table.c.window_end, table.c.window_start)
        ).mappings()
        return [dict(r) for r in rows]


def save_decision(url: str, row: dict[str, Any]) -> None:
    """Write the retraining decision taken for a window (replacing an earlier one of the same window)."""
    with _engine(url).begin() as conn:
        _upsert(conn, decisions_table, row)


def decision_for(url: str, dataset: str, window_end: date) -> dict[str, Any] | None:
    """The decision already taken for the window ending ``window_end``, if any."""
    table = decisions_table
    with _engine(url).connect() as conn:
        row = (
            conn.execute(sa.select(table).where(table.c.dataset == dataset, table.c.window_end == window_end))
            .mappings()
            .first()
        )
    return dict(row) if row else None


def decision_for_training_run(url: str, dataset: str, training_run_id: str) -> dict[str, Any] | None:
    """The retraining decision that triggered the training run ``training_run_id`` of ``dataset``, if any."""
    table = decisions_table
    query = sa.select(table).where(
        table.c.dataset == dataset, table.c.retrain.is_(True), table.c.training_run_id == training_run_id
    )
    with _engine(url).connect() as conn:
        row = conn.execute(query.order_by(table.c.window_end.desc())).mappings().first()
    return dict(row) if row else None


def decisions(url: str, dataset: str, retrain_only: bool = False) -> list[dict[str, Any]]:
    """The dataset's retraining decisions, oldest first."""
    table = decisions_table
    query = sa.select(table).where(table.c.dataset == dataset)
    if retrain_only:
        query = query.where(table.c.retrain.is_(True))
    with _engine(url).connect() as conn:
        return [dict(r) for r in conn.execute(query.order_by(table.c.window_end)).mappings()]


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value
