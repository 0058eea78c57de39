"""The answer to ``POST /predict`` per task, and what the prediction log gets of it.

- binary: ``{"id", "probability", "decision"}``: P(positive class) and ``probability >= threshold`` as 0/1;
- multiclass: ``{"id", "class", "probabilities"}``: the most probable class (the first in the model's class order
  on a tie) and the probability of every class, by class name;
- regression: ``{"id", "value"}``: the predicted value.

The log gets the raw output as bytes (float64: ``n`` values, or ``n x k`` row by row for multiclass) and, for
binary, the decisions (int8): the writer process rebuilds the records from them, off the request path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

EMPTY = b""


@dataclass(frozen=True)
class Answer:
    """The per-record answers of one request, and the model output as the prediction log takes it."""

    predictions: list[dict[str, Any]]
    outputs: bytes
    decisions: bytes


def answer(
    task: str, output: np.ndarray, ids: list[str | None], threshold: float, classes: tuple[str, ...] = ()
) -> Answer:
    """The answers to a batch of ``len(ids)`` records from the predictor's ``output`` for ``task``."""
    if task == "binary":
        return binary_answer(output, ids, threshold)
    if task == "multiclass":
        return multiclass_answer(output, ids, classes)
    if task == "regression":
        return regression_answer(output, ids)
    raise ValueError(f"unknown task {task!r}")


def binary_answer(proba: np.ndarray, ids: list[str | None], threshold: float) -> Answer:
    """``probability`` and ``decision`` per record (the lean path the serving benchmark measures)."""
    decided = (proba >= threshold).astype(np.int8)
    decisions = decided.tolist()
    probabilities = proba.tolist()
    return Answer(
        predictions=[
            {"id": ids[i], "probability": probabilities[i], "decision": decisions[i]} for i in range(len(ids))
        ],
        outputs=np.ascontiguousarray(proba, np.float64).tobytes(),
        decisions=decided.tobytes(),
    )


def multiclass_answer(proba: np.ndarray, ids: list[str | None], classes: tuple[str, ...]) -> Answer:
    """The predicted ``class`` and every class's probability per record."""
    if proba.ndim != 2 or proba.shape[1] != len(classes):
        raise ValueError(f"class probabilities of shape {proba.shape} do not match the {len(classes)} classes")
    predicted = [classes[i] for i in predicted_index(proba).tolist()]
    rows = proba.tolist()
    return Answer(
        predictions=[
            {"id": ids[i], "class": predicted[i], "probabilities": dict(zip(classes, rows[i], strict=True))}
            for i in range(len(ids))
        ],
        outputs=np.ascontiguousarray(proba, np.float64).tobytes(),
        decisions=EMPTY,
    )


def regression_answer(values: np.ndarray, ids: list[str | None]) -> Answer:
    """The predicted ``value`` per record."""
    listed = values.tolist()
    return Answer(
        predictions=[{"id": ids[i], "value": listed[i]} for i in range(len(ids))],
        outputs=np.ascontiguousarray(values, np.float64).tobytes(),
        decisions=EMPTY,
    )


def predicted_index(proba: np.ndarray) -> np.ndarray:
    """Index of the most probable class per row (the first one on a tie, as scikit-learn's ``predict``)."""
    return np.asarray(np.argmax(proba, axis=1))


def response_schema(task: str) -> dict[str, Any]:
    """The JSON schema of one answered record of ``task``, for the OpenAPI page."""
    record_id = {"type": ["string", "null"], "description": "The id sent with the record, if any"}
    if task == "multiclass":
        properties: dict[str, Any] = {
            "id": record_id,
            "class": {"type": "string", "description": "The most probable class"},
            "probabilities": {
                "type": "object",
                "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1},
                "description": "Probability of each class (the classes are listed by GET /model)",
            },
        }
    elif task == "regression":
        properties = {"id": record_id, "value": {"type": "number", "description": "The predicted value"}}
    else:
        properties = {
            "id": record_id,
            "probability": {"type": "number", "minimum": 0, "maximum": 1, "description": "P(positive class)"},
            "decision": {"type": "integer", "enum": [0, 1], "description": "1 when probability >= the threshold"},
        }
    return {"type": "object", "required": list(properties), "properties": properties}
