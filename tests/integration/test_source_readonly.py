"""A user's own table is never written to: seed, extract, replay's reading path and outcomes leave it byte for byte.

The source is a real table in a real database, reached through a URL in an environment variable: a SQLite file,
and a throwaway PostgreSQL database with the table in schema ``sales``. Each case reads it as a ``table`` source
(with a key column) and as a ``query`` source (without one: keys derived from content), then compares a dump of
every row (with PostgreSQL's ``xmin``: a rewritten row gets a new one), the row count and, for SQLite, the file's
SHA-256 with what they were before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from pipelines.core.config import ROW_KEY, DatasetConfig
from pipelines.core.errors import ConfigError, NotFoundError
from pipelines.core.runs import RunContext, Window
from pipelines.core.settings import Settings
from pipelines.data.extract import extract, load_snapshot
from pipelines.data.seed import seed
from pipelines.data.sources import read_source, readonly_engine
from pipelines.monitoring.outcomes import ground_truth_table
from pipelines.monitoring.replay import close_day, day_batches, day_reader
from tests.conftest import throwaway_postgres

pytestmark = pytest.mark.integration

URL_ENV = "SHOP_SOURCE_URL"
JANUARY = Window(date(2024, 1, 1), date(2024, 2, 1))
DAY = date(2024, 1, 2)
ROWS = [
    # order_id, ordered_at, amount, region, churned
    ("o1", "2023-12-31 23:00:00", 12.5, "north", "no"),
    ("o2", "2024-01-02 08:00:00", 30.0, "south", "yes"),
    ("o3", "2024-01-02 09:30:00", 41.0, "east", "no"),
    ("o4", "2024-01-02 17:45:00", 7.25, "west", None),
    ("o5", "2024-01-03 10:00:00", 99.0, "north", "yes"),
    ("o6", "2024-01-31 23:59:00", 15.0, "south", "no"),
    ("o7", "2024-02-01 00:00:00", 20.0, "east", "yes"),
]


@dataclass(frozen=True)
class UserTable:
    """A user's table: the URL to reach it, its name as the config writes it, and how to fingerprint it."""

    dialect: str
    url: str
    table: str
    file: Path | None = None

    def dump(self) -> dict[str, Any]:
        """Every row (PostgreSQL: with its xmin), the count, and the SQLite file's SHA-256."""
        xmin = ", xmin::text AS row_version" if self.dialect == "postgresql" else ""
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.text(f"SELECT *{xmin} FROM {self.table} ORDER BY order_id")).all()
                count = conn.execute(sa.text(f"SELECT count(*) FROM {self.table}")).scalar_one()
        finally:
            engine.dispose()
        digest = hashlib.sha256(self.file.read_bytes()).hexdigest() if self.file else None
        return {"rows": [tuple(r) for r in rows], "count": count, "sha256": digest}


def _fill(conn: sa.Connection, table: str, amount_type: str, time_type: str) -> None:
    conn.execute(
        sa.text(
            f"CREATE TABLE {table} (order_id VARCHAR(10) PRIMARY KEY, ordered_at {time_type} NOT NULL, "
            f"amount {amount_type}, region VARCHAR(10), churned VARCHAR(5))"
        )
    )
    conn.execute(
        sa.text(f"INSERT INTO {table} VALUES (:id, :at, :amount, :region, :churned)"),
        [dict(zip(("id", "at", "amount", "region", "churned"), row, strict=True)) for row in ROWS],
    )


def _sqlite_table(tmp_path: Path) -> Iterator[UserTable]:
    path = tmp_path / "user" / "shop.db"
    path.parent.mkdir()
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        _fill(conn, "orders", "REAL", "TIMESTAMP")
        # SQLite keeps what it is given: a word in the numeric column, as a loosely typed source has
        conn.execute(sa.text("UPDATE orders SET amount = 'far' WHERE order_id = 'o3'"))
    engine.dispose()
    yield UserTable("sqlite", url, "orders", path)


def _postgres_table() -> Iterator[UserTable]:
    with throwaway_postgres("mlops_source") as url:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE SCHEMA sales"))
            _fill(conn, "sales.orders", "NUMERIC(8, 2)", "TIMESTAMP")
        engine.dispose()
        yield UserTable("postgresql", url, "sales.orders")


@pytest.fixture(params=["sqlite", "postgresql"])
def user_table(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[UserTable]:
    """The user's table in a database of its own, its URL in ``SHOP_SOURCE_URL``."""
    made = _sqlite_table(tmp_path) if request.param == "sqlite" else _postgres_table()
    table = next(made)
    monkeypatch.setenv(URL_ENV, table.url)
    yield table
    next(made, None)


def shop_config(source: dict[str, Any]) -> DatasetConfig:
    return DatasetConfig.model_validate(
        {
            "name": "shop",
            "source": {"url_env": URL_ENV, "time_column": "ordered_at", **source},
            "target": {"task": "binary", "column": "churned", "positive": "yes"},
            "features": [{"name": "amount", "type": "numeric"}, {"name": "region", "type": "categorical"}],
            "expectation_suite": "shop",
            "model": {
                "registered_name": "shop",
                "experiment": "shop",
                "estimator": "sklearn.linear_model.LogisticRegression",
            },
            "window": {"start": "2024-01-01", "end": "2024-02-01"},
        }
    )


def configs(table: UserTable) -> dict[str, DatasetConfig]:
    """The same rows as a table source with a key column, and as a query source with derived keys."""
    query = f"SELECT order_id, ordered_at, amount, region, churned FROM {table.table} WHERE region <> 'west'"
    return {
        "table": shop_config({"kind": "table", "table": table.table, "key_column": "order_id"}),
        "query": shop_config({"kind": "query", "query": query}),
    }


def test_a_user_table_is_unchanged_by_seed_extract_replay_and_outcomes(
    user_table: UserTable, isolated_settings: Settings
) -> None:
    # given a user's table and its fingerprint
    before = user_table.dump()
    assert before["count"] == len(ROWS)
    for kind, config in configs(user_table).items():
        # when seed is asked to fill it: refused
        with pytest.raises(ConfigError, match="seed never writes to a table or query source"):
            seed(config, isolated_settings, JANUARY)
        # when a run extracts January, and the whole source
        windowed = extract(config, isolated_settings, JANUARY, RunContext(run_id=f"{kind}_january"))
        whole = extract(config, isolated_settings, None, RunContext(run_id=f"{kind}_all"))
        january = load_snapshot(windowed.path)
        # then January's rows come, in time order, and without a window every row does
        expected = ["o2", "o3", "o4", "o5", "o6"] if kind == "table" else None
        if expected:
            assert january["order_id"].tolist() == expected
            assert whole.rows == len(ROWS)
        else:
            assert january["order_id"].tolist() == ["o2", "o3", "o5", "o6"]
            assert january[ROW_KEY].str.fullmatch(r"[0-9a-f]{16}").all()
            assert whole.rows == len(ROWS) - 1
        assert (windowed.window_start, windowed.window_end) == ("2024-01-01", "2024-02-01")
        assert pd.api.types.is_datetime64_any_dtype(january["ordered_at"])
        if user_table.dialect == "sqlite":
            # the word in the numeric column reached the snapshot as text, for validation to report
            assert "far" in january["amount"].tolist()
        # when replay reads a day, builds its requests and closes it (outcomes recorded from the source)
        rows = day_reader(config, isolated_settings)(DAY)
        batches = list(day_batches(rows, config, DAY, batch_size=2))
        outcomes = close_day(config, isolated_settings, DAY, rows)
        # then the day's records carry the keys the outcomes are stored under
        sent = sorted(key for batch in batches for key in batch.ids)
        assert sent == sorted(stored_ids(isolated_settings, DAY) | unlabelled_ids(rows, config))
        assert outcomes.labelled == 2  # o2 and o3; o4 has no outcome (table) or is filtered out (query)
    # and the table is byte for byte what it was
    assert user_table.dump() == before


def stored_ids(settings: Settings, day: date) -> set[str]:
    """Record ids of the ground truth stored for ``day``."""
    engine = sa.create_engine(settings.warehouse_url, poolclass=sa.pool.NullPool)
    truth = ground_truth_table
    with engine.connect() as conn:
        ids = conn.execute(
            sa.select(truth.c.record_id).where(
                truth.c.dataset == "shop", sa.func.date(truth.c.event_time) == day.isoformat()
            )
        ).scalars()
        found = set(ids)
    engine.dispose()
    return found


def unlabelled_ids(rows: pd.DataFrame, config: DatasetConfig) -> set[str]:
    return set(rows.loc[rows[config.target.column].isna(), config.key_name].astype(str))


def test_the_source_engine_cannot_write(user_table: UserTable) -> None:
    # given the engine the pipeline reads a foreign source with
    engine = readonly_engine(user_table.url, True)
    before = user_table.dump()
    # when a write is attempted through it
    with pytest.raises(sa.exc.DBAPIError), engine.begin() as conn:
        conn.execute(sa.text(f"DELETE FROM {user_table.table}"))
    # then the database refused it and nothing changed
    assert user_table.dump() == before


def test_reading_through_a_missing_sqlite_file_never_creates_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_settings: Settings
) -> None:
    # given a URL to a SQLite file that does not exist
    path = tmp_path / "absent.db"
    monkeypatch.setenv(URL_ENV, f"sqlite:///{path}")
    config = shop_config({"kind": "table", "table": "orders", "key_column": "order_id"})
    # then reading fails, naming the variable and the dialect, and no file appears
    with pytest.raises(NotFoundError, match=rf"cannot reach source.url_env {URL_ENV} \(sqlite\)"):
        read_source(config, isolated_settings, JANUARY)
    assert not path.exists()
