"""The reviewed expectation suites: ``expectations/<name>.json`` in GX's own format, read, checked and written."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.core.errors import ConfigError

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite


SUITE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


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
