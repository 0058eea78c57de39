"""The prediction log written by its own process: everything handed over is written, or counted as dropped."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pytest
import sqlalchemy as sa

from pipelines.core.warehouse import get_engine
from pipelines.serving.log_inserts import driver_row, event_text, event_value, tuple_row
from pipelines.serving.log_process import LoggedRequest, ProcessLogWriter, records_of, rows_of
from pipelines.serving.prediction_log import settle

RECORD = {"carrier": "UA", "origin": "EWR", "temp": 39.5, "humid": None}


def _request(i: int, size: int = 3) -> LoggedRequest:
    body = orjson.dumps(
        {
            "records": [RECORD] * size,
            "ids": [f"r{i}-{j}" for j in range(size)],
            "event_times": ["2013-04-01T05:15:00"] * size,
        }
    )
    proba = np.linspace(0.1, 0.9, size)
    return LoggedRequest(
        dataset="flights",
        request_id=f"req-{i}",
        served_at=datetime(2026, 1, 1, tzinfo=UTC),
        model_name="m",
        model_version="2",
        body=body,
        outputs=proba.tobytes(),
        decisions=(proba >= 0.5).astype(np.int8).tobytes(),
        size=size,
    )


def test_a_request_becomes_its_records() -> None:
    records = records_of(_request(7))
    assert [r.record_id for r in records] == ["r7-0", "r7-1", "r7-2"]
    assert [r.decision for r in records] == [0, 1, 1] and records[1].probability == 0.5
    assert records[0].features == RECORD and records[0].event_time == datetime(2013, 4, 1, 5, 15)


def test_a_multiclass_request_becomes_records_with_the_class_and_its_probabilities() -> None:
    # given a request answered by a three-class model (the second record a tie: the first class wins, as argmax)
    proba = np.array([[0.1, 0.7, 0.2], [0.4, 0.4, 0.2]])
    request = LoggedRequest(
        dataset="wine",
        request_id="mc",
        served_at=datetime(2026, 1, 1, tzinfo=UTC),
        model_name="wine-cultivar",
        model_version="1",
        body=orjson.dumps({"records": [{"alcohol": 13.2}, {"alcohol": 12.1}]}),
        outputs=proba.tobytes(),
        decisions=b"",
        size=2,
        task="multiclass",
        classes=("class_0", "class_1", "class_2"),
    )
    # when its records are rebuilt
    records = records_of(request)
    # then each holds the predicted class and every class's probability; the binary columns stay empty
    assert [r.predicted_class for r in records] == ["class_1", "class_0"]
    assert records[0].probabilities == {"class_0": 0.1, "class_1": 0.7, "class_2": 0.2}
    assert all(r.probability is None and r.decision is None and r.prediction is None for r in records)
    assert records[1].features == {"alcohol": 12.1} and records[1].record_id is None


def test_a_regression_request_becomes_records_with_the_value() -> None:
    # given a request answered by a regression model
    values = np.array([-3.5, 42.0, 0.25])
    request = LoggedRequest(
        dataset="flights_minutes",
        request_id="rg",
        served_at=datetime(2026, 1, 1, tzinfo=UTC),
        model_name="flights-delay-minutes",
        model_version="4",
        body=orjson.dumps({"records": [RECORD] * 3, "ids": ["a", "b", None]}),
        outputs=values.tobytes(),
        decisions=b"",
        size=3,
        task="regression",
    )
    # when its records are rebuilt, then each holds its value and nothing of the classification columns
    records = records_of(request)
    assert [r.prediction for r in records] == [-3.5, 42.0, 0.25]
    assert [r.record_id for r in records] == ["a", "b", None]
    assert all(r.probability is None and r.predicted_class is None and r.probabilities is None for r in records)


def test_a_request_that_cannot_be_read_back_is_counted_dropped_and_the_rest_written(tmp_path: Path) -> None:
    # given a writer process, and a request of a task it does not know between two good ones
    url = f"sqlite:///{tmp_path}/warehouse.db"
    writer = ProcessLogWriter(url, max_queue=1000)
    writer.start()
    bad = replace(_request(1), task="ranking")
    # when the three are handed over and the writer closed
    for request in (_request(0), bad, _request(2)):
        assert writer.submit_request(request)
    stats = writer.close(timeout=60)
    # then the good ones are written, the bad one counted dropped, nothing unaccounted for
    assert (stats.submitted, stats.written, stats.dropped, stats.queued) == (9, 6, 3, 0)
    assert settle(get_engine(url)) == 6
    with sa.create_engine(url).connect() as conn:
        assert conn.execute(sa.text("select count(distinct request_id) from prediction_log")).scalar_one() == 2


def test_everything_handed_over_is_written_by_the_writer_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/warehouse.db"
    writer = ProcessLogWriter(url, max_queue=10_000)
    assert not writer.alive()
    writer.start()
    assert writer.alive()
    # when 200 requests of 3 records are handed over, one of them twice, and the writer is closed
    for i in range(200):
        assert writer.submit_request(_request(i))
    assert writer.submit_request(_request(0))
    stats = writer.close(timeout=60)
    # then every record is written once (once the stored requests are turned into records, as any reader of the
    # log does first), the intake is empty, and the counters say so
    settle(get_engine(url))
    with sa.create_engine(url).connect() as conn:
        rows = conn.execute(sa.text("select count(*), count(distinct request_id) from prediction_log")).one()
        assert conn.execute(sa.text("select count(*) from prediction_requests")).scalar_one() == 0
    assert tuple(rows) == (600, 200)
    assert (stats.submitted, stats.written, stats.dropped, stats.queued) == (603, 603, 0, 0)
    assert not writer.alive()
    # and a request after closing is refused and counted
    assert not writer.submit_request(_request(999))
    assert writer.stats().dropped == 3


def test_an_unreachable_database_costs_counted_records(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the database's folder should be")
    writer = ProcessLogWriter(f"sqlite:///{blocker}/warehouse.db", max_queue=30)
    writer.start()
    # when more is handed over than the bound while nothing can be written
    accepted = [writer.submit_request(_request(i)) for i in range(20)]
    stats = writer.close(timeout=2)
    # then the surplus was refused at once, the rest is counted dropped at close, nothing is unaccounted for
    assert accepted.count(True) == 10
    assert stats.written == 0 and stats.dropped == 60 and stats.submitted == 60 and stats.queued == 0


def _task_request(task: str) -> LoggedRequest:
    """A request of ``task`` with an aware event time, an integer id and a missing one."""
    body = orjson.dumps(
        {
            "records": [RECORD, {**RECORD, "temp": None}],
            "ids": [7, None],
            "event_times": ["2013-04-01T05:15:00+02:00", None],
        }
    )
    outputs = {
        "binary": np.array([0.25, 0.75]),
        "multiclass": np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]]),
        "regression": np.array([-3.5, 12.0]),
    }[task]
    return LoggedRequest(
        dataset="d",
        request_id=f"req-{task}",
        served_at=datetime(2026, 1, 1, 12, 30, tzinfo=UTC),
        model_name="m",
        model_version="3",
        body=body,
        outputs=outputs.tobytes(),
        decisions=np.array([0, 1], dtype=np.int8).tobytes() if task == "binary" else b"",
        size=2,
        task=task,
        classes=("a", "b", "c") if task == "multiclass" else (),
    )


@pytest.mark.parametrize("text_times", [True, False], ids=["sqlite", "postgresql"])
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_prepared_rows_are_the_rows_of_the_records(task: str, text_times: bool) -> None:
    # given an answered request of each task
    request = _task_request(task)
    # when the writer process prepares its rows directly (the fast path)
    prepared = rows_of(request, text_times)
    # then they are exactly the rows the records would have become, value for value and type for type
    records = records_of(request)
    expected = [tuple_row(r, text_times, wide=task != "binary") for r in records]
    assert [tuple(row) for row in prepared] == expected
    assert [[type(v) for v in row] for row in prepared] == [[type(v) for v in row] for row in expected]
    assert all(row.wide == (task != "binary") for row in prepared)
    # and a binary row widened for a mixed batch gets empty task columns
    assert driver_row(prepared[0], text_times, wide=True)[-3:] == (
        (None, None, None) if task == "binary" else (expected[0][-3:])
    )


@pytest.mark.parametrize("text_times", [True, False], ids=["sqlite", "postgresql"])
@pytest.mark.parametrize(
    "text",
    [
        "2013-04-01T05:15:00",
        "2013-04-01 05:15:00",
        "2013-04-01T05:15:00.25",
        "2013-04-01T05:15+02",
        "2013-04-01T05:15:00+02:00",
        "2013-04-01",
        "20130401T051500",
    ],
)
def test_an_event_time_is_stored_the_same_whatever_its_iso_form(text: str, text_times: bool) -> None:
    # given an event time a request gave in any ISO 8601 form datetime reads
    # when the writer process turns it into the column's value (slicing the plain form, parsing the others)
    stored = event_text(text, text_times)
    # then it is what the parsed date-time would have been stored as
    assert stored == event_value(datetime.fromisoformat(text), text_times)
    assert type(stored) is type(event_value(datetime.fromisoformat(text), text_times))
