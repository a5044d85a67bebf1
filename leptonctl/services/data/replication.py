"""The replication engine: ask hosts what they hold, run placement plans as chains.

``Replicator.place`` is the one loop behind ``data put``, ``repair``,
``rebalance`` and job inputs: plan where copies must go (pure, in
``core/placement``), group the copies into transfer chains (one chain per
source and set of receivers, ordered on the network graph so the slowest hop
is as fast as possible), run the chains a few at a time, and plan again for
whatever did not arrive.  A hop that cannot carry a chain (the receiver ignores
transfer keys, or the pair cannot connect) is relayed by the operator inside the
transfer (``Placed.relayed`` says which and why); a pair that broke for another
reason before any byte moved is pumped through the operator on the next round,
never one that failed on its host key.  The hosts are the truth: the engine
ends by asking every receiver what it really holds.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from leptonctl.core.datasets import ChunkRef
from leptonctl.core.facts import storage_id_of
from leptonctl.core.hops import RelayedHop, classify_hop_error
from leptonctl.core.placement import Target, copies, plan_replicas, representatives
from leptonctl.errors import AgentError, HostError
from leptonctl.inventory.model import Host
from leptonctl.remote.agent import AgentSessions, wire
from leptonctl.remote.hopmemory import ValueStore
from leptonctl.remote.transfer import Hop, TransferOutcome, Transfers

if TYPE_CHECKING:
    import networkx as nx  # type: ignore[import-untyped]

CHAINS_IN_FLIGHT = 4
ROUNDS = 3
RESERVE_BYTES = 256 << 20  # never fill a data disk to the last byte
DOMAIN_VARS = ("rack", "zone", "failure_domain")
Progress = Callable[[int], None]  # bytes moved since the last call


@dataclass(frozen=True)
class Survey:
    """What one host's agent said it holds."""

    host: Host
    present: Mapping[str, int]  # hash -> size
    free_bytes: int
    used_bytes: int | None  # every chunk on the host (only when asked for all)
    storage: str | None = None  # the data dir's storage id: hosts that share a dir share it


@dataclass(frozen=True)
class Origin:
    """Bytes that are not on any host's store yet: ranges of files on ``host``."""

    host: Host
    ranges: Mapping[str, tuple[tuple[str, int, int], ...]]  # hash -> (path, offset, length)...

    def item(self, digest: str, size: int) -> wire.SendItem:
        """The frame that reads chunk ``digest`` from the files: one range of a file, or
        the segments of a pack of small files."""
        segments = self.ranges[digest]
        if len(segments) == 1 and segments[0][2] == size:
            return wire.SendItem(size, digest, segments[0][0], segments[0][1])
        return wire.SendItem(size, digest, segments=segments)


@dataclass
class Placed:
    """The outcome of ``Replicator.place``: who holds what, and what went wrong."""

    holders: dict[str, set[str]]
    shortfalls: dict[str, str] = field(default_factory=dict)  # hash -> why it is short
    problems: dict[str, str] = field(default_factory=dict)  # host -> what failed there
    sent_bytes: int = 0
    relayed: list[RelayedHop] = field(default_factory=list)  # hops the operator relayed

    @property
    def relay_notes(self) -> list[str]:
        """One note per hop relayed by the operator (the same hop once)."""
        return list(dict.fromkeys(r.note for r in self.relayed))


def failure_domain(host: Host) -> str | None:
    for var in DOMAIN_VARS:
        value = host.vars.get(var)
        if value is not None:
            return f"{var}={value}"
    return None


def _out_of_space(why: str) -> bool:
    """A chunk refused because the host's filesystem or quota is full (ENOSPC, EDQUOT)."""
    return "No space left on device" in why or "Disk quota exceeded" in why


class Replicator:
    def __init__(
        self,
        sessions: AgentSessions,
        hosts: Sequence[Host],
        graph: nx.DiGraph | None = None,
        progress: Progress | None = None,
        store: ValueStore | None = None,
    ) -> None:
        """``store``: where findings about hops (central keys, cut pairs) are kept."""
        self.sessions = sessions
        self.transfers = Transfers(sessions, store)
        self.hosts = {h.name: h for h in hosts}
        self.graph = graph
        self.progress = progress
        self.dead: dict[str, HostError] = {}
        # hosts whose disk filled during this operation (a quota, or others writing): their
        # survey overstated the room, so later rounds place nothing more there
        self.full: set[str] = set()
        # hosts whose next-hop ssh met a host key other than the one the operator verified:
        # nothing more is sent to them in this operation (never relayed around, either)
        self.untrusted: set[str] = set()

    @property
    def live(self) -> list[Host]:
        return [h for name, h in self.hosts.items() if name not in self.dead]

    # -- asking ----------------------------------------------------------------

    async def survey(self, hashes: Collection[str] | None) -> dict[str, Survey]:
        """chunk-have on every live host (all chunks when ``hashes`` is None)."""
        request = wire.ChunkHave(hashes=None if hashes is None else sorted(hashes))

        async def one(host: Host) -> Survey | HostError:
            try:
                reply = await self.sessions.request(host, request)
            except HostError as exc:
                return exc
            return Survey(
                host,
                dict(reply["present"]),
                int(reply["free_bytes"]),
                reply.get("used_bytes"),
                storage_id_of(reply.get("storage")),
            )

        hosts = self.live
        answers = await asyncio.gather(*(one(h) for h in hosts))
        surveys: dict[str, Survey] = {}
        for host, answer in zip(hosts, answers, strict=True):
            if isinstance(answer, HostError):
                self.dead[host.name] = answer
            else:
                surveys[host.name] = answer
        return surveys

    async def request_all(
        self,
        requests: Mapping[str, wire.Request[Any]],
        timeouts: Mapping[str, float] | None = None,
    ) -> dict[str, dict[str, Any] | HostError]:
        """One agent op per host (host name -> request), in parallel. A host that answers
        with an error gets its ``AgentError``; one that cannot be asked is marked dead."""

        async def one(name: str, request: wire.Request[Any]) -> dict[str, Any] | HostError:
            try:
                timeout = (timeouts or {}).get(name)
                return await self.sessions.request(self.hosts[name], request, timeout)
            except AgentError as exc:
                if exc.operation is None:
                    self.dead[name] = exc
                return exc
            except HostError as exc:
                self.dead[name] = exc
                return exc

        names = list(requests)
        replies = await asyncio.gather(*(one(n, requests[n]) for n in names))
        return dict(zip(names, replies, strict=True))

    @staticmethod
    def targets(surveys: Mapping[str, Survey], usage: Mapping[str, int]) -> list[Target]:
        return [
            Target(
                name=name,
                domain=failure_domain(s.host),
                free_bytes=max(0, s.free_bytes - RESERVE_BYTES),
                used_bytes=int(usage.get(name, 0)),
                storage=s.storage,
            )
            for name, s in surveys.items()
        ]

    # -- placing ---------------------------------------------------------------

    async def place(
        self,
        chunks: Sequence[ChunkRef],
        k: int,
        holders: Mapping[str, Collection[str]],
        surveys: Mapping[str, Survey],
        usage: Mapping[str, int],
        origin: Origin | None = None,
        only: Collection[str] | None = None,
    ) -> Placed:
        """Bring every chunk to ``k`` copies on live hosts (``only``: on those hosts).

        ``holders`` are the hosts known to hold a healthy copy now; ``origin`` supplies
        chunks that no host holds yet.  Ends by asking the hosts what they hold."""
        held = {c.hash: set(holders.get(c.hash, ())) & set(surveys) for c in chunks}
        placed = Placed(held)
        pumped: set[tuple[str, str]] = set()  # (src, dst) pairs that could not connect
        for _ in range(ROUNDS):
            live = {
                n: s
                for n, s in surveys.items()
                if n not in self.dead and n not in self.full and n not in self.untrusted
            }
            if only is not None:
                live = {n: s for n, s in live.items() if n in only}
            plan = plan_replicas(chunks, self.targets(live, usage), k, held)
            placed.shortfalls = dict(plan.shortfalls)
            if not plan.placements:
                break
            groups = self._chains(plan.placements, held, origin, chunks, placed)
            if not groups:
                break
            origin_host = origin.host if origin is not None else None
            await self._run_groups(groups, held, pumped, placed, origin_host)
        confirmed = await self.survey([c.hash for c in chunks])
        for chunk in chunks:
            held[chunk.hash] = {n for n, s in confirmed.items() if chunk.hash in s.present}
        same = representatives(self.targets(confirmed, {}))  # a shared dir is one copy
        short = {c.hash for c in chunks if copies(held[c.hash], same) < k}
        placed.shortfalls = {
            h: placed.shortfalls.get(h) or f"{copies(held[h], same)} of {k} replicas" for h in short
        }
        for name, error in self.dead.items():
            placed.problems.setdefault(name, error.message)
        return placed

    def _chains(
        self,
        placements: Mapping[str, tuple[str, ...]],
        held: Mapping[str, set[str]],
        origin: Origin | None,
        chunks: Sequence[ChunkRef],
        placed: Placed,
    ) -> dict[tuple[str, bool, tuple[str, ...]], list[wire.SendItem]]:
        """(source, store at source, receivers in chain order) -> items."""
        sizes = {c.hash: c.size for c in chunks}
        load: dict[str, int] = defaultdict(int)  # bytes each source already sends
        groups: dict[tuple[str, bool, tuple[str, ...]], list[wire.SendItem]] = defaultdict(list)
        for digest, dests in placements.items():
            sources = sorted(held.get(digest, ()) - self.dead.keys(), key=lambda n: load[n])
            item = wire.SendItem(sizes[digest], hash=digest)
            if sources:
                source = sources[0]
            elif origin is not None and digest in origin.ranges:
                source = origin.host.name
                item = origin.item(digest, sizes[digest])
            else:
                placed.shortfalls[digest] = "no healthy copy left to copy from"
                continue
            load[source] += sizes[digest]
            keep = source in dests  # the origin host is itself a receiver
            rest = [d for d in dests if d != source]
            local = [d for d in rest if self.hosts[d].is_local]
            remote = [d for d in rest if not self.hosts[d].is_local]
            for chain in [*([d] for d in local), remote]:
                if chain or keep:
                    groups[(source, keep, self._order(source, chain))].append(item)
                    keep = False
        return groups

    def _order(self, source: str, chain: list[str]) -> tuple[str, ...]:
        if self.graph is None or len(chain) < 2:
            return tuple(sorted(chain))
        from leptonctl.core.netgraph import order_chain

        return tuple(order_chain(self.graph, source, sorted(chain)))

    def _host(self, name: str, origin_host: Host | None) -> Host:
        if name in self.hosts:
            return self.hosts[name]
        assert origin_host is not None and origin_host.name == name
        return origin_host

    async def _run_groups(
        self,
        groups: Mapping[tuple[str, bool, tuple[str, ...]], list[wire.SendItem]],
        held: dict[str, set[str]],
        pumped: set[tuple[str, str]],
        placed: Placed,
        origin_host: Host | None,
    ) -> None:
        slots = asyncio.Semaphore(CHAINS_IN_FLIGHT)

        async def one(
            source: str, keep: bool, chain: tuple[str, ...], items: list[wire.SendItem]
        ) -> None:
            src = self._host(source, origin_host)
            async with slots:
                if not chain:  # the only new copy is on the origin host itself
                    await self._import(src, items, held, placed)
                    return
                hops = [Hop(self.hosts[name]) for name in chain]
                last = 0

                def moved(total: int) -> None:
                    nonlocal last
                    if self.progress is not None:
                        self.progress(max(0, total - last))
                    last = max(last, total)

                try:
                    outcome = await self.transfers.run(
                        src,
                        items,
                        hops,
                        store_at_source=keep,
                        pump=(source, chain[0]) in pumped,
                        progress=moved,
                    )
                except HostError as exc:
                    placed.problems[exc.host] = exc.message
                    if exc.host in self.hosts and exc.host != source:
                        self.dead[exc.host] = exc
                    return
                placed.sent_bytes += outcome.hops[0].bytes if outcome.hops else last
                placed.relayed += outcome.relayed
                self._absorb(outcome, [source, *chain], held, pumped, placed)

        await asyncio.gather(*(one(s, k, c, items) for (s, k, c), items in groups.items()))

    async def _import(
        self, src: Host, items: list[wire.SendItem], held: dict[str, set[str]], placed: Placed
    ) -> None:
        replies = await self.request_all(
            {src.name: wire.ChunkImport(items=[i.to_wire() for i in items])},
            {src.name: 24 * 3600.0},
        )
        reply = replies[src.name]
        if isinstance(reply, HostError):
            placed.problems[src.name] = reply.message
            return
        for digest in reply.get("stored") or []:
            held[digest].add(src.name)

    def _absorb(
        self,
        outcome: TransferOutcome,
        names: list[str],
        held: dict[str, set[str]],
        pumped: set[tuple[str, str]],
        placed: Placed,
    ) -> None:
        for index, hop in enumerate(outcome.hops):
            for digest in hop.stored:
                if digest in held and hop.name in self.hosts:
                    held[digest].add(hop.name)
            reasons = [hop.error or "", *hop.failed.values()]
            if hop.no_space or any(_out_of_space(why) for why in reasons):
                self.full.add(hop.name)
            if hop.failed:
                first = next(iter(hop.failed.items()))
                placed.problems[hop.name] = f"{len(hop.failed)} chunk(s) not stored: {first[1]}"
            if hop.error and index > 0:
                placed.problems[hop.name] = hop.error
                if not hop.stored and hop.bytes == 0 and index - 1 < len(names):
                    verdict = classify_hop_error(hop.error)
                    if verdict is not None and verdict[0] == "host_key":  # never around it
                        self.untrusted.add(hop.name)
                    else:
                        pumped.add((names[index - 1], hop.name))  # next round: through us
