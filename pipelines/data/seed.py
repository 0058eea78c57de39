"""``seed``: put a dataset's demo rows (its ``source.seed`` loader) where the pipeline will read them.

``seed`` writes only what the pipeline owns, and never deletes a user's data:

- a ``staged`` source: the warehouse's own table ``source.table``; re-seeding a window replaces that window's rows
  (the whole table without a time column), never duplicates;
- a ``file`` source with a seed block: the loader's rows written to ``source.path`` once, only when it does not
  exist (an existing file is left as it is);
- a ``table`` or ``query`` source, or no seed block: refused with a :class:`ConfigError`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import pandas as pd

from pipelines.core.config import DatasetConfig
from pipelines.core.errors import ConfigError
from pipelines.core.runs import Window
from pipelines.core.settings import Settings
from pipelines.core.warehouse import get_engine, stage_rows
from pipelines.data.sources import file_format, load_source, source_path, window_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeedResult:
    """What ``seed`` did: where it wrote (a warehouse table or a file), how many rows, and whether it wrote."""

    dataset: str
    kind: str
    destination: str
    window: str
    rows: int
    days: int
    written: bool


def seed(
    config: DatasetConfig, settings: Settings, window: Window | None, source: pd.DataFrame | None = None
) -> SeedResult:
    """Stage the demo rows of ``window`` (all of them without a time column or window) where the pipeline reads
    them; ``source``: rows already loaded by the seed loader (load them once for several datasets)."""
    kind = config.source.kind
    if kind not in ("staged", "file") or config.source.seed is None:
        raise ConfigError(
            f"seed never writes to a table or query source; nothing to seed for dataset {config.name!r} "
            f"(source.kind {kind}{'' if config.source.seed else ', no source.seed'})"
        )
    if kind == "file":
        return _seed_file(config, settings, window, source)
    return _seed_staged(config, settings, window, source)


def _seed_staged(
    config: DatasetConfig, settings: Settings, window: Window | None, source: pd.DataFrame | None
) -> SeedResult:
    frame = load_source(config) if source is None else source
    table, time_col = config.source.table, config.source.time_column
    assert table is not None
    engine = get_engine(settings.warehouse_url)
    if time_col is None or window is None:
        rows = stage_rows(engine, table, frame, None, None, None)
        days = int(frame[time_col].dt.normalize().nunique()) if time_col else 0
        where = "all rows"
    else:
        frame = window_rows(frame, time_col, window.start_dt, window.end_dt)
        rows = stage_rows(engine, table, frame, time_col, window.start_dt, window.end_dt)
        days = int(frame[time_col].dt.normalize().nunique())
        where = str(window)
    log.info("seeded %d rows (%s) of dataset %s into warehouse table %s", rows, where, config.name, table)
    return SeedResult(config.name, "staged", table, where, rows, days, written=True)


def _seed_file(
    config: DatasetConfig, settings: Settings, window: Window | None, source: pd.DataFrame | None
) -> SeedResult:
    path = source_path(config, settings)
    if path.exists():
        log.info("source file %s of dataset %s exists, left as is", path, config.name)
        return SeedResult(config.name, "file", str(path), "", 0, 0, written=False)
    if path.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise ConfigError(
            f"dataset {config.name!r}: seed writes one file: give source.path a .csv or .parquet suffix (got {path})"
        )
    if window is not None:
        log.info("dataset %s: a file source is written whole, window %s not applied", config.name, window)
    frame = load_source(config) if source is None else source
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if file_format(config, path) == "parquet":
        frame.to_parquet(tmp, index=False)
    else:
        frame.to_csv(tmp, index=False)
    try:
        os.link(tmp, path)  # unlike a rename, never replaces a file that appeared meanwhile
    except FileExistsError:
        log.info("source file %s of dataset %s exists, left as is", path, config.name)
        return SeedResult(config.name, "file", str(path), "", 0, 0, written=False)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote %d seed rows of dataset %s to %s", len(frame), config.name, path)
    return SeedResult(config.name, "file", str(path), "", len(frame), 0, written=True)
