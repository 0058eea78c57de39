"""The input contract of a model: the fields it takes, their kinds, nullability and bounds.

A contract lists each input field in model order: its kind (categorical strings or numbers), whether it may be
null, and its bounds. It is written into the model's MLmodel metadata at training time (from the dataset config
and the reviewed expectation suite), so a model carries its own contract; a model without one gets a contract
from its MLflow signature (names and types, no bounds).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from pipelines.core.config import DatasetConfig

METADATA_KEY = "mlops.input_contract"
THRESHOLD_KEY = "mlops.threshold"  # the decision threshold (binary), in the same MLmodel metadata
TASK_KEY = "mlops.task"  # binary, multiclass or regression
CLASSES_KEY = "mlops.classes"  # multiclass: the classes, in the order of the probability columns
POSITIVE_KEY = "mlops.positive_class"  # binary: what class 1 means in the data's terms
MAX_STRING_LENGTH = 200

# Bounds of the features derived from the time column (pandas' .dt accessors).
DERIVED_BOUNDS: dict[str, tuple[float, float]] = {
    "hour": (0, 23),
    "dayofweek": (0, 6),
    "month": (1, 12),
    "dayofyear": (1, 366),
}


@dataclass(frozen=True)
class FieldSpec:
    """One input field of the model."""

    name: str
    kind: Literal["categorical", "numeric"]
    nullable: bool = True
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class InputContract:
    """The fields a model takes, in model order."""

    fields: tuple[FieldSpec, ...]
    source: str = "config"

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "fields": [asdict(f) for f in self.fields]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputContract:
        return cls(fields=tuple(FieldSpec(**f) for f in data["fields"]), source=str(data.get("source", "config")))

    def json_schema(self) -> dict[str, Any]:
        """JSON schema of one record (for the OpenAPI page)."""
        props: dict[str, Any] = {}
        for spec in self.fields:
            base: dict[str, Any] = (
                {"type": "string", "maxLength": MAX_STRING_LENGTH} if spec.kind == "categorical" else {"type": "number"}
            )
            if spec.minimum is not None:
                base["minimum"] = spec.minimum
            if spec.maximum is not None:
                base["maximum"] = spec.maximum
            props[spec.name] = {"anyOf": [base, {"type": "null"}]} if spec.nullable else base
        return {"type": "object", "properties": props, "required": self.names, "additionalProperties": False}


def contract_from_config(config: DatasetConfig, suite: dict[str, Any] | None) -> InputContract:
    """The contract of a model trained on ``config``: types from the config, bounds and nullability from the suite.

    A suite's ``expect_column_values_to_be_between`` on a feature gives its bounds; ``..._to_not_be_null`` without
    ``mostly`` makes it required. Features derived from the time column get their calendar bounds and are required.
    """
    bounds: dict[str, tuple[float | None, float | None]] = {}
    required: set[str] = set()
    for exp in (suite or {}).get("expectations", []):
        kwargs = exp.get("kwargs", {})
        column = kwargs.get("column")
        if exp.get("type") == "expect_column_values_to_be_between":
            bounds[column] = (kwargs.get("min_value"), kwargs.get("max_value"))
        elif exp.get("type") == "expect_column_values_to_not_be_null" and kwargs.get("mostly", 1.0) >= 1.0:
            required.add(column)
    fields = []
    for feature in config.features:
        if feature.derive is not None:
            lo, hi = DERIVED_BOUNDS[feature.derive]
            fields.append(FieldSpec(feature.name, feature.type, nullable=False, minimum=lo, maximum=hi))
            continue
        lo_b, hi_b = bounds.get(feature.name, (None, None)) if feature.type == "numeric" else (None, None)
        fields.append(
            FieldSpec(
                feature.name,
                feature.type,
                nullable=feature.name not in required,
                minimum=None if lo_b is None else float(lo_b),
                maximum=None if hi_b is None else float(hi_b),
            )
        )
    return InputContract(tuple(fields), source=f"config:{config.name}+suite:{config.expectation_suite}")


_NUMERIC_TYPES = {"double", "float", "long", "integer"}


def contract_from_signature(inputs: list[dict[str, Any]]) -> InputContract:
    """A contract from an MLflow signature's column specs (``[{"name", "type"}]``): no bounds, nulls allowed."""
    fields = []
    for col in inputs:
        kind: Literal["categorical", "numeric"] = "numeric" if col.get("type") in _NUMERIC_TYPES else "categorical"
        fields.append(FieldSpec(str(col["name"]), kind, nullable=True))
    return InputContract(tuple(fields), source="signature")
