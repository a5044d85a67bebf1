"""``leptonctl cp SRC DST``: routed, resumable, verified copies between hosts."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from typing import Annotated

import typer

from leptonctl.cli.context import run_async, settings
from leptonctl.cli.progress import TransferBar
from leptonctl.core.scan import printable
from leptonctl.errors import UsageError
from leptonctl.inventory.capacity import parse_size
from leptonctl.services import copy as service
from leptonctl.services.net import measured_graph
from leptonctl.services.reconcile import open_sessions


def cp(
    ctx: typer.Context,
    src: Annotated[str, typer.Argument(help="HOST:/path or a local path (file or directory).")],
    dst: Annotated[str, typer.Argument(help="HOST:/path or a local path; a trailing / = into.")],
    via: Annotated[str | None, typer.Option("--via", help="Relay through this host.")] = None,
    direct: Annotated[bool, typer.Option("--direct", help="Never relay.")] = False,
    streams: Annotated[int, typer.Option(min=1, max=16, help="Parallel streams.")] = 1,
    limit_rate: Annotated[
        str | None, typer.Option("--limit-rate", help="Bytes per second, e.g. 50MiB.")
    ] = None,
    compress: Annotated[
        bool, typer.Option("--compress", help="Compress on host-to-host hops (slow links).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (no progress bar).")] = False,
) -> None:
    """Copy over the fastest measured path (see `net probe`), resuming where a previous run
    stopped; every chunk is verified where it lands."""
    if via and direct:
        raise UsageError("--via and --direct contradict each other")
    rate = float(parse_size(limit_rate)) if limit_rate else None
    config = settings(ctx)
    inventory = config.inventory()
    bar = TransferBar.for_terminal("cp", as_json)

    async def main() -> service.CopyReport:
        with config.store() as store:
            async with open_sessions(config.transport(), store) as sessions:
                return await service.copy(
                    sessions,
                    inventory,
                    src,
                    dst,
                    graph=measured_graph(store, inventory.hosts, time.time()),
                    via=via,
                    direct=direct,
                    streams=streams,
                    rate_bps=rate,
                    compress=compress,
                    progress=bar.update if bar else None,
                )

    try:
        report = run_async(main())
    finally:
        if bar is not None:
            bar.end()
    if as_json:
        doc = {"route": report.route, "bytes": report.bytes, "seconds": round(report.seconds, 3)}
        print(json.dumps(doc | {k: v for k, v in asdict(report).items() if k not in doc}))
        return
    rate_text = report.bytes / report.seconds / 1e6 if report.seconds else 0.0
    print(
        f"{' -> '.join(report.route)}: {report.bytes} bytes in {report.seconds:.1f} s "
        f"({rate_text:.1f} MB/s)"
        + (f", {report.reused_bytes} bytes were already there" if report.reused_bytes else "")
    )
    for note in report.notes:
        print(f"  note: {printable(note)}", file=sys.stderr)
