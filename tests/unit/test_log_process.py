"""The prediction log written by its own process: everything handed over is written, or counted as dropped."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import sqlalchemy as sa

from pipelines.serving.log_process import LoggedRequest, ProcessLogWriter, records_of

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
        probabilities=proba.tobytes(),
        decisions=(proba >= 0.5).astype(np.int8).tobytes(),
        size=size,
    )


def test_a_request_becomes_its_records() -> None:
    records = records_of(_request(7))
    assert [r.record_id for r in records] == ["r7-0", "r7-1", "r7-2"]
    assert [r.decision for r in records] == [0, 1, 1] and records[1].probability == 0.5
    assert records[0].features == RECORD and records[0].event_time == datetime(2013, 4, 1, 5, 15)


def test_everything_handed_over_is_written_by_the_writer_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/warehouse.db"
    writer = ProcessLogWriter(url, max_queue=10_000)
    writer.start()
    # when 200 requests of 3 records are handed over, one of them twice, and the writer is closed
    for i in range(200):
        assert writer.submit_request(_request(i))
    assert writer.submit_request(_request(0))
    stats = writer.close(timeout=60)
    # then every record is written once, and the counters say so
    with sa.create_engine(url).connect() as conn:
        rows = conn.execute(sa.text("select count(*), count(distinct request_id) from prediction_log")).one()
    assert tuple(rows) == (600, 200)
    assert (stats.submitted, stats.written, stats.dropped, stats.queued) == (603, 603, 0, 0)
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
