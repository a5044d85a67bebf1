"""``leptonctl status``: a table of hosts, a JSON document, or a live dashboard."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated

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
from leptonctl.errors import ExitCode
from leptonctl.render.documents import status_document
from leptonctl.services.context import ServiceContext
from leptonctl.services.hosts.status import probe_hosts
from leptonctl.services.hosts.watch import watch_status


def status(
    ctx: typer.Context,
    limit: LimitOption = None,
    as_json: JsonOption = False,
    watch: Annotated[bool, typer.Option("-w", "--watch", help="Live dashboard.")] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.2, help="Seconds between refreshes (--watch).")
    ] = 2.0,
) -> None:
    """Probe hosts and show their CPUs, memory, GPUs, FPGAs and disks.

    Exit status: 0 when every selected host is up, 3 when some are not.
    """
    if watch:
        _watch(ctx, limit, interval, as_json)
        return
    rows = in_context(ctx, probe_hosts, limit)
    now = time.time()
    emit(as_json, lambda: status_document(rows, now), lambda: print_rich(_status_view(rows, now)))
    if any(r.state != "up" for r in rows):
        raise typer.Exit(int(ExitCode.HOSTS_UNREACHABLE))


def _status_view(rows: Sequence[HostStatus], now: float) -> object:
    from leptonctl.render.status import status_view  # rich only where a table is printed

    return status_view(rows, now)


def _watch(ctx: typer.Context, limit: str | None, interval: float, as_json: bool) -> None:
    from rich.console import Console
    from rich.live import Live

    from leptonctl.render.status import dashboard

    async def loop(c: ServiceContext) -> None:
        stream = watch_status(c, interval)
        if as_json:  # one document per refresh, for scripts that follow along
            async for rows in stream:
                emit_document(status_document(rows, time.time()), indent=None)
            return
        with Live(console=Console(), auto_refresh=False) as live:
            async for rows in stream:
                live.update(dashboard(rows, time.time(), "leptonctl status"), refresh=True)

    try:
        in_context(ctx, loop, limit)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
