"""``seed``: load a date range of the dataset's rows into its warehouse table, day by day, idempotently."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from pipelines.core.config import DatasetConfig
from pipelines.core.runs import Window
from pipelines.core.settings import Settings
from pipelines.core.warehouse import get_engine, replace_window
from pipelines.data.sources import load_source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeedResult:
    table: str
    window: str
    rows: int
    days: int


def seed(config: DatasetConfig, settings: Settings, window: Window, source: pd.DataFrame | None = None) -> SeedResult:
    """Write the source rows of ``window`` into the warehouse; re-seeding a range replaces it, never duplicates."""
    frame = load_source(config) if source is None else source
    time_col = config.source.time_column
    in_window = frame[(frame[time_col] >= window.start_dt) & (frame[time_col] < window.end_dt)]
    engine = get_engine(settings.warehouse_url)
    days = in_window[time_col].dt.normalize().nunique()
    rows = replace_window(engine, config.source.table, in_window, time_col, window.start_dt, window.end_dt)
    log.info("seeded %d rows (%d days) of %s into table %s", rows, days, window, config.source.table)
    return SeedResult(table=config.source.table, window=str(window), rows=rows, days=int(days))
