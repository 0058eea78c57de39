"""Parsing request batches against a model's input contract.

Parsing is hand-written rather than a pydantic model per request: it runs on every request, costs a few
microseconds per field, and reports every problem with its location (``records[3].temp``).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain, islice
from typing import Any

import numpy as np

from pipelines.training.contract import MAX_STRING_LENGTH, FieldSpec, InputContract


@dataclass
class Batch:
    """A validated request: columns in model order, plus the per-record ids and event times."""

    size: int
    categorical: dict[str, list[str | None]]
    numeric: dict[str, np.ndarray]
    records: list[dict[str, Any]]
    ids: list[str | None]
    event_times: list[datetime | None]
    request_id: str | None


@dataclass
class InputError(Exception):
    """A request that does not fit the contract; ``errors`` name the place and the rule broken."""

    status: int
    errors: list[dict[str, Any]] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        return {"detail": self.errors}


_MAX_ERRORS = 20
_TOP_LEVEL = frozenset({"records", "ids", "event_times", "request_id"})


def _err(loc: list[Any], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


def _show(key: str) -> str:
    """A field name as an error message quotes it: at most 60 characters of a hostile one."""
    return repr(key) if len(key) <= 60 else repr(key[:60]) + "..."


def _names(contract: InputContract) -> str:
    """The fields a model takes, for an error message (the first 30 of a wide contract)."""
    names = contract.names
    return str(names) if len(names) <= 30 else f"{names[:30]} and {len(names) - 30} more"


def parse_batch(payload: Any, contract: InputContract, max_records: int) -> Batch:
    """Check a decoded request body against ``contract``; raise :class:`InputError` naming every problem."""
    if not isinstance(payload, dict):
        raise InputError(422, [_err([], "the body must be a JSON object with a 'records' list", "type_error")])
    errors: list[dict[str, Any]] = [
        _err([key], f"unknown top-level field {_show(key)}; allowed: {sorted(_TOP_LEVEL)}", "extra_forbidden")
        for key in islice((k for k in payload if k not in _TOP_LEVEL), _MAX_ERRORS)
    ]
    records = payload.get("records")
    if not isinstance(records, list) or not records:
        errors.append(_err(["records"], "'records' must be a non-empty list of objects", "missing"))
        raise InputError(422, errors)
    if len(records) > max_records:
        raise InputError(
            413,
            [
                _err(
                    ["records"],
                    f"{len(records)} records exceed the limit of {max_records} per request",
                    "too_many_records",
                )
            ],
        )
    n = len(records)
    ids = _optional_list(payload, "ids", n, errors, _as_id)
    times = _optional_list(payload, "event_times", n, errors, _as_time)
    request_id = payload.get("request_id")
    if request_id is not None and (not isinstance(request_id, str) or not 0 < len(request_id) <= 128):
        errors.append(_err(["request_id"], "request_id must be a string of 1 to 128 characters", "type_error"))
        request_id = None

    clean = _clean_columns(records, contract)
    categorical, numeric = clean if clean is not None else _parse_records(records, contract, errors)
    if errors:
        raise InputError(422, errors[:_MAX_ERRORS])
    return Batch(
        size=n,
        categorical=categorical,
        numeric=numeric,
        records=records,
        ids=ids,
        event_times=times,
        request_id=request_id,
    )


_NUMBER_TYPES = frozenset({int, float})
_NULLABLE_NUMBER_TYPES = frozenset({int, float, type(None)})
_STRING_TYPES = frozenset({str})
_NULLABLE_STRING_TYPES = frozenset({str, type(None)})


def _clean_columns(
    records: list[Any], contract: InputContract
) -> tuple[dict[str, list[str | None]], dict[str, np.ndarray]] | None:
    """The columns of a batch in which every record keeps the contract (the common case), checked in C-level passes
    (types as a set, the numeric fields as one block of array comparisons); None as soon as anything is off, and
    :func:`_parse_records` then goes record by record to name every problem. Same columns as that path."""
    fields = contract.fields
    try:
        if set(map(len, records)) != {len(fields)}:  # with every name present (below): exactly the contract's keys
            return None
        categorical: dict[str, list[str | None]] = {}
        for spec in fields:
            if spec.kind != "categorical":
                continue
            column = [record[spec.name] for record in records]  # KeyError, or TypeError for a record not an object
            types = set(map(type, column))
            if not types <= (_NULLABLE_STRING_TYPES if spec.nullable else _STRING_TYPES):
                return None
            strings = column if len(types) == 1 else [v for v in column if v is not None]
            if strings and max(map(len, strings)) > MAX_STRING_LENGTH:
                return None
            categorical[spec.name] = column
        plan = _numeric_plan(contract)
        if not plan.names:
            return categorical, {}
        if len(records) <= _SCALAR_CHECK_RECORDS:  # a few records: Python's comparisons beat numpy's set-up
            numeric: dict[str, np.ndarray] = {}
            for spec in plan.specs:
                column = [record[spec.name] for record in records]
                if not _numbers_keep(column, spec):
                    return None
                numeric[spec.name] = np.array(column, dtype=np.float64)
            return categorical, numeric
        block = _numeric_block(records, plan)
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    if block is None:
        return None
    return categorical, {name: block[:, j] for j, name in enumerate(plan.names)}


@dataclass(frozen=True)
class _NumericPlan:
    """A contract's numeric fields, set up once for checking a batch's numbers as one block."""

    specs: tuple[FieldSpec, ...]
    names: tuple[str, ...]
    row: Any  # a record's numbers as a tuple (_row_getter)
    low: np.ndarray  # per field: its minimum, -inf when it has none
    high: np.ndarray  # per field: its maximum, +inf when it has none
    not_null: np.ndarray  # the fields that may not be null


_PLANS: dict[int, tuple[InputContract, _NumericPlan]] = {}


def _numeric_plan(contract: InputContract) -> _NumericPlan:
    """The numeric plan of ``contract``, built once per contract object (by identity: hashing a contract costs
    more than the lookup saves)."""
    entry = _PLANS.get(id(contract))
    if entry is not None and entry[0] is contract:
        return entry[1]
    specs = tuple(spec for spec in contract.fields if spec.kind != "categorical")
    names = tuple(spec.name for spec in specs)
    plan = _NumericPlan(
        specs=specs,
        names=names,
        row=_row_getter(names),
        low=np.array([-math.inf if s.minimum is None else s.minimum for s in specs], dtype=np.float64),
        high=np.array([math.inf if s.maximum is None else s.maximum for s in specs], dtype=np.float64),
        not_null=np.array([not s.nullable for s in specs], dtype=np.bool_),
    )
    if len(_PLANS) > 256:  # contracts come and go with model versions: keep the cache small
        _PLANS.clear()
    _PLANS[id(contract)] = (contract, plan)
    return plan


def _row_getter(names: tuple[str, ...]) -> Any:
    """A function giving a record's values of ``names`` as a tuple (KeyError for a missing one)."""
    if len(names) == 1:
        name = names[0]
        return lambda record: (record[name],)
    return operator.itemgetter(*names)


def _numeric_block(records: list[Any], plan: _NumericPlan) -> np.ndarray | None:
    """The numeric fields of every record as one float64 block (null as NaN), or None when a value is not a number
    (bools and strings included), not finite, out of bounds, or null where the contract forbids it."""
    rows = list(map(plan.row, records))  # KeyError for a missing field
    values = list(chain.from_iterable(rows))
    types = set(map(type, values))
    if not types <= _NULLABLE_NUMBER_TYPES:
        return None
    block = np.array(rows, dtype=np.float64)  # OverflowError for an int beyond float64; null becomes NaN
    missing = np.isnan(block)
    nulls = values.count(None) if type(None) in types else 0
    if int(missing.sum()) != nulls:  # a NaN that was not a null: a float NaN from a caller in Python
        return None
    if nulls and (missing & plan.not_null).any():
        return None
    if np.isinf(block).any():  # the NaNs are the nulls (counted above): infinity is the only other non-finite value
        return None
    if (block < plan.low).any() or (block > plan.high).any():  # NaN compares false: nulls pass
        return None
    return block


_SCALAR_CHECK_RECORDS = 16


def _numbers_keep(column: list[Any], spec: FieldSpec) -> bool:
    """Whether every value of a short numeric column keeps the contract (a number, finite, within the bounds; null
    where allowed), checked value by value: for a single record this is ~10x cheaper than the array checks."""
    low, high, nullable = spec.minimum, spec.maximum, spec.nullable
    for value in column:
        if value is None:
            if nullable:
                continue
            return False
        kind = type(value)
        if (kind is not float and kind is not int) or not math.isfinite(value):
            return False
        if (low is not None and value < low) or (high is not None and value > high):
            return False
    return True


def _parse_records(
    records: list[Any], contract: InputContract, errors: list[dict[str, Any]]
) -> tuple[dict[str, list[str | None]], dict[str, np.ndarray]]:
    """The records as columns in contract order; every problem is appended to ``errors``."""
    n = len(records)
    categorical: dict[str, list[str | None]] = {}
    numeric: dict[str, np.ndarray] = {}
    names = set(contract.names)
    for spec in contract.fields:
        if spec.kind == "categorical":
            categorical[spec.name] = [None] * n
        else:
            numeric[spec.name] = np.empty(n, dtype=np.float64)
    for i, record in enumerate(records):
        if len(errors) >= _MAX_ERRORS:
            break
        if not isinstance(record, dict):
            errors.append(_err(["records", i], "each record must be an object of feature values", "type_error"))
            continue
        if len(record) != len(names) or not names.issuperset(record):
            unknown = islice((k for k in record if k not in names), _MAX_ERRORS - len(errors))
            errors.extend(
                _err(
                    ["records", i, key],
                    f"unknown field {_show(key)}: the model takes {_names(contract)}",
                    "extra_forbidden",
                )
                for key in unknown
            )
            if len(errors) >= _MAX_ERRORS:
                break
        for spec in contract.fields:
            if spec.name not in record:
                errors.append(_err(["records", i, spec.name], f"field {spec.name!r} is missing", "missing"))
                continue
            problem = _check(spec, record[spec.name], i, categorical, numeric)
            if problem is not None:
                errors.append(_err(["records", i, spec.name], problem[0], problem[1]))
    return categorical, numeric


def _check(
    spec: FieldSpec, value: Any, i: int, categorical: dict[str, list[str | None]], numeric: dict[str, np.ndarray]
) -> tuple[str, str] | None:
    """Store ``value`` in its column; the message and type of the problem when it breaks the contract."""
    if value is None:
        if not spec.nullable:
            return f"field {spec.name!r} may not be null", "null_forbidden"
        if spec.kind == "categorical":
            categorical[spec.name][i] = None
        else:
            numeric[spec.name][i] = math.nan
        return None
    if spec.kind == "categorical":
        if type(value) is not str:
            return f"field {spec.name!r} must be a string, got {type(value).__name__}", "type_error"
        if len(value) > MAX_STRING_LENGTH:
            return f"field {spec.name!r} is longer than {MAX_STRING_LENGTH} characters", "too_long"
        categorical[spec.name][i] = value
        return None
    if type(value) not in (int, float):
        return f"field {spec.name!r} must be a number, got {type(value).__name__}", "type_error"
    try:
        number = float(value)
    except OverflowError:  # an int beyond float64 (not from JSON, which orjson refuses, but from a caller in Python)
        number = math.inf
    if not math.isfinite(number):
        return f"field {spec.name!r} must be finite", "not_finite"
    if (spec.minimum is not None and number < spec.minimum) or (spec.maximum is not None and number > spec.maximum):
        return (
            f"field {spec.name!r} = {value} is outside its bounds [{spec.minimum}, {spec.maximum}]",
            "out_of_bounds",
        )
    numeric[spec.name][i] = number
    return None


def _as_id(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and 0 < len(value) <= MAX_STRING_LENGTH):
        return value
    if type(value) is int:
        return str(value)
    raise ValueError(f"must be a string of at most {MAX_STRING_LENGTH} characters or null")


def _as_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date-time string or null")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 date-time") from None


def _optional_list(payload: dict[str, Any], key: str, n: int, errors: list[dict[str, Any]], convert: Any) -> list[Any]:
    values = payload.get(key)
    if values is None:
        return [None] * n
    if not isinstance(values, list) or len(values) != n:
        errors.append(_err([key], f"{key!r} must be a list with one entry per record ({n})", "length_mismatch"))
        return [None] * n
    out = []
    for i, value in enumerate(values):
        try:
            out.append(convert(value))
        except ValueError as exc:
            errors.append(_err([key, i], f"{key}[{i}] {exc}", "type_error"))
            out.append(None)
    return out
