"""``leptonctl data put|get|ls|rm|verify|repair|rebalance|gc``: replicated datasets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer

from leptonctl.cli.context import (
    JsonOption,
    LimitOption,
    emit,
    in_context,
    print_lines,
    print_rich,
    with_context,
)
from leptonctl.cli.progress import TransferBar
from leptonctl.core.datasets import parse_dataset_ref
from leptonctl.core.reports import PutReport, RemoveReport
from leptonctl.errors import ExitCode, UsageError
from leptonctl.inventory.capacity import parse_size
from leptonctl.render import documents, summaries
from leptonctl.services import queries
from leptonctl.services.context import ServiceContext
from leptonctl.services.data import datasets, replicas

app = typer.Typer(
    help="Datasets kept as checksummed chunks with K replicas on the cluster's own disks.",
    no_args_is_help=True,
)


def _chunk_size(text: str) -> int:
    try:
        size = parse_size(text)
    except ValueError as exc:
        raise UsageError(f"--chunk-size: {exc}", hint="e.g. 4MiB, 64MiB, 1GiB") from None
    if size < 4096:
        raise UsageError(f"--chunk-size {text} is too small (at least 4 KiB)")
    if size > 2**30:
        raise UsageError(f"--chunk-size {text} is too large (at most 1 GiB)")
    return size


@app.command("put")
def put(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="A local file or directory, or HOST:/path.")],
    name: Annotated[str, typer.Argument(help="Dataset name (a new version if it exists).")],
    replicas_: Annotated[
        int, typer.Option("--replicas", "-k", min=1, help="Copies of every chunk.")
    ] = datasets.DEFAULT_REPLICAS,
    limit: LimitOption = None,
    chunk_size: Annotated[str, typer.Option(help="Chunk size, e.g. 64MiB.")] = "64MiB",
    keep_last: Annotated[
        int | None,
        typer.Option("--keep-last", min=1, help="Then remove all but the newest N versions."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Store a file or tree as a new dataset version with K replicas per chunk."""
    parse_dataset_ref(name)  # a valid name, no @version
    if "@" in name:
        raise UsageError("put takes a dataset name without @version")
    size = _chunk_size(chunk_size)
    bar = TransferBar.for_terminal("data", as_json)

    async def work(c: ServiceContext) -> tuple[PutReport, RemoveReport | None]:
        report = await datasets.put(
            c,
            source,
            name,
            replicas=replicas_,
            chunk_size=size,
            graph=c.graph,
            progress=bar,
        )
        if keep_last is None:
            return report, None
        pruned = await datasets.remove(c, name, None, keep_last)
        return report, pruned

    report, pruned = in_context(ctx, work, limit)
    emit(
        as_json,
        lambda: documents.put_document(report, pruned),
        lambda: print_lines(*summaries.put_summary(report, pruned)),
    )


@app.command("get")
def get(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME or NAME@VERSION.")],
    dest: Annotated[str, typer.Argument(help="Local path to rebuild the dataset at.")],
    limit: LimitOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rebuild a dataset locally, verifying every chunk (falls over to another replica)."""
    name, version = parse_dataset_ref(ref)
    bar = TransferBar.for_terminal("data", as_json)
    report = in_context(
        ctx,
        lambda c: datasets.get(c, name, version, dest, progress=bar),
        limit,
    )
    _emit_report(as_json, report, summaries.get_summary)


@app.command("ls")
def ls(
    ctx: typer.Context,
    ref: Annotated[str | None, typer.Argument(help="NAME or NAME@VERSION: its chunks.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Datasets, or one dataset's chunks and where their replicas are."""
    if ref is None:
        listing = with_context(ctx, lambda c: queries.dataset_listing(c.store))
        print_lines([], summaries.notes(listing.defects))
        emit(
            as_json,
            lambda: documents.datasets_document(listing.records, listing.holders),
            lambda: print_rich(_data_view().datasets_table(listing.records, listing.holders)),
        )
        return
    detail = with_context(ctx, lambda c: queries.dataset_detail(c.store, ref))
    emit(
        as_json,
        lambda: documents.dataset_document(detail.record, detail.holders),
        lambda: print_rich(_data_view().dataset_table(detail.record, detail.holders)),
    )


@app.command("rm")
def rm(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME (every version) or NAME@VERSION.")],
    limit: LimitOption = None,
    keep_last: Annotated[
        int | None,
        typer.Option("--keep-last", min=0, help="Keep the newest N ready versions, remove older."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Remove it even if active jobs need it as input.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Remove a dataset (or one version) and delete chunks no state store uses any more."""
    name, version = parse_dataset_ref(ref)
    if keep_last is not None and version is not None:
        raise UsageError("--keep-last takes a dataset name without @version")
    report = in_context(
        ctx,
        lambda c: datasets.remove(c, name, version, keep_last, force),
        limit,
    )
    _emit_report(as_json, report, summaries.removed_summary)


@app.command("verify")
def verify(
    ctx: typer.Context,
    ref: Annotated[str | None, typer.Argument(help="A dataset (default: all).")] = None,
    limit: LimitOption = None,
    as_json: JsonOption = False,
) -> None:
    """Re-hash every replica where it lies; exit 4 if any is missing or corrupt."""
    report = in_context(
        ctx,
        lambda c: replicas.verify(c, queries.dataset_named(c.store, ref)),
        limit,
    )
    emit(
        as_json,
        lambda: documents.verify_document(report),
        lambda: print_rich(_data_view().verify_table(report)),
    )
    _exit_for(report.problems, report.under_replicated)


def _exit_for(problems: Sequence[Any], short: Sequence[str]) -> None:
    kinds = {p.problem for p in problems}
    if kinds - {"unreachable"} or short:
        raise typer.Exit(int(ExitCode.COMMAND_FAILED))
    if kinds:
        raise typer.Exit(int(ExitCode.HOSTS_UNREACHABLE))


@app.command("repair")
def repair(
    ctx: typer.Context,
    ref: Annotated[str | None, typer.Argument(help="A dataset (default: all).")] = None,
    limit: LimitOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete corrupt copies and restore every chunk to K healthy replicas on live hosts."""
    report = in_context(
        ctx,
        lambda c: replicas.repair(c, queries.dataset_named(c.store, ref), c.graph),
        limit,
    )
    emit(
        as_json,
        lambda: documents.repair_document(report),
        lambda: print_lines(*summaries.repair_summary(report)),
    )
    if not report.healthy:
        raise typer.Exit(int(ExitCode.COMMAND_FAILED))


@app.command("rebalance")
def rebalance(
    ctx: typer.Context,
    limit: LimitOption = None,
    tolerance: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Acceptable spread of disk use (0-1).")
    ] = 0.05,
    check: Annotated[bool, typer.Option("--check", help="Plan only, move nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Move replicas from full hosts to empty ones, never dropping below K."""
    report = in_context(
        ctx,
        lambda c: replicas.rebalance(c, tolerance, check),
        limit,
    )
    _emit_report(as_json, report, summaries.rebalance_summary)


@app.command("gc")
def gc(
    ctx: typer.Context,
    limit: LimitOption = None,
    check: Annotated[bool, typer.Option("--check", help="Report only, delete nothing.")] = False,
    release_legacy: Annotated[
        bool,
        typer.Option(
            "--release-legacy",
            help="Also drop the pin on chunks stored before refs existed (once every state "
            "store using these hosts has run `data gc`).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete chunks on the hosts that no state store's dataset version uses any more.
    Exit 3 if a host could not be reached (it was skipped)."""
    report = in_context(
        ctx,
        lambda c: replicas.collect_garbage(c, check, release_legacy),
        limit,
    )
    _emit_report(as_json, report, lambda r: summaries.gc_summary(r, check))
    if report.problems:
        raise typer.Exit(int(ExitCode.HOSTS_UNREACHABLE))


def _emit_report(as_json: bool, report: Any, summary: Callable[[Any], summaries.Lines]) -> None:
    """A data command's report: its fields as JSON, else its text summary."""
    emit(
        as_json,
        lambda: documents.report_document(report),
        lambda: print_lines(*summary(report)),
    )


def _data_view() -> Any:
    """The rich renderers (rich is imported only where a table is printed)."""
    from leptonctl.render import data

    return data
