"""The prediction log's intake: answered requests stored one row each, turned into the log's records after the fact."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipelines.core.warehouse import get_engine
from pipelines.serving.log_writer import PredictionLogWriter
from pipelines.serving.logged_request import check_request, records_of
from pipelines.serving.prediction_log import count, create_table, read_predictions, served_by_version, settle
from pipelines.serving.request_log import insert_requests, materialize, waiting
from tests.unit.test_log_process import _request, _task_request


def _store(url: str, requests: list) -> sa.Engine:  # type: ignore[type-arg]
    engine = get_engine(url)
    create_table(engine)
    with engine.begin() as conn:
        insert_requests(conn, engine.dialect.name, requests)
    return engine


def _requests_left(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("select count(*) from prediction_requests")).scalar_one())


def test_stored_requests_become_the_records_they_answered_once_read(tmp_path: Path) -> None:
    # given two answered requests of 3 records stored in the intake, one of them handed over twice (a retry)
    url = f"sqlite:///{tmp_path}/warehouse.db"
    engine = _store(url, [_request(1), _request(2), _request(1)])
    assert waiting(engine) == 6 and _requests_left(engine) == 2
    # when the log is read, then it holds their 6 records, each once, with what the model answered
    frame = read_predictions(url, "flights")
    assert len(frame) == 6 and not frame.duplicated(["request_id", "record_index"]).any()
    expected = {(r.request_id, r.record_index): (r.probability, r.decision) for r in records_of(_request(1))}
    got = {(r.request_id, r.record_index): (r.probability, r.decision) for r in frame.itertuples()}
    assert {k: got[k] for k in expected} == expected
    assert frame["carrier"].tolist() == ["UA"] * 6
    # and the intake is empty: reading again, or materializing again, adds nothing
    assert _requests_left(engine) == 0 and waiting(engine) == 0
    assert materialize(engine) == 0 and count(url, "flights") == 6
    # and the same request stored again later (a late client retry) is still logged once
    _store(url, [_request(2)])
    assert served_by_version(url, "flights") == {"2": 6}


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_every_task_comes_out_of_the_intake_as_the_records_written_directly(tmp_path: Path, task: str) -> None:
    # given the same answered request written through the intake and, in another log, as records
    via_intake, direct = f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"
    request = _task_request(task)
    _store(via_intake, [request])
    writer = PredictionLogWriter(direct, flush_interval=0.05)
    writer.start()
    writer.submit(records_of(request))
    writer.close(timeout=30)
    # when both are read, then they are the same records
    columns = ["request_id", "record_index", "record_id", "served_at", "event_time", "model_version", "probability"]
    columns += ["decision", "prediction", "predicted_class", "probabilities"]
    a, b = read_predictions(via_intake, request.dataset), read_predictions(direct, request.dataset)
    assert len(a) == 2
    assert a[columns].astype(str).to_dict("records") == b[columns].astype(str).to_dict("records")


def test_a_stored_request_that_cannot_be_read_back_is_kept_and_the_others_become_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # given a stored request whose body is not JSON, between two good ones
    url = f"sqlite:///{tmp_path}/warehouse.db"
    engine = _store(url, [_request(1), replace(_request(2), body=b"{not json"), _request(3)])
    # when the log is read, then the good requests' records are there, and the bad one is kept with an error
    with caplog.at_level("ERROR"):
        assert count(url, "flights") == 6
    assert (
        "stored request req-2 of flights kept in prediction_requests, not turned into records: it could not be read "
        "back" in caplog.text
    )
    with engine.connect() as conn:
        assert conn.execute(sa.text("select request_id from prediction_requests")).scalars().all() == ["req-2"]
    # and reading again (as the idle writer does a few times a second) does not log it again
    caplog.clear()
    with caplog.at_level("ERROR"):
        assert count(url, "flights") == 6
    assert "req-2" not in caplog.text


def test_a_chunk_the_database_refuses_is_taken_one_request_at_a_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # given three stored requests, the middle one with records the database refuses (SQLite does not enforce column
    # lengths or types, so a CHECK constraint on the records table stands in for a refusal by the database)
    url = f"sqlite:///{tmp_path}/warehouse.db"
    engine = get_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE prediction_log (id INTEGER PRIMARY KEY, dataset VARCHAR(64) NOT NULL, request_id VARCHAR(128)"
            " NOT NULL CHECK (request_id != 'req-refused'), record_index INTEGER NOT NULL, record_id VARCHAR(200),"
            " served_at DATETIME NOT NULL, event_time DATETIME, model_name VARCHAR(200) NOT NULL,"
            " model_version VARCHAR(32) NOT NULL, features JSON NOT NULL, probability FLOAT, decision INTEGER,"
            " prediction FLOAT, predicted_class VARCHAR(200), probabilities JSON,"
            " CONSTRAINT uq_prediction_log_record UNIQUE (dataset, request_id, record_index))"
        )
    _store(url, [_request(1), replace(_request(2), request_id="req-refused"), _request(3)])
    # when the requests are turned into records
    with caplog.at_level("ERROR"):
        written = materialize(engine)
    # then the two others are records, the refused one stays stored with the database's reason logged
    assert written == 6 and count(url, "flights") == 6
    assert (
        "request req-refused of flights kept in prediction_requests, not turned into records: the database refused"
        in caplog.text
    )
    assert _requests_left(engine) == 1


def test_request_ids_are_never_reused_once_the_intake_is_emptied(tmp_path: Path) -> None:
    # given two stored requests turned into records (the intake empty again)
    url = f"sqlite:///{tmp_path}/warehouse.db"
    engine = _store(url, [_request(1), _request(2)])
    assert materialize(engine) == 6 and _requests_left(engine) == 0
    # when another request is stored
    _store(url, [_request(3)])
    # then it gets a new id: a process still holding the ids it read earlier cannot delete it unread (SQLite reuses
    # the ids of an emptied table unless told not to; this lost requests when two writers shared a warehouse)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select id from prediction_requests")).scalar_one() == 3


def test_two_processes_materializing_at_once_store_each_record_once(tmp_path: Path) -> None:
    # given 300 stored requests
    url = f"sqlite:///{tmp_path}/warehouse.db"
    engine = _store(url, [_request(i) for i in range(300)])
    # when two threads (own connections, as two processes would) turn them into records at the same time
    threads = [threading.Thread(target=materialize, args=(engine,), kwargs={"chunk": 7}) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # then every record is stored once and nothing is left
    with engine.connect() as conn:
        total, distinct = conn.execute(
            sa.text("select count(*), count(distinct request_id || '/' || record_index) from prediction_log")
        ).one()
    assert (total, distinct) == (900, 900) and _requests_left(engine) == 0


def test_the_writer_stores_requests_and_turns_them_into_records_when_idle(tmp_path: Path) -> None:
    # given a writer that materializes when idle
    url = f"sqlite:///{tmp_path}/warehouse.db"
    writer = PredictionLogWriter(url, flush_interval=0.02, materialize_when_idle=True)
    writer.start()
    # when requests are handed to it
    assert writer.submit_requests([_request(i) for i in range(10)])
    # then they are counted written once stored, and become records without any reader asking
    engine = get_engine(url)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
        sa.inspect(engine).has_table("prediction_requests") and _requests_left(engine) == 0 and _log_rows(engine) == 30
    ):
        time.sleep(0.05)
    assert _log_rows(engine) == 30 and _requests_left(engine) == 0
    stats = writer.close(timeout=30)
    assert (stats.submitted, stats.written, stats.dropped, stats.queued) == (30, 30, 0, 0)


def _log_rows(engine: sa.Engine) -> int:
    if not sa.inspect(engine).has_table("prediction_log"):
        return 0
    with engine.connect() as conn:
        return int(conn.execute(sa.text("select count(*) from prediction_log")).scalar_one())


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"task": "ranking"}, "unknown task 'ranking'"),
        ({"outputs": b"\x00" * 16}, "16 bytes of outputs for 3 records of width 1"),
        ({"decisions": b"\x01"}, "1 decisions for 3 records"),
        ({"task": "multiclass", "classes": ()}, "for 3 records of width 0"),
    ],
)
def test_a_request_that_cannot_become_records_is_refused_when_handed_over(change: dict, reason: str) -> None:  # type: ignore[type-arg]
    check_request(_request(1))
    with pytest.raises(ValueError, match=reason.replace("(", r"\(")):
        check_request(replace(_request(1), **change))


def test_settle_on_a_warehouse_without_a_log_does_nothing(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path}/warehouse.db")
    assert settle(engine) == 0 and not sa.inspect(engine).has_table("prediction_log")
