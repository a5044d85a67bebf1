"""``leptonctl status``: a table of hosts, a JSON document, or a live dashboard."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from leptonctl.cli.context import (
    JsonOption,
    emit,
    emit_document,
    in_context,
    print_rich,
)
from leptonctl.cli.context import (
    LimitOption as LimitOption,
)
from leptonctl.core.reports import HostStatus
from leptonctl.errors import ExitCode, UsageError
from leptonctl.render.documents import status_document
from leptonctl.services.context import ServiceContext
from leptonctl.services.hosts.status import probe_hosts

if TYPE_CHECKING:
    from rich.console import RenderableType

    from leptonctl.core.dashboard import ClusterFrame


def status(
    ctx: typer.Context,
    limit: LimitOption = None,
    as_json: JsonOption = False,
    watch: Annotated[bool, typer.Option("-w", "--watch", help="Live dashboard.")] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.2, help="Seconds between refreshes (--watch).")
    ] = 2.0,
    by: Annotated[
        str,
        typer.Option("--by", help="Order of hosts in --watch: state (problems first) or group."),
    ] = "state",
) -> None:
    """Probe hosts and show their CPUs, memory, GPUs, FPGAs and disks.

    With --watch, a live dashboard: cluster totals, each host's CPU %, memory, GPUs, jobs
    and recent utilisation; q or Ctrl-C quits.  With --watch --json, one document per
    refresh.  Exit status: 0 when every selected host is up, 3 when some are not.
    """
    if by not in ("state", "group"):
        raise UsageError(f"--by takes state or group, not {by!r}")
    if watch:
        _watch(ctx, limit, interval, as_json, by)
        return
    rows = in_context(ctx, probe_hosts, limit)
    now = time.time()
    emit(as_json, lambda: status_document(rows, now), lambda: print_rich(_status_view(rows, now)))
    if any(r.state != "up" for r in rows):
        raise typer.Exit(int(ExitCode.HOSTS_UNREACHABLE))


def _status_view(rows: Sequence[HostStatus], now: float) -> object:
    from leptonctl.render.status import status_view  # rich only where a table is printed

    return status_view(rows, now)


def _watch(ctx: typer.Context, limit: str | None, interval: float, as_json: bool, by: str) -> None:
    from leptonctl.cli.live import show_live
    from leptonctl.render.dashboard import cluster_view
    from leptonctl.render.dashboard_documents import cluster_document
    from leptonctl.services.hosts.watch import watch_dashboard

    async def loop(c: ServiceContext) -> None:
        frames = watch_dashboard(c, interval, by)
        if as_json:  # one document per refresh, for scripts that follow along
            async for frame in frames:
                emit_document(cluster_document(frame), indent=None)
            return

        def render(frame: ClusterFrame, width: int, height: int) -> RenderableType:
            return cluster_view(frame, width, height, interval=interval)

        await show_live(frames, render)

    try:
        in_context(ctx, loop, limit)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
