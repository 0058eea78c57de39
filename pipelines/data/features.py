"""From source rows to model inputs: derived features, the target of each task, the holdout split, the leakage guard."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.core.config import DatasetConfig
from pipelines.core.errors import ConfigError

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
    time: pd.Series | None
    excluded: int
    excluded_reason: str


def assert_no_leakage(columns: list[str], config: DatasetConfig) -> None:
    """Raise if any forbidden column, or the target, is among ``columns``."""
    forbidden = set(config.forbidden_columns) | {config.target.column, config.target.label}
    leaked = sorted(forbidden & set(columns))
    if leaked:
        raise LeakageError(f"columns {leaked} are known only after the event and must not be features")


def build_features(frame: pd.DataFrame, config: DatasetConfig) -> pd.DataFrame:
    """The feature columns of ``frame``, derived and typed as the config says, in config order.

    A value of a numeric feature that is not a number becomes missing here (validation reports it, naming the
    column and the value, before any model sees the data).
    """
    time = pd.to_datetime(frame[config.time_column]) if config.time_column else None
    columns: dict[str, pd.Series] = {}
    for feature in config.features:
        if feature.derive is not None:
            assert time is not None  # the config refuses derived features without a time column
            values = getattr(time.dt, feature.derive)
        elif feature.name in frame.columns:
            values = frame[feature.name]
        else:
            raise KeyError(f"feature column {feature.name!r} is missing from the data")
        if feature.type == "categorical":
            columns[feature.name] = _as_category_text(values)
        else:
            columns[feature.name] = pd.to_numeric(values, errors="coerce").astype("float64")
    features = pd.DataFrame(columns, index=frame.index)
    assert_no_leakage(list(features.columns), config)
    return features


def _as_category_text(values: pd.Series) -> pd.Series:
    """Categories as text, the same whatever the source's dtype: integral floats lose their ``.0`` (1.0 -> '1')."""
    if pd.api.types.is_float_dtype(values):
        whole = values.dropna()
        if len(whole) and (whole == whole.round()).all():
            values = values.astype("Int64")
    return values.astype("string").astype(object).where(values.notna(), None)


def build_target(frame: pd.DataFrame, config: DatasetConfig) -> tuple[pd.Series, pd.Series]:
    """The target of every row and a mask of the rows that have one (a null target column: no outcome).

    binary: 1 for the positive class (``target.positive``, or ``target.rule`` on a numeric column), 0 otherwise,
    -1 without outcome; multiclass: the label as text (integers without ``.0``); regression: the number.
    """
    target_cfg = config.target
    if target_cfg.column not in frame.columns:
        raise ConfigError(
            f"{_config_file(config)}: target.column {target_cfg.column!r} is not a column of the data "
            f"(columns: {', '.join(map(str, frame.columns[:30]))})"
        )
    raw = frame[target_cfg.column]
    if target_cfg.task == "regression" or target_cfg.rule is not None:
        values = pd.to_numeric(raw, errors="coerce")
        known = values.notna()
        if target_cfg.task == "regression":
            return values.astype("float64"), known
        assert target_cfg.rule is not None
        decided = _OPS[target_cfg.rule.op](values, target_cfg.rule.threshold)
        return pd.Series(decided, index=frame.index).astype("int64").where(known, -1), known
    known = raw.notna()
    if target_cfg.task == "multiclass":
        return _as_category_text(raw).where(known, None), known
    positive = _is_positive(raw, target_cfg.positive)
    if known.any() and not positive[known].any():
        seen = sorted({str(v) for v in raw[known].unique()[:20]})
        raise ConfigError(
            f"{_config_file(config)}: target.positive {target_cfg.positive!r} does not occur in column "
            f"{target_cfg.column!r} (values seen: {seen})"
        )
    return positive.astype("int64").where(known, -1), known


def _is_positive(raw: pd.Series, positive: object) -> pd.Series:
    """Whether each value is the positive class, comparing as the column's type allows (1 == 1.0 == '1')."""
    if isinstance(positive, bool):
        if pd.api.types.is_bool_dtype(raw):
            return raw.astype(bool) == positive
        return (
            raw.astype("string")
            .str.strip()
            .str.lower()
            .isin({"true", "1", "yes"} if positive else {"false", "0", "no"})
            .fillna(False)
            .astype(bool)
        )
    if isinstance(positive, int | float) and pd.api.types.is_numeric_dtype(raw):
        return (raw == positive).fillna(False).astype(bool)
    text = _as_category_text(raw)
    expected = str(int(positive)) if isinstance(positive, float) and positive.is_integer() else str(positive)
    return (text == expected).fillna(False).astype(bool)


def _config_file(config: DatasetConfig) -> str:
    from pipelines.core.settings import get_settings

    return str(get_settings().datasets_dir / f"{config.name}.yaml")


def prepare(frame: pd.DataFrame, config: DatasetConfig) -> Prepared:
    """Features and target of the rows with a known outcome; counts the excluded rows."""
    target, known = build_target(frame, config)
    excluded = int((~known).sum())
    if excluded:
        log.info("excluded %d of %d rows: %s", excluded, len(frame), config.target.excluded_reason)
    kept = frame.loc[known]
    time = pd.to_datetime(kept[config.time_column]).reset_index(drop=True) if config.time_column else None
    return Prepared(
        features=build_features(kept, config).reset_index(drop=True),
        target=target.loc[known].reset_index(drop=True).rename(config.target.label),
        time=time,
        excluded=excluded,
        excluded_reason=config.target.excluded_reason,
    )


def holdout_split(data: Prepared, config: DatasetConfig) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, holdout) as ``split`` says: by time, or seeded random (stratified when classifying)."""
    fraction = config.split.holdout_fraction
    if config.split_method == "time":
        if data.time is None:
            raise ValueError("a time split needs the time column")
        return time_split(data, fraction)
    return random_split(data.target, fraction, config.model.seed, stratify=config.target.is_classification)


def time_split(data: Prepared, holdout_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, holdout): the holdout is the latest ``holdout_fraction`` of the rows by time."""
    if data.time is None or len(data.time) < 2:
        raise ValueError("need at least two rows to split into train and holdout")
    cutoff = data.time.quantile(1.0 - holdout_fraction)
    holdout = (data.time >= cutoff).to_numpy()
    if holdout.all() or not holdout.any():
        raise ValueError(f"time split at {cutoff} leaves an empty train or holdout set")
    return ~holdout, holdout


def random_split(
    target: pd.Series, holdout_fraction: float, seed: int, stratify: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, holdout): a seeded random holdout, stratified by class where every class allows it."""
    from sklearn.model_selection import train_test_split

    if len(target) < 2:
        raise ValueError("need at least two rows to split into train and holdout")
    index = np.arange(len(target))
    labels = target.astype(str).to_numpy() if stratify else None
    if labels is not None and pd.Series(labels).value_counts().min() < 2:
        log.warning("a class has fewer than 2 rows: the random holdout is not stratified")
        labels = None
    _, held = train_test_split(index, test_size=holdout_fraction, random_state=seed, stratify=labels)
    holdout = np.zeros(len(target), dtype=bool)
    holdout[held] = True
    return ~holdout, holdout
