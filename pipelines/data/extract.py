"""``extract``: a time window of the warehouse into a Parquet snapshot, with its content hash."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from pipelines.core.config import DatasetConfig
from pipelines.core.errors import NotFoundError
from pipelines.core.runs import RunContext, Window
from pipelines.core.settings import Settings
from pipelines.core.warehouse import get_engine, read_window, table_exists

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """A run's data: where the snapshot is, its version (content hash) and its row counts."""

    path: str
    data_version: str
    rows: int
    rows_without_outcome: int
    window_start: str
    window_end: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def content_hash(frame: pd.DataFrame) -> str:
    """A stable hash of a frame's columns, dtypes and values (independent of the file format)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([[c, str(t)] for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def snapshot_dir(settings: Settings, config: DatasetConfig, run: RunContext) -> Path:
    """The run's partition: ``<home>/data/<dataset>/<run key>/``."""
    return settings.data_dir / config.name / run.key


def read_dataset_window(config: DatasetConfig, settings: Settings, window: Window) -> pd.DataFrame:
    """The dataset's warehouse rows in ``window``; a clear error when the table or the rows are missing."""
    engine = get_engine(settings.warehouse_url)
    if not table_exists(engine, config.source.table):
        raise NotFoundError(f"warehouse table {config.source.table!r} does not exist: run `seed` first")
    frame = read_window(engine, config.source.table, config.source.time_column, window.start_dt, window.end_dt)
    if frame.empty:
        raise NotFoundError(f"no rows of {config.source.table!r} in {window}: seed that range first")
    return frame


def extract(config: DatasetConfig, settings: Settings, window: Window, run: RunContext) -> Snapshot:
    """Read ``window`` from the warehouse into ``<partition>/snapshot.parquet`` and describe it."""
    frame = read_dataset_window(config, settings, window)
    out = snapshot_dir(settings, config, run)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "snapshot.parquet"
    tmp = path.with_suffix(".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    snapshot = Snapshot(
        path=str(path),
        data_version=content_hash(frame),
        rows=len(frame),
        rows_without_outcome=int(frame[config.target.source_column].isna().sum()),
        window_start=str(window.start),
        window_end=str(window.end),
    )
    (out / "snapshot.json").write_text(json.dumps(snapshot.to_dict(), indent=2))
    log.info(
        "extracted %d rows of %s (%d without outcome), data version %s -> %s",
        snapshot.rows,
        window,
        snapshot.rows_without_outcome,
        snapshot.data_version,
        path,
    )
    return snapshot


def load_snapshot(path: str | Path) -> pd.DataFrame:
    """Read a snapshot written by :func:`extract`."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"snapshot {path} does not exist")
    return pd.read_parquet(path)
