"""An answered request as the service hands it to the prediction log, and its records rebuilt from it.

The service hands over each answered request as it came (the raw JSON body it already validated, the model's output
and decisions as bytes, a few ids): microseconds per request, whatever its size. The log stores it so, one row per
request (:mod:`pipelines.serving.request_log`), and turns it into per-record rows later, with the functions here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from itertools import repeat
from typing import Any

import numpy as np

from pipelines.serving.answers import predicted_index
from pipelines.serving.log_inserts import PreparedRow, event_text, served_value
from pipelines.serving.log_tables import PredictionRecord


@dataclass(frozen=True)
class LoggedRequest:
    """One answered request, as the service hands it over: cheap to build and to pickle.

    ``outputs`` is the model's output as float64 bytes: P(positive) per record (binary), the class probabilities
    row by row (multiclass, ``size x len(classes)``) or the values (regression); ``decisions`` the binary decisions
    as int8 bytes (empty for the other tasks).
    """

    dataset: str
    request_id: str
    served_at: datetime
    model_name: str
    model_version: str
    body: bytes
    outputs: bytes
    decisions: bytes
    size: int
    task: str = "binary"
    classes: tuple[str, ...] = ()


def records_of(request: LoggedRequest) -> list[PredictionRecord]:
    """The request's records, rebuilt from its (already validated) body and the model's output."""
    import orjson

    payload = orjson.loads(request.body)
    records = payload["records"]
    ids = payload.get("ids") or [None] * request.size
    times = payload.get("event_times") or [None] * request.size
    if request.task == "binary":  # the common case, kept as lean as it was: no per-record work beyond the record
        proba = np.frombuffer(request.outputs, dtype=np.float64).tolist()
        decisions = np.frombuffer(request.decisions, dtype=np.int8).tolist()
        return [
            PredictionRecord(
                dataset=request.dataset,
                request_id=request.request_id,
                record_index=i,
                record_id=None if ids[i] is None else str(ids[i]),
                served_at=request.served_at,
                event_time=None if times[i] is None else datetime.fromisoformat(times[i]),
                model_name=request.model_name,
                model_version=request.model_version,
                features=records[i],
                probability=proba[i],
                decision=decisions[i],
            )
            for i in range(request.size)
        ]
    outputs = _task_outputs(request)
    return [
        PredictionRecord(
            dataset=request.dataset,
            request_id=request.request_id,
            record_index=i,
            record_id=None if ids[i] is None else str(ids[i]),
            served_at=request.served_at,
            event_time=None if times[i] is None else datetime.fromisoformat(times[i]),
            model_name=request.model_name,
            model_version=request.model_version,
            features=records[i],
            probability=None,
            decision=None,
            **outputs[i],
        )
        for i in range(request.size)
    ]


def rows_of(request: LoggedRequest, text_times: bool) -> list[PreparedRow]:
    """The request's rows as the driver inserts them (:func:`records_of` then ``tuple_row``, without the record
    objects in between: what is the same for the whole request is converted once)."""
    import orjson

    payload = orjson.loads(request.body)
    n = request.size
    ids = payload.get("ids") or [None] * n
    times = payload.get("event_times") or [None] * n
    head = (request.dataset, request.request_id)
    served = served_value(request.served_at, text_times)
    model = (request.model_name, str(request.model_version))
    events = [event_text(t, text_times) for t in times]
    record_ids = [None if x is None else str(x) for x in ids]
    features = [orjson.dumps(r, option=orjson.OPT_SERIALIZE_NUMPY).decode() for r in payload["records"]]
    if request.task == "binary":
        proba = np.frombuffer(request.outputs, dtype=np.float64).tolist()
        decisions = np.frombuffer(request.decisions, dtype=np.int8).tolist()
        dataset, request_id = head
        name, version = model
        columns = (repeat(dataset), repeat(request_id), range(n), record_ids, repeat(served), events)
        # zip builds the row tuples in C: a third of the cost of a comprehension unpacking into each row
        return list(map(PreparedRow, zip(*columns, repeat(name), repeat(version), features, proba, decisions)))
    outputs = _task_outputs(request)
    return [
        PreparedRow(
            (
                *head,
                i,
                record_ids[i],
                served,
                events[i],
                *model,
                features[i],
                None,
                None,
                outputs[i].get("prediction"),
                outputs[i].get("predicted_class"),
                None if "probabilities" not in outputs[i] else orjson.dumps(outputs[i]["probabilities"]).decode(),
            )
        )
        for i in range(n)
    ]


def _task_outputs(request: LoggedRequest) -> list[dict[str, Any]]:
    """Per record of a multiclass or regression request, its output columns in the prediction log."""
    values = np.frombuffer(request.outputs, dtype=np.float64)
    if request.task == "regression":
        return [{"prediction": v} for v in values.tolist()]
    if request.task == "multiclass":
        classes = request.classes
        proba = values.reshape(request.size, len(classes))
        predicted = [classes[i] for i in predicted_index(proba).tolist()]
        return [
            {"predicted_class": predicted[i], "probabilities": dict(zip(classes, row, strict=True))}
            for i, row in enumerate(proba.tolist())
        ]
    raise ValueError(f"request {request.request_id}: unknown task {request.task!r}")


_TASKS = ("binary", "multiclass", "regression")


def check_request(request: LoggedRequest) -> None:
    """Raise ValueError when a handed-over request cannot become records: an unknown task, or outputs that do not
    match its size (checked when it is handed over, so that it is counted dropped then, not stored)."""
    if request.task not in _TASKS:
        raise ValueError(f"unknown task {request.task!r}")
    width = len(request.classes) if request.task == "multiclass" else 1
    if request.size < 1 or width < 1 or len(request.outputs) != 8 * request.size * width:
        raise ValueError(f"{len(request.outputs)} bytes of outputs for {request.size} records of width {width}")
    if request.task == "binary" and len(request.decisions) != request.size:
        raise ValueError(f"{len(request.decisions)} decisions for {request.size} records")
