"""``data put`` / ``get`` / ``rm``: datasets in, out and away.

A put scans the source where it lives (the operator's disk, or ``host:/path``
on a host), records a new *writing* version whose manifest lists every chunk,
replicates the chunks (``services/replication``), asks the hosts what they
hold, and only then flips the version to *ready*: readers see the old version
or the new one, never a mix.  A put that stops half way leaves an invisible
writing version; running the same put again finds it and sends only the chunks
that are still missing.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from leptonctl.core.datasets import DAMAGED_HINT, ChunkRef
from leptonctl.core.packing import chunk_ranges as chunk_ranges
from leptonctl.core.packing import files_spec as files_spec
from leptonctl.core.packing import manifest_from_scan as manifest_from_scan
from leptonctl.core.packing import slice_target
from leptonctl.core.reports import GetReport, PutReport, RemoveReport
from leptonctl.core.scan import UnsafeScan, printable
from leptonctl.core.storages import LOCAL_DATA_DIR_HINT, independent_count, storage_key
from leptonctl.errors import AgentError, HostError, LeptonError, StateError, UsageError
from leptonctl.inventory.model import Host, Inventory
from leptonctl.remote.agent import AgentSessions, wire
from leptonctl.remote.hopmemory import relayed_in
from leptonctl.remote.transfer import Hop, HopOutcome, TransferOutcome, Transfers, operator_host
from leptonctl.services.context import ServiceContext
from leptonctl.services.data import chunkrefs, storages
from leptonctl.services.data.datalock import data_lock
from leptonctl.services.data.replication import Origin, Replicator, Survey
from leptonctl.store.data import DatasetRecord
from leptonctl.store.interface import Store

DEFAULT_CHUNK_SIZE = 64 << 20
DEFAULT_REPLICAS = 3
# Ops that read whole files (scan, file-status, materialize, chunk-import) may take long on
# big data; a dead host is still noticed by the connection's keepalive, not by this.
DATA_OP_TIMEOUT = 24 * 3600.0


class DataError(LeptonError):
    """A data command could not do what it was asked (nothing half-done is visible)."""


class ProgressSink(Protocol):
    def begin(self, total: int, label: str) -> None: ...

    def advance(self, done: int) -> None: ...

    def end(self) -> None: ...


def split_location(text: str, inventory: Inventory) -> tuple[Host | None, str]:
    """``host:/path`` (an inventory host) or a local path."""
    head, sep, tail = text.partition(":")
    if sep and head in inventory.host_names:
        if not tail.startswith("/"):
            raise UsageError(f"{text!r}: the path on {head} must be absolute")
        return inventory.host(head), tail
    return None, os.path.abspath(os.path.expanduser(text))


def refuse_scan(host: Host, path: str, exc: UnsafeScan, error: type[LeptonError]) -> LeptonError:
    """The error for a scan that cannot be trusted: names the host, the source and the entry
    (paths as repr: printed literally, whatever they contain)."""
    return error(
        f"{host.name}: refusing its scan of {path!r}: {exc}",
        hint="nothing was written; a path that escapes the tree, a control character or an "
        "entry under a symlink is refused (check the source tree, or whether that host's "
        "agent can be trusted)",
    )


async def put(
    ctx: ServiceContext,
    source: str,
    name: str,
    *,
    replicas: int = DEFAULT_REPLICAS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    graph: Any = None,
    progress: ProgressSink | None = None,
) -> PutReport:
    sessions, store, inventory, hosts = ctx.sessions, ctx.store, ctx.inventory, ctx.selected
    clock = ctx.clock
    async with data_lock(store, exclusive=False):
        started = time.monotonic()
        src_host, path = split_location(source, inventory)
        if src_host is None:
            if not os.path.exists(path):
                raise UsageError(f"{source}: no such file or directory")
            src_host = operator_host()
        try:
            scan = await sessions.request(
                src_host, wire.Scan(path=path, chunk_size=chunk_size, pack=True), DATA_OP_TIMEOUT
            )
        except AgentError as exc:
            if exc.operation is None:
                raise
            raise UsageError(f"cannot read {source}: {exc.reason}") from None
        try:
            manifest = manifest_from_scan(scan, chunk_size)
        except UnsafeScan as exc:
            raise refuse_scan(src_host, path, exc, DataError) from None
        del scan  # a million files' columns: the manifest holds what is needed
        sizes = manifest.chunk_sizes()
        chunks = [ChunkRef(h, n) for h, n in sizes.items()]
        replicator = Replicator(sessions, hosts, graph, _advance(progress))
        surveys = await replicator.survey(list(sizes))
        notes = [f"{n}: skipped ({e.message})" for n, e in replicator.dead.items()]
        skipped = set(replicator.dead)  # noted here; a host lost later is noted below
        if not surveys:
            raise DataError(
                "no selected host could be reached to store the dataset",
                hint="check `leptonctl status`; " + printable("; ".join(notes)),
            )
        k = min(replicas, len(surveys))
        if k < replicas:
            notes.append(
                f"only {len(surveys)} reachable host(s): storing {k} replica(s), not {replicas}"
            )
        storages.remember(store, surveys, clock())
        notes += await _check_storages(ctx, surveys, k)
        record = store.data.begin_version(
            name,
            manifest=manifest,
            replicas=k,
            chunk_size=chunk_size,
            source=source,
            now=clock(),
        )
        surveys = await chunkrefs.pin_for_put(replicator, store, record, surveys)
        known = store.data.replicas(list(sizes))  # a copy verify found corrupt is no holder
        bad = storages.corrupt_storages(store, known, surveys)  # nor is any host of its storage
        same = storages.surveyed_storages(surveys)
        holders = {
            c.hash: {
                n
                for n, s in surveys.items()
                if c.hash in s.present and (c.hash, storage_key(n, same.get(n))) not in bad
            }
            for c in chunks
        }
        count = {c.hash: independent_count(holders[c.hash], same) for c in chunks}
        reused = sum(1 for c in chunks if count[c.hash] >= k)
        if progress is not None:
            missing = sum(c.size * max(0, k - count[c.hash]) for c in chunks)
            progress.begin(missing, f"put {name}")
        try:
            placed = await replicator.place(
                chunks,
                k,
                holders,
                surveys,
                store.data.host_usage(),
                Origin(src_host, chunk_ranges(manifest, path)),
            )
        finally:
            if progress is not None:
                progress.end()
        storages.record_holders(store, placed.holders, surveys, clock())
        notes += [  # a host the survey could not reach is noted once, above
            f"{host}: {why}" for host, why in sorted(placed.problems.items()) if host not in skipped
        ]
        relayed = relayed_in(sessions)  # hops the operator carried, and why
        notes += [hop.note for hop in relayed]
        if placed.shortfalls:
            first = next(iter(placed.shortfalls.values()))
            raise DataError(
                f"{name}: {len(placed.shortfalls)} of {len(chunks)} chunk(s) did not reach "
                f"{k} replicas ({first}); version {record.version} stays invisible",
                hint="run the same put again to resume it (only missing chunks are sent); "
                + printable("; ".join(notes[-3:])),
            )
        store.data.complete(name, record.version, clock())
        return PutReport(
            name=name,
            version=record.version,
            size=manifest.size,
            chunks=len(chunks),
            replicas=k,
            requested_replicas=replicas,
            sent_bytes=placed.sent_bytes,
            reused_chunks=reused,
            seconds=time.monotonic() - started,
            notes=tuple(notes),
            relayed=tuple(hop.to_dict() for hop in relayed),
        )


async def _check_storages(ctx: ServiceContext, surveys: Mapping[str, Survey], k: int) -> list[str]:
    """Refuse ``k`` copies on fewer than ``k`` independent storages (hosts whose data dirs
    are one directory hold one copy); the notes that say which hosts share a storage."""
    shared = await storages.shared_storages(ctx, surveys)
    if not shared:
        return []
    independent = independent_count(surveys, storages.surveyed_storages(surveys))
    where = printable("; ".join(s.describe() for s in shared))  # paths as hosts said them
    if independent < k:
        raise DataError(
            f"{k} replicas need {k} independent storages, but the {len(surveys)} reachable "
            f"hosts have {independent}: {where} (a copy there is one copy, whichever host "
            "wrote it)",
            hint=f"{LOCAL_DATA_DIR_HINT}, or store fewer replicas (-k {independent}); "
            "nothing was written",
        )
    if k == 1:
        return [f"1 replica, on a storage that hosts share: {where}"]
    return [f"{where}: counted as one replica"]


def _advance(progress: ProgressSink | None) -> Callable[[int], None] | None:
    if progress is None:
        return None
    done = 0

    def advance(delta: int) -> None:
        nonlocal done
        done += delta
        progress.advance(done)

    return advance


def find_record(store: Store, name: str, version: int | None) -> DatasetRecord:
    record = store.data.get(name, version)
    if record is None or record.state != "ready":
        known = sorted({r.name for r in store.data.datasets()})
        what = name if version is None else f"{name}@{version}"
        raise UsageError(
            f"no dataset {what}",
            hint=f"known: {', '.join(known)}" if known else "store one with `leptonctl data put`",
        )
    return usable(record)


def usable(record: DatasetRecord) -> DatasetRecord:
    """The record, unless its stored manifest is damaged (then a ``StateError`` that names
    that version: the other datasets stay usable).  A manifest the store reads lazily is
    read here."""
    if record.manifest.kind and record.manifest.defect is not None:
        raise StateError(record.manifest.defect, hint=DAMAGED_HINT)
    return record


async def get(
    ctx: ServiceContext,
    name: str,
    version: int | None,
    dest: str,
    *,
    progress: ProgressSink | None = None,
) -> GetReport:
    """Rebuild a dataset at a local ``dest``, verifying every chunk; a chunk that is bad or
    missing on one replica is fetched from the next.  It succeeds only when every file is
    complete at ``dest`` (no resume state is left then), or raises."""
    sessions, store, hosts = ctx.sessions, ctx.store, ctx.selected
    clock = ctx.clock
    started = time.monotonic()
    record = find_record(store, name, version)
    dest = os.path.abspath(os.path.expanduser(dest))
    if os.path.isdir(dest) and record.manifest.kind == "file":
        dest = os.path.join(dest, name)
    if record.manifest.kind == "file" and os.path.isdir(dest):
        raise DataError(f"{dest!r} is a directory: the file {name} cannot replace it")
    if record.manifest.kind == "dir" and os.path.lexists(dest) and not os.path.isdir(dest):
        raise DataError(f"{dest!r} exists and is not a directory")
    spec = files_spec(record.manifest, dest, None if os.path.isdir(dest) else _new_dir_mode())
    me = operator_host()
    states: list[dict[str, Any]] | None = None  # a new destination: nothing to ask about
    if os.path.lexists(dest):  # what is there already is kept where it checks
        states = await file_states(sessions, me, spec["files"], DataError, dest)
    needed: dict[str, list[tuple[int, ...]]] = defaultdict(list)
    sizes = record.manifest.chunk_sizes()
    reused = 0
    done = {state["path"] for state in states or () if state["complete"]}
    pieces = [e.chunks for e in record.manifest.entries if e.type == "file"]
    for index, entry in enumerate(spec["files"]):
        have: set[int] = set()
        if states is not None:
            # Only chunks journaled next to a part file can be kept: a finished file that
            # differs is rebuilt whole (its good chunks never get into the new part file).
            part = entry["path"] + ".lepton-part"  # as the agent sees it: a file, not a link
            keep = states[index]["complete"] or (os.path.isfile(part) and not os.path.islink(part))
            have = set(states[index]["done"]) if keep else set()
        for (offset, _, _), piece in zip(entry["chunks"], pieces[index], strict=True):
            if offset in have:
                reused += 1
            else:
                needed[piece.hash].append(slice_target(index, offset, piece, sizes[piece.hash]))
    wanted = sum(t[3] if len(t) == 4 else sizes[h] for h, ts in needed.items() for t in ts)
    free = (await path_info(sessions, me, [dest], DataError))[0].free_bytes
    if wanted > free:
        raise DataError(
            f"not enough space for {dest!r}: {wanted} bytes to write, {free} bytes free",
            hint="nothing was fetched; free some space or get it somewhere else",
        )
    live = {h.name: h for h in hosts}
    # a copy recorded under a host that is down is read through a live host of its storage
    holders, via = storages.stand_ins(store, _ok_holders(store, list(needed)), live)
    tried: dict[str, set[str]] = defaultdict(set)
    notes: list[str] = []
    fetched, built = 0, False
    transfers = Transfers(sessions)
    if progress is not None:
        progress.begin(wanted, f"get {name}")
    try:
        while needed:
            by_host = _assign(needed, holders, live, tried, sizes, via)
            if not by_host:
                break
            for host_name, hashes in by_host.items():
                items = [wire.SendItem(sizes[h], hash=h, targets=tuple(needed[h])) for h in hashes]
                for digest in hashes:
                    tried[digest].add(host_name)
                try:
                    outcome = await transfers.run(
                        live[host_name],
                        items,
                        [Hop(me, store="files", files=spec)],
                        progress=_offset(progress, fetched),
                    )
                except HostError as exc:
                    notes.append(f"{host_name}: {exc.message}")
                    continue
                sender, receiver = outcome.hops[0], outcome.hops[-1]
                fetched += receiver.bytes
                done.update(receiver.files_done)
                _check_receiver(receiver, dest)
                built = built or not receiver.error  # it made the directories and links
                bad = [(h, via.get((h, host_name), host_name)) for h in receiver.failed]
                gone = [(h, via.get((h, host_name), host_name)) for h in sender.failed]
                store.data.set_replicas([(h, n, "corrupt") for h, n in bad], clock())
                store.data.drop_replicas(gone)
                for digest, why in {**sender.failed, **receiver.failed}.items():
                    notes.append(f"{host_name}: chunk {digest[:12]} {why}; trying another copy")
                for digest in receiver.stored:
                    needed.pop(digest, None)
                if receiver.error:
                    notes.append(f"{host_name}: {receiver.error}")
    finally:
        if progress is not None:
            progress.end()
    if needed:
        raise DataError(
            f"{name}@{record.version}: {len(needed)} chunk(s) could not be read from any "
            f"healthy replica; {dest} is incomplete",
            hint="run `leptonctl data verify` and `data repair`, then get again (it resumes); "
            + printable("; ".join(notes[-3:])),
        )
    if len(done) < len(spec["files"]) or (not built and (spec["dirs"] or spec["links"])):
        # Directories, symlinks and empty files need no bytes, and a file whose chunks
        # all arrived in earlier streams is renamed into place only now.
        receiver = (await make_tree(transfers, me, spec)).hops[-1]
        done.update(receiver.files_done)
        _check_receiver(receiver, dest)
    missing = [f["path"] for f in spec["files"] if f["path"] not in done]
    if missing:
        raise DataError(
            f"{name}@{record.version}: {len(missing)} file(s) of {dest!r} are not complete "
            f"(e.g. {missing[0]!r})",
            hint="run the same get again: verified chunks are kept; "
            + printable("; ".join(notes[-3:])),
        )
    return GetReport(
        name=name,
        version=record.version,
        dest=dest,
        size=record.size,
        fetched_bytes=fetched,
        reused_chunks=reused,
        seconds=time.monotonic() - started,
        notes=tuple(notes),
    )


def _new_dir_mode() -> int:
    """0o777 less this process's umask: a directory as mkdir would make it here."""
    umask = os.umask(0o077)
    os.umask(umask)
    return 0o777 & ~umask


def _check_receiver(receiver: HopOutcome, dest: str) -> None:
    """Trouble writing on this machine is not a replica's fault: no other copy helps."""
    if receiver.no_space:
        raise DataError(
            f"this machine ran out of space writing {dest!r}: {printable(receiver.error)}",
            hint="the partial files were removed; free some space and get again",
        )
    if receiver.error and receiver.error.startswith("cannot "):
        raise DataError(f"cannot write {dest!r}: {printable(receiver.error)}")


async def file_states(
    sessions: AgentSessions,
    host: Host,
    files: Sequence[Mapping[str, Any]],
    error: type[LeptonError],
    dest: str,
) -> list[dict[str, Any]]:
    """Which chunks of each files-mode entry ``host`` already has: ``[{"path", "done":
    [offset...], "complete"}]``, one per entry, checked against the request.  Nothing under
    ``dest`` that is reached through a symbolic link counts as there."""
    try:
        request = wire.FileStatus(files=[dict(f) for f in files], dest=dest)
        reply = await sessions.request(host, request, DATA_OP_TIMEOUT)
    except AgentError as exc:
        if exc.operation is None:
            raise
        raise error(f"{host.name}: cannot read the destination: {exc.reason}") from None
    states: list[Any] = reply.get("files") or []
    valid = isinstance(states, list) and len(states) == len(files)
    for entry, state in zip(files, states if valid else [], strict=False):
        offsets = {c[0] for c in entry["chunks"]}
        valid = (
            valid
            and isinstance(state, dict)
            and state.get("path") == entry["path"]
            and isinstance(state.get("complete"), bool)
            and isinstance(state.get("done"), list)
            and set(state["done"]) <= offsets
        )
    if not valid:
        raise AgentError(host.name, "the agent's file-status reply does not match the request")
    return states


@dataclass(frozen=True)
class PathInfo:
    kind: str  # "dir" | "file" | "other" | "none" (symlinks followed, as cp does)
    mode: int | None  # permission bits of a dir or file
    free_bytes: int  # on the filesystem that holds, or would hold, it


async def path_info(
    sessions: AgentSessions, host: Host, paths: Sequence[str], error: type[LeptonError]
) -> list[PathInfo]:
    """What is at each absolute path on ``host``, checked."""
    try:
        reply = await sessions.request(host, wire.PathInfo(paths=list(paths)))
    except AgentError as exc:
        if exc.operation is None:
            raise
        raise error(f"{host.name}: cannot look at {paths[0]!r}: {exc.reason}") from None
    infos = reply.get("paths")
    out = []
    for info in infos if isinstance(infos, list) and len(infos) == len(paths) else []:
        info = info if isinstance(info, dict) else {}
        kind, free, mode = info.get("kind"), info.get("free_bytes"), info.get("mode")
        if (
            kind in ("dir", "file", "other", "none")
            and isinstance(free, int)
            and (mode is None or (isinstance(mode, int) and 0 <= mode <= 0o7777))
        ):
            out.append(PathInfo(str(kind), mode, free))
    if len(out) != len(paths):
        raise AgentError(host.name, "the agent's path-info reply does not match the request")
    return out


async def make_tree(transfers: Transfers, host: Host, spec: Mapping[str, Any]) -> TransferOutcome:
    """A transfer of no frames into ``spec``: the receiver makes its directories, symlinks
    and empty files, renames files whose chunks are all in, and says which files are
    complete (the sender is on the same host: no key, no bytes)."""
    return await transfers.run(host, [], [Hop(host, store="files", files=spec)], pump=True)


def _ok_holders(store: Store, hashes: Sequence[str]) -> dict[str, list[str]]:
    return {
        digest: sorted(h for h, state in hosts.items() if state == "ok")
        for digest, hosts in store.data.replicas(hashes).items()
    }


def _assign(
    needed: Mapping[str, Any],
    holders: Mapping[str, set[str]],
    live: Mapping[str, Host],
    tried: Mapping[str, set[str]],
    sizes: Mapping[str, int],
    via: Collection[tuple[str, str]] = (),
) -> dict[str, list[str]]:
    """Each needed chunk to an untried live holder, spreading bytes across holders; a host
    that only shares a holder's storage (``via``) is asked after the holders."""
    load: dict[str, int] = defaultdict(int)
    plan: dict[str, list[str]] = defaultdict(list)
    for digest in needed:
        options = [
            h for h in holders.get(digest, ()) if h in live and h not in tried.get(digest, ())
        ]
        if not options:
            continue
        best = min(options, key=lambda h: ((digest, h) in via, load[h], h))
        load[best] += sizes[digest]
        plan[best].append(digest)
    return dict(plan)


def _offset(progress: ProgressSink | None, base: int) -> Callable[[int], None] | None:
    if progress is None:
        return None
    return lambda done: progress.advance(base + done)


async def remove(
    ctx: ServiceContext,
    name: str,
    version: int | None,
    keep_last: int | None = None,
    force: bool = False,
) -> RemoveReport:
    """Forget a dataset version (or all of them, or all but the newest ``keep_last`` ready
    ones) and delete the chunks no state store uses any more.  A version an active job
    needs as input is refused (``force``: removed anyway); ``keep_last`` spares it."""
    sessions, store, hosts = ctx.sessions, ctx.store, ctx.selected
    async with data_lock(store, exclusive=True):
        versions = store.data.versions(name)
        if not versions:
            find_record(store, name, version)  # raises the helpful "no dataset" error
        needed = chunkrefs.jobs_needing(store, name)
        notes: list[str] = []
        if keep_last is not None:
            spare = set() if force else set(needed)
            doomed, candidates = store.data.keep_last(name, keep_last, spare)
            ready = [v.version for v in versions if v.state == "ready"]
            notes += [
                f"{name}@{v} kept: the input of job(s) {', '.join(str(j) for j, _ in needed[v])}"
                for v in ready[: max(0, len(ready) - keep_last)]
                if v in spare
            ]
        else:
            doomed = [v.version for v in versions if version is None or v.version == version]
            if not doomed:
                find_record(store, name, version)
            if not force:
                chunkrefs.refuse_needed(name, doomed, needed)
            candidates = store.data.remove(name, version)
        records = [v for v in versions if v.version in doomed]
        freed, freed_bytes, left, kept = await chunkrefs.unpin(
            sessions, store, hosts, records, candidates
        )
        return RemoveReport(
            name=name,
            versions=tuple(doomed),
            freed_chunks=len(freed),
            freed_bytes=freed_bytes,
            left_on=left,
            notes=tuple(notes + kept),
        )
