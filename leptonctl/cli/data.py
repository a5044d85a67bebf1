"""``leptonctl data put|get|ls|rm|verify|repair|rebalance|gc``: replicated datasets."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from functools import cached_property
from typing import Annotated, Any, TypeVar

import typer

from leptonctl.cli.context import run_async, settings
from leptonctl.cli.progress import TransferBar
from leptonctl.cli.status import LimitOption
from leptonctl.core.datasets import parse_dataset_ref
from leptonctl.core.scan import printable
from leptonctl.errors import ExitCode, UsageError
from leptonctl.inventory import Host, Inventory
from leptonctl.inventory.capacity import parse_size
from leptonctl.remote.agent import AgentSessions
from leptonctl.services import datasets, replicas
from leptonctl.services.net import measured_graph
from leptonctl.services.reconcile import open_sessions
from leptonctl.store.sqlite import SqliteStore

app = typer.Typer(
    help="Datasets kept as checksummed chunks with K replicas on the cluster's own disks.",
    no_args_is_help=True,
)
T = TypeVar("T")
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (no progress bar).")]


class _Cluster:
    """What a data command works with: the store, the selected hosts, one agent session
    per host (opened on first use), and the measured network (loaded on first use)."""

    def __init__(
        self,
        sessions: AgentSessions,
        store: SqliteStore,
        inventory: Inventory,
        hosts: tuple[Host, ...],
    ) -> None:
        self.sessions, self.store, self.inventory, self.hosts = sessions, store, inventory, hosts

    @cached_property
    def graph(self) -> Any:
        return measured_graph(self.store, self.hosts, time.time())

    def dataset(self, ref: str | None) -> str | None:
        """The name in a NAME argument that must exist (None: every dataset)."""
        if ref is None:
            return None
        name = parse_dataset_ref(ref)[0]
        if not self.store.data.versions(name):
            datasets.find_record(self.store, name, None)  # the helpful "no dataset" error
        return name


def _run(ctx: typer.Context, limit: str | None, work: Callable[[_Cluster], Awaitable[T]]) -> T:
    """Run ``work`` on the hosts ``limit`` selects, in the command's one event loop."""
    config = settings(ctx)
    inventory, hosts = config.hosts(limit)
    with config.store() as store:

        async def main() -> T:
            async with open_sessions(config.transport(), store) as sessions:
                return await work(_Cluster(sessions, store, inventory, hosts))

        return run_async(main())


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, default=str))


def _notes(notes: Sequence[str]) -> None:
    for note in notes:
        print(f"  note: {note}", file=sys.stderr)


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
    try:
        size = parse_size(chunk_size)
    except ValueError as exc:
        raise UsageError(f"--chunk-size: {exc}", hint="e.g. 4MiB, 64MiB, 1GiB") from None
    if size < 4096:
        raise UsageError(f"--chunk-size {chunk_size} is too small (at least 4 KiB)")
    if size > 2**30:
        raise UsageError(f"--chunk-size {chunk_size} is too large (at most 1 GiB)")
    bar = TransferBar.for_terminal("data", as_json)

    async def work(c: _Cluster) -> tuple[datasets.PutReport, datasets.RemoveReport | None]:
        report = await datasets.put(
            c.sessions,
            c.store,
            c.inventory,
            c.hosts,
            source,
            name,
            replicas=replicas_,
            chunk_size=size,
            graph=c.graph,
            progress=bar,
        )
        if keep_last is None:
            return report, None
        pruned = await datasets.remove(c.sessions, c.store, c.hosts, name, None, keep_last)
        return report, pruned

    report, pruned = _run(ctx, limit, work)
    if as_json:
        _print_json(asdict(report) | {"pruned": asdict(pruned) if pruned else None})
        return
    print(
        f"{report.name}@{report.version}: {_size(report.size)} in {report.chunks} chunk(s), "
        f"{report.replicas} replica{'s' if report.replicas != 1 else ''}, "
        f"{_size(report.sent_bytes)} sent in {report.seconds:.1f} s"
        + (
            f" ({report.reused_chunks} chunk(s) were already in place)"
            if report.reused_chunks
            else ""
        )
    )
    _notes(report.notes)
    if pruned is not None and pruned.versions:
        _print_removed(pruned)


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
    report = _run(
        ctx,
        limit,
        lambda c: datasets.get(c.sessions, c.store, c.hosts, name, version, dest, progress=bar),
    )
    if as_json:
        _print_json(asdict(report))
        return
    print(
        f"{report.name}@{report.version} -> {report.dest}: {_size(report.size)}, "
        f"{_size(report.fetched_bytes)} fetched in {report.seconds:.1f} s"
    )
    _notes([printable(note) for note in report.notes])


@app.command("ls")
def ls(
    ctx: typer.Context,
    ref: Annotated[str | None, typer.Argument(help="NAME or NAME@VERSION: its chunks.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Datasets, or one dataset's chunks and where their replicas are."""
    config = settings(ctx)
    with config.store() as store:
        if ref is None:
            records = store.data.datasets()
            holders = store.data.replicas()
            _notes([r.manifest.defect for r in records if r.manifest.defect is not None])
            if as_json:
                from leptonctl.render.documents import datasets_document

                _print_json(datasets_document(records, holders))
                return
            from leptonctl.render.data import datasets_table

            _console().print(datasets_table(records, holders))
            return
        name, version = parse_dataset_ref(ref)
        record = store.data.get(name, version) or _latest_any(store, name)
        if record is None:
            datasets.find_record(store, name, version)  # raises the helpful error
            return
        datasets.usable(record)
        holders = store.data.replicas(record.manifest.hashes())
    if as_json:
        from leptonctl.render.documents import dataset_document

        _print_json(dataset_document(record, holders))
        return
    from leptonctl.render.data import dataset_table

    _console().print(dataset_table(record, holders))


def _latest_any(store: SqliteStore, name: str) -> Any:
    versions = store.data.versions(name)
    return versions[-1] if versions else None


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
    report = _run(
        ctx,
        limit,
        lambda c: datasets.remove(c.sessions, c.store, c.hosts, name, version, keep_last, force),
    )
    if as_json:
        _print_json(asdict(report))
        return
    _print_removed(report)


def _print_removed(report: datasets.RemoveReport) -> None:
    versions = ", ".join(str(v) for v in report.versions) or "none"
    print(
        f"removed {report.name} version(s) {versions}: {report.freed_chunks} chunk(s), "
        f"{_size(report.freed_bytes)} freed"
    )
    _notes(
        [
            f"{h}: copies or refs left ({why}); `leptonctl data gc` removes them"
            for h, why in report.left_on.items()
        ]
        + list(report.notes)
    )


@app.command("verify")
def verify(
    ctx: typer.Context,
    ref: Annotated[str | None, typer.Argument(help="A dataset (default: all).")] = None,
    limit: LimitOption = None,
    as_json: JsonOption = False,
) -> None:
    """Re-hash every replica where it lies; exit 4 if any is missing or corrupt."""
    report = _run(
        ctx, limit, lambda c: replicas.verify(c.sessions, c.store, c.hosts, c.dataset(ref))
    )
    if as_json:
        from leptonctl.render.documents import verify_document

        _print_json(verify_document(report))
    else:
        from leptonctl.render.data import verify_table

        _console().print(verify_table(report))
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
    report = _run(
        ctx,
        limit,
        lambda c: replicas.repair(c.sessions, c.store, c.hosts, c.dataset(ref), c.graph),
    )
    if as_json:
        _print_json(asdict(report) | {"healthy": report.healthy})
    else:
        print(
            f"repair: {report.chunks} chunk(s) checked, {report.copies_made} copies made, "
            f"{report.corrupt_removed} corrupt copies removed, {_size(report.sent_bytes)} sent"
        )
        if report.lost:
            print(
                f"  LOST (no healthy copy anywhere): {len(report.lost)} chunk(s)", file=sys.stderr
            )
        _notes([f"{h[:12]}: {why}" for h, why in report.short.items()])
        _notes([f"{host}: {why}" for host, why in report.problems.items()])
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
    report = _run(
        ctx, limit, lambda c: replicas.rebalance(c.sessions, c.store, c.hosts, tolerance, check)
    )
    if as_json:
        _print_json(asdict(report))
        return
    print(
        f"rebalance: {report.moves_done}/{report.moves_planned} move(s), "
        f"{_size(report.bytes_moved)} moved; spread of disk use "
        f"{report.spread_before:.1%} -> {report.spread_after:.1%}"
    )
    _notes([f"{host}: {why}" for host, why in report.problems.items()])


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
    report = _run(
        ctx,
        limit,
        lambda c: replicas.collect_garbage(c.sessions, c.store, c.hosts, check, release_legacy),
    )
    if as_json:
        _print_json(asdict(report))
    else:
        verb = "would delete" if check else "deleted"
        total = sum(report.removed.values())
        print(f"gc: {verb} {total} unreferenced chunk(s), {_size(report.freed_bytes)}")
        _notes([f"{h}: {n} stale ref(s) dropped" for h, n in report.stale_refs.items()])
        _notes([f"{h}: legacy pin released" for h in report.released_legacy])
        _notes(
            [
                f"{h}: {n} chunk(s) stored before refs existed are kept; once every state store "
                "using these hosts has run `data gc`, run `data gc --release-legacy`"
                for h, n in report.legacy.items()
            ]
        )
        _notes(
            [f"{h}: skipped, nothing deleted there ({why})" for h, why in report.problems.items()]
        )
    if report.problems:
        raise typer.Exit(int(ExitCode.HOSTS_UNREACHABLE))


def _size(value: int) -> str:
    from leptonctl.render.units import human_bytes

    return human_bytes(value)


def _console() -> Any:
    from rich.console import Console

    return Console()
