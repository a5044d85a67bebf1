"""``leptonctl maintain``: run maintenance playbooks (what cron calls)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from leptonctl.cli.context import LimitOption, emit, in_context
from leptonctl.core.reports import StepResult
from leptonctl.render.documents import playbooks_document
from leptonctl.render.maintain import (
    playbooks_table,
    run_event,
    run_summary,
    step_event,
    step_lines,
)
from leptonctl.services.maintain import run as service

if TYPE_CHECKING:
    from rich.console import Console


def maintain(
    ctx: typer.Context,
    playbooks: Annotated[
        list[str] | None,
        typer.Argument(
            help="Shipped playbook names, or YAML files or directories. "
            f"Default: {' '.join(service.TICK_PLAYBOOKS)}."
        ),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Show what would be done; contact and change nothing.")
    ] = False,
    limit: LimitOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON lines (the default when not on a terminal).")
    ] = False,
    metrics_dir: Annotated[
        Path | None,
        typer.Option(
            "--metrics-dir",
            envvar="LEPTONCTL_METRICS_DIR",
            help="Write leptonctl.prom here (node_exporter textfile collector).",
        ),
    ] = None,
    lock: Annotated[
        Path | None,
        typer.Option(
            "--lock",
            help="A lock file to use as the run lock. Default: the state store's own lock "
            "(a file next to a SQLite store; an advisory lock in PostgreSQL).",
        ),
    ] = None,
    list_playbooks: Annotated[
        bool, typer.Option("--list", help="List the shipped playbooks and exit.")
    ] = False,
) -> None:
    """Run playbooks: probe, health, dispatch, gc, drain/resume, shell, scrub, repair.

    One run at a time: a run that finds another one going skips (exit 75).
    Exit status: 0 healthy, 3 some hosts down or unhealthy (named), 1 a step failed.
    """
    json_lines = as_json or not sys.stdout.isatty()
    if list_playbooks:
        _list(json_lines)
        return
    books = service.load_playbooks(playbooks or [])
    lock_path = lock

    def show(result: StepResult) -> None:
        emit(
            json_lines,
            lambda: step_event(result),
            lambda: _console().print(step_lines(result)),
            indent=None,
        )

    report = in_context(
        ctx,
        lambda c: service.maintain(
            c,
            books,
            lock_path=lock_path,
            check=check,
            limit=limit,
            metrics_dir=metrics_dir,
            on_step=show,
        ),
    )
    emit(
        json_lines,
        lambda: run_event(report),
        lambda: _console().print(run_summary(report)),
        indent=None,
    )
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _list(json_lines: bool) -> None:
    rows = service.playbook_list()
    emit(
        json_lines,
        lambda: playbooks_document(rows),
        lambda: _console().print(playbooks_table(rows)),
    )


def _console() -> Console:
    from rich.console import Console  # rich only where a terminal summary is printed

    return Console(highlight=False)
