"""Delivering a message to every channel that wants it, without ever raising, and counting every attempt.

Each attempt (delivered or failed) is a row of the warehouse table ``notification_log``: an operator counts the
failures per channel there (:func:`delivery_counts`, or ``SELECT channel, status, count(*) ...``). A failing
channel is logged as a warning naming the channel and the error (never a secret); the other channels still get
the message, and the step or task that sent it carries on. A message with a ``key`` (the event's identity: this
run's approval request, this window's drift) is sent once per channel: a retried or cleared task that sends it
again reaches only the channels that have not had it delivered yet.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pipelines.core.notifications.channels import ChannelError, scrub, send
from pipelines.core.notifications.config import DEFAULT, NotificationsConfig, load_notifications
from pipelines.core.notifications.message import Notification

log = logging.getLogger("pipelines.notifications")

LOG_TABLE = "notification_log"
_NOTIFIED = "_mlops_notified"


@dataclass(frozen=True)
class Attempt:
    """One channel's attempt at one message."""

    channel: str
    ok: bool
    error: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class DeliveryReport:
    """What became of one message on each channel that wanted it."""

    kind: str
    dataset: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def delivered(self) -> list[str]:
        return [a.channel for a in self.attempts if a.ok]

    @property
    def failed(self) -> list[str]:
        return [a.channel for a in self.attempts if not a.ok]


def deliver(
    notification: Notification,
    config: NotificationsConfig | None = None,
    *,
    config_path: Path | None = None,
    warehouse_url: str | None = None,
) -> DeliveryReport:
    """Send ``notification`` to every channel of ``config`` (default: the settings' notifications file) that
    wants its kind; record every attempt in ``notification_log``. Never raises.

    A notifications file that does not load is itself a failed attempt (channel ``config``): the message then
    goes to the log alone.
    """
    attempts: list[Attempt] = []
    try:
        if config_path is None or warehouse_url is None:
            from pipelines.core.settings import get_settings

            settings = get_settings()
            config_path = config_path or settings.notifications_file
            warehouse_url = warehouse_url if warehouse_url is not None else settings.warehouse_url
        if config is None:
            config = load_notifications(config_path)
    except Exception as exc:
        log.warning("notifications: %s; sending %s to the log only", exc, notification.kind)
        attempts.append(Attempt("config", False, str(exc)[:2000]))
        config = DEFAULT
    already = _delivered_to(warehouse_url, notification.key) if notification.key and warehouse_url else set()
    for channel in config.channels:
        if not channel.wants(notification.kind):
            continue
        if channel.name in already:
            log.info("notification %s (%s) already delivered to channel %s: not sent again (key %s)",
                     notification.kind, notification.dataset, channel.name, notification.key)  # fmt: skip
            continue
        started = time.monotonic()
        try:
            send(channel, notification, config_path or "the notifications file")
        except Exception as exc:
            error = str(exc) if isinstance(exc, ChannelError) else f"{type(exc).__name__}: {exc}"
            error = scrub(error, [_env(name) for name in channel.env_names()])[:2000]
            log.warning("notification %s (%s) not delivered to channel %s: %s",
                        notification.kind, notification.dataset, channel.name, error)  # fmt: skip
            attempts.append(Attempt(channel.name, False, error, time.monotonic() - started))
        else:
            attempts.append(Attempt(channel.name, True, "", time.monotonic() - started))
    report = DeliveryReport(notification.kind, notification.dataset, attempts)
    if warehouse_url:
        _record(warehouse_url, notification, attempts)
    return report


def _env(name: str) -> str | None:
    import os

    return os.environ.get(name)


def mark_notified(exc: BaseException, kind: str) -> None:
    """Say that the step already sent a message (``kind``) about this failure, so Airflow's failure callback
    does not send it again as ``task_failed``."""
    with contextlib.suppress(AttributeError):  # an exception without a __dict__ is sent again: no harm
        setattr(exc, _NOTIFIED, kind)


def notified(exc: BaseException | None) -> str | None:
    """The kind already sent about ``exc`` or an exception it was raised from, or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        kind = getattr(exc, _NOTIFIED, None)
        if kind:
            return str(kind)
        exc = exc.__cause__ or exc.__context__
    return None


def _table() -> Any:
    import sqlalchemy as sa

    metadata = sa.MetaData()
    return sa.Table(
        LOG_TABLE,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("dataset", sa.String(64), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("channel", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),  # delivered | failed
        sa.Column("error", sa.Text, nullable=False, default=""),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("dedup_key", sa.String(200), nullable=True),  # the message's key ("" or none: every time)
        sa.Index("ix_notification_log_channel_status", "channel", "status"),
        sa.Index("ix_notification_log_dedup_key", "dedup_key"),
    )


def _stored_key(key: str) -> str:
    """The key as stored: itself, or its sha256 when longer than the column (Airflow run ids can be 250 chars)."""
    return key if len(key) <= 200 else "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _ready_table(warehouse_url: str) -> tuple[Any, Any]:
    """The engine and the table, created if missing and given ``dedup_key`` if it predates it (rows kept:
    :mod:`pipelines.core.schema_upgrade`, safe from several processes at once)."""
    from pipelines.core.schema_upgrade import upgrade_table
    from pipelines.core.warehouse import get_engine

    engine = get_engine(warehouse_url)
    table = _table()
    table.metadata.create_all(engine, tables=[table])
    upgrade_table(engine, table, added=["dedup_key"], nullable=[])
    return engine, table


def _delivered_to(warehouse_url: str, key: str) -> set[str]:
    """The channels that already have the message of ``key`` delivered; none when the log cannot be read (the
    message is then sent: a repeat is better than a loss)."""
    import sqlalchemy as sa

    try:
        engine, table = _ready_table(warehouse_url)
        query = sa.select(table.c.channel).where(table.c.dedup_key == _stored_key(key), table.c.status == "delivered")
        with engine.connect() as conn:
            return {str(channel) for (channel,) in conn.execute(query)}
    except Exception as exc:
        log.warning("notification key %s: could not read %s (%s): sending to every channel", key, LOG_TABLE, exc)
        return set()


def _record(warehouse_url: str, notification: Notification, attempts: list[Attempt]) -> None:
    """One row per attempt; a warehouse that cannot be written is logged, not raised."""
    if not attempts:
        return
    try:
        import sqlalchemy as sa

        engine, table = _ready_table(warehouse_url)
        rows = [
            {
                "sent_at": notification.at,
                "kind": notification.kind,
                "dataset": notification.dataset[:64],
                "title": notification.title[:300],
                "channel": attempt.channel,
                "status": "delivered" if attempt.ok else "failed",
                "error": attempt.error,
                "seconds": round(attempt.seconds, 3),
                "dedup_key": _stored_key(notification.key) if notification.key else None,
            }
            for attempt in attempts
        ]
        with engine.begin() as conn:
            conn.execute(sa.insert(table), rows)
    except Exception as exc:
        log.warning("notification %s: could not count its delivery in %s: %s", notification.kind, LOG_TABLE, exc)


def delivery_counts(warehouse_url: str, since: datetime | None = None) -> dict[tuple[str, str], int]:
    """``{(channel, status): attempts}`` from ``notification_log`` (since ``since``, when given)."""
    import sqlalchemy as sa

    from pipelines.core.warehouse import get_engine, table_exists

    engine = get_engine(warehouse_url)
    if not table_exists(engine, LOG_TABLE):
        return {}
    table = _table()
    query = sa.select(table.c.channel, table.c.status, sa.func.count()).group_by(table.c.channel, table.c.status)
    if since is not None:
        query = query.where(table.c.sent_at >= since)
    with engine.connect() as conn:
        return {(channel, status): int(count) for channel, status, count in conn.execute(query)}
