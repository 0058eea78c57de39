"""Upgrading a warehouse table made by an older version: columns added, NOT NULL dropped, rows kept.

PostgreSQL alters the table in place, under a table lock. SQLite cannot alter a column, so the table is rebuilt in
one immediate transaction (renamed, created anew with its indexes, rows copied, the old table dropped): a failure
leaves the old table as it was, and a concurrent upgrade waits for the lock and then finds nothing to do.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

log = logging.getLogger(__name__)


def upgrade_table(engine: sa.Engine, table: sa.Table, added: Sequence[str], nullable: Sequence[str]) -> bool:
    """Add the ``added`` columns of ``table`` that the database lacks and drop NOT NULL from ``nullable``.

    Whether anything changed; safe to run from several processes at once.
    """
    if not needs_upgrade(sa.inspect(engine), table.name, added, nullable):
        return False
    if engine.dialect.name == "sqlite":
        changed = _rebuild_sqlite(engine, table, added, nullable)
    else:
        changed = _alter_in_place(engine, table, added, nullable)
    if changed:
        log.info("upgraded table %s: columns %s added, %s nullable", table.name, list(added), list(nullable))
    return changed


def needs_upgrade(inspector: Any, name: str, added: Sequence[str], nullable: Sequence[str]) -> bool:
    """Whether the table ``name`` lacks one of ``added`` or still has NOT NULL on one of ``nullable``."""
    columns = {c["name"]: c for c in inspector.get_columns(name)}
    missing = [column for column in added if column not in columns]
    required = [column for column in nullable if column in columns and not columns[column]["nullable"]]
    return bool(missing or required)


def _alter_in_place(engine: sa.Engine, table: sa.Table, added: Sequence[str], nullable: Sequence[str]) -> bool:
    preparer = engine.dialect.identifier_preparer
    quoted = preparer.quote(table.name)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # one upgrade at a time; the others find it done
            conn.exec_driver_sql(f"LOCK TABLE {quoted} IN ACCESS EXCLUSIVE MODE")
        inspector = sa.inspect(conn)
        if not needs_upgrade(inspector, table.name, added, nullable):
            return False
        columns = {c["name"]: c for c in inspector.get_columns(table.name)}
        for name in added:
            if name not in columns:
                kind = table.c[name].type.compile(dialect=engine.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {quoted} ADD COLUMN {preparer.quote(name)} {kind}")
        for name in nullable:
            if name in columns and not columns[name]["nullable"]:
                conn.exec_driver_sql(f"ALTER TABLE {quoted} ALTER COLUMN {preparer.quote(name)} DROP NOT NULL")
    return True


def _rebuild_sqlite(engine: sa.Engine, table: sa.Table, added: Sequence[str], nullable: Sequence[str]) -> bool:
    old = f"{table.name}__before_upgrade"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            inspector = sa.inspect(conn)
            if not needs_upgrade(inspector, table.name, added, nullable):
                conn.exec_driver_sql("ROLLBACK")
                return False
            kept = [c["name"] for c in inspector.get_columns(table.name) if c["name"] in table.c]
            indexes = [i["name"] for i in inspector.get_indexes(table.name) if i["name"]]
            conn.exec_driver_sql(f'ALTER TABLE "{table.name}" RENAME TO "{old}"')
            for index in indexes:  # index names are global in SQLite: the new table's must be free
                conn.exec_driver_sql(f'DROP INDEX IF EXISTS "{index}"')
            table.create(conn)
            listed = ", ".join(f'"{name}"' for name in kept)
            conn.exec_driver_sql(f'INSERT INTO "{table.name}" ({listed}) SELECT {listed} FROM "{old}"')
            conn.exec_driver_sql(f'DROP TABLE "{old}"')
            conn.exec_driver_sql("COMMIT")
        except BaseException:
            conn.exec_driver_sql("ROLLBACK")
            raise
    return True
