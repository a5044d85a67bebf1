"""The layers stay apart: renderers read core types only; commands stay thin."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "leptonctl"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("path", sorted((PACKAGE / "render").glob("*.py")), ids=lambda p: p.name)
def test_a_renderer_imports_no_service_and_no_store(path: Path) -> None:
    leaks = {
        name
        for name in _imports(path)
        if name.startswith(("leptonctl.services", "leptonctl.store"))
    }
    assert not leaks, f"render/{path.name} imports {sorted(leaks)}"
