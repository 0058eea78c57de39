"""The prediction log and the outcome queries on a real PostgreSQL (a temporary database, dropped afterwards)."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from pipelines.core.settings import Settings
from pipelines.core.warehouse import get_engine
from pipelines.data.seed import seed
from pipelines.monitoring.outcomes import live_performance, record_outcomes
from pipelines.serving.log_writer import PredictionLogWriter
from pipelines.serving.prediction_log import count, read_predictions, served_by_version
from pipelines.stack.processes import wait_until
from tests.conftest import throwaway_postgres
from tests.unit.test_outcomes import (
    DAYS,
    LABELLED,
    OBSERVED_AT,
    assert_matches,
    expected_performance,
    labels_of,
    log_predictions,
    stored_truth,
    three_days,
)
from tests.unit.test_prediction_log import (
    _batch,
    _multiclass,
    _record,
    _regression,
    assert_upgraded_and_working,
    create_old_table_with_rows,
    write_every_task,
)

pytestmark = pytest.mark.integration

LOGGER = "pipelines.serving.log_writer"


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database for this module, dropped afterwards."""
    with throwaway_postgres("mlops_test_predlog") as url:
        yield url


@pytest.fixture
def pg_settings(pg_url: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings whose warehouse is the module's PostgreSQL database, emptied after each test."""
    yield Settings(home=tmp_path / "runtime", warehouse_url=pg_url)
    with get_engine(pg_url).begin() as conn:
        for table in ("prediction_log", "prediction_requests", "ground_truth", "flights"):
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_requests_stored_in_the_intake_become_their_records_on_postgresql(pg_settings: Settings, task: str) -> None:
    from pipelines.serving.logged_request import records_of
    from pipelines.serving.request_log import waiting
    from tests.unit.test_log_process import _task_request

    # given an answered request of each task, handed to the writer twice (a client retry)
    url = pg_settings.warehouse_url
    request = _task_request(task)
    writer = PredictionLogWriter(url, flush_interval=0.05)
    writer.start()
    assert writer.submit_requests([request]) and writer.submit_requests([request])
    stats = writer.close()
    # then it is stored once in the intake (its records counted written both times)
    assert (stats.written, stats.dropped, stats.write_errors) == (4, 0, 0)
    assert waiting(get_engine(url), request.dataset) == 2
    # and when the log is read its records are there once, as the model answered them, and the intake is empty
    frame = read_predictions(url, request.dataset)
    expected = records_of(request)
    assert frame["record_index"].tolist() == [0, 1]
    assert frame["record_id"].tolist() == [r.record_id for r in expected]
    for column in ("probability", "decision", "prediction", "predicted_class"):
        got = [None if pd.isna(v) else v for v in frame[column]]
        assert got == [getattr(r, column) for r in expected], column
    if task == "multiclass":
        assert list(frame["probabilities"]) == [r.probabilities for r in expected]
    assert waiting(get_engine(url)) == 0


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_records_round_trip_and_duplicates_are_ignored(pg_settings: Settings) -> None:
    # given a writer on PostgreSQL
    url = pg_settings.warehouse_url
    writer = PredictionLogWriter(url, batch_size=6, flush_interval=0.05)
    writer.start()
    edge = _record(
        0,
        "req-2",
        record_id=None,
        event_time=None,
        features={"carrier": None, "distance": float("nan"), "month": 2, "origin": "JFK"},
    )

    # when a request is logged, retried by the client, and another one arrives
    writer.submit(_batch(15, "req-1"))
    writer.submit(_batch(15, "req-1"))
    writer.submit([edge])
    stats = writer.close()

    # then each record is stored once (ON CONFLICT DO NOTHING) and no write failed
    assert (stats.submitted, stats.written, stats.dropped, stats.queued, stats.write_errors) == (31, 31, 0, 0, 0)
    assert count(url, "flights") == 16
    assert served_by_version(url, "flights") == {"1": 16}

    # when a replay sends a request twice within one batch (one INSERT statement), then it is stored once too
    replay = PredictionLogWriter(url, flush_interval=0.05)
    replay.submit([*_batch(15, "req-1"), *_batch(3, "req-3"), *_batch(3, "req-3")])
    assert replay.close().written == 21
    assert count(url, "flights") == 19

    # and the values round-trip, the features as JSON with nulls
    frame = read_predictions(url, "flights").set_index(["request_id", "record_index"])
    row = frame.loc[("req-1", 7)]
    assert row["record_id"] == "201301020600-UA7-EWR" and row["event_time"] == pd.Timestamp("2013-01-02 06:07")
    assert row["served_at"] == pd.Timestamp("2026-03-01 12:00:00.123456", tz="UTC")
    assert (row["probability"], row["decision"], row["carrier"], row["distance"]) == (0.007, 1, "UA", 1407.0)
    with get_engine(url).connect() as conn:
        raw = conn.execute(
            sa.text("SELECT features::text, pg_typeof(features)::text FROM prediction_log WHERE request_id = 'req-2'")
        ).one()
    assert json.loads(raw[0]) == {"carrier": None, "distance": None, "month": 2, "origin": "JFK"}
    assert raw[1] == "json"


def test_a_record_postgresql_refuses_is_isolated(pg_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    # given a batch where one request id is longer than the column allows
    url = pg_settings.warehouse_url
    writer = PredictionLogWriter(url, flush_interval=0.05, retry_interval=0.05)
    writer.start()
    batch = [*_batch(4, "ok"), _record(0, "x" * 300)]

    # when it is written
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        writer.submit(batch)
        stats = writer.close()

    # then the valid records are stored and the refused one is counted dropped
    assert (stats.written, stats.dropped, stats.queued) == (4, 1, 0)
    assert count(url, "flights") == 4
    assert any("refused record 0" in r.getMessage() for r in caplog.records)


def test_an_unreachable_postgresql_fills_the_queue_then_drops(caplog: pytest.LogCaptureFixture) -> None:
    # given a writer whose PostgreSQL port is closed, with room for 50 records
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{_closed_port()}/nowhere"
    writer = PredictionLogWriter(url, max_queue=50, batch_size=20, flush_interval=0.01, retry_interval=0.05)
    writer.start()

    # when 8 batches of 10 records arrive
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        accepted = [writer.submit(_batch(10, f"req-{i}")) for i in range(8)]
        wait_until(lambda: writer.stats().write_errors >= 2, "failed writes", timeout=30, interval=0.01)
    stats = writer.stats()

    # then 5 batches wait, 3 are dropped and counted, and the connection error is kept
    assert accepted == [True] * 5 + [False] * 3
    assert (stats.submitted, stats.written, stats.dropped, stats.queued) == (80, 0, 30, 50)
    assert stats.last_error is not None and "OperationalError" in stats.last_error

    # when it is closed, then what was left is counted lost
    final = writer.close(timeout=0.3)
    assert (final.submitted, final.written, final.dropped, final.queued) == (80, 0, 80, 0)


def test_outcomes_and_live_performance_on_postgresql(pg_settings: Settings, flights_config) -> None:
    # given three days of flights in a PostgreSQL warehouse, two versions served, days 1-2 labelled twice
    url = pg_settings.warehouse_url
    flights = three_days()
    seed(flights_config, pg_settings, DAYS, source=flights)
    day1 = flights.loc[flights["sched_dep"] < datetime(2013, 1, 2)]
    later = flights.loc[flights["sched_dep"] >= datetime(2013, 1, 2)]
    logged = pd.concat([log_predictions(url, day1, "1", "d1"), log_predictions(url, later, "2", "d23", drop_ids=3)])
    first = record_outcomes(flights_config, pg_settings, LABELLED, OBSERVED_AT)
    again = record_outcomes(flights_config, pg_settings, LABELLED, OBSERVED_AT)

    # when the live performance is computed
    performance = live_performance(flights_config, pg_settings)

    # then the ground truth is stored once, as build_target says
    window = flights.loc[flights["sched_dep"] < LABELLED.end_dt]
    labels = labels_of(window, flights_config)
    assert first == again and first.labelled == len(labels)
    truth = stored_truth(url)
    assert dict(zip(truth["record_id"], truth["label"], strict=True)) == labels

    # and the metrics equal scikit-learn's on the same joined rows
    assert_matches(performance, expected_performance(logged, labels))
    assert served_by_version(url, "flights", datetime(2013, 1, 2), datetime(2013, 1, 3)) == {"2": 943}
    assert served_by_version(url, "flights") == {"1": 842, "2": 1857}


def test_twenty_thousand_records_in_batches_of_one_hundred_are_all_written(pg_settings: Settings) -> None:
    # given a writer with the default bounds
    url = pg_settings.warehouse_url
    writer = PredictionLogWriter(url)
    writer.start()

    # when 200 requests of 100 records are submitted as fast as possible
    accepted = [writer.submit(_batch(100, f"load-{i}", event_time=datetime(2013, 1, 2, 6))) for i in range(200)]
    stats = writer.close()

    # then every record is written
    assert all(accepted)
    assert (stats.submitted, stats.written, stats.dropped, stats.queued, stats.write_errors) == (
        20_000,
        20_000,
        0,
        0,
        0,
    )
    assert count(url, "flights") == 20_000


def test_closing_twice_and_empty_queries_on_postgresql(pg_settings: Settings) -> None:
    # given a database where nothing was logged yet
    url = pg_settings.warehouse_url
    assert read_predictions(url, "flights").empty and served_by_version(url, "flights") == {}

    # when a writer starts (creating the table) and closes twice
    writer = PredictionLogWriter(url)
    writer.start()
    first = writer.close()

    # then the table exists, is empty, and the second close returns the same stats
    assert writer.close() == first and count(url, "flights") == 0
    assert sa.inspect(get_engine(url)).has_table("prediction_log")


def test_an_old_table_is_upgraded_in_place_with_its_rows_on_postgresql(pg_settings: Settings) -> None:
    # given a prediction log created by the previous version (probability, decision NOT NULL), holding rows
    url = pg_settings.warehouse_url
    create_old_table_with_rows(url)
    assert read_predictions(url, "flights")["predicted_class"].isna().all()

    # when a writer of this version starts on it and logs records of every task
    stats = write_every_task(url)

    # then every record is written, the old rows are kept, the new columns are there and nullable
    assert (stats.written, stats.dropped, stats.write_errors) == (10, 0, 0)
    assert_upgraded_and_working(url)
    with get_engine(url).connect() as conn:
        kinds = dict(
            conn.execute(
                sa.text(
                    "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'prediction_log'"
                    " AND column_name IN ('prediction', 'predicted_class', 'probabilities')"
                )
            ).all()
        )
    assert kinds == {"prediction": "double precision", "predicted_class": "character varying", "probabilities": "json"}


def test_multiclass_and_regression_records_on_postgresql(pg_settings: Settings) -> None:
    # given a writer on PostgreSQL logging multiclass and regression records, served on two days
    url = pg_settings.warehouse_url
    day = datetime(2026, 3, 1, tzinfo=UTC)
    writer = PredictionLogWriter(url, flush_interval=0.05)
    writer.start()
    writer.submit([_multiclass(i, "d1", event_time=None, served_at=day + timedelta(hours=i)) for i in range(3)])
    writer.submit([_multiclass(0, "d2", event_time=None, served_at=day + timedelta(days=1))])
    writer.submit([_regression(i) for i in range(2)])
    stats = writer.close()
    assert (stats.written, stats.dropped, stats.write_errors) == (6, 0, 0)

    # when the first day's wine records are read by when they were served
    wine = read_predictions(url, "wine", day, day + timedelta(days=1), by="served_at")

    # then they hold the classes and probabilities, and regression records their values
    assert list(wine["predicted_class"]) == ["class_0", "class_2", "class_0"]
    assert wine["probabilities"].iloc[1] == {"class_0": 0.1, "class_1": 0.2, "class_2": 0.7}
    assert wine["probability"].isna().all() and wine["decision"].isna().all()
    assert read_predictions(url, "flights_minutes")["prediction"].tolist() == [-12.5, -11.5]
    assert served_by_version(url, "wine", day + timedelta(days=1), None, by="served_at") == {"1": 1}
    with get_engine(url).connect() as conn:
        nulls = conn.execute(sa.text("SELECT count(*) FROM prediction_log WHERE probabilities IS NULL")).scalar_one()
    assert nulls == 2
