"""Keeping replicas healthy: verify, scrub, repair, rebalance, and collect garbage.

``verify`` re-hashes replicas where they are (nothing moves); ``scrub`` does
the same for a bounded slice per run, rotating through every replica like
HDFS's block scanner; ``repair`` deletes corrupt copies and brings every chunk
back to K healthy replicas on live hosts; ``rebalance`` evens out disk use
without ever going below K; ``collect_garbage`` deletes chunks no dataset
version references any more.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from leptonctl.core.datasets import ChunkRef, ReplicaProblem, VerifyReport
from leptonctl.core.placement import plan_rebalance
from leptonctl.errors import HostError
from leptonctl.inventory.model import Host
from leptonctl.remote.agent import AgentSessions
from leptonctl.remote.transfer import Hop, Transfers
from leptonctl.services.datalock import data_lock
from leptonctl.services.replication import Replicator
from leptonctl.store.sqlite import SqliteStore

SCRUB_CURSOR = "scrub.cursor"


def wanted_replicas(store: SqliteStore, name: str | None = None) -> dict[str, int]:
    """hash -> K (the largest K of any version that uses it), for one dataset or all."""
    wanted: dict[str, int] = {}
    for record in store.data.all_records():
        if name is None or record.name == name:
            for digest in record.manifest.hashes():
                wanted[digest] = max(wanted.get(digest, 0), record.replicas)
    return wanted


async def verify(
    sessions: AgentSessions,
    store: SqliteStore,
    hosts: Sequence[Host],
    name: str | None = None,
    pairs: Collection[tuple[str, str]] | None = None,
    clock: Callable[[], float] = time.time,
) -> VerifyReport:
    """Re-hash the replicas the store knows of (``pairs``: only these (hash, host))."""
    started = time.monotonic()
    wanted = wanted_replicas(store, name)
    known = store.data.replicas(list(wanted))
    expected: dict[str, list[str]] = defaultdict(list)  # host -> hashes
    for digest, holders in known.items():
        for host in holders:
            if pairs is None or (digest, host) in pairs:
                expected[host].append(digest)
    live = {h.name: h for h in hosts}
    replicator = Replicator(sessions, [live[n] for n in expected if n in live])
    sizes = store.data.chunk_sizes(list(wanted))
    replies = await replicator.request_all(
        {
            n: {"op": "chunk-verify", "hashes": sorted(hs)}
            for n, hs in expected.items()
            if n in live
        },
        {n: hashing_timeout(sum(sizes.get(h, 0) for h in hs)) for n, hs in expected.items()},
    )
    problems: list[ReplicaProblem] = []
    ok_rows, corrupt_rows, missing_rows = [], [], []
    hashed = 0
    for host, hashes in sorted(expected.items()):
        reply = replies.get(host)
        if reply is None or isinstance(reply, HostError):
            why = reply.message if isinstance(reply, HostError) else "not in the selection"
            if reply is None:
                continue  # a host outside --limit is not judged
            problems += [ReplicaProblem(h, host, "unreachable", why) for h in sorted(hashes)]
            continue
        hashed += int(reply.get("bytes") or 0)
        ok_rows += [(h, host, "ok") for h in reply["ok"]]
        corrupt_rows += [(h, host, "corrupt") for h in reply["corrupt"]]
        missing_rows += [(h, host) for h in reply["missing"]]
        problems += [ReplicaProblem(h, host, "corrupt", "hash mismatch") for h in reply["corrupt"]]
        problems += [
            ReplicaProblem(h, host, "missing", "not on the host") for h in reply["missing"]
        ]
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


def hashing_timeout(size: int) -> float:
    """Seconds to allow a host for re-hashing ``size`` bytes (a slow disk reads 20 MB/s)."""
    return 60.0 + size / 20e6


async def scrub(
    sessions: AgentSessions,
    store: SqliteStore,
    hosts: Sequence[Host],
    budget: int,
    name: str | None = None,
    clock: Callable[[], float] = time.time,
) -> VerifyReport:
    """Verify the next ``budget`` replicas after the saved cursor (wrapping around), so
    that every replica is checked once every ceil(replicas / budget) runs."""
    live = {h.name for h in hosts}
    pairs = scrub_pairs(store, live, name)
    if not pairs or budget < 1:
        return await verify(sessions, store, hosts, pairs=(), clock=clock)
    cursor = store.value(SCRUB_CURSOR)
    after = tuple(json.loads(cursor)) if cursor else None
    start = next((i for i, p in enumerate(pairs) if after is None or p > after), 0)
    chosen = [pairs[(start + i) % len(pairs)] for i in range(min(budget, len(pairs)))]
    report = await verify(sessions, store, hosts, pairs=set(chosen), clock=clock)
    store.set_value(SCRUB_CURSOR, json.dumps(list(chosen[-1])))
    return report


def scrub_pairs(
    store: SqliteStore, hosts: Collection[str], name: str | None = None
) -> list[tuple[str, str]]:
    """Every (hash, host) replica the scrub rotation walks through, in its order."""
    wanted = wanted_replicas(store, name)
    return sorted(
        (digest, host)
        for digest, holders in store.data.replicas(list(wanted)).items()
        for host in holders
        if host in hosts
    )


@dataclass
class RepairReport:
    dataset: str | None
    chunks: int
    copies_made: int = 0
    corrupt_removed: int = 0
    sent_bytes: int = 0
    lost: list[str] = field(default_factory=list)  # no healthy copy anywhere
    short: dict[str, str] = field(default_factory=dict)  # hash -> why still below K
    problems: dict[str, str] = field(default_factory=dict)  # host -> what failed there

    @property
    def healthy(self) -> bool:
        return not (self.lost or self.short)


async def repair(
    sessions: AgentSessions,
    store: SqliteStore,
    hosts: Sequence[Host],
    name: str | None = None,
    graph: object = None,
    progress: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> RepairReport:
    """Delete known-corrupt copies, then copy from healthy replicas until every chunk
    has K of them on live hosts."""
    async with data_lock(store, exclusive=False):
        wanted = wanted_replicas(store, name)
        sizes = store.data.chunk_sizes(list(wanted))
        report = RepairReport(name, len(wanted))
        replicator = Replicator(sessions, hosts, graph, progress)
        surveys = await replicator.survey(list(wanted))
        known = store.data.replicas(list(wanted))
        corrupt: dict[str, list[str]] = defaultdict(list)
        for digest, states in known.items():
            for host, state in states.items():
                if state == "corrupt" and host in surveys:
                    corrupt[host].append(digest)
        replies = await replicator.request_all(
            {host: {"op": "chunk-rm", "hashes": hs} for host, hs in corrupt.items()}
        )
        removed = [
            (h, host) for host, hs in corrupt.items() for h in hs if isinstance(replies[host], dict)
        ]
        store.data.drop_replicas(removed)
        report.corrupt_removed = len(removed)
        gone = {(h, host) for h, host in removed}
        holders = {
            h: {n for n, s in surveys.items() if h in s.present and (h, n) not in gone}
            for h in wanted
        }
        store.data.drop_replicas(
            (h, n) for h, hs in known.items() for n in hs if n in surveys and n not in holders[h]
        )
        before = sum(len(v) for v in holders.values())
        report.lost = sorted(h for h, v in holders.items() if not v)
        by_k: dict[int, list[ChunkRef]] = defaultdict(list)
        for digest, k in wanted.items():
            if holders[digest] and len(holders[digest]) < k:
                by_k[k].append(ChunkRef(digest, sizes.get(digest, 0)))
        usage = store.data.host_usage()
        for k, chunks in sorted(by_k.items()):
            placed = await replicator.place(chunks, k, holders, surveys, usage)
            holders.update(placed.holders)
            report.short.update(placed.shortfalls)
            report.problems.update(placed.problems)
            report.sent_bytes += placed.sent_bytes
        store.data.set_replicas(
            [(h, n, "ok") for h, names in holders.items() for n in names], clock()
        )
        report.copies_made = max(0, sum(len(v) for v in holders.values()) - before)
        for name_, error in replicator.dead.items():
            report.problems.setdefault(name_, error.message)
        return report


@dataclass
class RebalanceReport:
    moves_planned: int = 0
    moves_done: int = 0
    bytes_moved: int = 0
    problems: dict[str, str] = field(default_factory=dict)
    spread_before: float = 0.0
    spread_after: float = 0.0


async def rebalance(
    sessions: AgentSessions,
    store: SqliteStore,
    hosts: Sequence[Host],
    tolerance: float = 0.05,
    check: bool = False,
    clock: Callable[[], float] = time.time,
) -> RebalanceReport:
    """Move replicas from full hosts to empty ones: copy first, delete the source copy
    only once the destination holds it, so no chunk ever drops below K."""
    async with data_lock(store, exclusive=True):
        wanted = wanted_replicas(store)
        sizes = store.data.chunk_sizes(list(wanted))
        replicator = Replicator(sessions, hosts)
        surveys = await replicator.survey(list(wanted))
        holders = {h: {n for n, s in surveys.items() if h in s.present} for h in wanted}
        usage: dict[str, int] = defaultdict(int)
        for digest, names in holders.items():
            for name in names:
                usage[name] += sizes.get(digest, 0)
        targets = replicator.targets(surveys, usage)
        report = RebalanceReport(spread_before=_spread(targets))
        k = min(wanted.values(), default=1)
        moves = plan_rebalance(holders, sizes, targets, k, tolerance)
        report.moves_planned = len(moves)
        if check or not moves:
            report.spread_after = report.spread_before
            return report
        by_pair: dict[tuple[str, str], list[str]] = defaultdict(list)
        for move in moves:
            by_pair[(move.src, move.dst)].append(move.hash)
        transfers = Transfers(sessions)
        by_name = {h.name: h for h in hosts}
        arrived: dict[str, list[str]] = defaultdict(list)  # src -> hashes now safe to delete

        async def one(src: str, dst: str, hashes: list[str]) -> None:
            items = [{"h": h, "n": sizes[h]} for h in hashes]
            try:
                outcome = await transfers.run(by_name[src], items, [Hop(by_name[dst])])
            except HostError as exc:
                report.problems[exc.host] = exc.message
                return
            hop = outcome.hops[-1]
            if hop.error:
                report.problems[dst] = hop.error
            store.data.set_replicas([(h, dst, "ok") for h in hop.stored], clock())
            arrived[src] += hop.stored
            report.bytes_moved += sum(sizes[h] for h in hop.stored)

        await asyncio.gather(*(one(s, d, hs) for (s, d), hs in by_pair.items()))
        replies = await replicator.request_all(
            {src: {"op": "chunk-rm", "hashes": hs} for src, hs in arrived.items() if hs}
        )
        for src, reply in replies.items():
            if isinstance(reply, dict):
                store.data.drop_replicas((h, src) for h in reply.get("removed") or [])
                report.moves_done += len(reply.get("removed") or [])
        after = await replicator.survey(None)
        used_after = {n: int(s.used_bytes or 0) for n, s in after.items()}
        report.spread_after = _spread(replicator.targets(after, used_after))
        return report


def _spread(targets: Sequence[object]) -> float:
    fractions = []
    for t in targets:
        used, free = getattr(t, "used_bytes", 0), getattr(t, "free_bytes", 0)
        if used + free:
            fractions.append(used / (used + free))
    return max(fractions) - min(fractions) if fractions else 0.0


@dataclass
class GarbageReport:
    removed: dict[str, int] = field(default_factory=dict)  # host -> chunks deleted
    freed_bytes: int = 0
    problems: dict[str, str] = field(default_factory=dict)


async def collect_garbage(
    sessions: AgentSessions, store: SqliteStore, hosts: Sequence[Host], check: bool = False
) -> GarbageReport:
    """Delete, on every reachable host, the chunks that no dataset version references
    (left behind by `data rm` while a host was down, or by an abandoned put)."""
    async with data_lock(store, exclusive=True):
        replicator = Replicator(sessions, hosts)
        surveys = await replicator.survey(None)
        referenced = store.data.referenced_hashes()
        report = GarbageReport()
        doomed: dict[str, list[str]] = {}
        for name, survey in surveys.items():
            extra = sorted(h for h in survey.present if h not in referenced)
            if extra:
                doomed[name] = extra
                report.removed[name] = len(extra)
                report.freed_bytes += sum(survey.present[h] for h in extra)
        if not check:
            replies = await replicator.request_all(
                {n: {"op": "chunk-rm", "hashes": hs} for n, hs in doomed.items()}
            )
            for name, reply in replies.items():
                if isinstance(reply, HostError):
                    report.problems[name] = reply.message
        for name, error in replicator.dead.items():
            report.problems.setdefault(name, error.message)
        return report
