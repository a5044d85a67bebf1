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
def test_a_renderer_imports_no_service_no_store_and_no_transport(path: Path) -> None:
    """Renderers are pure: they read core types (reports, records, outputs), nothing that
    does I/O."""
    leaks = {
        name
        for name in _imports(path)
        if name.startswith(("leptonctl.services", "leptonctl.store", "leptonctl.remote"))
    }
    assert not leaks, f"render/{path.name} imports {sorted(leaks)}"


@pytest.mark.parametrize(
    "path",
    sorted(p for p in (PACKAGE / "cli").glob("*.py") if p.name != "context.py"),
    ids=lambda p: p.name,
)
def test_a_command_module_neither_opens_sessions_nor_touches_the_store_or_the_wire(
    path: Path,
) -> None:
    """Commands parse options, call a service in their context and emit the result: the
    store, connections and agent sessions are the service context's business."""
    leaks = {
        name
        for name in _imports(path)
        if name.startswith(("leptonctl.store", "leptonctl.remote.agent", "leptonctl.remote.pool"))
    }
    assert not leaks, f"cli/{path.name} imports {sorted(leaks)}"
    text = path.read_text(encoding="utf-8")
    assert "open_sessions" not in text and "json.dumps" not in text


def test_every_json_option_is_the_shared_one() -> None:
    from leptonctl.cli.app import app
    from leptonctl.cli.context import JsonOption

    shared = JsonOption.__metadata__[0].help
    import typer.main

    root = typer.main.get_command(app)
    helps: dict[str, str | None] = {}

    def walk(command: object, name: str) -> None:
        for sub_name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{name} {sub_name}")
        for param in getattr(command, "params", []):
            if "--json" in getattr(param, "opts", ()):
                helps[name] = param.help

    walk(root, "leptonctl")
    assert len(helps) >= 15
    # maintain's --json is JSON lines, the default off a terminal: a different contract
    odd = {n: h for n, h in helps.items() if h != shared and n != "leptonctl maintain"}
    assert not odd


@pytest.mark.parametrize("layer", ["cli", "core", "render", "services", "store"])
def test_no_module_of_a_layer_grows_past_six_hundred_lines(layer: str) -> None:
    big = {
        str(p.relative_to(PACKAGE)): n
        for p in (PACKAGE / layer).rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 600
    }
    assert not big
