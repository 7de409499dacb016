"""The folders are the architecture: a lower room never imports a higher one.

core ← store ← rollout, deciders ← learning ← activities ← workflows ← devstack, worker ← cli.
Every import counts, at module level or inside a function (a lazy import is still a
dependency). ``core`` imports nothing but the standard library, pydantic (with
pydantic-settings), temporalio and cryptography (the payload codec); workflow modules
import only temporalio and the standard library outside
``workflow.unsafe.imports_passed_through()``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "delegation"

# Each room and the rooms it may import (besides itself).
MAY_IMPORT: dict[str, set[str]] = {
    "core": set(),
    "store": {"core"},
    "rollout": {"core", "store"},
    "deciders": {"core", "store"},
    "learning": {"core", "store", "rollout", "deciders"},
    "activities": {"core", "store", "rollout", "deciders", "learning"},
    "workflows": {"core", "store", "rollout", "deciders", "learning", "activities"},
    "devstack": {"core", "store", "rollout", "deciders", "learning", "activities", "workflows"},
    "worker": {"core", "store", "rollout", "deciders", "learning", "activities", "workflows", "devstack"},
    "cli": {"core", "store", "rollout", "deciders", "learning", "activities", "workflows", "devstack", "worker"},
}
# cryptography: payload encryption (core/codec.py) is part of the wire contract every client needs.
CORE_MAY_IMPORT = {"pydantic", "pydantic_core", "pydantic_settings", "temporalio", "cryptography"}
WORKFLOW_MODULES = ("delegation.py", "feedback.py", "reoptimization.py")


def _module_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            # `from delegation import x` names a room through the alias.
            found += [(node.lineno, n) for n in names] if node.module == "delegation" else [(node.lineno, node.module)]
    return found


def _room(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0]


def test_every_file_is_in_a_known_room() -> None:
    rooms = {_room(p) for p in _module_files()}
    assert rooms <= set(MAY_IMPORT), f"folders without a place in the layering: {rooms - set(MAY_IMPORT)}"


@pytest.mark.parametrize("path", _module_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    room = _room(path)
    wrong = []
    for line, name in _imports(ast.parse(path.read_text(encoding="utf-8"))):
        parts = name.split(".")
        if parts[0] != "delegation" or len(parts) < 2:
            continue
        target = parts[1]
        if target != room and target not in MAY_IMPORT[room]:
            wrong.append(f"line {line}: {name} ({room} may import {sorted(MAY_IMPORT[room]) or 'no other room'})")
    assert not wrong, f"{path.relative_to(PACKAGE)} imports upward:\n" + "\n".join(wrong)


@pytest.mark.parametrize("path", sorted((PACKAGE / "core").rglob("*.py")), ids=lambda p: p.name)
def test_core_imports_only_the_standard_library_pydantic_and_temporalio(path: Path) -> None:
    outside = []
    for line, name in _imports(ast.parse(path.read_text(encoding="utf-8"))):
        top = name.split(".")[0]
        if top in ("delegation", "__future__") or top in sys.stdlib_module_names or top in CORE_MAY_IMPORT:
            continue
        outside.append(f"line {line}: {name}")
    assert not outside, f"core/{path.name} imports beyond stdlib, pydantic and temporalio: {outside}"


def test_settings_import_nothing_from_the_project_but_the_names() -> None:
    tree = ast.parse((PACKAGE / "core" / "settings.py").read_text(encoding="utf-8"))
    project = {name for _, name in _imports(tree) if name.startswith("delegation")}
    assert project <= {"delegation.core.names"}, project


@pytest.mark.parametrize("name", WORKFLOW_MODULES)
def test_workflow_modules_bring_project_code_in_only_through_the_passthrough(name: str) -> None:
    tree = ast.parse((PACKAGE / "workflows" / name).read_text(encoding="utf-8"))
    top_level = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    outside = [
        name
        for _, name in _imports(ast.Module(body=top_level, type_ignores=[]))
        if name.split(".")[0] not in ("temporalio", "__future__") and name.split(".")[0] not in sys.stdlib_module_names
    ]
    assert not outside, f"workflows/{name} imports {outside} outside imports_passed_through()"
    passthrough = [n for n in tree.body if isinstance(n, ast.With)]
    assert passthrough, f"workflows/{name} has no imports_passed_through() block"


def test_the_layer_check_catches_an_upward_import(tmp_path: Path) -> None:
    """The check itself: a store module importing the worker is reported."""
    bad = ast.parse("def f():\n    from delegation.worker.main import serve\n")
    names = [name for _, name in _imports(bad)]
    assert names == ["delegation.worker.main"]
    assert "worker" not in MAY_IMPORT["store"]
