"""The warehouse: a SQL database reached through SQLAlchemy (SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

import logging
from datetime import datetime
from functools import lru_cache
from typing import Any

import pandas as pd
import sqlalchemy as sa

log = logging.getLogger(__name__)


@lru_cache(maxsize=8)
def get_engine(url: str) -> sa.Engine:
    """One engine per URL per process; SQLite files get their folder created."""
    if url.startswith("sqlite:///"):
        from pathlib import Path

        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, pool_pre_ping=True, json_serializer=_json_dumps)
    if url.startswith("sqlite"):
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """SQLite as a warehouse several processes share: the service's prediction log writes while steps read and
    replay writes. WAL lets readers and a writer work at once, NORMAL sync skips the fsync of every commit (a crash
    of the machine may lose the last commits, not corrupt the file), 30 s of patience for a locked database, and a
    64 MB page cache so that inserting into a large table's indexes does not read from disk every time."""
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000", "cache_size=-65536"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _json_dumps(value: object) -> str:
    """JSON columns (the prediction log's features) encoded with orjson: several times faster than ``json``."""
    import orjson

    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS).decode()


def table_exists(engine: sa.Engine, table: str) -> bool:
    """Whether ``table`` exists in the warehouse."""
    return sa.inspect(engine).has_table(table)


def _reflect(engine: sa.Engine, table: str) -> sa.Table:
    return sa.Table(table, sa.MetaData(), autoload_with=engine)


def stage_rows(
    engine: sa.Engine,
    table: str,
    frame: pd.DataFrame,
    time_column: str | None,
    start: datetime | None,
    end: datetime | None,
) -> int:
    """Stage ``frame`` into one of the pipeline's OWN warehouse tables, in one transaction: the rows of
    ``[start, end)`` on ``time_column`` are replaced (idempotent per window), or, without a time column or bounds,
    the whole table. Never call it on a user's source: sources are read only (``pipelines.data.sources``)."""
    with engine.begin() as conn:
        if time_column is None or start is None or end is None:
            frame.to_sql(table, conn, if_exists="replace", index=False, chunksize=2000)
            log.info("staged %d rows as the whole of table %s", len(frame), table)
            return len(frame)
        if sa.inspect(conn).has_table(table):
            tbl = _reflect(engine, table)
            col = tbl.c[time_column]
            deleted = conn.execute(sa.delete(tbl).where(col >= start, col < end)).rowcount
            if deleted:
                log.info("replaced %d existing rows of %s in [%s, %s)", deleted, table, start, end)
        frame.to_sql(table, conn, if_exists="append", index=False, chunksize=2000)
    return len(frame)
