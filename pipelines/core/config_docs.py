"""The dataset config reference in ``docs/datasets.md``, generated from the pydantic models of ``config.py``.

Every model reachable from :class:`~pipelines.core.config.DatasetConfig` gets a section named by its YAML path
(``source``, ``source.seed``, ``features[]``...) with its docstring and a table of its fields: type (with its
constraints), default and description (the field's ``description``, else the docstring of the model it holds).
The section lives between two markers; ``python -m pipelines config-reference`` rewrites it and a unit test fails
when the committed one is out of date.
"""

from __future__ import annotations

import inspect
import json
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from pipelines.core.config import LOWER_IS_BETTER, TASK_METRICS, DatasetConfig

START_MARKER = "<!-- config-reference:start -->"
END_MARKER = "<!-- config-reference:end -->"
REGENERATE = "python -m pipelines config-reference"
_CONSTRAINTS = {
    annotated_types.Ge: ("≥", "ge"),
    annotated_types.Gt: (">", "gt"),
    annotated_types.Le: ("≤", "le"),
    annotated_types.Lt: ("<", "lt"),
    annotated_types.MinLen: ("at least", "min_length"),
    annotated_types.MaxLen: ("at most", "max_length"),
}


@dataclass(frozen=True)
class Section:
    """One model of the config, at the YAML path where it appears."""

    path: str
    model: type[BaseModel]


def sections(root: type[BaseModel] = DatasetConfig) -> list[Section]:
    """Every model reachable from ``root``, depth first in field order, each once (at its first path)."""
    seen: set[type[BaseModel]] = set()
    found: list[Section] = []

    def visit(path: str, model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        found.append(Section(path, model))
        for name, field in model.model_fields.items():
            for nested, many in _nested_models(field.annotation):
                visit(f"{path}.{name}{'[]' if many else ''}".lstrip("."), nested)

    visit("", root)
    return found


def undocumented_fields(root: type[BaseModel] = DatasetConfig) -> list[str]:
    """``path.field`` of every field with neither a description nor a nested model's docstring."""
    return [
        _field_path(section.path, name)
        for section in sections(root)
        for name, field in section.model.model_fields.items()
        if not _description(field)
    ]


def render_reference(root: type[BaseModel] = DatasetConfig) -> str:
    """The reference as Markdown: one section per model, one table row per field."""
    parts = [
        f"<!-- Generated from pipelines/core/config.py by `{REGENERATE}`: do not edit by hand. -->",
        "",
    ]
    anchors = {s.model: _anchor(s) for s in sections(root)}
    for section in sections(root):
        parts += [f"### {_title(section)}", "", _docstring(section.model), ""]
        parts += ["| field | type | default | description |", "|---|---|---|---|"]
        for name, field in section.model.model_fields.items():
            cells = [f"`{name}`", _type(field, anchors), _default(field), _description(field)]
            parts.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        parts.append("")
    parts += _metrics_section()
    return "\n".join(parts).rstrip() + "\n"


def _metrics_section() -> list[str]:
    """The metrics a policy may name per task (``TASK_METRICS``), lower-is-better ones marked."""
    rows = [
        f"| `{task}` | {', '.join(f'`{m}`' + (' (lower is better)' if m in LOWER_IS_BETTER else '') for m in names)} |"
        for task, names in TASK_METRICS.items()
    ]
    return [
        "### Metrics a policy may name, per task",
        "",
        "`gate.floors`, `gate.max_regression`, `gate.slice_floor.metric`, `retraining.performance_floor` and "
        "`retraining.max_drop` take only these (`pipelines.core.config.TASK_METRICS`).",
        "",
        "| task | metrics |",
        "|---|---|",
        *rows,
    ]


def replace_reference(document: str, reference: str) -> str:
    """``document`` with the text between the markers replaced by ``reference``; a ValueError without markers."""
    start, end = document.find(START_MARKER), document.find(END_MARKER)
    if start < 0 or end < start:
        raise ValueError(f"the document has no {START_MARKER} ... {END_MARKER} section")
    return f"{document[: start + len(START_MARKER)]}\n\n{reference}\n{document[end:]}"


def write_reference(path: Path) -> bool:
    """Rewrite the reference section of ``path``; whether the file changed."""
    document = path.read_text()
    updated = replace_reference(document, render_reference())
    if updated != document:
        path.write_text(updated)
    return updated != document


def reference_is_current(path: Path) -> bool:
    """Whether the reference section of ``path`` is what the models generate today."""
    document = path.read_text()
    return replace_reference(document, render_reference()) == document


def _nested_models(annotation: Any) -> Iterator[tuple[type[BaseModel], bool]]:
    """The models a field holds, and whether as items of a list."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        yield annotation, False
        return
    origin = get_origin(annotation)
    for arg in get_args(annotation):
        for model, many in _nested_models(arg):
            yield model, many or origin is list


def _field_path(section_path: str, name: str) -> str:
    return f"{section_path}.{name}" if section_path else name


def _title(section: Section) -> str:
    return f"`{section.path}` ({section.model.__name__})" if section.path else f"{section.model.__name__} (the file)"


def _anchor(section: Section) -> str:
    """GitHub's anchor of the section's heading."""
    slug = re.sub(r"[^\w\- ]", "", _title(section).lower()).replace(" ", "-")
    return f"#{slug}"


def _docstring(model: type[BaseModel]) -> str:
    return inspect.cleandoc(model.__doc__ or "").replace("``", "`")


def _description(field: FieldInfo) -> str:
    if field.description:
        return field.description.replace("``", "`")
    models = [m for m, _ in _nested_models(field.annotation)]
    return _docstring(models[0]).split("\n\n")[0].replace("\n", " ") if models else ""


def _type(field: FieldInfo, anchors: dict[type[BaseModel], str]) -> str:
    text = _type_name(field.annotation, anchors)
    constraints = [f"{word} {getattr(m, attr)}" for m in field.metadata for word, attr in _constraints(m)]
    pattern = next((m.pattern for m in field.metadata if getattr(m, "pattern", None)), None)
    if pattern:
        constraints.append(f"matching `{pattern}`")
    return f"{text} ({', '.join(constraints)})" if constraints else text


def _constraints(meta: Any) -> list[tuple[str, str]]:
    """(word, attribute) of the bound ``meta`` sets, e.g. ("≥", "ge") for ``Field(ge=1)``."""
    return [words for kind, words in _CONSTRAINTS.items() if isinstance(meta, kind)]


def _type_name(annotation: Any, anchors: dict[type[BaseModel], str]) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "null"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}]({anchors[annotation]})" if annotation in anchors else annotation.__name__
    if origin is Literal:
        return " \\| ".join(f"`{json.dumps(a)}`" for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a, anchors) for a in args)
    if origin is list:
        return f"list of {_type_name(args[0], anchors)}"
    if origin is dict:
        return f"mapping of {_type_name(args[0], anchors)} to {_type_name(args[1], anchors)}"
    names = {str: "string", int: "integer", float: "number", bool: "boolean", date: "date (YYYY-MM-DD)", Any: "any"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "its defaults"
    if isinstance(value, date):
        return f"`{value.isoformat()}`"
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    """Table-safe: no line breaks, and a pipe outside an escape would end the cell."""
    return re.sub(r"(?<!\\)\|", r"\\|", text.replace("\n", " "))
