"""Where chunk replicas go: pure plans over plain data (HDFS-style placement).

``plan_replicas`` decides which hosts receive new copies so that every chunk
reaches K replicas: first on failure domains (``rack``/``zone``) that do not
hold the chunk yet, then on hosts that do not, preferring the host that will be
the least full, never beyond a host's free space.  ``plan_rebalance`` moves
copies from full hosts to empty ones without ever lowering a chunk's copy count
or its spread over domains.  Same input, same plan: nothing depends on set order
or on the clock.

Hosts whose data dirs are one storage (the same storage id: an NFS home) are one
place for a copy: both plans see one target per storage (its first host by
name, the *representative*), so such hosts count as one replica and one failure
domain, and a copy is never "added" to a host that already sees it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from leptonctl.core.datasets import ChunkRef


@dataclass(frozen=True)
class Target:
    """A host that may hold replicas."""

    name: str
    domain: str | None  # failure domain (rack, zone); None: the host is its own domain
    free_bytes: int  # bytes it may still receive
    used_bytes: int = 0  # bytes of replicas it holds already (for balance)
    storage: str | None = None  # the data dir's storage id; None: a storage of its own


@dataclass(frozen=True)
class ReplicaPlan:
    # hash -> hosts that must receive a new copy (absent when the chunk needs none)
    placements: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # hash -> why it cannot reach K replicas (it may still get some copies)
    shortfalls: Mapping[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.shortfalls


@dataclass(frozen=True)
class Move:
    """Copy ``hash`` from ``src`` to ``dst``, then delete it from ``src``."""

    hash: str
    src: str
    dst: str
    size: int


DomainKey = tuple[str, str]


def domain_key(target: Target) -> DomainKey:
    """The failure domain of a target; a host without one is a domain of its own."""
    return ("domain", target.domain) if target.domain is not None else ("host", target.name)


def eligible_count(targets: Sequence[Target]) -> int:
    """Independent storages among ``targets`` (the most replicas a chunk can have)."""
    return len(storage_groups(targets))


def storage_key(target: Target) -> str:
    """What a copy on ``target`` is stored in: its storage id, or the host itself."""
    return f"storage:{target.storage}" if target.storage else f"host:{target.name}"


def storage_groups(targets: Sequence[Target]) -> dict[str, tuple[str, ...]]:
    """storage key -> the names of the targets that share it, sorted (first: the
    representative)."""
    groups: dict[str, list[str]] = {}
    for target in targets:
        groups.setdefault(storage_key(target), []).append(target.name)
    return {key: tuple(sorted(names)) for key, names in sorted(groups.items())}


def representatives(targets: Sequence[Target]) -> dict[str, str]:
    """Each target's name -> the representative of its storage (itself when unshared)."""
    return {name: names[0] for names in storage_groups(targets).values() for name in names}


def copies(holders: Collection[str], representative: Mapping[str, str]) -> int:
    """How many independent copies ``holders`` are (hosts of one storage count once;
    a host not in ``representative`` counts as its own storage)."""
    return len({representative.get(h, h) for h in holders})


def one_per_storage(
    targets: Sequence[Target],
) -> tuple[list[Target], dict[str, str]]:
    """One target per storage, named after its representative: free space is the least any
    sharer reports (one filesystem), used bytes the sum of what is recorded on each of them.
    Also returns name -> representative."""
    by_name = _targets_by_name(targets)
    rep = representatives(targets)
    merged: list[Target] = []
    for names in storage_groups(targets).values():
        first = by_name[names[0]]
        merged.append(
            Target(
                name=first.name,
                domain=first.domain,
                free_bytes=min(by_name[n].free_bytes for n in names),
                used_bytes=sum(by_name[n].used_bytes for n in names),
                storage=first.storage,
            )
        )
    return merged, rep


def shared_note(targets: Sequence[Target]) -> str:
    """'h1,h2,h3 share one storage' for every storage of more than one target ('' if none)."""
    shared = [names for names in storage_groups(targets).values() if len(names) > 1]
    return "; ".join(f"{','.join(names)} share one storage" for names in shared)


def plan_replicas(
    chunks: Sequence[ChunkRef],
    targets: Sequence[Target],
    k: int,
    existing: Mapping[str, Collection[str]] | None = None,
) -> ReplicaPlan:
    """New copies so that each chunk has ``k`` replicas on distinct hosts.

    ``existing`` maps a hash to the hosts that hold a healthy copy; holders that are
    not among ``targets`` (dead, removed) do not count, and hosts of one storage count
    once.  A chunk that cannot reach ``k`` gets as many copies as fit and a reason in
    ``shortfalls``.  New copies go to storage representatives only.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    note = shared_note(targets)
    targets, rep = one_per_storage(targets)
    by_name = _targets_by_name(targets)
    names = sorted(by_name)
    rank = {name: i for i, name in enumerate(names)}
    assigned = dict.fromkeys(names, 0)
    existing = {
        digest: {rep[h] for h in hosts if h in rep} for digest, hosts in (existing or {}).items()
    }
    placements: dict[str, tuple[str, ...]] = {}
    shortfalls: dict[str, str] = {}
    seen: set[str] = set()
    for chunk in chunks:
        if chunk.hash in seen:
            continue
        seen.add(chunk.hash)
        holders = {h for h in existing.get(chunk.hash, ()) if h in by_name}
        need = k - len(holders)
        if need <= 0:
            continue
        domains = {domain_key(by_name[h]) for h in holders}
        rotation = len(seen) - 1
        chosen: list[str] = []
        for _ in range(need):
            best: tuple[int, float, int] | None = None
            best_name = ""
            for name in names:
                target = by_name[name]
                if name in holders or target.free_bytes - assigned[name] < chunk.size:
                    continue
                key = (
                    1 if domain_key(target) in domains else 0,
                    _fraction(target, assigned[name]),
                    (rank[name] - rotation) % len(names),
                )
                if best is None or key < best:
                    best, best_name = key, name
            if best is None:
                break
            chosen.append(best_name)
            holders.add(best_name)
            domains.add(domain_key(by_name[best_name]))
            assigned[best_name] += chunk.size
        if chosen:
            placements[chunk.hash] = tuple(chosen)
        if len(chosen) < need:
            shortfalls[chunk.hash] = _shortfall(chunk, by_name, holders, assigned, k, note)
    return ReplicaPlan(placements=placements, shortfalls=shortfalls)


def plan_rebalance(
    holders: Mapping[str, Collection[str]],
    sizes: Mapping[str, int],
    targets: Sequence[Target],
    k: int,
    tolerance: float = 0.05,
) -> tuple[Move, ...]:
    """Moves that even out how full the targets are (used / (used + free)).

    Stops when the fullest and the emptiest target are within ``tolerance`` of each
    other, or when no move lowers the imbalance.  A move never puts a second copy on
    a host, never spreads the chunk over fewer domains, and never exceeds the
    destination's free space.  Chunks with fewer than ``k`` copies on ``targets``
    are left alone: repair places those first.  Hosts of one storage are one target
    (its representative: moves name representatives only).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    targets, rep = one_per_storage(targets)
    holders = {digest: {rep.get(h, h) for h in hosts} for digest, hosts in holders.items()}
    by_name = _targets_by_name(targets)
    names = sorted(by_name)
    used = {n: by_name[n].used_bytes for n in names}
    free = {n: by_name[n].free_bytes for n in names}
    capacity = {n: used[n] + free[n] for n in names}
    live = [n for n in names if capacity[n] > 0]
    where: dict[str, set[str]] = {}  # hash -> every holder (known or not)
    buckets: dict[str, dict[int, set[str]]] = {n: {} for n in names}  # host -> size -> hashes
    for digest in sorted(holders):
        if digest not in sizes:
            continue
        hosts = set(holders[digest])
        if len(hosts & by_name.keys()) < k:
            continue
        where[digest] = hosts
        for host in hosts & by_name.keys():
            buckets[host].setdefault(sizes[digest], set()).add(digest)

    def spread_of(hosts: set[str]) -> int:
        return len({domain_key(by_name[h]) if h in by_name else ("host", h) for h in hosts})

    def improves(src: str, dst: str, size: int) -> bool:
        """Exact (integer) test: after the move both hosts lie between where they were,
        and sum(used^2 / capacity) drops, so the plan never widens the spread and the
        loop cannot cycle."""
        u_s, c_s, u_d, c_d = used[src], capacity[src], used[dst], capacity[dst]
        return (
            0 < size <= free[dst]
            and (u_d + size) * c_s <= u_s * c_d
            and (u_s - size) * c_d >= u_d * c_s
            and (size - 2 * u_s) * c_d + (2 * u_d + size) * c_s < 0
        )

    def find_move() -> Move | None:
        order = sorted(live, key=lambda n: (used[n] / capacity[n], n))
        for src in reversed(order):
            for dst in order:
                if used[dst] * capacity[src] >= used[src] * capacity[dst]:
                    break  # dst is at least as full as src, and so is every later one
                # The size that would bring both to the same fraction.
                ideal = (used[src] * capacity[dst] - used[dst] * capacity[src]) / (
                    capacity[src] + capacity[dst]
                )
                fitting = [s for s in buckets[src] if buckets[src][s] and improves(src, dst, s)]
                for size in sorted(fitting, key=lambda s: (abs(s - ideal), s)):
                    for digest in sorted(buckets[src][size]):
                        hosts = where[digest]
                        if dst in hosts:
                            continue
                        after = (hosts - {src}) | {dst}
                        if spread_of(after) >= spread_of(hosts):
                            return Move(digest, src, dst, size)
        return None

    moves: list[Move] = []
    limit = sum(len(h) for h in where.values()) * max(1, len(live)) + 1
    while len(moves) < limit and len(live) > 1:
        fractions = [used[n] / capacity[n] for n in live]
        if max(fractions) - min(fractions) <= tolerance:
            break
        move = find_move()
        if move is None:
            break
        moves.append(move)
        buckets[move.src][move.size].discard(move.hash)
        buckets[move.dst].setdefault(move.size, set()).add(move.hash)
        where[move.hash] = (where[move.hash] - {move.src}) | {move.dst}
        used[move.src] -= move.size
        free[move.src] += move.size
        used[move.dst] += move.size
        free[move.dst] -= move.size
    return tuple(moves)


def _targets_by_name(targets: Sequence[Target]) -> dict[str, Target]:
    by_name: dict[str, Target] = {}
    for target in targets:
        if target.name in by_name:
            raise ValueError(f"target {target.name!r} is listed twice")
        by_name[target.name] = target
    return by_name


def _fraction(target: Target, assigned: int) -> float:
    capacity = target.used_bytes + target.free_bytes
    if capacity <= 0:
        return float("inf")
    return (target.used_bytes + assigned) / capacity


def _shortfall(
    chunk: ChunkRef,
    by_name: Mapping[str, Target],
    holders: set[str],
    assigned: Mapping[str, int],
    k: int,
    note: str = "",
) -> str:
    if len(by_name) < k:
        count = len(by_name)
        if note:
            plural = "" if count == 1 else "s"
            return f"only {count} independent storage{plural} for {k} replicas ({note})"
        return f"only {count} eligible host{'' if count == 1 else 's'} for {k} replicas"
    short = [
        f"{name} needs {format_bytes(chunk.size)}, "
        f"has {format_bytes(max(0, by_name[name].free_bytes - assigned[name]))}"
        for name in sorted(by_name)
        if name not in holders
    ]
    if len(short) > 5:
        short = [*short[:5], f"{len(short) - 5} more hosts"]
    return f"{len(holders)} of {k} replicas; no space: " + ", ".join(short)


def format_bytes(value: int) -> str:
    """1536 -> '1.5 KiB' (one decimal, binary units) for shortfall reasons."""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{value} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
