"""Keeping replicas healthy: verify, scrub, repair, rebalance, and collect garbage.

``verify`` re-hashes replicas where they are (nothing moves); ``scrub`` does
the same for a bounded slice per run, rotating through every replica like
HDFS's block scanner; ``repair`` deletes corrupt copies and brings every chunk
back to K healthy replicas on live hosts; ``rebalance`` evens out disk use
without ever going below K; ``collect_garbage`` deletes chunks no dataset
version of any state store references any more.  Chunks on a host are shared by
every state store that uses it: whatever deletes goes through the host's chunk
refs (``services/chunkrefs``), so one store never deletes what another one pins.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence

from leptonctl.core.datasets import ChunkRef, ReplicaProblem, VerifyReport
from leptonctl.core.placement import plan_rebalance, storage_groups
from leptonctl.core.reports import GarbageReport, RebalanceReport, RepairReport
from leptonctl.core.storages import dedupe_holders, independent_count, storage_key
from leptonctl.errors import HostError
from leptonctl.inventory.model import Host
from leptonctl.remote.agent import AgentSessions, wire
from leptonctl.remote.hopmemory import relayed_in
from leptonctl.remote.transfer import Hop, Transfers
from leptonctl.services.context import ServiceContext
from leptonctl.services.data import chunkrefs, storages
from leptonctl.services.data.datalock import data_lock
from leptonctl.services.data.replication import Replicator, Survey
from leptonctl.store.data import DatasetRecord
from leptonctl.store.interface import Store

SCRUB_CURSOR = "scrub.cursor"


def wanted_replicas(store: Store, name: str | None = None) -> dict[str, int]:
    """hash -> K (the largest K of any version that uses it), for one dataset or all."""
    wanted: dict[str, int] = {}
    for record in store.data.all_records():
        if name is None or record.name == name:
            for digest in record.manifest.hashes():
                wanted[digest] = max(wanted.get(digest, 0), record.replicas)
    return wanted


async def verify(
    ctx: ServiceContext,
    name: str | None = None,
    pairs: Collection[tuple[str, str]] | None = None,
) -> VerifyReport:
    """Re-hash the replicas the store knows of (``pairs``: only these (hash, host))."""
    sessions, store, hosts = ctx.sessions, ctx.store, ctx.selected
    clock = ctx.clock
    started = time.monotonic()
    wanted = wanted_replicas(store, name)
    live = {h.name: h for h in hosts}
    # a copy recorded under a host that cannot be asked is checked through another host of
    # its storage (``through``); the rows stay under the recorded host
    through = await _one_row_per_storage(ctx, store.data.replicas(list(wanted)), live)
    known = store.data.replicas(list(wanted))
    expected: dict[str, list[str]] = defaultdict(list)  # host -> hashes
    for digest, holders in known.items():
        for host in holders:
            if pairs is None or (digest, host) in pairs:
                expected[host].append(digest)
    asks: dict[str, set[str]] = defaultdict(set)  # the host asked -> hashes
    for host, hashes in expected.items():
        if through.get(host, host) in live:
            asks[through.get(host, host)].update(hashes)
    replicator = Replicator(sessions, [live[n] for n in asks])
    sizes = store.data.chunk_sizes(list(wanted))
    replies = await replicator.request_all(
        {n: wire.ChunkVerify(hashes=sorted(hs)) for n, hs in asks.items()},
        {n: hashing_timeout(sum(sizes.get(h, 0) for h in hs)) for n, hs in asks.items()},
    )
    problems: list[ReplicaProblem] = []
    ok_rows, corrupt_rows, missing_rows = [], [], []
    hashed = sum(int(r.get("bytes") or 0) for r in replies.values() if isinstance(r, dict))
    for host, hashes in sorted(expected.items()):
        reply = replies.get(through.get(host, host))
        if reply is None or isinstance(reply, HostError):
            why = reply.message if isinstance(reply, HostError) else "not in the selection"
            if reply is None:
                continue  # a host outside --limit is not judged
            problems += [ReplicaProblem(h, host, "unreachable", why) for h in sorted(hashes)]
            continue
        mine = set(hashes)
        ok = [h for h in reply["ok"] if h in mine]
        corrupt = [h for h in reply["corrupt"] if h in mine]
        missing = [h for h in reply["missing"] if h in mine]
        ok_rows += [(h, host, "ok") for h in ok]
        corrupt_rows += [(h, host, "corrupt") for h in corrupt]
        missing_rows += [(h, host) for h in missing]
        problems += [ReplicaProblem(h, host, "corrupt", "hash mismatch") for h in corrupt]
        problems += [ReplicaProblem(h, host, "missing", "not on the host") for h in missing]
    now = clock()
    store.data.set_replicas(ok_rows + corrupt_rows, now)
    store.data.drop_replicas(missing_rows)
    after = store.data.replicas(list(wanted))
    short = sorted(
        h for h, k in wanted.items() if sum(s == "ok" for s in after.get(h, {}).values()) < k
    )
    checked = len(ok_rows) + len(corrupt_rows) + len(missing_rows)
    return VerifyReport(
        dataset=name,
        replicas_checked=checked,
        replicas_ok=len(ok_rows),
        bytes_hashed=hashed,
        seconds=time.monotonic() - started,
        problems=tuple(problems),
        under_replicated=tuple(short),
    )


async def _one_row_per_storage(
    ctx: ServiceContext, known: Mapping[str, Mapping[str, str]], live: Mapping[str, Host]
) -> dict[str, str]:
    """Forget recorded copies that another recorded host of the same storage already stands
    for (recorded before storages were known, or by a host that shares it): a copy on a
    shared data dir is one copy, hashed and counted once.  Returns, for recorded hosts that
    cannot be asked (down, not selected), a live host that shares their storage."""
    everyone = {n for states in known.values() for n in states}
    before = storages.remembered(ctx.store, everyone | set(live))
    shared = {before[n] for n in everyone if before.get(n)}
    names = {n for n in live if n in everyone or (before.get(n) and before[n] in shared)}
    if not names:
        return {}
    surveys = await Replicator(ctx.sessions, [live[n] for n in sorted(names)]).survey([])
    storages.remember(ctx.store, surveys, ctx.clock())
    storage_of = storages.storage_map(ctx.store, surveys, everyone)
    recorded = {h: set(states) for h, states in known.items()}
    _, forget = dedupe_holders(recorded, storage_of, recorded)
    ctx.store.data.drop_replicas(forget)
    return storages.through_sharers(storage_of, surveys, everyone)


def hashing_timeout(size: int) -> float:
    """Seconds to allow a host for re-hashing ``size`` bytes (a slow disk reads 20 MB/s)."""
    return 60.0 + size / 20e6


async def scrub(
    ctx: ServiceContext,
    budget: int,
    name: str | None = None,
) -> VerifyReport:
    """Verify the next ``budget`` replicas after the saved cursor (wrapping around), so
    that every replica is checked once every ceil(replicas / budget) runs."""
    store, hosts = ctx.store, ctx.selected
    live = {h.name for h in hosts}
    pairs = scrub_pairs(store, live, name)
    if not pairs or budget < 1:
        return await verify(ctx, pairs=())
    cursor = store.value(SCRUB_CURSOR)
    after = tuple(json.loads(cursor)) if cursor else None
    start = next((i for i, p in enumerate(pairs) if after is None or p > after), 0)
    chosen = [pairs[(start + i) % len(pairs)] for i in range(min(budget, len(pairs)))]
    report = await verify(ctx, pairs=set(chosen))
    store.set_value(SCRUB_CURSOR, json.dumps(list(chosen[-1])))
    return report


def scrub_pairs(
    store: Store, hosts: Collection[str], name: str | None = None
) -> list[tuple[str, str]]:
    """Every (hash, host) replica the scrub rotation walks through, in its order."""
    wanted = wanted_replicas(store, name)
    return sorted(
        (digest, host)
        for digest, holders in store.data.replicas(list(wanted)).items()
        for host in holders
        if host in hosts
    )


async def repair(
    ctx: ServiceContext,
    name: str | None = None,
    graph: object = None,
    progress: Callable[[int], None] | None = None,
) -> RepairReport:
    """Delete known-corrupt copies, then copy from healthy replicas until every chunk
    has K of them on live hosts."""
    sessions, store, hosts = ctx.sessions, ctx.store, ctx.selected
    clock = ctx.clock
    async with data_lock(store, exclusive=False):
        wanted = wanted_replicas(store, name)
        sizes = store.data.chunk_sizes(list(wanted))
        report = RepairReport(name, len(wanted))
        replicator = Replicator(sessions, hosts, graph, progress)
        surveys = await replicator.survey(list(wanted))
        known = store.data.replicas(list(wanted))
        storages.remember(store, surveys, clock())
        same = storages.surveyed_storages(surveys)
        recorded = {n for states in known.values() for n in states}
        storage_of = storages.storage_map(store, surveys, recorded)
        # a copy is one file per storage: what is known of it under one host of a shared
        # data dir holds for them all (and is acted on through a live one)
        through = storages.through_sharers(storage_of, surveys, recorded)
        corrupt: dict[str, list[str]] = defaultdict(list)
        for digest, states in known.items():
            for host, state in states.items():
                asked = host if host in surveys else through.get(host)
                if state == "corrupt" and asked is not None:
                    corrupt[asked].append(digest)
        removed, refetch = await _drop_corrupt(replicator, store, corrupt, clock())
        report.corrupt_removed = len(removed)
        gone = {(h, storage_key(n, storage_of.get(n))) for h, n in removed}

        def lost(digest: str, host: str) -> bool:
            return (digest, storage_key(host, storage_of.get(host))) in gone

        holders = {
            h: {n for n, s in surveys.items() if h in s.present and not lost(h, n)} for h in wanted
        }
        store.data.drop_replicas(
            (h, n)
            for h, hs in known.items()
            for n in hs
            if (n in surveys and n not in holders[h]) or lost(h, n)
        )
        before = sum(independent_count(v, same) for v in holders.values())
        report.lost = sorted(h for h, v in holders.items() if not v)
        by_k: dict[int, list[ChunkRef]] = defaultdict(list)
        for digest, k in wanted.items():
            if holders[digest] and independent_count(holders[digest], same) < k:
                by_k[k].append(ChunkRef(digest, sizes.get(digest, 0)))
        needy = {c.hash for chunks in by_k.values() for c in chunks} | {h for h, _ in refetch}
        versions = [
            r
            for r in store.data.all_records()
            if (name is None or r.name == name) and needy.intersection(r.manifest.hashes())
        ]
        if versions:  # pinned wherever a copy may go, before it goes
            await chunkrefs.pin(replicator, store, {n: versions for n in surveys})
        usage = store.data.host_usage()
        for k, chunks in sorted(by_k.items()):
            placed = await replicator.place(chunks, k, holders, surveys, usage)
            holders.update(placed.holders)
            report.short.update(placed.shortfalls)
            report.problems.update(placed.problems)
            report.sent_bytes += placed.sent_bytes
        pairs: dict[tuple[str, str], list[str]] = defaultdict(list)
        for digest, host in refetch:  # another store's copy was corrupt: give it a good one
            sources = sorted(holders[digest] - replicator.dead.keys())
            if host not in holders[digest] and host not in replicator.dead and sources:
                pairs[(sources[0], host)].append(digest)
        copied = await _copy_pairs(sessions, hosts, sizes, pairs, report.problems)
        for (_, host), hashes in copied.items():
            for digest in hashes:
                holders[digest].add(host)
            report.sent_bytes += sum(sizes.get(h, 0) for h in hashes)
        storages.record_holders(store, holders, surveys, clock())
        after = sum(independent_count(v, same) for v in holders.values())
        report.copies_made = max(0, after - before)
        for name_, error in replicator.dead.items():
            report.problems.setdefault(name_, error.message)
        if report.copies_made or report.corrupt_removed:  # the event records who repaired
            detail = {"copies_made": report.copies_made, "corrupt_removed": report.corrupt_removed}
            store.record_event(clock(), "chunks_repaired", None, {"dataset": name, **detail})
        report.relayed = [hop.to_dict() for hop in relayed_in(sessions)]
        return report


async def rebalance(
    ctx: ServiceContext,
    tolerance: float = 0.05,
    check: bool = False,
) -> RebalanceReport:
    """Move replicas from full hosts to empty ones: copy first, delete the source copy
    only once the destination holds it, so no chunk ever drops below K."""
    sessions, store, hosts = ctx.sessions, ctx.store, ctx.selected
    clock = ctx.clock
    async with data_lock(store, exclusive=True):
        wanted = wanted_replicas(store)
        sizes = store.data.chunk_sizes(list(wanted))
        replicator = Replicator(sessions, hosts)
        surveys = await replicator.survey(list(wanted))
        storages.remember(store, surveys, clock())
        holders = {h: {n for n, s in surveys.items() if h in s.present} for h in wanted}
        recorded = {h: set(states) for h, states in store.data.replicas(list(wanted)).items()}
        storage_of = storages.storage_map(store, surveys, {n for v in recorded.values() for n in v})
        holders, _ = dedupe_holders(holders, storage_of, recorded)  # one host per storage
        usage: dict[str, int] = defaultdict(int)
        for digest, names in holders.items():
            for name in names:
                usage[name] += sizes.get(digest, 0)
        targets = replicator.targets(surveys, usage)
        report = RebalanceReport(spread_before=_spread(targets))
        k = min(wanted.values(), default=1)
        shared = await _held_by_others(replicator, store, surveys, holders)
        movable = {h: names for h, names in holders.items() if h not in shared}
        moves = plan_rebalance(movable, sizes, targets, k, tolerance)
        report.moves_planned = len(moves)
        if check or not moves:
            report.spread_after = report.spread_before
            return report
        by_pair: dict[tuple[str, str], list[str]] = defaultdict(list)
        for move in moves:
            by_pair[(move.src, move.dst)].append(move.hash)
        records = store.data.all_records()
        incoming: dict[str, set[str]] = defaultdict(set)
        for (_, dst), hashes in by_pair.items():
            incoming[dst].update(hashes)
        await chunkrefs.pin(  # the destination is pinned before the source lets go
            replicator,
            store,
            {
                d: [r for r in records if hs.intersection(r.manifest.hashes())]
                for d, hs in incoming.items()
            },
        )
        by_pair = {p: hs for p, hs in by_pair.items() if p[1] not in replicator.dead}
        arrived: dict[str, list[str]] = defaultdict(list)  # src -> hashes now safe to delete
        copied = await _copy_pairs(sessions, hosts, sizes, by_pair, report.problems)
        for (src, dst), hashes in copied.items():
            store.data.set_replicas([(h, dst, "ok") for h in hashes], clock())
            report.bytes_moved += sum(sizes[h] for h in hashes)
            arrived[src] += hashes
        store_id = store.store_id()
        replies = await replicator.request_all(
            {src: wire.ChunkDrop(store=store_id, hashes=hs) for src, hs in arrived.items() if hs}
        )
        sharers = storage_groups(targets)  # a copy deleted on src is gone for them too
        for src, reply in replies.items():
            if isinstance(reply, dict):
                alike = next((g for g in sharers.values() if src in g), (src,))
                removed = reply.get("removed") or []
                store.data.drop_replicas((h, n) for h in removed for n in alike)
                report.moves_done += len(removed)
        after = await replicator.survey(None)
        used_after = {n: int(s.used_bytes or 0) for n, s in after.items()}
        report.spread_after = _spread(replicator.targets(after, used_after))
        report.relayed = [hop.to_dict() for hop in relayed_in(sessions)]
        return report


async def _drop_corrupt(
    replicator: Replicator, store: Store, corrupt: Mapping[str, list[str]], now: float
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Delete the copies the store knows as corrupt; the host re-hashes each first and keeps
    one that is fine after all (recorded ok again).  Returns the (hash, host) copies
    deleted, and those of them another state store pins (they are copied back)."""
    store_id = store.store_id()
    replies = await replicator.request_all(
        {
            host: wire.ChunkDrop(store=store_id, hashes=hs, corrupt=True)
            for host, hs in corrupt.items()
        }
    )
    removed: list[tuple[str, str]] = []
    refetch: list[tuple[str, str]] = []
    intact: list[tuple[str, str, str]] = []
    for host, reply in replies.items():
        if isinstance(reply, dict):
            removed += [(h, host) for h in reply.get("removed") or []]
            refetch += [(h, host) for h in reply.get("others") or []]
            intact += [(h, host, "ok") for h in reply.get("kept") or []]
    store.data.drop_replicas(removed)
    store.data.set_replicas(intact, now)
    return removed, refetch


async def _copy_pairs(
    sessions: AgentSessions,
    hosts: Sequence[Host],
    sizes: Mapping[str, int],
    pairs: Mapping[tuple[str, str], list[str]],
    problems: dict[str, str],
) -> dict[tuple[str, str], list[str]]:
    """Copy chunks host to host, one transfer per (src, dst); what each pair stored."""
    transfers = Transfers(sessions)
    by_name = {h.name: h for h in hosts}
    stored: dict[tuple[str, str], list[str]] = {}

    async def one(src: str, dst: str, hashes: list[str]) -> None:
        items = [wire.SendItem(sizes[h], hash=h) for h in hashes]
        try:
            outcome = await transfers.run(by_name[src], items, [Hop(by_name[dst])])
        except HostError as exc:
            problems[exc.host] = exc.message
            return
        hop = outcome.hops[-1]
        if hop.error:
            problems[dst] = hop.error
        stored[(src, dst)] = list(hop.stored)

    await asyncio.gather(*(one(s, d, hs) for (s, d), hs in pairs.items()))
    return stored


async def _held_by_others(
    replicator: Replicator,
    store: Store,
    surveys: Mapping[str, Survey],
    holders: Mapping[str, set[str]],
) -> set[str]:
    """The hashes of which some copy is pinned by another state store (or the legacy ref):
    moving such a copy would free nothing, so rebalance leaves those chunks alone."""
    store_id = store.store_id()
    replies = await replicator.request_all(
        {
            name: wire.ChunkDrop(
                store=store_id,
                hashes=sorted(h for h, names in holders.items() if name in names),
                check=True,
            )
            for name in surveys
        }
    )
    shared: set[str] = set()
    for reply in replies.values():
        if isinstance(reply, dict):
            shared.update(reply.get("kept") or [])
        else:
            shared.update(holders)  # a host we could not ask: move nothing
    return shared


def _spread(targets: Sequence[object]) -> float:
    fractions = []
    for t in targets:
        used, free = getattr(t, "used_bytes", 0), getattr(t, "free_bytes", 0)
        if used + free:
            fractions.append(used / (used + free))
    return max(fractions) - min(fractions) if fractions else 0.0


async def collect_garbage(
    ctx: ServiceContext,
    check: bool = False,
    release_legacy: bool = False,
) -> GarbageReport:
    """On every reachable host: pin again the versions this store keeps there, drop this
    store's refs to versions it no longer has (removed while the host was down), then
    delete the chunks that no ref of any state store names.  Chunks another store uses are
    never touched.  ``release_legacy`` also drops the ref that has kept every chunk stored
    before refs existed: run it once every store using these hosts has run a gc."""
    sessions, store, hosts = ctx.sessions, ctx.store, ctx.selected
    async with data_lock(store, exclusive=True):
        replicator = Replicator(sessions, hosts)
        records = store.data.all_records()
        keep = sorted({chunkrefs.version_ref(r) for r in records})
        if not check:
            where = store.data.replicas()
            held: dict[str, list[DatasetRecord]] = defaultdict(list)
            for record in records:
                names = {n for h in record.manifest.hashes() for n in where.get(h, {})}
                for name in names:
                    held[name].append(record)
            await chunkrefs.pin(replicator, store, {h.name: held.get(h.name, []) for h in hosts})
        store_id = store.store_id()
        request = wire.ChunkGc(
            store=store_id, keep=keep, release_legacy=release_legacy, check=check
        )
        live = [h.name for h in hosts if h.name not in replicator.dead]
        replies = await replicator.request_all({name: request for name in live})
        report = GarbageReport()
        for name, reply in sorted(replies.items()):
            if isinstance(reply, HostError):
                continue
            if reply["removed"]:
                report.removed[name] = len(reply["removed"])
            report.freed_bytes += int(reply["freed_bytes"])
            if reply["stale_refs"]:
                report.stale_refs[name] = len(reply["stale_refs"])
            if reply.get("legacy"):
                report.legacy[name] = int(reply["legacy"])
            if reply.get("released_legacy"):
                report.released_legacy.append(name)
        for name, error in replicator.dead.items():
            report.problems.setdefault(name, error.message)
        return report
