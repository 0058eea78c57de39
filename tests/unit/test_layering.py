"""The package's floor plan: each stage of the loop imports only the core and the stages before it, and no module
imports itself back through others (a cycle). Imports inside functions count: they are dependencies too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

# The loop's order. `cli` and `steps` wire the stages for the shell and Airflow, so they come last.
STAGES = ("core", "data", "training", "release", "serving", "monitoring", "trace", "stack")
WIRING = ("__init__", "__main__", "cli", "steps")


def stage_rank(module: str) -> int:
    """The position of ``pipelines.<stage>...`` in the loop; the wiring modules rank after every stage."""
    parts = module.split(".")
    if len(parts) < 2:
        return len(STAGES)
    if parts[1] in STAGES:
        return STAGES.index(parts[1])
    if parts[1] in WIRING:
        return len(STAGES)
    raise AssertionError(f"{module} is in no stage folder: put it in one of {STAGES} or make it wiring")


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(name: str, known: set[str]) -> str | None:
    """The longest known module that ``name`` names (``pipelines.core.audit`` or its package)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    """``{module: {imported pipelines module: line}}`` for every module under ``root`` (the package folder)."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    known = set(files)
    graph: dict[str, dict[str, int]] = {}
    for module, path in files.items():
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            for target in targets:
                found = _resolve(target, known) if target.split(".")[0] == root.name else None
                if found and found != module and found not in edges:
                    edges[found] = node.lineno
        # `from pipelines.core import audit` names both the package and the module: keep the module only
        for name in list(edges):
            if any(other.startswith(name + ".") for other in edges) and files[name].name == "__init__.py":
                del edges[name]
        graph[module] = edges
    return graph


def layering_violations(root: Path) -> list[str]:
    """Imports that run against the loop's order, each naming the file, line and both modules."""
    graph = import_graph(root)
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    found = []
    for module, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            if stage_rank(target) > stage_rank(module):
                found.append(
                    f"{files[module].relative_to(root.parent)}:{line}: {module} imports {target} "
                    f"({target.split('.')[1]} comes after {module.split('.')[1]} in {' -> '.join(STAGES)})"
                )
    return found


def import_cycles(root: Path) -> list[list[str]]:
    """Every cycle of modules importing each other (each once, from its smallest module)."""
    graph = import_graph(root)
    cycles: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in graph.get(node, {}):
            if nxt == start:
                key = tuple(sorted(path))
                if key not in seen:
                    seen.add(key)
                    cycles.append([*path, start])
            elif nxt not in path and nxt > start:
                walk(start, nxt, [*path, nxt])

    for module in sorted(graph):
        walk(module, module, [module])
    return cycles


PACKAGE = REPO_ROOT / "pipelines"


def test_every_stage_imports_only_the_core_and_earlier_stages() -> None:
    # given the package as it is; when its imports are read; then none runs against the loop's order
    assert layering_violations(PACKAGE) == []


def test_no_modules_import_each_other_in_a_cycle() -> None:
    assert import_cycles(PACKAGE) == []


def test_every_module_sits_in_a_stage_folder_or_wires_them() -> None:
    for module in import_graph(PACKAGE):
        stage_rank(module)  # raises, naming the module, when it is in no stage


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pipelines"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_planted_import_against_the_flow_is_named(tmp_path: Path) -> None:
    # given a training module that imports the serving stage (inside a function, as lazy imports are)
    root = _plant(
        tmp_path,
        {
            "__init__.py": "",
            "core/__init__.py": "",
            "core/config.py": "",
            "training/__init__.py": "",
            "training/train.py": "def f():\n    from pipelines.serving import app\n",
            "serving/__init__.py": "",
            "serving/app.py": "from pipelines.training.train import f\n",
        },
    )
    # when the layering is checked, then the offending import is named with its file and line
    assert layering_violations(root) == [
        "pipelines/training/train.py:2: pipelines.training.train imports pipelines.serving.app "
        "(serving comes after training in core -> data -> training -> release -> serving -> monitoring -> trace "
        "-> stack)"
    ]
    # and the two modules form a cycle
    assert import_cycles(root) == [["pipelines.serving.app", "pipelines.training.train", "pipelines.serving.app"]]


def test_a_module_outside_the_stages_is_refused(tmp_path: Path) -> None:
    root = _plant(tmp_path, {"__init__.py": "", "helpers.py": ""})
    with pytest.raises(AssertionError, match=r"pipelines\.helpers is in no stage folder"):
        for module in import_graph(root):
            stage_rank(module)
