"""``leptonctl cp``: routed, resumable, verified copies of files and trees.

The source is listed where it lives (sizes, modes, mtimes: nothing is read), the
destination reports which chunks it already holds (a rerun sends only the rest), and the
bytes flow source -> relays -> destination along the route the network graph picks.  The
sender hashes each chunk while it reads it (the source is read once) and sends the hash
after the bytes; relays forward while they receive and store nothing; the destination
checks every chunk against that hash before it counts, journals it, and renames a file
into place only when all of its chunks are in.  A hop that cannot carry the copy (the
receiver ignores transfer keys, or the two hosts cannot connect) is relayed by this
machine, and the report says which and why (``notes``, ``relayed``); a host key that
does not match is never relayed around.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import posixpath
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from leptonctl.core.hops import OPERATOR, RelayedHop, classify_hop_error
from leptonctl.core.netgraph import Route, best_route
from leptonctl.core.reports import CopyReport
from leptonctl.core.scan import Scan, UnsafeScan, printable, read_scan
from leptonctl.errors import AgentError, HostError, LeptonError, UsageError
from leptonctl.inventory.model import Host
from leptonctl.remote.agent import AgentSessions, wire
from leptonctl.remote.transfer import Hop, TransferOutcome, Transfers, operator_host
from leptonctl.services.context import ServiceContext
from leptonctl.services.data.datasets import (
    DATA_OP_TIMEOUT,
    make_tree,
    path_info,
    refuse_scan,
    split_location,
)

CP_CHUNK_SIZE = 16 << 20
P = ParamSpec("P")
R = TypeVar("R")
# Files below PACK_FILE_BYTES go many to a frame (a packed item of at most PACK_BYTES and
# PACK_FILES files): the receiver writes and commits each frame's files as one batch, so a tree
# of small files costs a few round trips of the disk per frame, not a few per file.
PACK_FILE_BYTES = 1 << 20
PACK_BYTES = 8 << 20
PACK_FILES = 2048


class CopyError(LeptonError):
    """A copy did not complete (what arrived is kept: rerun to resume)."""


@dataclass(frozen=True)
class Plan:
    source: Host
    dest: Host
    relays: tuple[Host, ...]
    route: Route | None


def check_via(via: str | None, source: Host, dest: Host, hosts: Sequence[Host]) -> None:
    """A ``--via`` that cannot be honoured is a usage error, said before anything moves."""
    if via is None:
        return
    by_name = {h.name: h for h in hosts}
    if via not in by_name:
        raise UsageError(f"--via {via}: no such host in the inventory")
    if via in (source.name, dest.name):
        raise UsageError(f"--via {via}: the relay must differ from both ends of the copy")
    if source.is_local or dest.is_local or by_name[via].is_local:
        raise UsageError(
            f"--via {via}: a relay joins two remote hosts; with this machine as an end (or the "
            "relay) the bytes already go over this machine's own connection",
            hint="copy between two inventory hosts to relay, or leave --via out",
        )


async def plan_route(
    sessions: AgentSessions,
    graph: Any,
    source: Host,
    dest: Host,
    hosts: Sequence[Host],
    via: str | None,
    direct: bool,
) -> Plan:
    """The relays between two hosts: from the graph, skipping relays the operator cannot
    reach now (a dead relay is routed around on the next run) and hosts that are this
    machine (they can only be an end)."""
    check_via(via, source, dest, hosts)
    by_name = {h.name: h for h in hosts}
    forced = (by_name[via],) if via is not None else ()
    if source.is_local or dest.is_local or graph is None or source.name == dest.name:
        return Plan(source, dest, forced, None)
    g = graph.copy()
    g.remove_nodes_from([n for n in g if n in by_name and by_name[n].is_local])
    while True:
        route = best_route(g, source.name, dest.name, via=via, direct_only=direct)
        if route is None:
            return Plan(source, dest, forced, None)  # nothing measured: try the direct link
        relays = tuple(by_name[n] for n in route.hosts[1:-1])
        dead = [h for h in relays if not await _reachable(sessions, h)]
        if not dead or via is not None:
            return Plan(source, dest, relays, route)
        g.remove_nodes_from(h.name for h in dead)


async def _reachable(sessions: AgentSessions, host: Host) -> bool:
    try:
        await sessions.get(host)
    except HostError:
        await sessions.drop(host.name)
        return False
    return True


def without_gc(
    fn: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Python's cyclic garbage collector off while fn runs: the listings of a big tree are
    hundreds of thousands of small acyclic objects, which it would scan again and again (a
    third of a 100,000-file no-op copy's time) without ever finding garbage."""

    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        collecting = gc.isenabled()
        gc.disable()
        try:
            return await fn(*args, **kwargs)
        finally:
            if collecting:
                gc.enable()

    return run


@without_gc
async def copy(
    ctx: ServiceContext,
    src: str,
    dst: str,
    *,
    graph: Any = None,
    via: str | None = None,
    direct: bool = False,
    streams: int = 1,
    rate_bps: float | None = None,
    compress: bool = False,
    checksum: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> CopyReport:
    """Copy ``src`` to ``dst`` (``HOST:/path`` or a local path).  A file already at the
    destination with the source's size and mtime is left alone without reading either side
    (rsync's quick check); ``checksum`` compares contents instead (both sides are read)."""
    sessions, inventory = ctx.sessions, ctx.inventory
    started = time.monotonic()
    src_host, src_path = split_location(src, inventory)
    dst_host, dst_path = split_location(dst, inventory)
    if dst_host is None and dst.endswith("/") and not dst_path.endswith("/"):
        dst_path += "/"  # "into", as written: the local path's normalisation drops the "/"
    me = operator_host()
    src_host, dst_host = src_host or me, dst_host or me
    if src_host.is_local and dst_host.is_local and src_host.name == dst_host.name:
        raise UsageError("both ends are on this machine: use cp(1)")
    check_via(via, src_host, dst_host, list(inventory.hosts))
    name = posixpath.basename(posixpath.normpath(src_path))
    if name in ("", ".", "..", "/"):
        raise UsageError(f"{src}: name a file or directory to copy, not {src_path!r}")
    request = wire.Scan(path=src_path, chunk_size=CP_CHUNK_SIZE, hash=checksum)
    try:
        reply, _ = await asyncio.gather(  # the destination's session opens meanwhile
            sessions.request(src_host, request, DATA_OP_TIMEOUT), sessions.get(dst_host)
        )
    except AgentError as exc:
        if exc.operation is None:
            raise
        raise UsageError(f"cannot read {src}: {exc.reason}") from None
    try:
        scan = read_scan(reply, chunk_size=CP_CHUNK_SIZE, hashed=checksum)
    except UnsafeScan as exc:
        raise refuse_scan(src_host, src_path, exc, CopyError) from None
    dest, found, free = await _destination(sessions, dst_host, dst_path, scan.kind, name)
    # A new top directory gets the source's mode; an existing one keeps its own.
    new_top = scan.kind == "dir" and found != "dir"
    top = await path_info(sessions, src_host, [src_path], CopyError) if new_top else None
    spec = copy_spec(scan, dest, top[0].mode if top else None)
    status, tree_ok = await _dest_states(sessions, dst_host, spec, dest)
    items, total, reused = _items(spec, status, src_path, dest if scan.kind == "dir" else None)
    to_send = sum(i.size for i in items)
    up_to_date = sum(1 for f in status if f["complete"])
    if to_send > free:
        raise CopyError(
            f"not enough space on {dst_host.name} for {dest!r}: {to_send} bytes to write, "
            f"{free} bytes free",
            hint="nothing was sent; free some space there (or pick another destination)",
        )
    plan = await plan_route(sessions, graph, src_host, dst_host, list(inventory.hosts), via, direct)
    route = [src_host.name, *(h.name for h in plan.relays), dst_host.name]
    report = CopyReport(route, 0, 0.0, total, reused)
    report.files, report.files_up_to_date = len(spec["files"]), up_to_date
    report.files_sent = len(spec["files"]) - up_to_date
    if plan.route is not None:
        report.expected_bps, report.direct_bps = plan.route.expected_bps, plan.route.direct_bps
    done = {f["path"] for f in status if f["complete"]}
    transfers = Transfers(sessions, ctx.store, ctx.clock)
    clean = not items  # every stream ended without an error
    if items:
        sending, items = _receiver_spec(spec, items, dest, tree_ok)
        run = (transfers, plan, sending, items, streams, rate_bps, compress, progress, to_send)
        outcomes = await _run(*run)
        if not plan.relays and all(_never_connected(o) for o in outcomes):
            # The two hosts could not connect for a reason the transfer did not recognise
            # (it relays central keys and unreachable pairs itself): the operator, who
            # reaches both, relays.
            why = outcomes[0].hops[1].error or "could not connect"
            relay = RelayedHop(src_host.name, dst_host.name, OPERATOR, f"{why[-200:]}")
            outcomes = [
                dataclasses.replace(o, relayed=(relay,)) for o in await _run(*run, pump=True)
            ]
        _note_relays(report, outcomes)
        report.stream_seconds = max(o.seconds for o in outcomes)
        for outcome in outcomes:
            report.bytes += outcome.hops[0].bytes if outcome.hops else 0
            for host, error in outcome.errors.items():
                report.notes.append(f"{host}: {error}")
        # The destination verified every chunk and renamed each complete file into place;
        # it says which (no second read of the data to find out).
        for outcome in outcomes:
            done.update(outcome.hops[-1].files_done if outcome.hops else ())
        _check_space(outcomes, dst_host, dest)
        clean = not any(o.errors for o in outcomes)
    failed = False
    bare = not items and not tree_ok  # directories or symlinks to make (they need no bytes)
    if clean and (len(done) < len(spec["files"]) or bare):
        # Nothing to send, yet directories, symlinks or empty files may be missing; or
        # parallel streams each finished before a shared file was whole: the destination
        # makes what needs no bytes and renames every file whose chunks are all in.
        try:
            outcome = await make_tree(transfers, dst_host, {**spec, "dest": dest})
        except HostError as exc:
            raise CopyError(f"{exc.host}: {exc.message}", hint="run the same cp again") from None
        done.update(outcome.hops[-1].files_done if outcome.hops else ())
        report.notes += [f"{host}: {error}" for host, error in outcome.errors.items()]
        failed = bool(outcome.errors)
    incomplete = [f["path"] for f in spec["files"] if f["path"] not in done]
    if incomplete or failed:
        raise CopyError(
            f"the copy to {dst_host.name} did not complete ({len(incomplete)} file(s) "
            f"incomplete, e.g. {(incomplete[0] if incomplete else dest)!r})",
            hint="run the same cp again: verified chunks are kept and only the rest is "
            "sent (a dead relay is routed around); " + printable("; ".join(report.notes[-2:])),
        )
    report.seconds = time.monotonic() - started
    return report


def _receiver_spec(
    spec: Mapping[str, Any], items: Sequence[wire.SendItem], dest: str, tree_ok: bool
) -> tuple[dict[str, Any], list[wire.SendItem]]:
    """What the destination is told: only the files that frames go to (a rerun that sends
    one file of 100,000 does not make the receiver read and check the other 99,999), the
    directories and symlinks unless they are all there already, and ``dest``: nothing under
    it is reached through a symbolic link.  The items' targets are renumbered to match."""
    wanted = sorted({target[0] for item in items for target in item.targets})
    renumber = {old: new for new, old in enumerate(wanted)}
    renumbered = [
        dataclasses.replace(item, targets=tuple((renumber[t[0]], *t[1:]) for t in item.targets))
        for item in items
    ]
    files = [spec["files"][i] for i in wanted]
    others = ([], []) if tree_ok else (spec["dirs"], spec["links"])
    return {"files": files, "dirs": others[0], "links": others[1], "dest": dest}, renumbered


async def _dest_states(
    sessions: AgentSessions, host: Host, spec: Mapping[str, Any], dest: str
) -> tuple[list[dict[str, Any]], bool]:
    """What the destination already has, in one request: per file of the spec, which chunks
    (``{"path", "done": [offset...], "complete"}``: a file with the source's size and mtime
    counts as complete unless the spec has chunk hashes, --checksum); and whether all of its
    directories and symlinks are there as the spec says.  Nothing under ``dest`` reached
    through a symbolic link counts as there."""
    files = spec["files"]
    request = wire.FileStatus(files=files, dest=dest, dirs=spec["dirs"], links=spec["links"])
    try:
        reply = await sessions.request(host, request, DATA_OP_TIMEOUT)
    except AgentError as exc:
        if exc.operation is None:
            raise
        raise CopyError(f"{host.name}: cannot read the destination: {exc.reason}") from None
    states: Any = reply.get("files")
    good = isinstance(states, list) and len(states) == len(files)
    good = good and isinstance(reply.get("tree_ok"), bool)
    for entry, state in zip(files, states if good else [], strict=False):
        good = (
            good
            and isinstance(state, dict)
            and state.get("path") == entry["path"]
            and isinstance(state.get("complete"), bool)
            and isinstance(state.get("done"), list)
            and set(state["done"]) <= {c[0] for c in entry["chunks"]}
        )
    if not good:
        raise AgentError(host.name, "the agent's file-status reply does not match the request")
    return states, bool(reply["tree_ok"])


def _check_space(outcomes: Sequence[TransferOutcome], host: Host, dest: str) -> None:
    """A destination that ran out of space removed what it had written: say so, without the
    hint to rerun (the rerun would fail the same way)."""
    for outcome in outcomes:
        if outcome.hops and outcome.hops[-1].no_space:
            raise CopyError(
                f"{host.name} ran out of space writing {dest!r}: "
                f"{printable(outcome.hops[-1].error)}",
                hint="the partial files were removed there; free some space and copy again",
            )


async def _destination(
    sessions: AgentSessions, host: Host, path: str, kind: str, name: str
) -> tuple[str, str, int]:
    """Where the copy goes, what is there now, and the free bytes there.  Into ``path``,
    keeping the source's ``name``, when it ends in "/", or when a file goes to a directory
    (as cp(1) and scp do).  A tree goes to ``path`` itself, existing or not, so that a rerun
    resumes it there instead of nesting a second copy inside the first.  A directory is never
    replaced by a file, nor a file by a directory (refused before anything is sent)."""
    into = path.rstrip("/") + "/" + name
    infos = await path_info(sessions, host, [path, into], CopyError)
    at = 1 if path.endswith("/") or (kind == "file" and infos[0].kind == "dir") else 0
    dest, found = (path, into)[at], infos[at].kind
    if kind == "file" and found == "dir":
        raise CopyError(f"{host.name}: {dest!r} is a directory: a file cannot replace it")
    if kind == "dir" and found in ("file", "other"):
        raise CopyError(f"{host.name}: {dest!r} exists and is not a directory")
    return dest, found, infos[at].free_bytes


def _never_connected(outcome: TransferOutcome) -> bool:
    """The first hop received nothing and failed: the sender could not connect to it (for
    a reason other than its host key: that is never relayed around)."""
    if len(outcome.hops) < 2 or outcome.hops[1].bytes or not outcome.hops[1].error:
        return False
    verdict = classify_hop_error(outcome.hops[1].error)
    return verdict is None or verdict[0] != "host_key"


def _note_relays(report: CopyReport, outcomes: Sequence[TransferOutcome]) -> None:
    """Say which hops went through this machine and why; the route shows it too."""
    relays = {(r.source, r.target): r for o in outcomes for r in o.relayed}
    for relay in relays.values():
        report.notes.append(relay.note)
        report.relayed.append(relay.to_dict())
        if relay.target in report.route and relay.via not in report.route:
            report.route.insert(report.route.index(relay.target), relay.via)


def copy_spec(
    scan: Scan | Mapping[str, Any], dest: str, root_mode: int | None = 0o755
) -> dict[str, Any]:
    """The files-mode receiver spec that rebuilds a scanned source at ``dest``.  Chunk hashes
    are computed while sending (a ``--checksum`` scan has them already: the destination then
    compares contents, not sizes and mtimes); ``source_id`` (size:mtime) tells a rerun whether
    a partial copy at the destination belongs to this version of the source.  A tree's top
    directory gets ``root_mode`` (None: it exists, and keeps its own).  A scan reply is
    checked first (``UnsafeScan``)."""
    if not isinstance(scan, Scan):
        scan = read_scan(scan, chunk_size=CP_CHUNK_SIZE, hashed=False)
    spec: dict[str, Any] = {"files": [], "dirs": [], "links": []}
    if scan.kind == "dir" and root_mode is not None:
        spec["dirs"].append({"path": dest, "mode": root_mode})
    for entry in scan.entries:
        path = posixpath.join(dest, entry.path) if entry.path else dest
        if entry.type == "dir" and entry.path:
            spec["dirs"].append({"path": path, "mode": entry.mode})
        elif entry.type == "symlink":
            spec["links"].append({"path": path, "target": entry.target})
        else:
            chunks, at = [], 0
            for digest, size in entry.chunks:  # hashes: only a --checksum copy reads them
                chunks.append([at, size, digest])
                at += size
            spec["files"].append(
                {
                    "path": path,
                    "size": entry.size,
                    "mode": entry.mode,
                    "mtime_ns": entry.mtime_ns,
                    "source_id": f"{entry.size}:{entry.mtime_ns}",
                    "chunks": chunks,
                }
            )
    return spec


def _items(
    spec: dict[str, Any], states: Sequence[dict[str, Any]], src_path: str, root: str | None
) -> tuple[list[wire.SendItem], int, int]:
    """Frames still to send (``root``: where a tree goes; None for a file): the files below
    PACK_FILE_BYTES that the destination lacks packed many to a frame, in listing order (a
    directory's files travel together); every missing chunk of a larger file a frame of its
    own."""
    items: list[wire.SendItem] = []
    pack: list[tuple[int, str, int]] = []  # (file index, source path, size)
    total = reused = 0

    def close_pack() -> None:
        if pack:
            segments = tuple((path, 0, size) for _, path, size in pack)
            targets, at = [], 0
            for index, _, size in pack:
                targets.append((index, 0, at, size))
                at += size
            items.append(wire.SendItem(at, None, None, 0, tuple(targets), segments))
            pack.clear()

    packed_bytes = 0
    for index, (entry, state) in enumerate(zip(spec["files"], states, strict=True)):
        done = set(state["done"])
        source = src_path if root is None else src_path + entry["path"][len(root) :]
        chunks = entry["chunks"]
        total += entry["size"]
        if state["complete"] or (chunks and all(c[0] in done for c in chunks)):
            reused += entry["size"]
            continue
        if 0 < entry["size"] < PACK_FILE_BYTES and len(chunks) == 1 and not done:
            if packed_bytes + entry["size"] > PACK_BYTES or len(pack) >= PACK_FILES:
                close_pack()
                packed_bytes = 0
            pack.append((index, source, entry["size"]))
            packed_bytes += entry["size"]
            continue
        for offset, size, digest in chunks:
            if offset in done:
                reused += size
                continue
            items.append(wire.SendItem(size, digest, source, offset, ((index, offset),)))
    close_pack()
    return items, total, reused


async def _run(
    transfers: Transfers,
    plan: Plan,
    spec: dict[str, Any],
    items: list[wire.SendItem],
    streams: int,
    rate_bps: float | None,
    compress: bool,
    progress: Callable[[int, int], None] | None,
    total: int,
    pump: bool = False,
) -> list[TransferOutcome]:
    """``streams`` parallel chains over the same route, items dealt round-robin."""
    streams = max(1, min(streams, len(items)))
    shares = [items[i::streams] for i in range(streams)]
    moved = [0] * streams

    def tick(i: int) -> Callable[[int], None]:
        def update(done: int) -> None:
            moved[i] = done
            if progress is not None:
                progress(sum(moved), total)

        return update

    chain = [*(Hop(h, store="none") for h in plan.relays)]
    chain.append(Hop(plan.dest, store="files", files=spec))

    async def one(i: int) -> TransferOutcome:
        return await transfers.run(
            plan.source,
            shares[i],
            chain,
            compress=compress,
            rate_bps=rate_bps / streams if rate_bps else None,
            progress=tick(i),
            pump=pump,
        )

    results = await asyncio.gather(*(one(i) for i in range(streams)), return_exceptions=True)
    outcomes = []
    for result in results:
        if isinstance(result, HostError):
            raise CopyError(
                f"{result.host}: {result.message}",
                hint="run the same cp again to resume (use --via or --direct to pick the path)",
            )
        if isinstance(result, BaseException):
            raise result
        outcomes.append(result)
    return outcomes
