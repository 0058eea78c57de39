"""``extract``: the run's rows of the dataset's source (a time window, or all of it) into a Parquet snapshot, with
its content hash. Writing never fails on a value: a column of mixed types is written as text, for validation to
report."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipelines.core.config import DatasetConfig
from pipelines.core.errors import NotFoundError
from pipelines.core.runs import RunContext, Window
from pipelines.core.settings import Settings
from pipelines.data.sources import read_source, source_description

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


def read_dataset_window(config: DatasetConfig, settings: Settings, window: Window | None) -> pd.DataFrame:
    """The dataset's rows in ``window`` (all rows without a time column or window); NotFoundError when none."""
    frame = read_source(config, settings, window)
    if frame.empty:
        span = f" in {window}" if window is not None and config.time_column else ""
        raise NotFoundError(f"dataset {config.name!r}: no rows of {source_description(config)}{span}")
    return frame


def _object_columns(frame: pd.DataFrame) -> list[str]:
    return [name for name in frame.columns if pd.api.types.is_object_dtype(frame[name])]


def parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every object column Arrow cannot type (e.g. ``'far'`` among numbers) turned into text,
    missing values kept; the other columns untouched."""
    fixed: dict[str, pd.Series] = {}
    for name in _object_columns(frame):
        column = frame[name]
        try:
            pa.array(column, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            types = sorted({type(v).__name__ for v in column.dropna().head(10_000)})
            log.warning("column %r holds mixed types (%s): written as text, for validation to report", name, types)
            fixed[name] = column.map(str, na_action="ignore").astype(object).where(column.notna(), None)
    return frame.assign(**fixed) if fixed else frame


def _write_parquet(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Write ``frame``; if Arrow still refuses a column (e.g. nested values it cannot store), every object column
    goes as text. Returns the frame as written."""
    try:
        frame.to_parquet(path, index=False)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        log.warning("snapshot not writable as read (%s): object columns written as text", type(exc).__name__)
        text = {
            name: frame[name].map(str, na_action="ignore").astype(object).where(frame[name].notna(), None)
            for name in _object_columns(frame)
        }
        frame = frame.assign(**text)
        frame.to_parquet(path, index=False)
    return frame


def extract(config: DatasetConfig, settings: Settings, window: Window | None, run: RunContext) -> Snapshot:
    """Read the run's rows (``window``, or the whole source without a time column) into
    ``<partition>/snapshot.parquet`` and describe it."""
    frame = parquet_safe(read_dataset_window(config, settings, window))
    out = snapshot_dir(settings, config, run)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "snapshot.parquet"
    tmp = path.with_suffix(".tmp")
    frame = _write_parquet(frame, tmp)
    tmp.replace(path)
    windowed = window is not None and config.time_column is not None
    snapshot = Snapshot(
        path=str(path),
        data_version=content_hash(frame),
        rows=len(frame),
        rows_without_outcome=int(frame[config.target.column].isna().sum()),
        window_start=str(window.start) if windowed and window else "",
        window_end=str(window.end) if windowed and window else "",
    )
    (out / "snapshot.json").write_text(json.dumps(snapshot.to_dict(), indent=2))
    log.info(
        "extracted %d rows of %s (%d without outcome), data version %s -> %s",
        snapshot.rows,
        window if windowed else f"all of {source_description(config)}",
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
