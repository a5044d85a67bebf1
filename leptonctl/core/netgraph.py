"""The network graph: measured (and hinted) links, best routes, replication chains.

Pure: plain data and ``now`` in, a ``networkx.DiGraph`` and plain data out.  networkx
is imported only when a graph is built, so the records here cost nothing to import.

**Units.** Every ``bandwidth_bps`` in leptonctl is **bytes per second** (what a copy
delivers), never bits; renderers show bits per second because that is what network
people read.  Every ``rtt_s`` is a round-trip time in seconds.

The graph has one node per host and one edge per usable *directed* link, with the
attributes ``bandwidth_bps`` (bytes/s), ``rtt_s`` (seconds or ``None``), ``measured``
(unix time, ``None`` for a hint), ``age_s`` (seconds since it was measured at the
graph's ``now``, ``None`` for a hint) and ``source`` (``"measured"`` or ``"hint"``).
``graph.graph["unreachable"]`` maps ``(src, dst)`` to the error of a fresh failed
measurement, ``graph.graph["relayed"]`` the failed pairs that transfers relay through the
operator (central keys, no connection: their error starts with ``RELAYED_PREFIX``; they
are in ``unreachable`` too, so routes avoid them), and ``graph.graph["hosts"]`` is the
tuple of hosts it was built for.

Routes maximise the throughput a copy is expected to get: the bottleneck bandwidth
of the path, discounted by ``hop_penalty`` for each extra hop (a relay costs CPU,
buffers and a second TCP ramp-up), so a relay is used only when it truly wins.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from leptonctl.errors import InventoryError, NetGraphError

if TYPE_CHECKING:
    import networkx as nx  # type: ignore[import-untyped]

    from leptonctl.inventory.model import Host

__all__ = [
    "LinkHint",
    "LinkMeasurement",
    "Route",
    "best_route",
    "build_graph",
    "expected_throughput",
    "hints_from_inventory",
    "order_chain",
    "parse_bandwidth",
    "parse_latency",
    "validate_graph",
]

DEFAULT_MAX_AGE_S = 24 * 3600.0


RELAYED_PREFIX = "relayed by the operator: "  # a measured pair that transfers relay


@dataclass(frozen=True)
class LinkMeasurement:
    """One measured directed link, as ``net probe`` stores it.

    ``bandwidth_bps`` is in **bytes per second**; ``rtt_s`` is the round-trip time in
    seconds; ``error`` is set (and the others are usually ``None``) when ``src`` could
    not reach ``dst``.  ``measured`` is a unix time.
    """

    src: str
    dst: str
    measured: float
    bandwidth_bps: float | None
    rtt_s: float | None
    error: str | None = None


@dataclass(frozen=True)
class LinkHint:
    """An operator's static statement about a link (the ``links`` host variable).

    ``bandwidth_bps`` is in **bytes per second**; ``rtt_s`` in seconds.
    """

    src: str
    dst: str
    bandwidth_bps: float
    rtt_s: float | None = None


@dataclass(frozen=True)
class Route:
    """A path for one transfer.  Bandwidths in **bytes per second**.

    ``expected_bps`` is ``bottleneck_bps * (1 - hop_penalty) ** (hops - 1)``;
    ``rtt_s`` is the sum of the hops' round-trip times (``None`` if one is unknown);
    ``direct_bps`` is the bandwidth of the direct link, if there is one.
    """

    hosts: tuple[str, ...]
    bottleneck_bps: float
    expected_bps: float
    rtt_s: float | None
    direct_bps: float | None

    @property
    def hops(self) -> int:
        return len(self.hosts) - 1

    @property
    def relayed(self) -> bool:
        return len(self.hosts) > 2


# --------------------------------------------------------------------------
# Building and checking the graph


def build_graph(
    hosts: Sequence[str],
    measurements: Iterable[LinkMeasurement],
    hints: Iterable[LinkHint] = (),
    *,
    now: float,
    max_age_s: float = DEFAULT_MAX_AGE_S,
) -> nx.DiGraph:
    """The graph of usable links between ``hosts`` at time ``now``.

    A fresh measurement (not older than ``max_age_s``) wins over a hint; a stale one is
    dropped and the hint, if any, is used instead.  A fresh *failed* measurement means
    no edge at all (not even a hint's) and lands in ``graph.graph["unreachable"]``.
    Links that name a host outside ``hosts``, and self-links, are ignored.  Of two
    measurements of one pair, the newer counts.
    """
    import networkx as nx  # ~0.2 s: only when a graph is built

    known = set(hosts)
    graph = nx.DiGraph(hosts=tuple(hosts), unreachable={}, relayed={})
    graph.add_nodes_from(hosts)
    unreachable: dict[tuple[str, str], str] = graph.graph["unreachable"]

    fresh: dict[tuple[str, str], LinkMeasurement] = {}
    for m in measurements:
        if m.src not in known or m.dst not in known or m.src == m.dst:
            continue
        if now - m.measured > max_age_s:
            continue
        current = fresh.get((m.src, m.dst))
        if current is None or m.measured > current.measured:
            fresh[(m.src, m.dst)] = m
    for (src, dst), m in fresh.items():
        if m.error is not None:
            unreachable[(src, dst)] = m.error
            if m.error.startswith(RELAYED_PREFIX):
                graph.graph["relayed"][(src, dst)] = m.error[len(RELAYED_PREFIX) :]
        elif m.bandwidth_bps is not None:
            graph.add_edge(
                src,
                dst,
                bandwidth_bps=m.bandwidth_bps,
                rtt_s=m.rtt_s,
                measured=m.measured,
                age_s=max(0.0, now - m.measured),
                source="measured",
            )
    for hint in hints:
        pair = (hint.src, hint.dst)
        if hint.src not in known or hint.dst not in known or hint.src == hint.dst:
            continue
        if pair in unreachable or graph.has_edge(*pair):
            continue
        graph.add_edge(
            hint.src,
            hint.dst,
            bandwidth_bps=hint.bandwidth_bps,
            rtt_s=hint.rtt_s,
            measured=None,
            age_s=None,
            source="hint",
        )
    return graph


def validate_graph(g: nx.DiGraph) -> None:
    """Raise :class:`NetGraphError` if a link is a self-loop, has a bandwidth that is not
    a positive finite number, a negative or NaN rtt, or names a host the graph was not
    built for (``graph.graph["hosts"]``, or its nodes)."""
    declared = set(g.graph.get("hosts", g.nodes))
    hint = "re-run `leptonctl net probe`, or fix the `links` variable of the inventory"
    for src, dst, attrs in g.edges(data=True):
        what = f"the link {src} -> {dst} ({attrs.get('source', 'unknown source')})"
        if src == dst:
            raise NetGraphError(f"{what} is a self-loop", hint=hint)
        for end in (src, dst):
            if end not in declared:
                raise NetGraphError(f"{what} names {end!r}, which is not a known host", hint=hint)
        bandwidth = attrs.get("bandwidth_bps")
        if (
            isinstance(bandwidth, bool)
            or not isinstance(bandwidth, int | float)
            or not math.isfinite(bandwidth)
            or bandwidth <= 0
        ):
            raise NetGraphError(
                f"{what} has bandwidth {bandwidth!r}; it must be a positive number of bytes/s",
                hint=hint,
            )
        rtt = attrs.get("rtt_s")
        if rtt is not None and (not isinstance(rtt, int | float) or not rtt >= 0):
            raise NetGraphError(
                f"{what} has rtt {rtt!r}; it must be a non-negative number of seconds",
                hint=hint,
            )
    for src, dst in g.graph.get("unreachable", {}):
        for end in (src, dst):
            if end not in declared:
                raise NetGraphError(
                    f"the unreachable pair {src} -> {dst} names {end!r}, which is not a known host",
                    hint=hint,
                )


# --------------------------------------------------------------------------
# Routes


def expected_throughput(bottleneck_bps: float, hops: int, hop_penalty: float) -> float:
    """``bottleneck_bps * (1 - hop_penalty) ** (hops - 1)``, by repeated multiplication,
    so that it never grows with ``hops`` (route search prunes on that)."""
    factor = 1.0
    for _ in range(hops - 1):
        factor *= 1.0 - hop_penalty
    return bottleneck_bps * factor


def best_route(
    g: nx.DiGraph,
    src: str,
    dst: str,
    *,
    hop_penalty: float = 0.1,
    via: str | None = None,
    direct_only: bool = False,
    max_hops: int = 4,
) -> Route | None:
    """The route from ``src`` to ``dst`` with the highest expected throughput.

    Considers simple paths of at most ``max_hops`` links.  Ties prefer fewer hops, then
    the lower round-trip time (a known rtt beats an unknown one), then the host names.
    ``via`` forces ``src -> via -> dst`` over direct links; ``direct_only`` considers
    only the direct link.  ``None`` when there is no such path (or a host is not in the
    graph); ``ValueError`` for ``src == dst`` and impossible arguments.

    A widest-path recurrence bounded by hop count finds the best expected throughput in
    O(max_hops * links); a pruned depth-first search then picks the tie-break winner
    among the paths that reach it.
    """
    if src == dst:
        raise ValueError(f"a route needs two different hosts, got {src!r} twice")
    if not 0.0 <= hop_penalty < 1.0:
        raise ValueError(f"hop_penalty must be in [0, 1), got {hop_penalty}")
    if max_hops < 1:
        raise ValueError(f"max_hops must be at least 1, got {max_hops}")
    if via is not None and direct_only:
        raise ValueError("via and direct_only exclude each other")
    if via is not None and via in (src, dst):
        raise ValueError(f"the relay {via!r} must differ from both ends")
    if src not in g or dst not in g:
        return None
    if via is not None:
        if via in g and g.has_edge(src, via) and g.has_edge(via, dst):
            return _route(g, (src, via, dst), hop_penalty)
        return None
    if direct_only:
        return _route(g, (src, dst), hop_penalty) if g.has_edge(src, dst) else None

    target = _best_expected(g, src, dst, hop_penalty, max_hops)
    path = None if target is None else _best_path(g, src, dst, target, hop_penalty, max_hops)
    return None if path is None else _route(g, path, hop_penalty)


def _best_expected(
    g: nx.DiGraph, src: str, dst: str, hop_penalty: float, max_hops: int
) -> float | None:
    """The best expected throughput of any simple path of at most ``max_hops`` links.

    ``widest[v]`` after round k is the widest bottleneck of a walk of at most k links
    from ``src`` to ``v``.  A walk's cycles can be cut out without narrowing it, so this
    is also the widest *simple* path of at most k links, and the best expected
    throughput is the maximum over k of ``widest[dst]`` discounted for k hops.
    O(max_hops * links)."""
    widest: dict[str, float] = {src: math.inf}
    best: float | None = None
    for hops in range(1, max_hops + 1):
        grown = dict(widest)
        for u, bottleneck in widest.items():
            for v, attrs in g.succ[u].items():
                width = min(bottleneck, attrs["bandwidth_bps"])
                if width > grown.get(v, -math.inf):
                    grown[v] = width
        if grown == widest:
            break
        widest = grown
        if dst in widest:
            value = expected_throughput(widest[dst], hops, hop_penalty)
            if best is None or value > best:
                best = value
    return best


def _best_path(
    g: nx.DiGraph, src: str, dst: str, target: float, hop_penalty: float, max_hops: int
) -> tuple[str, ...] | None:
    """The path that reaches ``target`` (the best expected throughput there is) with the
    fewest hops, then the lowest rtt, then the first host names.

    For ``hops`` links, exactly the paths whose links are all at least ``floor`` wide
    reach ``target``, where ``floor`` is the narrowest link width that does."""
    widths = sorted({a["bandwidth_bps"] for _, _, a in g.edges(data=True)})
    for hops in range(1, max_hops + 1):
        first = bisect.bisect_left(
            widths, True, key=lambda w: expected_throughput(w, hops, hop_penalty) >= target
        )
        if first < len(widths):
            path = _cheapest_path(g, src, dst, widths[first], hops)
            if path is not None:
                return path
    return None


def _cheapest_path(
    g: nx.DiGraph, src: str, dst: str, floor: float, hops: int
) -> tuple[str, ...] | None:
    """The simple path of exactly ``hops`` links, each at least ``floor`` wide, with the
    lowest rtt (a known rtt beats an unknown one), then the first names.

    Depth-first in name order, so a later path only wins with a strictly lower rtt; a
    partial path is dropped when even its fastest completion cannot."""
    wide = {
        u: sorted((v, a) for v, a in nbrs.items() if a["bandwidth_bps"] >= floor)
        for u, nbrs in g.succ.items()
    }
    distance = {dst: 0}  # fewest wide links to dst
    frontier = [dst]
    for step in range(1, hops + 1):
        reached = []
        for v in frontier:
            for u, attrs in g.pred[v].items():
                if u not in distance and attrs["bandwidth_bps"] >= floor:
                    distance[u] = step
                    reached.append(u)
        frontier = reached
    known = [a["rtt_s"] for nbrs in wide.values() for _, a in nbrs if a["rtt_s"] is not None]
    fastest_link = min(known, default=0.0)

    best: tuple[str, ...] | None = None
    best_rtt: float | None = None  # of ``best``; None: unknown

    def lower_bound(rtt: float, links_left: int) -> float:
        for _ in range(links_left):  # summed like the route's rtt, so comparable exactly
            rtt += fastest_link
        return rtt

    def extend(path: tuple[str, ...], rtt: float | None) -> None:
        nonlocal best, best_rtt
        used = len(path)
        for v, attrs in wide[path[-1]]:
            if v in path or v not in distance or used + distance[v] > hops:
                continue
            link_rtt = attrs["rtt_s"]
            grown = None if rtt is None or link_rtt is None else rtt + link_rtt
            if best is not None and (
                grown is None
                or (best_rtt is not None and lower_bound(grown, hops - used) >= best_rtt)
            ):
                continue  # cannot beat ``best``: later paths lose ties on names
            if v == dst:
                if used == hops:
                    best, best_rtt = (*path, v), grown
            elif used < hops:
                extend((*path, v), grown)

    extend((src,), 0.0)
    return best


def _route(g: nx.DiGraph, hosts: tuple[str, ...], hop_penalty: float) -> Route:
    links = [g.edges[u, v] for u, v in itertools.pairwise(hosts)]
    bottleneck = min(float(a["bandwidth_bps"]) for a in links)
    rtts = [a.get("rtt_s") for a in links]
    rtt: float | None = None
    if all(r is not None for r in rtts):
        rtt = 0.0
        for r in rtts:
            rtt += float(r)
    direct = g.edges[hosts[0], hosts[-1]] if g.has_edge(hosts[0], hosts[-1]) else None
    return Route(
        hosts=hosts,
        bottleneck_bps=bottleneck,
        expected_bps=expected_throughput(bottleneck, len(hosts) - 1, hop_penalty),
        rtt_s=rtt,
        direct_bps=None if direct is None else float(direct["bandwidth_bps"]),
    )


# --------------------------------------------------------------------------
# Replication chains

EXACT_CHAIN_LIMIT = 7
_HopKey = tuple[int, float]  # (known?, bytes/s): an unknown link sorts below every known one


def order_chain(g: nx.DiGraph, source: str, replicas: Sequence[str]) -> tuple[str, ...]:
    """Order ``replicas`` into the chain ``source -> r1 -> r2 -> ...`` whose slowest hop is
    as fast as possible (the HDFS pipeline: k copies cost about one transfer).

    A link missing from the graph is *unknown*: worse than any known link, but allowed.
    Exact for up to seven replicas; beyond, greedily takes the widest next hop.  Ties
    keep the given order."""
    if source in replicas:
        raise ValueError(f"the source {source!r} cannot also be a replica")
    if len(set(replicas)) != len(replicas):
        raise ValueError(f"replicas must be distinct, got {list(replicas)}")
    if len(replicas) <= 1:
        return tuple(replicas)

    def hop(u: str, v: str) -> _HopKey:
        if g.has_edge(u, v):
            return (1, float(g.edges[u, v]["bandwidth_bps"]))
        return (0, 0.0)  # unknown: worse than any known link

    if len(replicas) <= EXACT_CHAIN_LIMIT:
        best: tuple[str, ...] = tuple(replicas)
        best_key = _slowest(hop, source, best)
        assert best_key is not None
        for order in itertools.permutations(replicas):  # in given-order-first order
            key = _slowest(hop, source, order, stop_below=best_key)
            if key is not None and key > best_key:
                best, best_key = order, key
        return best

    chain: list[str] = []
    left = list(replicas)
    current = source
    while left:
        pick = max(left, key=lambda r: hop(current, r))  # first of equals: given order
        chain.append(pick)
        left.remove(pick)
        current = pick
    return tuple(chain)


def _slowest(
    hop: Callable[[str, str], _HopKey],
    source: str,
    order: Sequence[str],
    stop_below: _HopKey | None = None,
) -> _HopKey | None:
    """The slowest hop of ``source -> order...``; ``None`` as soon as a hop is no better
    than ``stop_below`` (then the chain cannot beat the best one found so far)."""
    slowest: _HopKey | None = None
    for u, v in itertools.pairwise((source, *order)):
        key = hop(u, v)
        if stop_below is not None and key <= stop_below:
            return None
        if slowest is None or key < slowest:
            slowest = key
    return slowest


# --------------------------------------------------------------------------
# The ``links`` host variable

_SI = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_BANDWIDTH = re.compile(
    r"^\s*(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<prefix>(?:[kKmMgGtT]i?)?)"
    r"(?P<unit>bits?/s|bits?|bps|b/s|b|B/s|Bps|B)?\s*$"
)
_LATENCY = re.compile(r"^\s*(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>s|ms|us|µs|ns)\s*$")
_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_LINK_KEYS = ("bandwidth", "latency")


def parse_bandwidth(value: object) -> float:
    """Bytes per second from a bandwidth string.

    Bits (what network people write): ``"10Gbit"``, ``"940Mbps"``, ``"1G"``, ``"100 kbit/s"``
    (decimal prefixes k, M, G, T; ``Ki``, ``Mi``, ``Gi``, ``Ti`` are binary).  Bytes need a
    capital ``B``: ``"117MB/s"``, ``"1.1GB/s"``, ``"500MiB/s"``.  A bare number is refused:
    bits or bytes must be said.  Raises :class:`ValueError`.
    """
    text = value if isinstance(value, str) else None
    match = _BANDWIDTH.match(text) if text is not None else None
    if match is None or not (match["prefix"] or match["unit"]):
        raise ValueError(
            f"expected a bandwidth such as 10Gbit, 940Mbit/s or 117MB/s, got {value!r}"
        )
    prefix = match["prefix"].lower()
    scale = _BINARY[prefix] if prefix.endswith("i") else _SI[prefix]
    unit = match["unit"] or "bit"
    per_second = float(match["number"]) * scale
    result = per_second if unit.startswith("B") else per_second / 8
    if not result > 0 or not math.isfinite(result):
        raise ValueError(f"a bandwidth must be positive, got {value!r}")
    return result


def parse_latency(value: object) -> float:
    """Seconds from a latency string: ``"0.2ms"``, ``"150us"``, ``"1s"``.  A bare number is
    refused (say the unit).  Raises :class:`ValueError`."""
    match = _LATENCY.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"expected a latency such as 0.2ms, 150us or 1s, got {value!r}")
    return float(match["number"]) * _SECONDS[match["unit"]]


def hints_from_inventory(hosts: Sequence[Host]) -> list[LinkHint]:
    """The ``links`` variable of each host, as hints for the links *from* that host::

        links:
          h2: {bandwidth: 10Gbit, latency: 0.2ms}   # latency is the round trip
          h3: {bandwidth: 117MB/s}
          h4: 1Gbit                                  # just the bandwidth

    From an INI inventory the value may be a string holding a YAML flow mapping.
    Raises :class:`InventoryError` naming the host, its source and the bad field.
    """
    hints: list[LinkHint] = []
    for host in hosts:
        raw = host.vars.get("links")
        if raw is None:
            continue
        hints.extend(_host_hints(host, raw))
    return hints


def _host_hints(host: Host, raw: object) -> list[LinkHint]:
    def bad(key: str, message: str, hint: str | None = None) -> InventoryError:
        return InventoryError(
            f"host {host.name}: {message}", source=host.source, key=key, hint=hint
        )

    example = "write links: {h2: {bandwidth: 10Gbit, latency: 0.2ms}}"
    if isinstance(raw, str):
        import yaml

        try:
            raw = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise bad("links", f"cannot read links as a YAML mapping: {exc}", example) from None
        if raw is None:
            return []
    if not isinstance(raw, Mapping):
        raise bad("links", f"links must be a mapping of host -> link, got {raw!r}", example)
    hints: list[LinkHint] = []
    for raw_dst, entry in raw.items():
        dst = str(raw_dst)
        key = f"links.{dst}"
        if dst == host.name:
            raise bad(key, "a host cannot have a link to itself")
        if isinstance(entry, str):
            entry = {"bandwidth": entry}
        if not isinstance(entry, Mapping):
            raise bad(key, f"expected {{bandwidth: ..., latency: ...}}, got {entry!r}", example)
        for field in entry:
            if str(field) not in _LINK_KEYS:
                raise bad(f"{key}.{field}", f"unknown link field {str(field)!r}", example)
        if entry.get("bandwidth") is None:
            raise bad(f"{key}.bandwidth", "a link needs a bandwidth", example)
        try:
            bandwidth = parse_bandwidth(entry["bandwidth"])
        except ValueError as exc:
            raise bad(
                f"{key}.bandwidth", str(exc), "bits: 10Gbit, 940Mbit; bytes: 117MB/s"
            ) from None
        rtt: float | None = None
        if entry.get("latency") is not None:
            try:
                rtt = parse_latency(entry["latency"])
            except ValueError as exc:
                raise bad(f"{key}.latency", str(exc), "latency takes s, ms or us") from None
        hints.append(LinkHint(host.name, dst, bandwidth, rtt))
    return hints
