"""``leptonctl exec``: run one command on many hosts, output folded per host."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Annotated, TextIO

import typer

from leptonctl.cli.context import JsonOption, LimitOption, emit, in_context
from leptonctl.core.outputs import RunResult
from leptonctl.errors import ExitCode, HostError
from leptonctl.render.documents import exec_document
from leptonctl.services.context import ServiceContext
from leptonctl.services.hosts.execute import run_everywhere, shell_command


def exec_command(
    ctx: typer.Context,
    command: Annotated[list[str], typer.Argument(help="The command, after `--`.")],
    limit: LimitOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run a command on the selected hosts in parallel: `leptonctl exec -l gpu -- nvidia-smi -L`.

    One argument is run as a shell snippet; several are quoted word by word.
    Exit status: 0 when it exited 0 everywhere, 3 when some host could not be
    reached, 4 when every host ran it but some exited non-zero.
    """
    line = shell_command(command)
    results, order = in_context(ctx, lambda c: _run(c, line), limit)
    emit(
        as_json, lambda: exec_document(line, results, order), lambda: _write_outputs(results, order)
    )
    if any(isinstance(r, HostError) for r in results.values()):
        raise typer.Exit(int(ExitCode.HOSTS_UNREACHABLE))
    if any(isinstance(r, RunResult) and not r.ok for r in results.values()):
        raise typer.Exit(int(ExitCode.COMMAND_FAILED))


async def _run(c: ServiceContext, line: str) -> tuple[dict[str, RunResult | HostError], list[str]]:
    return await run_everywhere(c, line), [h.name for h in c.selected]


def _write_outputs(results: Mapping[str, RunResult | HostError], order: list[str]) -> None:
    from leptonctl.render.execute import exec_report, output_groups

    groups, errors = output_groups(results, order)
    sys.stdout.flush()
    out = sys.stdout.buffer  # the hosts' bytes as they wrote them: no decoding, no wrapping
    out.writelines(exec_report(groups, errors, color=_colour(sys.stdout)))
    out.flush()


def _colour(stream: TextIO) -> bool:
    """Colour the headers on a terminal, unless NO_COLOR is set (https://no-color.org)."""
    return stream.isatty() and not os.environ.get("NO_COLOR")
