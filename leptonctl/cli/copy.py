"""``leptonctl cp SRC DST``: routed, resumable, verified copies between hosts."""

from __future__ import annotations

from typing import Annotated

import typer

from leptonctl.cli.context import JsonOption, emit, in_context, print_lines
from leptonctl.cli.progress import TransferBar
from leptonctl.errors import UsageError
from leptonctl.inventory.capacity import parse_size
from leptonctl.render.documents import copy_document
from leptonctl.render.summaries import copy_summary
from leptonctl.services.net import copy as service


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
    checksum: Annotated[
        bool,
        typer.Option(
            "--checksum",
            "-c",
            help="Compare contents (read both sides), not sizes and mtimes, to skip a file.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Copy over the fastest measured path (see `net probe`), resuming where a previous run
    stopped; every chunk is verified where it lands. A file already there with the same size
    and mtime is skipped (rsync's quick check; --checksum compares contents instead), and
    small files travel many to a frame."""
    if via and direct:
        raise UsageError("--via and --direct contradict each other")
    rate = float(parse_size(limit_rate)) if limit_rate else None
    bar = TransferBar.for_terminal("cp", as_json)
    try:
        report = in_context(
            ctx,
            lambda c: service.copy(
                c,
                src,
                dst,
                graph=c.graph,
                via=via,
                direct=direct,
                streams=streams,
                rate_bps=rate,
                compress=compress,
                checksum=checksum,
                progress=bar.update if bar else None,
            ),
        )
    finally:
        if bar is not None:
            bar.end()
    emit(
        as_json,
        lambda: copy_document(report),
        lambda: print_lines(*copy_summary(report)),
        indent=None,
    )
