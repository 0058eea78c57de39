"""The Open Inference Protocol (KServe v2) REST API in terms of ``POST /predict``: pure conversions, no I/O.

Why: KServe, Triton and MLServer clients speak the Open Inference Protocol (OIP): one named, typed and shaped
tensor per input and per output. The service answers it next to ``POST /predict/{dataset}`` (the dataset's name is
the model's name) so such clients work unchanged. This module only translates, so that both routes share one
contract check (:func:`~pipelines.serving.parsing.parse_batch`) and give the same numbers:

- :func:`model_metadata`: the ``GET /v2/models/{name}`` body: an input per contract feature, the task's outputs;
- :func:`to_payload`: an infer request (columns) -> the ``/predict`` payload (records) and the requested outputs;
  the request's structure is checked first, cheaply (a hostile body costs no work per element), then
  ``parse_batch`` checks types, nulls and bounds as on ``/predict``;
- :func:`check_outputs`: the requested outputs exist for the task (call it before scoring);
- :func:`oip_error` and :func:`error_body`: ``parse_batch``'s errors located in the infer request, and the error
  body (``{"error": ...}`` as the protocol says, plus every located problem in ``detail``);
- :func:`to_response`: the predictor's output -> the infer response, with exactly the floats ``/predict`` answers.

Status codes: 400 when the body is not a well-formed infer request (JSON types, required or unknown fields, shape
against data, binary or shared-memory tensors, outputs the model does not produce); 422 when a well-formed request
does not fit the model's input contract (a missing, unknown or repeated input, a datatype that does not fit the
feature, a shape other than ``[n]`` or ``[n, 1]``, inputs of different ``n``, no rows, and what ``parse_batch``
finds); 413 beyond ``max_records`` rows. When both 400 and 422 problems are found, the answer is 400. Every error
names its place (``["inputs", 3, "datatype"]``, ``["inputs", "temp"]``, ``["inputs", "temp", "data", 7]``); at
most 20 are reported.

This server's extensions: a JSON ``null`` in ``data`` is a missing value where the feature may be null (JSON has
no NaN); two optional inputs, ``_id`` (BYTES or INT64) and ``_event_time`` (BYTES, ISO 8601), carry each row's id
and event time to the prediction log, as ``ids`` and ``event_times`` do on ``/predict``. Optional fields sent as
``null`` count as absent. Tensor data must be in the JSON (tritonclient: ``binary_data=False`` on each input); the
answer is always JSON, which clients read whatever ``binary_data`` they asked for on the outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np

from pipelines.serving.answers import predicted_index
from pipelines.serving.parsing import InputError
from pipelines.training.contract import InputContract

PLATFORM = "sklearn"
ID_INPUT = "_id"
EVENT_TIME_INPUT = "_event_time"
OPTIONAL_INPUTS = (ID_INPUT, EVENT_TIME_INPUT)

NUMERIC_DATATYPES = ("FP64", "FP32", "FP16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
DATATYPES = frozenset((*NUMERIC_DATATYPES, "BOOL", "BYTES", "BF16"))  # every datatype of the protocol
# The datatypes each kind of input takes.
ACCEPTED_DATATYPES: dict[str, tuple[str, ...]] = {
    "numeric": NUMERIC_DATATYPES,
    "categorical": ("BYTES",),
    ID_INPUT: ("BYTES", "INT64"),
    EVENT_TIME_INPUT: ("BYTES",),
}
# The outputs of each task, in the order of the metadata and of every response: (name, datatype).
OUTPUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "binary": (("probability", "FP64"), ("decision", "INT64")),
    "multiclass": (("probabilities", "FP64"), ("class", "BYTES")),
    "regression": (("value", "FP64"),),
}

_MAX_ERRORS = 20
_SHOWN_IN_ERROR = 3  # messages joined into the one-line ``error`` of an error body
_MAX_OUTPUTS = max(len(outputs) for outputs in OUTPUTS.values())
_REQUEST_KEYS = frozenset({"id", "parameters", "inputs", "outputs"})
_INPUT_KEYS = frozenset({"name", "datatype", "shape", "data", "parameters"})
_OUTPUT_KEYS = frozenset({"name", "parameters"})
_NOT_IN_JSON = ("binary_data_size", "shared_memory_region")  # input parameters of data sent outside the JSON
_UNSUPPORTED_OUTPUT_PARAMETERS = ("classification", "shared_memory_region")


def model_metadata(
    name: str, version: str | None, contract: InputContract, task: str, classes: tuple[str, ...]
) -> dict[str, Any]:
    """The ``GET /v2/models/{name}`` body: an input per feature in model order, the outputs of ``task``."""
    shapes = {"probabilities": [-1, len(classes)]}
    parameters: dict[str, Any] = {"task": task}
    if task == "multiclass":
        parameters["classes"] = list(classes)
    parameters["optional_inputs"] = list(OPTIONAL_INPUTS)
    return {
        "name": name,
        "versions": [version] if version else [],
        "platform": PLATFORM,
        "inputs": [
            {"name": spec.name, "datatype": "FP64" if spec.kind == "numeric" else "BYTES", "shape": [-1]}
            for spec in contract.fields
        ],
        "outputs": [
            {"name": output, "datatype": datatype, "shape": shapes.get(output, [-1])}
            for output, datatype in _outputs(task)
        ],
        "parameters": parameters,
    }


def to_payload(
    body: Any, contract: InputContract, *, max_records: int | None = None
) -> tuple[dict[str, Any], list[str] | None]:
    """An infer request (decoded JSON) as the ``/predict`` payload, and the names of the requested outputs (None:
    all of them); raise :class:`InputError` naming every structural problem (at most 20).

    The values are passed through untouched, so :func:`~pipelines.serving.parsing.parse_batch` checks them; pass
    its errors through :func:`oip_error`. More rows than ``max_records`` get a 413 before any work per row.
    """
    if not isinstance(body, dict):
        raise InputError(400, [_err([], "an infer request must be a JSON object with an 'inputs' list", "type_error")])
    problems = _Problems()
    problems.unknown_keys(body, _REQUEST_KEYS, [], "an infer request")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        problems.add(400, ["id"], "'id' must be a string", "type_error")
    parameters = body.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        problems.add(400, ["parameters"], "'parameters' must be an object", "type_error")
    requested = _requested_outputs(body.get("outputs"), problems)
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        problems.add(400, ["inputs"], "'inputs' must be a non-empty list of input tensors", "missing")
        raise InputError(problems.status, problems.errors)
    most = len(contract.fields) + len(OPTIONAL_INPUTS)
    if len(inputs) > most:
        msg = (
            f"{len(inputs)} inputs, but the model takes one per feature ({len(contract.fields)}) "
            f"and the optional {list(OPTIONAL_INPUTS)}"
        )
        problems.add(422, ["inputs"], msg, "too_many_inputs")
        raise InputError(problems.status, problems.errors)
    columns = _columns(inputs, contract, problems, max_records)
    problems.raise_if_any()

    names = contract.names
    payload: dict[str, Any] = {
        "records": [dict(zip(names, row, strict=True)) for row in zip(*(columns[n] for n in names), strict=True)]
    }
    if ID_INPUT in columns:
        payload["ids"] = columns[ID_INPUT]
    if EVENT_TIME_INPUT in columns:
        payload["event_times"] = columns[EVENT_TIME_INPUT]
    if request_id is not None:
        payload["request_id"] = request_id
    return payload, requested


def check_outputs(task: str, requested: list[str] | None) -> None:
    """Raise :class:`InputError` (400) for a requested output that ``task``'s models do not produce."""
    if requested is None:
        return
    available = [output for output, _ in _outputs(task)]
    errors = [
        _err(["outputs", j, "name"], f"unknown output {_show(name)}: this model's outputs are {available}", "unknown")
        for j, name in enumerate(requested)
        if name not in available
    ]
    if errors:
        raise InputError(400, errors[:_MAX_ERRORS])


def oip_error(exc: InputError) -> InputError:
    """``exc`` from ``parse_batch`` with its locations in the infer request: ``["records", i, field]`` becomes
    ``["inputs", field, "data", i]``, ``ids`` and ``event_times`` the data of ``_id`` and ``_event_time``,
    ``request_id`` the ``id``; messages about a row start with it (``row 3: ...``). Errors of :func:`to_payload`
    (and any other) pass unchanged, so it may wrap every error of the route."""
    return InputError(exc.status, [_relocated(error) for error in exc.errors])


def error_body(exc: InputError) -> dict[str, Any]:
    """The error body: ``error`` is the first messages on one line (what Triton and KServe clients show),
    ``detail`` every problem with its location."""
    messages = [str(error.get("msg", "")) for error in exc.errors]
    text = "; ".join(messages[:_SHOWN_IN_ERROR])
    if len(messages) > _SHOWN_IN_ERROR:
        text += f"; and {len(messages) - _SHOWN_IN_ERROR} more (see 'detail')"
    return {"error": text or "invalid request", "detail": exc.errors}


def to_response(
    name: str,
    version: str,
    request_id: str,
    task: str,
    output: np.ndarray,
    threshold: float,
    classes: tuple[str, ...],
    requested: list[str] | None,
) -> dict[str, Any]:
    """The infer response for the predictor's ``output``: the requested outputs (None: all) in metadata order.

    The numbers are the ones :func:`~pipelines.serving.answers.answer` gives ``/predict``: the same array
    ``tolist()``, the same decision rule (``output >= threshold``) and tie-break (:func:`predicted_index`).
    """
    check_outputs(task, requested)
    n = len(output)
    tensors: dict[str, tuple[list[int], list[Any]]]
    if task == "binary":
        tensors = {
            "probability": ([n], output.tolist()),
            "decision": ([n], (output >= threshold).astype(np.int8).tolist()),
        }
    elif task == "multiclass":
        if output.ndim != 2 or output.shape[1] != len(classes):
            raise ValueError(f"class probabilities of shape {output.shape} do not match the {len(classes)} classes")
        tensors = {
            "probabilities": ([n, len(classes)], output.ravel().tolist()),  # ravel: row-major, whatever the layout
            "class": ([n], [classes[i] for i in predicted_index(output).tolist()]),
        }
    else:
        tensors = {"value": ([n], output.tolist())}
    return {
        "model_name": name,
        "model_version": version,
        "id": request_id,
        "outputs": [
            {
                "name": output_name,
                "datatype": datatype,
                "shape": tensors[output_name][0],
                "data": tensors[output_name][1],
            }
            for output_name, datatype in _outputs(task)
            if requested is None or output_name in requested
        ],
    }


class _Problems:
    """The problems found so far (at most 20) and the status they call for: 400 if one of them does, else 422."""

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []
        self.status = 422

    @property
    def full(self) -> bool:
        return len(self.errors) >= _MAX_ERRORS

    def add(self, status: int, loc: list[Any], msg: str, kind: str) -> None:
        if not self.full:
            self.errors.append(_err(loc, msg, kind))
            if status == 400:
                self.status = 400

    def unknown_keys(self, obj: dict[str, Any], allowed: frozenset[str], loc: list[Any], what: str) -> None:
        """One problem per key of ``obj`` that is not ``allowed``, stopping when the list is full."""
        unknown = (key for key in obj if key not in allowed)
        for key in islice(unknown, _MAX_ERRORS - len(self.errors)):
            shown = key[:47] + "..." if isinstance(key, str) and len(key) > 50 else key
            msg = f"unknown field {_show(key)} in {what}; allowed: {sorted(allowed)}"
            self.add(400, [*loc, shown], msg, "extra_forbidden")

    def raise_if_any(self) -> None:
        if self.errors:
            raise InputError(self.status, self.errors)


def _err(loc: list[Any], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


def _show(value: Any) -> str:
    """``value`` for a message: a string quoted and cut at 50 characters, anything else by its type (a repr of a
    huge list would cost per element)."""
    if isinstance(value, str):
        return repr(value if len(value) <= 50 else value[:47] + "...")
    return f"a {type(value).__name__}"


def _outputs(task: str) -> tuple[tuple[str, str], ...]:
    if task not in OUTPUTS:
        raise ValueError(f"unknown task {task!r}")
    return OUTPUTS[task]


def _requested_outputs(outputs: Any, problems: _Problems) -> list[str] | None:
    """The names of the requested outputs (None: all); problems of their structure go to ``problems``."""
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        problems.add(400, ["outputs"], "'outputs' must be a list of {'name': ...} objects", "type_error")
        return None
    if len(outputs) > _MAX_OUTPUTS:
        msg = f"{len(outputs)} outputs requested; a model here has at most {_MAX_OUTPUTS} (GET the model's metadata)"
        problems.add(400, ["outputs"], msg, "too_many_outputs")
        return None
    names: list[str] = []
    for j, requested in enumerate(outputs):
        loc: list[Any] = ["outputs", j]
        if not isinstance(requested, dict):
            problems.add(400, loc, "each requested output must be an object with a 'name'", "type_error")
            continue
        problems.unknown_keys(requested, _OUTPUT_KEYS, loc, "a requested output")
        parameters = requested.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            problems.add(400, [*loc, "parameters"], "'parameters' must be an object", "type_error")
        elif parameters:
            for key in _UNSUPPORTED_OUTPUT_PARAMETERS:
                if key in parameters:
                    problems.add(
                        400, [*loc, "parameters", key], f"output parameter {key!r} is not supported", "unsupported"
                    )
        name = requested.get("name")
        if not isinstance(name, str):
            problems.add(400, [*loc, "name"], "'name' must be a string", "type_error")
        elif name in names:
            problems.add(400, [*loc, "name"], f"output {_show(name)} is requested twice", "duplicate")
        else:
            names.append(name)
    return names or None


@dataclass(frozen=True)
class _Tensor:
    """One input as sent, after its structural checks: None where a field did not pass them."""

    index: int
    name: str | None
    datatype: str | None  # one of the protocol's datatypes
    rows: int | None  # n of a shape [n] or [n, 1]
    data: list[Any] | None  # a list of ``rows`` values (or rows)
    nested: bool  # the shape is [n, 1]: data may come as [[v], [v], ...]


def _columns(
    inputs: list[Any], contract: InputContract, problems: _Problems, max_records: int | None
) -> dict[str, list[Any]]:
    """The data of each input by name, one value per row; problems go to ``problems``.

    Only work per input is done until every input has passed (its keys, name, datatype, shape and the length of
    its data); then nested data is flattened, the only work per value, on at most ``max_records`` rows.
    """
    kinds: dict[str, str] = {spec.name: spec.kind for spec in contract.fields}
    kinds.update({name: name for name in OPTIONAL_INPUTS})
    seen: dict[str, int] = {}
    first: tuple[str, int] | None = None  # the first input's name and rows: every other must have as many
    passed: list[_Tensor] = []
    for i, raw in enumerate(inputs):
        if problems.full:
            break
        tensor = _structure(raw, i, problems, max_records)
        if tensor is None or tensor.name is None or not _known(tensor, kinds, contract, seen, problems):
            continue
        fits = _datatype_fits(tensor, kinds[tensor.name], problems)
        loc = ["inputs", i, "shape"]
        if tensor.rows is None:
            continue
        if first is None:
            first = (tensor.name, tensor.rows)
            if tensor.rows == 0:  # said once: the inputs that agree with it are not wrong on their own
                problems.add(422, loc, f"input {tensor.name!r} has no rows: shape [n] needs n >= 1", "empty")
        elif tensor.rows != first[1]:
            msg = f"input {tensor.name!r} has {tensor.rows} rows but {first[0]!r} has {first[1]}: all must have as many"
            problems.add(422, loc, msg, "rows_mismatch")
            continue
        if fits and tensor.data is not None:
            passed.append(tensor)
    if not problems.full:
        for spec in contract.fields:
            if spec.name not in seen:
                datatype = ACCEPTED_DATATYPES[spec.kind][0]
                msg = f"input {spec.name!r} is missing (a {spec.kind} feature, datatype {datatype})"
                problems.add(422, ["inputs", spec.name], msg, "missing")
    if problems.errors:
        return {}
    return {t.name: _flat(t.data, t.nested, ["inputs", t.index, "data"], problems) for t in passed if t.name and t.data}


def _structure(raw: Any, index: int, problems: _Problems, max_records: int | None) -> _Tensor | None:
    """``inputs[index]`` as a :class:`_Tensor` if it is an object; problems of its structure go to ``problems``,
    and more than ``max_records`` rows raise a 413 at once."""
    loc: list[Any] = ["inputs", index]
    if not isinstance(raw, dict):
        problems.add(400, loc, "each input must be an object with name, datatype, shape and data", "type_error")
        return None
    problems.unknown_keys(raw, _INPUT_KEYS, loc, "an input")
    name, datatype, data, parameters = raw.get("name"), raw.get("datatype"), raw.get("data"), raw.get("parameters")
    if not isinstance(name, str):
        problems.add(400, [*loc, "name"], "'name' must be a string", "type_error")
        name = None
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        msg = f"'datatype' must be one of the protocol's datatypes {sorted(DATATYPES)}, got {_show(datatype)}"
        problems.add(400, [*loc, "datatype"], msg, "type_error")
        datatype = None
    if parameters is not None and not isinstance(parameters, dict):
        problems.add(400, [*loc, "parameters"], "'parameters' must be an object", "type_error")
    if not isinstance(data, list):
        if isinstance(parameters, dict) and any(key in parameters for key in _NOT_IN_JSON):
            msg = (
                "binary and shared-memory tensor data are not supported: put the values in 'data' "
                "(tritonclient: set_data_from_numpy(..., binary_data=False))"
            )
            problems.add(400, [*loc, "data"], msg, "unsupported")
        else:
            problems.add(400, [*loc, "data"], "'data' must be a list of values", "type_error")
        data = None
    rows = _rows(raw.get("shape"), [*loc, "shape"], problems)
    if rows is not None and data is not None and len(data) != rows:
        problems.add(
            400,
            [*loc, "data"],
            f"'data' has {len(data)} values but shape {raw['shape']} holds {rows}",
            "shape_mismatch",
        )
        data = rows = None  # how many rows it has is unknown: not compared with the other inputs
    if rows is not None and max_records is not None and rows > max_records:
        msg = f"{rows} rows exceed the limit of {max_records} per request"
        raise InputError(413, [_err([*loc, "shape"], msg, "too_many_records")])
    return _Tensor(index, name, datatype, rows, data, isinstance(raw.get("shape"), list) and len(raw["shape"]) == 2)


def _known(
    tensor: _Tensor, kinds: dict[str, str], contract: InputContract, seen: dict[str, int], problems: _Problems
) -> bool:
    """Whether the input names a feature (or an optional input) not given before; registers it in ``seen``."""
    loc = ["inputs", tensor.index, "name"]
    name = tensor.name
    if name not in kinds:
        allowed = f"the model takes {contract.names} and the optional {list(OPTIONAL_INPUTS)}"
        problems.add(422, loc, f"unknown input {_show(name)}: {allowed}", "extra_forbidden")
        return False
    if name in seen:
        problems.add(422, loc, f"input {name!r} is given twice (also inputs[{seen[name]}])", "duplicate")
        return False
    seen[name] = tensor.index
    return True


def _datatype_fits(tensor: _Tensor, kind: str, problems: _Problems) -> bool:
    """Whether the input's datatype fits its ``kind`` (a feature's kind, or the optional input's name)."""
    accepted = ACCEPTED_DATATYPES[kind]
    if tensor.datatype is None or tensor.datatype in accepted:
        return tensor.datatype is not None
    what = "an optional input" if kind in OPTIONAL_INPUTS else f"a {kind} feature"
    msg = f"input {tensor.name!r} is {what}: its datatype must be one of {list(accepted)}, got {tensor.datatype!r}"
    problems.add(422, ["inputs", tensor.index, "datatype"], msg, "datatype_mismatch")
    return False


def _rows(shape: Any, where: list[Any], problems: _Problems) -> int | None:
    """The number of rows of a shape ``[n]`` or ``[n, 1]``; None (and a problem at ``where``) for any other."""
    if not isinstance(shape, list):
        problems.add(400, where, "'shape' must be a list of non-negative integers", "type_error")
        return None
    if len(shape) not in (1, 2):  # before looking at the elements: a long shape costs nothing
        msg = f"'shape' must be [n] or [n, 1] (one value per row), got {len(shape)} dimensions"
        problems.add(422, where, msg, "shape_mismatch")
        return None
    if not all(type(dim) is int and dim >= 0 for dim in shape):
        problems.add(400, where, "'shape' must be a list of non-negative integers", "type_error")
        return None
    if len(shape) == 2 and shape[1] != 1:
        problems.add(422, where, f"'shape' must be [n] or [n, 1] (one value per row), got {shape}", "shape_mismatch")
        return None
    rows: int = shape[0]
    return rows


def _flat(data: list[Any], nested: bool, loc: list[Any], problems: _Problems) -> list[Any]:
    """``data`` with one value per row: flat as sent, or ``[[v], [v], ...]`` unpacked for a shape ``[n, 1]``."""
    if not any(type(value) is list for value in data):
        return data
    if nested and all(type(value) is list and len(value) == 1 for value in data):
        return [value[0] for value in data]
    msg = "'data' must be flat, or nested as its shape says ([[v], [v], ...] for [n, 1])"
    problems.add(400, loc, msg, "shape_mismatch")
    return data


def _relocated(error: dict[str, Any]) -> dict[str, Any]:
    """One ``parse_batch`` error located in the infer request (unchanged if it is not about the payload)."""
    loc = list(error.get("loc") or [])
    msg = str(error.get("msg", ""))
    head = loc[0] if loc else None
    if len(loc) == 1 and error.get("type") == "extra_forbidden":
        return error  # an unknown field of the infer request itself (from to_payload): already in its terms
    if head == "records":
        if len(loc) >= 3:
            return {**error, "loc": ["inputs", loc[2], "data", loc[1], *loc[3:]], "msg": f"row {loc[1]}: {msg}"}
        return {**error, "loc": ["inputs"]}
    if head in ("ids", "event_times"):
        name = ID_INPUT if head == "ids" else EVENT_TIME_INPUT
        if len(loc) >= 2:
            prefix = f"{head}[{loc[1]}] "
            text = msg[len(prefix) :] if msg.startswith(prefix) else msg
            return {**error, "loc": ["inputs", name, "data", *loc[1:]], "msg": f"row {loc[1]}: input {name!r} {text}"}
        return {**error, "loc": ["inputs", name]}
    if head == "request_id":
        return {**error, "loc": ["id", *loc[1:]], "msg": msg.replace("request_id", "'id'", 1)}
    return error
