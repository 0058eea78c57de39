"""The audit trail: one row per approval, rejection, deployment, rollback or triggered retraining, in the warehouse."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime

import sqlalchemy as sa

from pipelines.core.warehouse import get_engine

log = logging.getLogger(__name__)

_metadata = sa.MetaData()
audit_table = sa.Table(
    "model_audit",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("dataset", sa.String(64), nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("mode", sa.String(32), nullable=False),
    sa.Column("comment", sa.Text, nullable=False, default=""),
    sa.Column("run_key", sa.String(250), nullable=False),
    sa.UniqueConstraint("model_name", "model_version", "event", "run_key", name="uq_model_audit_event"),
)

EVENTS = (
    "overrides",  # a training run's accepted overrides (what a data scientist tuned for that run)
    "approved",
    "rejected",
    "timed_out",
    "gate_failed",
    "deployed",
    "smoke_test_failed",
    "artifact_refused",  # files changed since training or approval, no digest, pickle or untrusted types
    "serving_switch_failed",
    "rolled_back",
    "retraining_triggered",
)


@dataclass(frozen=True)
class AuditEvent:
    event_at: datetime
    dataset: str
    model_name: str
    model_version: str
    event: str
    actor: str
    mode: str
    comment: str
    run_key: str

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"unknown audit event {self.event!r}; known: {EVENTS}")


def record(
    warehouse_url: str,
    event: str,
    *,
    at: datetime,
    dataset: str,
    model_name: str,
    model_version: str,
    actor: str,
    mode: str,
    comment: str,
    run_key: str,
    replace: bool = True,
) -> AuditEvent:
    """Write one event of the trail; writing the same event of the same run again replaces it (idempotent), or,
    with ``replace=False``, keeps the first (an insert only: what the prediction service's database role may do)."""
    row = AuditEvent(
        event_at=at,
        dataset=dataset,
        model_name=model_name,
        model_version=model_version,
        event=event,
        actor=actor,
        mode=mode,
        comment=comment,
        run_key=run_key,
    )
    engine = get_engine(warehouse_url)
    _metadata.create_all(engine, tables=[audit_table])
    if not replace:
        _insert_once(engine, row)
        return row
    with engine.begin() as conn:
        conn.execute(
            sa.delete(audit_table).where(
                audit_table.c.model_name == row.model_name,
                audit_table.c.model_version == row.model_version,
                audit_table.c.event == row.event,
                audit_table.c.run_key == row.run_key,
            )
        )
        conn.execute(sa.insert(audit_table).values(**asdict(row)))
    log.info("audit: %s v%s %s by %s (%s)", row.model_name, row.model_version, row.event, row.actor, row.mode)
    return row


def _insert_once(engine: sa.Engine, row: AuditEvent) -> None:
    """INSERT the row unless the same event of the same run is there (ON CONFLICT DO NOTHING)."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    statement = dialect_insert(audit_table).values(**asdict(row)).on_conflict_do_nothing()
    with engine.begin() as conn:
        conn.execute(statement)
    log.info("audit: %s v%s %s by %s (kept the first)", row.model_name, row.model_version, row.event, row.actor)


def history(warehouse_url: str, model_name: str) -> list[dict[str, object]]:
    """Every audit row of ``model_name``, oldest first."""
    engine = get_engine(warehouse_url)
    _metadata.create_all(engine, tables=[audit_table])
    with engine.connect() as conn:
        rows = (
            conn.execute(
                sa.select(audit_table).where(audit_table.c.model_name == model_name).order_by(audit_table.c.id)
            )
            .mappings()
            .all()
        )
    return [dict(r) for r in rows]
