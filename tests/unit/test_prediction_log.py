"""The prediction log writer on a real SQLite file: nothing lost, nothing stored twice, drops counted."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from pipelines.core.warehouse import get_engine
from pipelines.serving.log_writer import PredictionLogWriter, WriterStats
from pipelines.serving.prediction_log import FIXED_COLUMNS, PredictionRecord, count, read_predictions, served_by_version
from pipelines.stack.processes import wait_until

SERVED_AT = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
EVENT_TIME = datetime(2013, 1, 2, 6, 0)
LOGGER = "pipelines.serving.log_writer"


def _record(index: int, request_id: str = "req-1", version: str = "1", **changes: Any) -> PredictionRecord:
    """A flights-like record; ``changes`` override any field."""
    fields: dict[str, Any] = {
        "dataset": "flights",
        "request_id": request_id,
        "record_index": index,
        "record_id": f"201301020600-UA{index}-EWR",
        "served_at": SERVED_AT,
        "event_time": EVENT_TIME + timedelta(minutes=index),
        "model_name": "flights-delay",
        "model_version": version,
        "features": {"carrier": "UA", "origin": "EWR", "distance": 1400.0 + index, "temp": None, "month": 1},
        "probability": round(index / 1000, 6),
        "decision": index % 2,
    }
    fields.update(changes)
    return PredictionRecord(**fields)


def _batch(n: int, request_id: str = "req-1", version: str = "1", **changes: Any) -> list[PredictionRecord]:
    return [_record(i, request_id, version, **changes) for i in range(n)]


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _blocked_url(tmp_path: Path) -> tuple[str, Path]:
    """A SQLite URL whose parent folder is a plain file: unreachable until that file is removed."""
    blocker = tmp_path / "blocked"
    blocker.write_text("not a folder")
    return _sqlite_url(blocker / "log.db"), blocker


def _balanced(stats: WriterStats) -> bool:
    return stats.submitted == stats.written + stats.dropped + stats.queued


def _stored_rows(url: str) -> list[dict[str, Any]]:
    with get_engine(url).connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM prediction_log ORDER BY request_id, record_index")).mappings()
        return [dict(row) for row in rows]


def test_every_submitted_record_is_written_with_its_values(tmp_path: Path) -> None:
    # given a started writer on a SQLite file that does not exist yet, with batches smaller than one submit
    url = _sqlite_url(tmp_path / "wh" / "warehouse.db")
    writer = PredictionLogWriter(url, batch_size=7, flush_interval=0.05)
    writer.start()
    first = _batch(25, "req-1")
    edge = _record(
        0,
        "req-2",
        record_id=None,
        event_time=None,
        served_at=datetime(2026, 3, 1, 8, 0, tzinfo=UTC) + timedelta(hours=5),
        features={"carrier": None, "distance": float("nan"), "origin": "JFK"},
        probability=0.875,
        decision=1,
    )

    # when the service submits them and the writer is closed
    assert writer.submit(first)
    assert writer.submit([edge])
    stats = writer.close()

    # then every record is written once, nothing is dropped or left queued
    assert stats == WriterStats(submitted=26, written=26, dropped=0, queued=0, write_errors=0, last_error=None)
    assert count(url, "flights") == 26
    rows = _stored_rows(url)
    assert [(r["request_id"], r["record_index"]) for r in rows] == [("req-1", i) for i in range(25)] + [("req-2", 0)]

    # and the values round-trip exactly, None and NaN features stored as null
    plain = read_predictions(url, "flights")
    assert list(plain.columns[: len(FIXED_COLUMNS)]) == list(FIXED_COLUMNS)
    by_key = plain.set_index(["request_id", "record_index"])
    row = by_key.loc[("req-1", 3)]
    assert row["record_id"] == "201301020600-UA3-EWR"
    assert row["event_time"] == pd.Timestamp(EVENT_TIME + timedelta(minutes=3))
    assert row["served_at"] == pd.Timestamp(SERVED_AT)
    assert row["model_version"] == "1" and row["probability"] == 0.003 and row["decision"] == 1
    assert row["carrier"] == "UA" and row["distance"] == 1403.0 and row["month"] == 1 and pd.isna(row["temp"])
    last = by_key.loc[("req-2", 0)]
    assert last["record_id"] is None and pd.isna(last["event_time"])
    assert last["served_at"] == pd.Timestamp("2026-03-01 13:00", tz="UTC")
    assert last["carrier"] is None and pd.isna(last["distance"]) and last["origin"] == "JFK"
    stored = next(r for r in rows if r["request_id"] == "req-2")
    raw = stored["features"]
    assert (json.loads(raw) if isinstance(raw, str) else raw) == {"carrier": None, "distance": None, "origin": "JFK"}


def test_a_retried_request_is_not_stored_twice(tmp_path: Path) -> None:
    # given records already logged by one writer
    url = _sqlite_url(tmp_path / "warehouse.db")
    writer = PredictionLogWriter(url, flush_interval=0.05)
    writer.start()
    writer.submit(_batch(10, "req-1"))

    # when the client retries the same request, then a later process replays it once more
    writer.submit(_batch(10, "req-1"))
    writer.submit(_batch(4, "req-2"))
    first = writer.close()
    replay = PredictionLogWriter(url, flush_interval=0.05)
    replay.start()
    replay.submit(_batch(10, "req-1"))
    second = replay.close()

    # then each (request, index) is stored once; every copy was handed to the database without an error
    assert count(url, "flights") == 14
    assert (first.written, first.write_errors, second.written, second.write_errors) == (24, 0, 10, 0)


def test_a_full_queue_drops_and_counts_while_the_database_is_unreachable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # given a writer with room for 10 records whose database cannot be reached
    url, _ = _blocked_url(tmp_path)
    writer = PredictionLogWriter(url, max_queue=10, batch_size=4, flush_interval=0.01, retry_interval=0.05)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        writer.start()

        # when more records are submitted than the queue holds
        accepted = [writer.submit(_batch(3, f"req-{i}")) for i in range(4)]
        wait_until(lambda: writer.stats().write_errors >= 2, "the writer to fail and retry", timeout=30, interval=0.01)

    # then the batch that does not fit is refused and counted, and the rest waits, all accounted for
    assert accepted == [True, True, True, False]
    stats = writer.stats()
    assert (stats.submitted, stats.written, stats.dropped, stats.queued) == (12, 0, 3, 9)
    assert _balanced(stats)
    assert stats.last_error is not None
    assert any("dropped 3 records" in r.getMessage() for r in caplog.records)
    assert any("retried every" in r.getMessage() for r in caplog.records)
    writer.close(timeout=0.2)


def test_close_with_an_unreachable_database_counts_the_leftover_as_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # given a writer holding records it cannot write
    url, _ = _blocked_url(tmp_path)
    writer = PredictionLogWriter(url, batch_size=5, flush_interval=0.01, retry_interval=0.05)
    writer.start()
    writer.submit(_batch(12))
    wait_until(lambda: writer.stats().write_errors >= 1, "a failed write", timeout=30, interval=0.01)

    # when it is closed with a short timeout
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        stats = writer.close(timeout=0.3)

    # then it returns, the leftover is counted as dropped and an ERROR says how many were lost
    assert (stats.submitted, stats.written, stats.dropped, stats.queued) == (12, 0, 12, 0)
    assert any(r.levelno == logging.ERROR and "12 records lost" in r.getMessage() for r in caplog.records)

    # and closing again changes nothing
    assert writer.close(timeout=0.1) == stats


def test_queued_records_are_written_once_the_database_is_back(tmp_path: Path) -> None:
    # given records queued while the database cannot be reached
    url, blocker = _blocked_url(tmp_path)
    writer = PredictionLogWriter(url, batch_size=8, flush_interval=0.01, retry_interval=0.05)
    writer.start()
    writer.submit(_batch(20, "req-1"))
    wait_until(lambda: writer.stats().write_errors >= 2, "failed writes", timeout=30, interval=0.01)
    assert writer.stats().queued == 20

    # when the database becomes reachable (the blocking file goes away) and more records arrive
    blocker.unlink()
    writer.submit(_batch(5, "req-2"))
    stats = writer.close()

    # then everything is written, nothing dropped
    assert (stats.submitted, stats.written, stats.dropped, stats.queued) == (25, 25, 0, 0)
    assert stats.write_errors >= 2
    assert count(url, "flights") == 25


def test_submit_after_close_is_refused_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # given a closed writer
    url = _sqlite_url(tmp_path / "warehouse.db")
    writer = PredictionLogWriter(url, flush_interval=0.05)
    writer.start()
    writer.submit(_batch(2))
    writer.close()

    # when the service submits once more
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        accepted = writer.submit(_batch(3, "late"))

    # then the batch is refused, counted dropped and the reason logged
    assert accepted is False
    stats = writer.stats()
    assert (stats.submitted, stats.written, stats.dropped, stats.queued) == (5, 2, 3, 0)
    assert any("writer is closed" in r.getMessage() for r in caplog.records)


def test_records_queued_before_start_are_written_at_close(tmp_path: Path) -> None:
    # given a writer that was never started, holding records
    url = _sqlite_url(tmp_path / "warehouse.db")
    writer = PredictionLogWriter(url)
    writer.submit(_batch(3))

    # when it is closed, then it drains them rather than losing them
    assert writer.close().written == 3
    assert count(url, "flights") == 3


def test_a_record_the_database_refuses_does_not_block_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # given a batch holding a record the database refuses (a null probability breaks NOT NULL) and one that
    # cannot even be turned into a row (its features are not a mapping)
    url = _sqlite_url(tmp_path / "warehouse.db")
    writer = PredictionLogWriter(url, flush_interval=0.05, retry_interval=0.05)
    writer.start()
    batch = _batch(6)
    batch[2] = _record(2, probability=None)
    batch[4] = _record(4, features=["not", "a", "mapping"])

    # when it is written
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        writer.submit(batch)
        stats = writer.close()

    # then the other records are stored and the refused ones are counted dropped, each with an ERROR naming it
    assert (stats.submitted, stats.written, stats.dropped, stats.queued) == (6, 4, 2, 0)
    assert sorted(read_predictions(url, "flights")["record_index"]) == [0, 1, 3, 5]
    refusals = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("record 2 of request req-1" in m for m in refusals)


def test_queries_split_by_version_and_filter_on_event_time(tmp_path: Path) -> None:
    # given records of versions 2, 10 and 9, at increasing event times
    url = _sqlite_url(tmp_path / "warehouse.db")
    writer = PredictionLogWriter(url, flush_interval=0.05)
    writer.start()
    writer.submit(_batch(3, "a", "10"))
    writer.submit([_record(i, "b", "2", event_time=datetime(2013, 1, 3, i)) for i in range(4)])
    writer.submit([_record(0, "c", "9", event_time=datetime(2013, 1, 4))])
    writer.close()

    # when the records are counted per version, in all and in a window
    everything = served_by_version(url, "flights")
    window = served_by_version(url, "flights", datetime(2013, 1, 3, 1), datetime(2013, 1, 4))

    # then versions come in numeric order and the window is half-open
    assert list(everything.items()) == [("2", 4), ("9", 1), ("10", 3)]
    assert window == {"2": 3}
    frame = read_predictions(url, "flights", start=datetime(2013, 1, 3))
    assert list(frame["request_id"]) == ["b", "b", "b", "b", "c"]
    assert frame["event_time"].is_monotonic_increasing
    assert served_by_version(url, "other") == {} and count(url, "other") == 0


def test_queries_answer_empty_when_nothing_was_logged(tmp_path: Path) -> None:
    # given a warehouse without a prediction log
    url = _sqlite_url(tmp_path / "warehouse.db")

    # then the queries answer empty, with the fixed columns
    frame = read_predictions(url, "flights")
    assert frame.empty and list(frame.columns) == list(FIXED_COLUMNS)
    assert served_by_version(url, "flights") == {}
    assert count(url, "flights") == 0


def _multiclass(index: int, request_id: str = "mc", **changes: Any) -> PredictionRecord:
    """A wine-like multiclass record: the predicted class and every class's probability, no binary answer."""
    proba = (
        {"class_0": 0.1, "class_1": 0.2, "class_2": 0.7}
        if index % 2
        else {"class_0": 0.8, "class_1": 0.15, "class_2": 0.05}
    )
    fields: dict[str, Any] = {
        "dataset": "wine",
        "model_name": "wine-cultivar",
        "features": {"alcohol": 13.0 + index, "hue": None},
        "probability": None,
        "decision": None,
        "predicted_class": max(proba, key=proba.__getitem__),
        "probabilities": proba,
    }
    fields.update(changes)
    return replace(_record(index, request_id), **fields)


def _regression(index: int, request_id: str = "rg", **changes: Any) -> PredictionRecord:
    """A flights_minutes-like regression record: the predicted value, no binary answer."""
    fields: dict[str, Any] = {
        "dataset": "flights_minutes",
        "probability": None,
        "decision": None,
        "prediction": -12.5 + index,
    }
    fields.update(changes)
    return replace(_record(index, request_id), **fields)


def test_records_of_every_task_round_trip(tmp_path: Path) -> None:
    # given a writer, and batches of binary, multiclass and regression records (one batch mixing all three)
    url = _sqlite_url(tmp_path / "warehouse.db")
    writer = PredictionLogWriter(url, flush_interval=0.05)
    writer.start()
    writer.submit(_batch(3, "bin"))
    writer.submit([_multiclass(i) for i in range(4)])
    writer.submit([_regression(i) for i in range(3)])
    writer.submit([_record(0, "mix"), _multiclass(0, "mix-mc"), _regression(0, "mix-rg")])
    stats = writer.close()
    assert (stats.written, stats.dropped, stats.write_errors) == (13, 0, 0)

    # when each dataset's records are read back
    wine = read_predictions(url, "wine").set_index(["request_id", "record_index"])
    minutes = read_predictions(url, "flights_minutes").set_index(["request_id", "record_index"])
    flights = read_predictions(url, "flights").set_index(["request_id", "record_index"])

    # then each holds its task's answer, and the others' columns are null
    assert wine.loc[("mc", 1), "predicted_class"] == "class_2"
    assert wine.loc[("mc", 0), "probabilities"] == {"class_0": 0.8, "class_1": 0.15, "class_2": 0.05}
    assert wine["probability"].isna().all() and wine["decision"].isna().all() and wine["prediction"].isna().all()
    assert wine.loc[("mc", 3), "alcohol"] == 16.0 and pd.isna(wine.loc[("mc", 3), "hue"])
    assert list(minutes.loc["rg", "prediction"]) == [-12.5, -11.5, -10.5]
    assert minutes["predicted_class"].isna().all() and minutes["probabilities"].isna().all()
    assert flights.loc[("mix", 0), "probability"] == 0.0 and flights.loc[("bin", 1), "decision"] == 1
    assert flights["prediction"].isna().all() and flights["probabilities"].isna().all()
    # and a missing answer is SQL NULL, not JSON null
    with get_engine(url).connect() as conn:
        nulls = conn.execute(
            sa.text("SELECT dataset, count(*) FROM prediction_log WHERE probabilities IS NULL GROUP BY dataset")
        ).all()
    assert dict(nulls) == {"flights": 4, "flights_minutes": 4}


def test_a_record_without_any_answer_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # given a multiclass batch holding one record that lost its answer
    url = _sqlite_url(tmp_path / "warehouse.db")
    writer = PredictionLogWriter(url, flush_interval=0.05, retry_interval=0.05)
    writer.start()
    batch = [_multiclass(i) for i in range(3)]
    batch[1] = _multiclass(1, predicted_class=None, probabilities=None)
    # when it is written, then the record is refused by name and the others are stored
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        writer.submit(batch)
        stats = writer.close()
    assert (stats.written, stats.dropped) == (2, 1)
    assert any("record 1 of request mc" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


def test_queries_filter_on_served_at_for_a_dataset_without_a_time_column(tmp_path: Path) -> None:
    # given wine records served on two days, without event times
    url = _sqlite_url(tmp_path / "warehouse.db")
    writer = PredictionLogWriter(url, flush_interval=0.05)
    writer.start()
    day = datetime(2026, 3, 1, tzinfo=UTC)
    writer.submit([_multiclass(i, "d1", event_time=None, served_at=day + timedelta(hours=i)) for i in range(3)])
    writer.submit([_multiclass(i, "d2", event_time=None, served_at=day + timedelta(days=1, hours=i)) for i in range(2)])
    writer.close()

    # when they are read by when they were served: an aware bound, and a naive one (taken as UTC)
    first = read_predictions(url, "wine", day, day + timedelta(days=1), by="served_at")
    naive = read_predictions(url, "wine", datetime(2026, 3, 1, 1), datetime(2026, 3, 2, 1), by="served_at")
    berlin = timezone(timedelta(hours=1))
    shifted = served_by_version(
        url, "wine", datetime(2026, 3, 2, 1, tzinfo=berlin), datetime(2026, 3, 3, tzinfo=berlin), by="served_at"
    )

    # then the windows are half-open on served_at, in serving order; by event time nothing matches
    assert list(first["request_id"]) == ["d1"] * 3 and first["served_at"].is_monotonic_increasing
    assert list(zip(naive["request_id"], naive["record_index"], strict=True)) == [("d1", 1), ("d1", 2), ("d2", 0)]
    assert shifted == {"1": 2}
    assert read_predictions(url, "wine", day.replace(tzinfo=None), datetime(2026, 3, 3)).empty
    with pytest.raises(ValueError, match="by must be one of"):
        read_predictions(url, "wine", by="arrival")  # type: ignore[arg-type]


# The table as the first version created it: binary only, probability and decision NOT NULL.
def old_prediction_log_table(metadata: sa.MetaData) -> sa.Table:
    """The prediction log's definition before the task columns (to test the upgrade of an existing table)."""
    return sa.Table(
        "prediction_log",
        metadata,
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
        sa.UniqueConstraint("dataset", "request_id", "record_index", name="uq_prediction_log_record"),
        sa.Index("ix_prediction_log_dataset_event_time", "dataset", "event_time"),
        sa.Index("ix_prediction_log_dataset_record_id", "dataset", "record_id"),
    )


def create_old_table_with_rows(url: str, rows: int = 5) -> None:
    """An old-version prediction log holding ``rows`` binary records of request ``old``."""
    table = old_prediction_log_table(sa.MetaData())
    engine = get_engine(url)
    table.create(engine)
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {
                    "dataset": "flights",
                    "request_id": "old",
                    "record_index": i,
                    "record_id": f"k{i}",
                    "served_at": SERVED_AT,
                    "event_time": EVENT_TIME,
                    "model_name": "flights-delay",
                    "model_version": "1",
                    "features": {"carrier": "UA", "distance": 100.0 + i},
                    "probability": i / 10,
                    "decision": i % 2,
                }
                for i in range(rows)
            ],
        )


def assert_upgraded_and_working(url: str) -> None:
    """An old table with rows, after a writer of this version has written every task to it."""
    columns = {c["name"]: c for c in sa.inspect(get_engine(url)).get_columns("prediction_log")}
    assert {"prediction", "predicted_class", "probabilities"} <= set(columns)
    assert columns["probability"]["nullable"] and columns["decision"]["nullable"]
    old = read_predictions(url, "flights").set_index(["request_id", "record_index"])
    assert list(old.loc["old", "probability"]) == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert old.loc[("old", 3), "record_id"] == "k3" and old.loc[("old", 3), "distance"] == 103.0
    assert old.loc[("new", 1), "decision"] == 1 and old["prediction"].isna().all()
    assert read_predictions(url, "wine")["predicted_class"].tolist() == ["class_0", "class_2"]
    assert read_predictions(url, "flights_minutes")["prediction"].tolist() == [-12.5]
    # the unique record key still holds: the old records are not stored twice
    assert count(url, "flights") == 7
    indexes = {i["name"] for i in sa.inspect(get_engine(url)).get_indexes("prediction_log")}
    assert {"ix_prediction_log_dataset_event_time", "ix_prediction_log_dataset_record_id"} <= indexes


def write_every_task(url: str) -> WriterStats:
    """Start a writer of this version on ``url`` and log a retried old request and records of every task."""
    writer = PredictionLogWriter(url, flush_interval=0.05)
    writer.start()
    writer.submit(_batch(5, "old"))  # the old records again: ignored as duplicates
    writer.submit(_batch(2, "new"))
    writer.submit([_multiclass(0), _multiclass(1)])
    writer.submit([_regression(0)])
    return writer.close()


def test_an_old_table_is_upgraded_in_place_with_its_rows_on_sqlite(tmp_path: Path) -> None:
    # given a prediction log created by the previous version, holding rows
    url = _sqlite_url(tmp_path / "warehouse.db")
    create_old_table_with_rows(url)
    # then it reads as it is before any upgrade, the task columns null
    before = read_predictions(url, "flights")
    assert len(before) == 5 and before["predicted_class"].isna().all()

    # when a writer of this version starts on it and logs records of every task
    stats = write_every_task(url)

    # then every record is written, the old rows are kept, and the table has the new columns, nullable
    assert (stats.written, stats.dropped, stats.write_errors) == (10, 0, 0)
    assert_upgraded_and_working(url)
    # and a second upgrade has nothing to do
    from pipelines.serving.prediction_log import upgrade_table

    assert upgrade_table(get_engine(url)) is False


def test_a_failed_sqlite_upgrade_leaves_the_old_table_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.serving import prediction_log

    # given an old prediction log with rows, and an upgrade that fails after the old table was renamed
    url = _sqlite_url(tmp_path / "warehouse.db")
    create_old_table_with_rows(url)

    def broken_create(*_: Any, **__: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(prediction_log.prediction_log_table, "create", broken_create)
    # when the upgrade runs, then it fails and the transaction leaves the old table, its rows and indexes
    with pytest.raises(RuntimeError, match="disk full"):
        prediction_log.upgrade_table(get_engine(url))
    inspector = sa.inspect(get_engine(url))
    assert inspector.get_table_names() == ["prediction_log"]
    assert not {c["name"]: c for c in inspector.get_columns("prediction_log")}["probability"]["nullable"]
    assert len(inspector.get_indexes("prediction_log")) == 2 and count(url, "flights") == 5
