"""From warehouse rows to model inputs: derived features, the target, the time split, the leakage guard."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.core.config import DatasetConfig

log = logging.getLogger(__name__)

_OPS = {
    "gt": np.greater,
    "ge": np.greater_equal,
    "lt": np.less,
    "le": np.less_equal,
    "eq": np.equal,
}


class LeakageError(ValueError):
    """A column known only after the event would reach the model."""


@dataclass(frozen=True)
class Prepared:
    """Model-ready data: features, target and time, plus what was excluded and why."""

    features: pd.DataFrame
    target: pd.Series
    time: pd.Series
    excluded: int
    excluded_reason: str


def assert_no_leakage(columns: list[str], config: DatasetConfig) -> None:
    """Raise if any forbidden column, or the target, is among ``columns``."""
    forbidden = set(config.forbidden_columns) | {config.target.source_column, config.target.name}
    leaked = sorted(forbidden & set(columns))
    if leaked:
        raise LeakageError(f"columns {leaked} are known only after the event and must not be features")


def build_features(frame: pd.DataFrame, config: DatasetConfig) -> pd.DataFrame:
    """The feature columns of ``frame``, derived and typed as the config says, in config order."""
    time = pd.to_datetime(frame[config.source.time_column])
    columns: dict[str, pd.Series] = {}
    for feature in config.features:
        if feature.derive is not None:
            values = getattr(time.dt, feature.derive)
        elif feature.name in frame.columns:
            values = frame[feature.name]
        else:
            raise KeyError(f"feature column {feature.name!r} is missing from the data")
        if feature.type == "categorical":
            columns[feature.name] = values.astype("string").astype(object).where(values.notna(), None)
        else:
            columns[feature.name] = pd.to_numeric(values, errors="raise").astype("float64")
    features = pd.DataFrame(columns, index=frame.index)
    assert_no_leakage(list(features.columns), config)
    return features


def build_target(frame: pd.DataFrame, config: DatasetConfig) -> tuple[pd.Series, pd.Series]:
    """The binary target and a mask of the rows that have one (rows with a null source are excluded)."""
    source = pd.to_numeric(frame[config.target.source_column], errors="coerce")
    known = source.notna()
    target = pd.Series(_OPS[config.target.op](source, config.target.threshold), index=frame.index).astype("int64")
    return target.where(known, -1), known


def prepare(frame: pd.DataFrame, config: DatasetConfig) -> Prepared:
    """Features and target of the rows with a known outcome; counts the excluded rows."""
    target, known = build_target(frame, config)
    excluded = int((~known).sum())
    if excluded:
        log.info("excluded %d of %d rows: %s", excluded, len(frame), config.target.excluded_reason)
    kept = frame.loc[known]
    return Prepared(
        features=build_features(kept, config).reset_index(drop=True),
        target=target.loc[known].reset_index(drop=True).rename(config.target.name),
        time=pd.to_datetime(kept[config.source.time_column]).reset_index(drop=True),
        excluded=excluded,
        excluded_reason=config.target.excluded_reason,
    )


def time_split(data: Prepared, holdout_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, holdout): the holdout is the latest ``holdout_fraction`` of the rows by time."""
    if len(data.time) < 2:
        raise ValueError("need at least two rows to split into train and holdout")
    cutoff = data.time.quantile(1.0 - holdout_fraction)
    holdout = (data.time >= cutoff).to_numpy()
    if holdout.all() or not holdout.any():
        raise ValueError(f"time split at {cutoff} leaves an empty train or holdout set")
    return ~holdout, holdout
