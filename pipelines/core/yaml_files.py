"""Reading the project's YAML files (people, notifications, dataset configs) with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipelines.core.errors import ConfigError


def read_yaml(path: Path, what: str) -> Any:
    """The parsed content of ``path``; a ConfigError naming the file (``what``: "people file", ...) when it is
    missing or not valid YAML."""
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def validation_problems(exc: ValidationError) -> str:
    """Every problem pydantic found, as ``field.path: message`` joined by "; " (``file`` for the top level)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors())
