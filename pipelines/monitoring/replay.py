"""``replay``: play a date range of the dataset day by day as if it were live traffic.

For each day, in order: the day's events go to the prediction service as requests, in the batches a scheduling
system would send (the events of each scheduled hour, at most ``batch_size`` per request, each record carrying its
key and event time); at the end of the day, the day's rows (outcomes included) are written to the warehouse, and
their outcomes are recorded as ground truth, joined to the predictions by key. A day is marked done in the
``replay_days`` table only when all three happened, so replaying a range twice skips what was done, and a replay
cut short resumes where it stopped; request ids are deterministic, so a day resent after a crash is not logged
twice either.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from pipelines.core.config import DatasetConfig
from pipelines.core.errors import PipelineError
from pipelines.core.runs import Window
from pipelines.core.settings import Settings
from pipelines.core.warehouse import get_engine, replace_window
from pipelines.data.features import build_features

log = logging.getLogger(__name__)

_metadata = sa.MetaData()
replay_days = sa.Table(
    "replay_days",
    _metadata,
    sa.Column("dataset", sa.String(64), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("requests", sa.Integer, nullable=False),
    sa.Column("records", sa.Integer, nullable=False),
    sa.Column("answered", sa.Integer, nullable=False),
    sa.Column("rejected", sa.Integer, nullable=False),
    sa.Column("outcomes", sa.Integer, nullable=False),
    sa.Column("run_key", sa.String(250), nullable=False),
)


class ReplayError(PipelineError):
    """The prediction service could not be reached, or kept failing, during a replay."""


@dataclass(frozen=True)
class RequestBatch:
    """One request of the replay: its id, records, their keys and event times."""

    request_id: str
    records: list[dict[str, Any]]
    ids: list[str]
    event_times: list[datetime]


@dataclass
class ReplayResult:
    """What a replay did, day by day totals."""

    dataset: str
    window: str
    days_replayed: int = 0
    days_skipped: int = 0
    requests: int = 0
    records: int = 0
    answered: int = 0
    rejected: int = 0
    outcomes: int = 0
    by_version: dict[str, int] = field(default_factory=dict)
    rejections: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def day_batches(frame: pd.DataFrame, config: DatasetConfig, day: date, batch_size: int) -> Iterator[RequestBatch]:
    """The requests of one day: the events of each scheduled hour, at most ``batch_size`` per request."""
    if frame.empty:
        return
    time_col, key_col = config.source.time_column, config.source.key_column
    features = build_features(frame, config)
    records = features.astype(object).where(features.notna(), None).to_dict(orient="records")
    keys = frame[key_col].astype(str).tolist()
    times = pd.to_datetime(frame[time_col])
    hours = times.dt.hour.to_numpy()
    event_times = times.tolist()  # Timestamps are datetimes
    for hour in np.unique(hours):
        rows = np.flatnonzero(hours == hour)
        for part, start in enumerate(range(0, len(rows), batch_size)):
            chunk = rows[start : start + batch_size]
            yield RequestBatch(
                request_id=f"replay:{config.name}:{day.isoformat()}T{int(hour):02d}:{part}",
                records=[records[i] for i in chunk],
                ids=[keys[i] for i in chunk],
                event_times=[event_times[i] for i in chunk],
            )


def done_days(settings: Settings, dataset: str, window: Window) -> set[date]:
    """Days of ``window`` already replayed for ``dataset``."""
    engine = get_engine(settings.warehouse_url)
    _metadata.create_all(engine, tables=[replay_days])
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(replay_days.c.day).where(
                replay_days.c.dataset == dataset, replay_days.c.day >= window.start, replay_days.c.day < window.end
            )
        )
        return {r[0] for r in rows}


def replay(
    config: DatasetConfig,
    settings: Settings,
    window: Window,
    run_key: str,
    *,
    batch_size: int = 50,
    concurrency: int = 4,
    source: pd.DataFrame | None = None,
) -> ReplayResult:
    """Replay every day of ``window`` not replayed before through the service at ``settings.serving_url``."""
    from pipelines.data.sources import load_source
    from pipelines.monitoring.outcomes import record_outcomes
    from pipelines.serving.client import ServingClient

    if not settings.serving_url:
        raise ReplayError("no prediction service to replay to: set MLOPS_SERVING_URL (the stack sets it)")
    started = time.perf_counter()
    result = ReplayResult(dataset=config.name, window=str(window))
    skip = done_days(settings, config.name, window)
    days = [window.start + timedelta(days=i) for i in range((window.end - window.start).days)]
    todo = [d for d in days if d not in skip]
    result.days_skipped = len(days) - len(todo)
    if not todo:
        log.info("every day of %s was replayed before: nothing to do", window)
        return result
    frame = load_source(config) if source is None else source
    time_col = config.source.time_column
    engine = get_engine(settings.warehouse_url)
    with (
        ServingClient(settings.serving_url, settings.serving_admin_token) as service,
        ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="replay") as pool,
    ):
        for day in todo:
            start, end = datetime.combine(day, dtime.min), datetime.combine(day + timedelta(days=1), dtime.min)
            rows = frame[(frame[time_col] >= start) & (frame[time_col] < end)]
            batches = list(day_batches(rows, config, day, batch_size))
            answers = list(pool.map(lambda b: _send(service, b), batches))
            answered = sum(a["answered"] for a in answers)
            rejected = sum(a["rejected"] for a in answers)
            for a in answers:
                if a["version"] is not None:
                    result.by_version[a["version"]] = result.by_version.get(a["version"], 0) + a["answered"]
                if a["reason"] and len(result.rejections) < 10:
                    result.rejections.append(a["reason"])
            # The day is over: its rows, outcomes included, land in the warehouse, and become ground truth.
            replace_window(engine, config.source.table, rows, time_col, start, end)
            outcomes = record_outcomes(
                config, settings, Window(day, day + timedelta(days=1)), observed_at=end.replace(tzinfo=UTC)
            )
            _mark_done(
                engine, config.name, day, len(batches), len(rows), answered, rejected, outcomes.labelled, run_key
            )
            result.days_replayed += 1
            result.requests += len(batches)
            result.records += len(rows)
            result.answered += answered
            result.rejected += rejected
            result.outcomes += outcomes.labelled
            log.info(
                "replayed %s: %d requests, %d records answered, %d rejected, %d outcomes",
                day,
                len(batches),
                answered,
                rejected,
                outcomes.labelled,
            )
    result.seconds = round(time.perf_counter() - started, 1)
    log.info(
        "replay of %s: %d days (%d skipped), %d records answered by %s, %d rejected, in %.1f s",
        window,
        result.days_replayed,
        result.days_skipped,
        result.answered,
        result.by_version,
        result.rejected,
        result.seconds,
    )
    return result


def _send(service: Any, batch: RequestBatch, attempts: int = 4) -> dict[str, Any]:
    """Send one request; a 4xx is a rejection (counted), a 5xx or a network error is retried, then fatal."""
    import httpx

    problem = ""
    for attempt in range(attempts):
        try:
            response = service.predict(
                batch.records, ids=batch.ids, event_times=batch.event_times, request_id=batch.request_id
            )
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code == 200:
                return {
                    "answered": len(batch.records),
                    "rejected": 0,
                    "version": response.json()["model_version"],
                    "reason": "",
                }
            if 400 <= response.status_code < 500 and response.status_code != 429:
                return {
                    "answered": 0,
                    "rejected": len(batch.records),
                    "version": None,
                    "reason": f"{batch.request_id}: {response.status_code} {response.text[:300]}",
                }
            problem = f"{response.status_code} {response.text[:300]}"
        time.sleep(0.5 * 2**attempt)
    raise ReplayError(f"request {batch.request_id} failed {attempts} times, last: {problem}")


def _mark_done(
    engine: sa.Engine,
    dataset: str,
    day: date,
    requests: int,
    records: int,
    answered: int,
    rejected: int,
    outcomes: int,
    run_key: str,
) -> None:
    with engine.begin() as conn:
        conn.execute(sa.delete(replay_days).where(replay_days.c.dataset == dataset, replay_days.c.day == day))
        conn.execute(
            sa.insert(replay_days).values(
                dataset=dataset,
                day=day,
                requests=requests,
                records=records,
                answered=answered,
                rejected=rejected,
                outcomes=outcomes,
                run_key=run_key,
            )
        )
