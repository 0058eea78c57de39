"""The reviewed expectation suites: ``expectations/<name>.json`` in GX's own format, read, checked and written."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipelines.core.config import ROW_KEY, DatasetConfig
from pipelines.core.errors import ConfigError

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite


log = logging.getLogger(__name__)

SUITE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
# A number written as text (what a numeric column holds when the source mixed in other values); case-insensitive
# ``nan``/``inf`` are numbers too. GX matches it with ``str.contains``: anchored at both ends.
NUMERIC_REGEX = r"(?i)^\s*[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?|inf(?:inity)?|nan)\s*$"
NUMERIC_CHECK_NOTE = "Added at validation: the config declares this column numeric, but it holds non-numeric values."
# Expectations that compare values with numbers: GX cannot evaluate them on a column holding text.
NUMERIC_ONLY = frozenset(
    {
        "expect_column_values_to_be_between",
        "expect_column_min_to_be_between",
        "expect_column_max_to_be_between",
        "expect_column_mean_to_be_between",
        "expect_column_median_to_be_between",
        "expect_column_stdev_to_be_between",
        "expect_column_sum_to_be_between",
        "expect_column_quantile_values_to_be_between",
    }
)
_NUMERIC_INFERRED = frozenset({"integer", "floating", "mixed-integer-float", "decimal", "empty"})


def suite_path(expectations_dir: Path, name: str) -> Path:
    """The reviewed suite file of ``name``: ``<expectations_dir>/<name>.json``."""
    if not SUITE_NAME_PATTERN.match(name):
        raise ConfigError(f"expectation suite name {name!r} must match {SUITE_NAME_PATTERN.pattern}")
    return expectations_dir / f"{name}.json"


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


def load_suite(expectations_dir: Path, name: str) -> dict[str, Any]:
    """The reviewed suite ``name`` as its JSON dict; a missing, malformed or misnamed file is an error naming it."""
    path = suite_path(expectations_dir, name)
    data = read_suite_file(path)
    if data.get("name") != name:
        raise ConfigError(f"{path}: suite name {data.get('name')!r} must match the file name {name!r}")
    return data


def gx_suite(expectations_dir: Path, name: str) -> ExpectationSuite:
    """The reviewed suite ``name`` as a GX suite, every expectation checked."""
    return build_suite(load_suite(expectations_dir, name), str(suite_path(expectations_dir, name)))


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


# --- what validation adds to a reviewed suite ----------------------------------------------------------------


def source_columns(frame: pd.DataFrame, config: DatasetConfig) -> pd.DataFrame:
    """The source's own columns: without the content-derived row key of a source without a key column (the
    pipeline adds it; a suite describes the source)."""
    if config.source.key_column is None and ROW_KEY in frame.columns:
        return frame.drop(columns=[ROW_KEY])
    return frame


def numeric_columns(config: DatasetConfig) -> list[str]:
    """Columns whose values must be numbers: the non-derived numeric features, and the target column of a
    regression or of a binary rule."""
    columns = [f.name for f in config.features if f.type == "numeric" and f.derive is None]
    if config.target.task == "regression" or config.target.rule is not None:
        columns.append(config.target.column)
    return list(dict.fromkeys(columns))


def non_numeric_columns(frame: pd.DataFrame, config: DatasetConfig) -> list[str]:
    """The columns of :func:`numeric_columns` in ``frame`` whose dtype is not numeric (e.g. text mixed in)."""
    return [
        column
        for column in numeric_columns(config)
        if column in frame.columns and not pd.api.types.is_numeric_dtype(frame[column])
    ]


def add_type_checks(data: dict[str, Any], frame: pd.DataFrame, config: DatasetConfig) -> dict[str, Any]:
    """The suite dict ``data`` with a numeric check per declared-numeric column of ``frame`` that is not numeric.

    Each such column gets ``expect_column_values_to_match_regex`` with :data:`NUMERIC_REGEX`, so GX reports the
    values that are not numbers (with examples) like any failure of the suite. A column holding text also loses
    its range expectations for this run: GX cannot compare text with numbers.
    """
    columns = non_numeric_columns(frame, config)
    if not columns:
        return data
    textual = {c for c in columns if pd.api.types.infer_dtype(frame[c], skipna=True) not in _NUMERIC_INFERRED}
    kept = []
    for expectation in data["expectations"]:
        column = (expectation.get("kwargs") or {}).get("column")
        if column in textual and expectation.get("type") in NUMERIC_ONLY:
            log.warning("column %r holds text: %s is not evaluated in this run", column, expectation.get("type"))
            continue
        kept.append(expectation)
    added = [
        {
            "type": "expect_column_values_to_match_regex",
            "kwargs": {"column": column, "regex": NUMERIC_REGEX},
            "meta": {"added_by": "validation", "declared": "numeric", "dtype": str(frame[column].dtype)},
            "notes": NUMERIC_CHECK_NOTE,
        }
        for column in columns
    ]
    return {**data, "expectations": [*kept, *added]}
