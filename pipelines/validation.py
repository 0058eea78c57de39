"""Data validation with Great Expectations: a dataset's reviewed suite run on a run's snapshot, and proposed suites.

The suite is a JSON file in ``expectations/`` in GX's own format, which a person reviews and commits. Each
validation runs in a GX file context under ``<home>/gx`` (runtime state, never in git), is keyed by the run
(a rerun replaces the run's earlier result) and updates the Data Docs site that the Airflow plugin serves under
``/mlops/data-docs/``. GX is imported lazily: it takes seconds, and the plugin only needs the site folder.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlparse

import pandas as pd

from pipelines.config import DatasetConfig
from pipelines.errors import ConfigError, DataValidationError
from pipelines.runs import RunContext, Window
from pipelines.settings import Settings

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite
    from great_expectations.checkpoint.checkpoint import CheckpointResult
    from great_expectations.data_context.data_context.file_data_context import FileDataContext

log = logging.getLogger(__name__)
# GX logs its API registration at INFO on import: keep it to warnings unless configured otherwise.
if logging.getLogger("great_expectations").level == logging.NOTSET:
    logging.getLogger("great_expectations").setLevel(logging.WARNING)

SITE_NAME = "local_site"
DATA_DOCS_ROUTE = "mlops/data-docs"
DATASOURCE = "snapshots"
BATCH_DEFINITION = "whole_snapshot"
SUITE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

# pandas dtypes GX accepts per family (``expect_column_values_to_be_in_type_list``).
NUMERIC_TYPES = ["int64", "int32", "float64", "float32", "Int64Dtype", "Float64Dtype"]
STRING_TYPES = ["str", "StringDtype"]
DATETIME_TYPES = ["datetime64[ns]", "datetime64[us]", "datetime64[ms]"]

# Profiler margins: what a proposal allows beyond what it observed (a person then reviews it).
NULL_MARGIN = 0.05
RANGE_MARGIN = 0.1
VALUE_SET_MAX = 50
VALUE_SET_MOSTLY = 0.99


@dataclass(frozen=True)
class ValidationSummary:
    """The outcome of one validation: counts, failures and where its Data Docs page is."""

    success: bool
    suite: str
    run_key: str
    snapshot: str
    evaluated: int
    failed: int
    data_docs_url: str
    data_docs_path: str
    failures: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "suite": self.suite,
            "run_key": self.run_key,
            "snapshot": self.snapshot,
            "evaluated": self.evaluated,
            "failed": self.failed,
            "data_docs_url": self.data_docs_url,
            "data_docs_path": self.data_docs_path,
            "failures": [dict(f) for f in self.failures],
        }


# --- Data Docs location --------------------------------------------------------------------------------------


def gx_context_dir(settings: Settings) -> Path:
    """The GX context root (``great_expectations.yml``) of the project under ``settings.gx_dir``."""
    return settings.gx_dir / "gx"


def data_docs_site_dir(settings: Settings) -> Path:
    """The local folder GX builds the Data Docs site into (what the Airflow plugin serves)."""
    return gx_context_dir(settings) / "uncommitted" / "data_docs" / SITE_NAME


def data_docs_url(settings: Settings, relative_path: str = "index.html") -> str:
    """The public URL of a page of the Data Docs site, as served by the Airflow plugin."""
    return f"{settings.airflow_ui_url.rstrip('/')}/{DATA_DOCS_ROUTE}/{quote(relative_path.lstrip('/'))}"


# --- Suite files ---------------------------------------------------------------------------------------------


def suite_path(settings: Settings, name: str) -> Path:
    """The reviewed suite file of ``name``: ``<expectations_dir>/<name>.json``."""
    if not SUITE_NAME_PATTERN.match(name):
        raise ConfigError(f"expectation suite name {name!r} must match {SUITE_NAME_PATTERN.pattern}")
    return settings.expectations_dir / f"{name}.json"


def read_suite_file(path: Path) -> dict[str, Any]:
    """The suite file's JSON; errors name the file."""
    if not path.is_file():
        raise ConfigError(
            f"expectation suite {path} does not exist: propose one with `propose-suite`, review it, and commit it there"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
        raise ConfigError(f"{path}: expected a GX suite object with an 'expectations' list")
    return data


def build_expectations(raw: list[dict[str, Any]], origin: str) -> list[Any]:
    """GX expectations from their JSON dicts; an invalid one is an error (GX would drop it with a log line)."""
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    expectations = []
    for index, item in enumerate(raw):
        try:
            expectations.append(ExpectationConfiguration(**item).to_domain_obj())
        except Exception as exc:  # GX raises pydantic, type and its own errors here
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise ConfigError(f"{origin}: expectation #{index} ({item.get('type')}) is invalid: {reason}") from exc
    return expectations


def build_suite(data: dict[str, Any], origin: str) -> ExpectationSuite:
    """A GX suite from its JSON dict (GX's own format), every expectation checked."""
    from great_expectations import ExpectationSuite

    if not data.get("name"):
        raise ConfigError(f"{origin}: the suite has no name")
    fields = {k: v for k, v in data.items() if k in ("name", "meta", "notes", "suite_parameters")}
    return ExpectationSuite(**fields, expectations=build_expectations(data["expectations"], origin))


def load_suite(settings: Settings, name: str) -> ExpectationSuite:
    """Load the reviewed suite ``name`` from the expectations folder."""
    path = suite_path(settings, name)
    suite = build_suite(read_suite_file(path), str(path))
    if suite.name != name:
        raise ConfigError(f"{path}: suite name {suite.name!r} must match the file name {name!r}")
    return suite


def suite_json(data: dict[str, Any]) -> str:
    """A suite dict as review-friendly JSON: stable key and expectation order, no store ids."""
    clean = {k: v for k, v in data.items() if k != "id"}
    clean["expectations"] = sorted(
        ({k: v for k, v in e.items() if k != "id"} for e in data["expectations"]),
        key=lambda e: (e.get("kwargs", {}).get("column") or "", e["type"], json.dumps(e.get("kwargs"), sort_keys=True)),
    )
    return json.dumps(clean, indent=2, sort_keys=True) + "\n"


def write_suite(suite: ExpectationSuite, path: Path) -> Path:
    """Write ``suite`` in GX's JSON format, pretty-printed in a stable order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(suite_json(suite.to_json_dict()))
    tmp.replace(path)
    return path


# --- Running a suite -----------------------------------------------------------------------------------------


@contextmanager
def _gx_lock(settings: Settings) -> Iterator[None]:
    """One validation at a time per GX project: the context rewrites its config files."""
    settings.gx_dir.mkdir(parents=True, exist_ok=True)
    with (settings.gx_dir / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def get_context(settings: Settings) -> FileDataContext:
    """The file context rooted at ``settings.gx_dir`` (scaffolded on first use), without progress bars."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=settings.gx_dir)
    bars: Any = context.variables.progress_bars  # a ProgressBarsConfig, or a dict once read back from the file
    enabled = bars is None or (bars.get("globally", True) if isinstance(bars, dict) else bars.globally)
    if enabled:
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.variables.save()
    return context


def _forget_run(settings: Settings, suite: str, run_key: str) -> None:
    """Remove an earlier result (and its page) of the same run, so a rerun replaces rather than adds."""
    for folder in (
        gx_context_dir(settings) / "uncommitted" / "validations" / suite / run_key,
        data_docs_site_dir(settings) / "validations" / suite / run_key,
    ):
        if folder.is_dir():
            shutil.rmtree(folder)
            log.info("replacing the earlier validation of run %s (%s)", run_key, folder)


def _run_checkpoint(
    context: FileDataContext, suite: ExpectationSuite, asset_name: str, frame: pd.DataFrame, run_key: str
) -> CheckpointResult:
    import great_expectations as gx
    from great_expectations.checkpoint.actions import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier

    suite = context.suites.add_or_update(suite)
    source = context.data_sources.add_or_update_pandas(DATASOURCE)
    asset = next((a for a in source.assets if a.name == asset_name), None) or source.add_dataframe_asset(asset_name)
    batch = next((b for b in asset.batch_definitions if b.name == BATCH_DEFINITION), None)
    batch = batch or asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=f"{asset_name}-{suite.name}", data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=f"{asset_name}-{suite.name}",
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="update_data_docs", site_names=[SITE_NAME])],
            result_format={"result_format": "SUMMARY"},
        )
    )
    return checkpoint.run(
        batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_key, run_time=datetime.now(UTC))
    )


def _page_path(settings: Settings, context: FileDataContext, result: CheckpointResult) -> str:
    """The site-relative path of the validation result's page (``index.html`` if it cannot be found)."""
    site = data_docs_site_dir(settings).resolve()
    for key in result.run_results:
        for entry in context.get_docs_sites_urls(resource_identifier=key, site_name=SITE_NAME):
            page = Path(unquote(urlparse(str(entry.get("site_url") or "")).path)).resolve()
            if page.is_file() and page.is_relative_to(site):
                return page.relative_to(site).as_posix()
    return "index.html"


def validate_snapshot(
    config: DatasetConfig, settings: Settings, snapshot_path: str, run: RunContext
) -> ValidationSummary:
    """Run the dataset's reviewed suite on the snapshot; raise ``DataValidationError`` naming every failure."""
    from pipelines.extract import load_snapshot

    frame = load_snapshot(snapshot_path)
    suite = load_suite(settings, config.expectation_suite)
    with _gx_lock(settings):
        context = get_context(settings)
        _forget_run(settings, suite.name, run.key)
        result = _run_checkpoint(context, suite, config.name, frame, run.key)
        relative = _page_path(settings, context, result)
    results = [r.to_json_dict() for vr in result.run_results.values() for r in vr.results]
    failures = sorted(
        (describe_failure(r, list(frame.columns)) for r in results if not r.get("success")),
        key=lambda f: (f["column"] is not None, f["column"] or "", f["expectation"]),
    )
    summary = ValidationSummary(
        success=bool(result.success) and not failures,
        suite=suite.name,
        run_key=run.key,
        snapshot=snapshot_path,
        evaluated=len(results),
        failed=len(failures),
        data_docs_url=data_docs_url(settings, relative),
        data_docs_path=str(data_docs_site_dir(settings) / relative),
        failures=tuple(failures),
    )
    if not summary.success:
        raise DataValidationError(failure_message(summary), list(summary.failures), summary.data_docs_url)
    log.info(
        "%d expectations of suite %s passed on %s; Data Docs: %s",
        summary.evaluated,
        summary.suite,
        snapshot_path,
        summary.data_docs_url,
    )
    return summary


# --- Readable failures (pure) --------------------------------------------------------------------------------


def _pct(value: Any) -> str:
    return f"{float(value):.1f}%"


def _examples(result: dict[str, Any]) -> str:
    values = list(dict.fromkeys(repr(v) for v in result.get("partial_unexpected_list") or []))[:3]
    return f", e.g. {', '.join(values)}" if values else ""


def _allowed(kwargs: dict[str, Any]) -> str:
    mostly = kwargs.get("mostly")
    return f" (allowed {_pct((1 - float(mostly)) * 100)})" if mostly is not None else " (allowed 0%)"


def _exception_messages(info: Any) -> list[str]:
    if not isinstance(info, dict):
        return []
    if "exception_message" in info:
        raised = info.get("raised_exception", True) and info["exception_message"]
        return [str(info["exception_message"])] if raised else []
    return [m for value in info.values() for m in _exception_messages(value)]


def _describe_error(kwargs: dict[str, Any], messages: list[str], columns: list[str]) -> str:
    column = kwargs.get("column")
    if column is not None and column not in columns:
        return f"column {column!r} is missing from the snapshot"
    first = next((m.strip().splitlines()[0] for m in messages if m and m.strip()), "unknown error")
    return f"could not be evaluated: {first[:300]}"


def _describe_observed(kind: str, kwargs: dict[str, Any], result: dict[str, Any]) -> str:
    count, percent = result.get("unexpected_count"), result.get("unexpected_percent")
    if kind == "expect_column_values_to_not_be_null":
        return f"{_pct(percent or 0)} null ({count} rows){_allowed(kwargs)}"
    if kind == "expect_table_columns_to_match_set":
        mismatched = (result.get("details") or {}).get("mismatched") or {}
        parts = [
            f"{label} columns {sorted(mismatched[key])}"
            for key, label in (("missing", "missing"), ("unexpected", "unexpected"))
            if mismatched.get(key)
        ]
        return "; ".join(parts) or f"observed columns {result.get('observed_value')}"
    if kind == "expect_table_row_count_to_be_between":
        return f"{result.get('observed_value')} rows (allowed {kwargs.get('min_value')}..{kwargs.get('max_value')})"
    if count is not None:
        what = {
            "expect_column_values_to_be_between": f"outside [{kwargs.get('min_value')}, {kwargs.get('max_value')}]",
            "expect_column_values_to_be_in_set": "not in the allowed set",
            "expect_column_values_to_be_in_type_list": f"not of a type in {kwargs.get('type_list')}",
            "expect_column_values_to_be_unique": "duplicated",
            "expect_column_values_to_match_regex": f"not matching {kwargs.get('regex')!r}",
        }.get(kind, "unexpected")
        return f"{count} values ({_pct(percent or 0)}) {what}{_allowed(kwargs)}{_examples(result)}"
    if kind == "expect_column_values_to_be_in_type_list":
        return f"column type {result.get('observed_value')}, expected one of {kwargs.get('type_list')}"
    return f"observed {result.get('observed_value')!r}"


def describe_failure(result: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    """A failed GX expectation result (its JSON dict) as a readable failure of the snapshot with ``columns``."""
    config = result.get("expectation_config") or {}
    kind = str(config.get("type", "unknown_expectation"))
    kwargs = {k: v for k, v in (config.get("kwargs") or {}).items() if k != "batch_id"}
    outcome = result.get("result") or {}
    messages = _exception_messages(result.get("exception_info"))
    observed = _describe_error(kwargs, messages, columns) if messages else _describe_observed(kind, kwargs, outcome)
    details = {
        k: outcome[k]
        for k in (
            "observed_value",
            "unexpected_count",
            "unexpected_percent",
            "element_count",
            "missing_count",
            "partial_unexpected_list",
            "details",
        )
        if k in outcome
    }
    return {
        "expectation": kind,
        "column": kwargs.get("column"),
        "observed": observed,
        "details": {"kwargs": kwargs, **details, **({"errors": messages[:3]} if messages else {})},
    }


def failure_message(summary: ValidationSummary) -> str:
    """One message naming every failed expectation, its column and what was observed."""
    named = "; ".join(f"{f['expectation']}({f['column'] or 'table'}): {f['observed']}" for f in summary.failures)
    return (
        f"{summary.failed} of {summary.evaluated} expectations of suite {summary.suite!r} failed on snapshot "
        f"{summary.snapshot}: {named}; Data Docs: {summary.data_docs_url}"
    )


# --- Proposing a suite (the profile is pure; GX checks and writes it) ----------------------------------------


def _floor2(value: float) -> float:
    return math.floor(round(value * 100, 6)) / 100


def _ceil2(value: float) -> float:
    return math.ceil(round(value * 100, 6)) / 100


def mostly_not_null(null_share: float) -> float | None:
    """``mostly`` for a not-null expectation: twice the observed null share plus a margin (None: no nulls seen)."""
    if null_share <= 0:
        return None
    allowed = min(0.99, 2 * null_share + NULL_MARGIN)
    return max(0.01, _floor2(1 - allowed))


def widened_bounds(low: float, high: float, margin: float = RANGE_MARGIN) -> tuple[float, float]:
    """Observed ``[low, high]`` widened by ``margin`` of the range on each side (never below 0 if ``low >= 0``)."""
    span = (high - low) or abs(high) or 1.0
    lo, hi = low - margin * span, high + margin * span
    if low >= 0:
        lo = max(0.0, lo)
    return _floor2(lo), _ceil2(hi)


def row_count_bounds(times: pd.Series) -> tuple[int, int]:
    """Row-count bounds from rows per day: half the quietest day up to a year and a half of the busiest."""
    daily = pd.to_datetime(times).dt.normalize().value_counts()
    return max(1, int(daily.min()) // 2), math.ceil(int(daily.max()) * 366 * 1.5)


def type_list(series: pd.Series) -> list[str]:
    """The GX type list of the column's family (numeric, datetime, string)."""
    if pd.api.types.is_datetime64_any_dtype(series):
        return DATETIME_TYPES
    if pd.api.types.is_bool_dtype(series):
        return ["bool"]
    if pd.api.types.is_numeric_dtype(series):
        return NUMERIC_TYPES
    return STRING_TYPES


def _expectation(kind: str, observed: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "kwargs": {k: v for k, v in kwargs.items() if v is not None},
        "meta": {"observed": observed} if observed else {},
    }


def _profile_column(series: pd.Series, kind: str) -> list[dict[str, Any]]:
    """Type, not-null and range or value-set expectations of one column (``kind``: numeric/categorical/...)."""
    name = str(series.name)
    null_share = round(float(series.isna().mean()), 4)
    out = [
        _expectation(
            "expect_column_values_to_be_in_type_list",
            {"dtype": str(series.dtype)},
            column=name,
            type_list=type_list(series),
        ),
        _expectation(
            "expect_column_values_to_not_be_null",
            {"null_share": null_share},
            column=name,
            mostly=None if kind in ("key", "time") else mostly_not_null(null_share),
        ),
    ]
    values = series.dropna()
    if kind in ("numeric", "target") and pd.api.types.is_numeric_dtype(series) and not values.empty:
        low, high = float(values.min()), float(values.max())
        lo, hi = widened_bounds(low, high)
        out.append(
            _expectation(
                "expect_column_values_to_be_between", {"min": low, "max": high}, column=name, min_value=lo, max_value=hi
            )
        )
    distinct = sorted(str(v) for v in values.unique())
    if kind == "categorical" and 0 < len(distinct) <= VALUE_SET_MAX:
        out.append(
            _expectation(
                "expect_column_values_to_be_in_set",
                {"distinct": len(distinct)},
                column=name,
                value_set=distinct,
                mostly=VALUE_SET_MOSTLY,
            )
        )
    if kind == "key":
        out.append(_expectation("expect_column_values_to_be_unique", column=name))
    return out


def profiled_columns(config: DatasetConfig) -> dict[str, str]:
    """The columns a proposal profiles and their kind: key, time, target, then the non-derived features."""
    kinds = {config.source.key_column: "key", config.source.time_column: "time", config.target.source_column: "target"}
    for feature in config.features:
        if feature.derive is None:
            kinds.setdefault(feature.name, feature.type)
    return kinds


def profile_expectations(frame: pd.DataFrame, config: DatasetConfig) -> list[dict[str, Any]]:
    """Expectation dicts proposed from ``frame`` (column set, row count, and per profiled column)."""
    kinds = profiled_columns(config)
    missing = sorted(set(kinds) - set(frame.columns))
    if missing:
        raise ConfigError(f"dataset {config.name!r}: columns {missing} named in the config are not in the table")
    low, high = row_count_bounds(frame[config.source.time_column])
    out = [
        _expectation("expect_table_columns_to_match_set", column_set=sorted(map(str, frame.columns)), exact_match=True),
        _expectation("expect_table_row_count_to_be_between", {"rows": len(frame)}, min_value=low, max_value=high),
    ]
    for column, kind in kinds.items():
        out.extend(_profile_column(frame[column], kind))
    return out


def propose_suite(config: DatasetConfig, settings: Settings, window: Window, out: Path) -> Path:
    """Profile ``window`` of the dataset's table and write a proposed suite to ``out`` for a person to review."""
    from great_expectations import ExpectationSuite

    from pipelines.extract import read_dataset_window

    frame = read_dataset_window(config, settings, window)
    suite = ExpectationSuite(
        name=config.expectation_suite,
        expectations=build_expectations(profile_expectations(frame, config), f"proposal for {config.name}"),
        meta={
            "profiled": {
                "dataset": config.name,
                "table": config.source.table,
                "window": str(window),
                "rows": len(frame),
            }
        },
        notes="Proposed by `propose-suite` from the profiled window: review every bound before committing.",
    )
    path = write_suite(suite, out)
    log.info(
        "proposed %d expectations for suite %s from %d rows of %s -> %s",
        len(suite.expectations),
        suite.name,
        len(frame),
        window,
        path,
    )
    return path
