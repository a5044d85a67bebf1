"""What every command shares: the global options, the service context built from them,
the shared ``--limit`` and ``--json`` options, and ``emit``.

A command body parses its options, calls one service inside ``in_context`` (the one
``asyncio.run`` of the command, with one ``ServiceContext``), and hands the result to
``emit``: a JSON document under ``--json``, else the view.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from leptonctl.inventory import (
    Host,
    Inventory,
    describe_left_out,
    load_inventory,
    select_hosts,
)
from leptonctl.remote.transport import TransportOptions
from leptonctl.services.context import ServiceContext
from leptonctl.store.interface import Store
from leptonctl.store.location import state_file, state_location
from leptonctl.store.open import open_store

T = TypeVar("T")

LimitOption = Annotated[
    str | None,
    typer.Option("-l", "--limit", help="Hosts to act on: names, groups, globs, !exclude, &and."),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print a JSON document (and no progress bar).")
]

_COMMAND_NOTES: ContextVar[list[str]] = ContextVar("leptonctl_command_notes")
"""Notes of the running command about its inputs (hosts the inventory leaves out): said
once on stderr, and added to the JSON document when it has a ``notes`` field."""


@dataclass(frozen=True)
class Settings:
    inventory_path: Path | None
    state: str | Path | None  # --state as given: a file, a postgresql:// URL, or None
    forks: int
    connect_timeout: float
    command_timeout: float
    accept_new_host_keys: bool

    def __post_init__(self) -> None:
        _COMMAND_NOTES.set([])  # a new command: no note said yet

    def inventory(self) -> Inventory:
        inventory = load_inventory(self.inventory_path)
        if inventory.left_out:
            count = len(inventory.left_out)
            _note(
                f"note: leaving out {count} host{'s' if count != 1 else ''} that leptonctl "
                f"does not reach over SSH: {describe_left_out(inventory.left_out)}"
            )
        return inventory

    def hosts(self, limit: str | None) -> tuple[Inventory, tuple[Host, ...]]:
        inventory = self.inventory()
        return inventory, select_hosts(inventory, limit)

    def transport(self) -> TransportOptions:
        return TransportOptions(
            forks=self.forks,
            connect_timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            accept_new_host_keys=self.accept_new_host_keys,
        )

    def state_location(self) -> str:
        """The store this command uses: --state/LEPTONCTL_STATE, the config file's
        ``state:``, or the default SQLite file (an absolute path, or a URL)."""
        return state_location(self.state)

    def state_file(self) -> Path | None:
        """The store's SQLite file, or None when it is a PostgreSQL URL."""
        return state_file(self.state_location())

    def store(self) -> Store:
        return open_store(self.state_location())

    def context(self, limit: str | None = None) -> ServiceContext:
        """The command's service context: the hosts ``limit`` selects (a bad selector
        fails here, before anything is opened); the store opens on first use."""
        inventory, hosts = self.hosts(limit)
        return ServiceContext(inventory, hosts=hosts, options=self.transport(), store=self.store)


def settings(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    assert isinstance(obj, Settings)
    return obj


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """The one ``asyncio.run`` of a command."""
    return asyncio.run(coro)


def in_context(
    ctx: typer.Context, work: Callable[[ServiceContext], Awaitable[T]], limit: str | None = None
) -> T:
    """Run ``work`` in the command's service context (closed when it is done), in the
    command's one event loop."""
    context = settings(ctx).context(limit)

    async def main() -> T:
        async with context:
            return await work(context)

    return run_async(main())


def with_context(
    ctx: typer.Context, work: Callable[[ServiceContext], T], limit: str | None = None
) -> T:
    """``in_context`` for a service that needs no host (only the store, say)."""

    async def call(context: ServiceContext) -> T:
        return work(context)

    return in_context(ctx, call, limit)


def emit(
    as_json: bool,
    document: Callable[[], Any],
    view: Callable[[], None],
    *,
    indent: int | None = 2,
) -> None:
    """The command's output: the JSON document under ``--json``, else the view."""
    if as_json:
        emit_document(document(), indent=indent)
    else:
        view()


def emit_document(document: Any, *, indent: int | None = 2) -> None:
    """One JSON document on stdout (``indent=None``: one line, as a stream of documents);
    a document with a ``notes`` list gets the command's notes too."""
    notes = _COMMAND_NOTES.get([])
    if notes and isinstance(document, dict) and isinstance(document.get("notes"), list | tuple):
        document = {**document, "notes": [*document["notes"], *notes]}
    print(json.dumps(document, indent=indent, default=str), flush=True)


def _note(text: str) -> None:
    """Say ``text`` on stderr once per command, and keep it for the JSON document."""
    notes = _COMMAND_NOTES.get(None)
    if notes is None:
        notes = []
        _COMMAND_NOTES.set(notes)
    if text not in notes:
        notes.append(text)
        print(text, file=sys.stderr)


def print_lines(out: Sequence[str], err: Sequence[str] = ()) -> None:
    """A plain-text view: lines on stdout, then remarks on stderr."""
    for line in out:
        print(line)
    for line in err:
        print(line, file=sys.stderr)


def print_table(
    rich_view: Callable[[], object], plain_view: Callable[[bool], Sequence[str]]
) -> None:
    """A borderless table view.  Into a pipe or a file: the plain lines (aligned columns,
    no colour, no wrapping; ``plain_view(False)``).  On a terminal it fits: the same lines
    in the rich table's styles (``plain_view(True)``), without loading rich.  Otherwise
    (too wide: rich wraps it; or a terminal setting rich reads), the rich table."""
    if not sys.stdout.isatty():
        print_lines(plain_view(False))
        return
    if _plain_terminal():
        import shutil

        from leptonctl.render.columns import width_of

        if width_of(plain_view(False)) <= shutil.get_terminal_size().columns:
            print_lines(plain_view(True))
            return
    print_rich(rich_view())


_RICH_SETTINGS = ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "JUPYTER_COLUMNS")


def _plain_terminal() -> bool:
    """A terminal that shows what rich would show it in our styles: no environment
    setting that changes rich's output, and a terminal that takes colours."""
    env = os.environ
    return not any(name in env for name in _RICH_SETTINGS) and env.get("TERM", "") not in (
        "",
        "dumb",
        "unknown",
    )


def print_rich(renderable: object) -> None:
    """A rich view (rich is imported only where a table is printed)."""
    from rich.console import Console

    Console().print(renderable)
