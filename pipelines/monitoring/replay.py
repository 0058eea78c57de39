"""``replay``: play a date range of the dataset day by day as if it were live traffic.

For each day, in order: the day's events go to the prediction service as requests, in the batches a scheduling
system would send (the events of each scheduled hour, at most ``batch_size`` per request, each record carrying its
key and event time); at the end of the day the day's outcomes are recorded as ground truth, joined to the
predictions by key. Only a ``staged`` source (the warehouse's own table) is written to: its day's rows, outcomes
included, are staged there (before the requests when the key is derived from the row's content, so that the keys
sent are those every later read derives). A ``file``, ``table`` or ``query`` source is only read, day by day. A
day is marked done in the ``replay_days`` table only when all of it happened, so replaying a range twice skips what
was done, and a replay cut short resumes where it stopped; request ids are deterministic, so a day resent after a
crash is not logged twice either. Replay needs a time column.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from pipelines.core.config import ROW_KEY, DatasetConfig
from pipelines.core.errors import ConfigError, PipelineError
from pipelines.core.runs import Window
from pipelines.core.settings import Settings
from pipelines.core.warehouse import get_engine, stage_rows
from pipelines.data.features import build_features

if TYPE_CHECKING:
    from pipelines.monitoring.outcomes import OutcomeResult

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
    days_incomplete: list[str] = field(default_factory=list)  # days with rejected requests: not marked done
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def day_batches(frame: pd.DataFrame, config: DatasetConfig, day: date, batch_size: int) -> Iterator[RequestBatch]:
    """The requests of one day: the events of each scheduled hour, at most ``batch_size`` per request."""
    if frame.empty:
        return
    time_col, key_col = config.time_column, config.key_name
    if time_col is None:
        raise ConfigError(f"dataset {config.name!r}: replay needs source.time_column (a day of events to send)")
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
    """Replay every day of ``window`` not replayed before through the service at ``settings.serving_url``.

    ``source``: the rows to replay, already loaded (a staged source's seed-loader rows, or any frame with the
    source's columns); by default a staged source's seed loader is read once, other sources day by day.
    """
    from pipelines.serving.client import ServingClient

    if config.time_column is None:
        raise ConfigError(
            f"dataset {config.name!r}: replay needs source.time_column (it sends the source day by day); "
            "a dataset without one is monitored on the prediction log's own timestamps"
        )
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
    day_rows = day_reader(config, settings, source)
    engine = get_engine(settings.warehouse_url)
    with (
        ServingClient(settings.serving_url, settings.serving_admin_token) as service,
        ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="replay") as pool,
    ):
        for day in todo:
            rows = day_rows(day)
            batches = list(day_batches(rows, config, day, batch_size))
            answers = list(pool.map(lambda b: _send(service, config.name, b), batches))
            answered = sum(a["answered"] for a in answers)
            rejected = sum(a["rejected"] for a in answers)
            for a in answers:
                if a["version"] is not None:
                    result.by_version[a["version"]] = result.by_version.get(a["version"], 0) + a["answered"]
                if a["reason"] and len(result.rejections) < 10:
                    result.rejections.append(a["reason"])
            outcomes = close_day(config, settings, day, rows)
            if rejected:  # a rerun sends the day again (answered requests are logged once: same request ids)
                result.days_incomplete.append(str(day))
                log.error("%s: %d records rejected by the service; the day is not marked done", day, rejected)
            else:
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
    if result.days_incomplete:
        raise ReplayError(
            f"replay of {config.name}: {result.rejected} records rejected by the prediction service on "
            f"{', '.join(result.days_incomplete)} (not marked done: a rerun sends them again); first rejections: "
            + " | ".join(result.rejections[:3])
        )
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


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    return datetime.combine(day, dtime.min), datetime.combine(day + timedelta(days=1), dtime.min)


def day_reader(
    config: DatasetConfig, settings: Settings, source: pd.DataFrame | None = None
) -> Callable[[date], pd.DataFrame]:
    """A function giving one day's rows to send: from ``source`` or a staged source's seed loader (loaded once per
    replay), else read, read only, from the dataset's source for that day."""
    from pipelines.data.sources import load_source, read_source, row_keys, window_rows

    time_col = config.time_column
    if time_col is None:
        raise ConfigError(f"dataset {config.name!r}: replay needs source.time_column (a day of events to send)")
    staged = config.source.kind == "staged"
    if source is None and staged:
        source = load_source(config)
    if source is None:
        return lambda day: read_source(config, settings, Window(day, day + timedelta(days=1)))
    frame = source

    def rows_of(day: date) -> pd.DataFrame:
        start, end = _day_bounds(day)
        rows = window_rows(frame, time_col, start, end)
        if staged and config.source.key_column is None:
            # Stage first and send what a read gives back, so that the derived keys are those of every later read.
            stage_rows(get_engine(settings.warehouse_url), str(config.source.table), rows, time_col, start, end)
            return read_source(config, settings, Window(day, day + timedelta(days=1)))
        if config.key_name == ROW_KEY and ROW_KEY not in rows.columns:
            rows = rows.assign(**{ROW_KEY: row_keys(rows)})
        return rows

    return rows_of


def close_day(config: DatasetConfig, settings: Settings, day: date, rows: pd.DataFrame) -> OutcomeResult:
    """The day is over: a staged source's day lands in the warehouse (the pipeline's own table), and the day's
    outcomes become ground truth. Nothing is ever written to a file, table or query source."""
    from pipelines.monitoring.outcomes import record_outcomes

    start, end = _day_bounds(day)
    if config.source.kind == "staged" and config.source.key_column is not None:
        assert config.time_column is not None
        engine = get_engine(settings.warehouse_url)
        stage_rows(engine, str(config.source.table), rows, config.time_column, start, end)
    return record_outcomes(config, settings, Window(day, day + timedelta(days=1)), observed_at=end.replace(tzinfo=UTC))


def _send(service: Any, dataset: str, batch: RequestBatch, attempts: int = 4) -> dict[str, Any]:
    """Send one request to the dataset's route; a 4xx is a rejection (counted), a 5xx or a network error is retried,
    then fatal."""
    import httpx

    problem = ""
    for attempt in range(attempts):
        try:
            response = service.predict(
                dataset, batch.records, ids=batch.ids, event_times=batch.event_times, request_id=batch.request_id
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
