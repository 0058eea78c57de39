"""Readable validation results: which expectation failed on which column, what was observed (pure functions)."""

from __future__ import annotations

from typing import Any

from pipelines.data.validation.suite import NUMERIC_REGEX
from pipelines.data.validation.summary import ValidationSummary


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


def _not_matching(kwargs: dict[str, Any]) -> str:
    if kwargs.get("regex") == NUMERIC_REGEX:
        return "not numbers (the config declares the column numeric)"
    return f"not matching {kwargs.get('regex')!r}"


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
            "expect_column_values_to_match_regex": _not_matching(kwargs),
            "expect_column_value_lengths_to_be_between": (
                f"of a length outside [{kwargs.get('min_value')}, {kwargs.get('max_value')}]"
            ),
            "expect_column_values_to_match_strftime_format": f"not in the format {kwargs.get('strftime_format')!r}",
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
