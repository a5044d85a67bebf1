"""The network graph as commands see it: stored measurements plus inventory hints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from leptonctl.core.netgraph import (
    DEFAULT_MAX_AGE_S,
    Route,
    best_route,
    build_graph,
    hints_from_inventory,
    validate_graph,
)
from leptonctl.errors import NetGraphError
from leptonctl.inventory.model import Host
from leptonctl.store.interface import Store

if TYPE_CHECKING:
    import networkx as nx  # type: ignore[import-untyped]

PROBE_HINT = (
    "run `leptonctl net probe` to measure the links, or add `links:` hints to the inventory"
)


def load_graph(
    store: Store,
    hosts: Sequence[Host],
    now: float,
    max_age_s: float = DEFAULT_MAX_AGE_S,
) -> nx.DiGraph:
    """The validated graph between ``hosts``: measurements from the store not older than
    ``max_age_s``, and the ``links`` hints of these hosts where nothing fresh was measured.

    Raises ``InventoryError`` for a bad hint, ``NetGraphError`` for a bad stored link."""
    graph = build_graph(
        [h.name for h in hosts],
        store.links.load(),
        hints_from_inventory(hosts),
        now=now,
        max_age_s=max_age_s,
    )
    validate_graph(graph)
    return graph


def measured_graph(store: Store, hosts: Sequence[Host], now: float) -> nx.DiGraph | None:
    """The graph once `net probe` has stored something, else None: replication chains and
    `cp` then fall back to inventory order and direct links."""
    if not store.links.load():
        return None
    return load_graph(store, hosts, now)


def require_route(
    g: nx.DiGraph,
    src: str,
    dst: str,
    *,
    hop_penalty: float = 0.1,
    via: str | None = None,
    direct_only: bool = False,
    max_hops: int = 4,
) -> Route:
    """``best_route``, or a :class:`NetGraphError` that says why there is none."""
    route = best_route(
        g,
        src,
        dst,
        hop_penalty=hop_penalty,
        via=via,
        direct_only=direct_only,
        max_hops=max_hops,
    )
    if route is not None:
        return route
    how = f"via {via}" if via else "over the direct link" if direct_only else "over known links"
    error = g.graph.get("unreachable", {}).get((src, dst))
    why = f" ({src} could not reach {dst}: {error})" if error else ""
    raise NetGraphError(f"no route from {src} to {dst} {how}{why}", hint=PROBE_HINT)
