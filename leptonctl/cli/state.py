"""``leptonctl state``: the state store's schema, and moving a store whole."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from leptonctl.cli.context import JsonOption, emit, print_lines, settings
from leptonctl.services import state as service

app = typer.Typer(
    help="The state store: its schema (info, migrate) and moving it (copy, export, import).",
    no_args_is_help=True,
)

ForceOption = Annotated[bool, typer.Option("--force", help="Replace everything the target holds.")]


@app.command("info")
def info(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Which store --state names, its backend, schema version and rows per table."""
    found = service.info(settings(ctx).state_location())
    emit(as_json, found.to_json, lambda: print_lines(_info_lines(found)))


@app.command("migrate")
def migrate(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Bring the store to this leptonctl's schema (also done on first use)."""
    location = settings(ctx).state_location()
    before, after = service.migrate(location)
    emit(
        as_json,
        lambda: {"schema_before": before, "schema": after},
        lambda: print_lines(
            [f"schema {after}" + (f" (was {before})" if before != after else ", nothing to do")]
        ),
    )


@app.command("copy")
def copy(
    source: Annotated[str, typer.Argument(help="The store to copy: a SQLite file or a URL.")],
    target: Annotated[str, typer.Argument(help="Where to: a SQLite file or postgresql://...")],
    force: ForceOption = False,
    as_json: JsonOption = False,
) -> None:
    """Copy every row of one store into another (e.g. SQLite into PostgreSQL), ids kept.
    A target that holds anything is refused without --force."""
    moved = service.copy(_where(source), _where(target), force=force)
    emit(as_json, moved.to_json, lambda: print_lines(_moved_lines(moved)))


@app.command("export")
def export(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The file to write (JSON, mode 0600).")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite the file.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Write every row of the store (--state) to FILE."""
    moved = service.export(settings(ctx).state_location(), file, force=force)
    emit(as_json, moved.to_json, lambda: print_lines(_moved_lines(moved)))


@app.command("import")
def import_(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A file `state export` wrote.")],
    force: ForceOption = False,
    as_json: JsonOption = False,
) -> None:
    """Load FILE into the store (--state), ids kept.  A store that holds anything is refused
    without --force."""
    moved = service.import_(settings(ctx).state_location(), file, force=force)
    emit(as_json, moved.to_json, lambda: print_lines(_moved_lines(moved)))


def _where(text: str) -> str:
    return service.location(text)


def _info_lines(found: service.StoreInfo) -> list[str]:
    lines = [
        f"store:   {found.store}",
        f"backend: {found.backend}",
        f"schema:  {found.schema} (this leptonctl: {found.program_schema})",
    ]
    lines += [f"  {name}: {n}" for name, n in found.rows.items()]
    return lines


def _moved_lines(moved: service.Moved) -> list[str]:
    total = sum(moved.rows.values())
    parts = ", ".join(f"{name} {n}" for name, n in moved.rows.items() if n)
    return [f"copied {total} rows from {moved.source} to {moved.target}: {parts or 'none'}"]
