"""The network graph: building it from measurements and hints, routes, replication chains."""

from __future__ import annotations

import itertools
import math
from types import MappingProxyType

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leptonctl.core.netgraph import (
    LinkHint,
    LinkMeasurement,
    Route,
    best_route,
    build_graph,
    expected_throughput,
    hints_from_inventory,
    order_chain,
    parse_bandwidth,
    parse_latency,
    validate_graph,
)
from leptonctl.errors import InventoryError, NetGraphError
from tests.helpers import make_host

NOW = 1_000_000.0
GBIT = 1e9 / 8  # bytes per second


def measured(src: str, dst: str, bw: float | None, rtt: float | None = 0.001, age: float = 60.0,
             error: str | None = None) -> LinkMeasurement:  # fmt: skip
    return LinkMeasurement(src, dst, NOW - age, bw, rtt, error)


def graph_of(hosts: str, links: dict[tuple[str, str], float], rtt: float = 0.001) -> nx.DiGraph:
    return build_graph(
        list(hosts), [measured(s, d, bw, rtt) for (s, d), bw in links.items()], now=NOW
    )


# --------------------------------------------------------------------------
# build_graph


def test_fresh_measurements_become_edges_with_their_age_and_source() -> None:
    g = build_graph(["a", "b"], [measured("a", "b", 100.0, 0.002, age=30.0)], now=NOW)
    assert list(g.nodes) == ["a", "b"]
    attrs = g.edges["a", "b"]
    assert (attrs["bandwidth_bps"], attrs["rtt_s"], attrs["age_s"], attrs["source"]) == (
        100.0, 0.002, 30.0, "measured",
    )  # fmt: skip
    assert not g.has_edge("b", "a")  # links are directed
    assert g.graph["unreachable"] == {}


def test_a_fresh_measurement_wins_over_a_hint() -> None:
    g = build_graph(
        ["a", "b"], [measured("a", "b", 100.0)], [LinkHint("a", "b", 5000.0, 0.1)], now=NOW
    )
    assert (g.edges["a", "b"]["bandwidth_bps"], g.edges["a", "b"]["source"]) == (100.0, "measured")


def test_stale_measurements_age_out_and_the_hint_takes_over() -> None:
    stale = measured("a", "b", 100.0, age=2 * 3600.0)
    hint = LinkHint("a", "b", 5000.0, 0.1)
    g = build_graph(["a", "b"], [stale, measured("b", "a", 7.0, age=2 * 3600.0)], [hint],
                    now=NOW, max_age_s=3600.0)  # fmt: skip
    attrs = g.edges["a", "b"]
    assert (attrs["bandwidth_bps"], attrs["source"], attrs["age_s"]) == (5000.0, "hint", None)
    assert not g.has_edge("b", "a")  # stale and no hint: unknown
    fresh_enough = build_graph(["a", "b"], [stale], [hint], now=NOW, max_age_s=3 * 3600.0)
    assert fresh_enough.edges["a", "b"]["source"] == "measured"


def test_a_fresh_error_means_no_edge_even_with_a_hint() -> None:
    g = build_graph(
        ["a", "b"],
        [measured("a", "b", None, None, error="connection refused")],
        [LinkHint("a", "b", 5000.0)],
        now=NOW,
    )
    assert not g.has_edge("a", "b")
    assert g.graph["unreachable"] == {("a", "b"): "connection refused"}


def test_a_stale_error_is_forgotten() -> None:
    old_error = measured("a", "b", None, None, age=10_000.0, error="timeout")
    g = build_graph(["a", "b"], [old_error], [LinkHint("a", "b", 5.0)], now=NOW, max_age_s=100.0)
    assert g.graph["unreachable"] == {}
    assert g.edges["a", "b"]["source"] == "hint"


def test_the_newest_of_two_measurements_of_a_pair_counts() -> None:
    g = build_graph(
        ["a", "b"],
        [measured("a", "b", 1.0, age=10.0), measured("a", "b", 2.0, age=100.0)],
        now=NOW,
    )
    assert g.edges["a", "b"]["bandwidth_bps"] == 1.0


def test_links_of_hosts_outside_the_selection_are_ignored() -> None:
    g = build_graph(
        ["a", "b"],
        [measured("a", "z", 1.0), measured("z", "a", 1.0, error="x"), measured("a", "a", 9.0)],
        [LinkHint("z", "b", 3.0)],
        now=NOW,
    )
    assert set(g.nodes) == {"a", "b"} and g.number_of_edges() == 0
    assert g.graph["unreachable"] == {}


# --------------------------------------------------------------------------
# validate_graph


def test_a_built_graph_validates() -> None:
    validate_graph(graph_of("abc", {("a", "b"): 1.0, ("b", "c"): 2.0}))


@pytest.mark.parametrize("bandwidth", [0.0, -5.0, math.nan, math.inf, None])
def test_validation_rejects_bandwidths_that_are_not_positive_numbers(
    bandwidth: float | None,
) -> None:
    g = build_graph(["a", "b"], [measured("a", "b", 1.0)], now=NOW)
    g.edges["a", "b"]["bandwidth_bps"] = bandwidth
    with pytest.raises(NetGraphError, match=r"a -> b .*bandwidth"):
        validate_graph(g)


def test_validation_rejects_a_measured_zero_bandwidth_from_the_store() -> None:
    with pytest.raises(NetGraphError, match=r"bandwidth 0\.0"):
        validate_graph(build_graph(["a", "b"], [measured("a", "b", 0.0)], now=NOW))


def test_validation_rejects_self_loops() -> None:
    g = build_graph(["a"], [], now=NOW)
    g.add_edge("a", "a", bandwidth_bps=1.0, rtt_s=None, source="hint")
    with pytest.raises(NetGraphError, match="self-loop"):
        validate_graph(g)


def test_validation_rejects_edges_to_hosts_the_graph_was_not_built_for() -> None:
    g = build_graph(["a", "b"], [], now=NOW)
    g.add_edge("a", "ghost", bandwidth_bps=1.0, rtt_s=None, source="hint")
    with pytest.raises(NetGraphError, match=r"'ghost'.*not a known host"):
        validate_graph(g)


def test_validation_rejects_a_negative_rtt() -> None:
    g = build_graph(["a", "b"], [measured("a", "b", 1.0, rtt=-0.5)], now=NOW)
    with pytest.raises(NetGraphError, match="rtt"):
        validate_graph(g)


# --------------------------------------------------------------------------
# best_route


def test_a_relay_is_used_when_it_beats_the_direct_link() -> None:
    g = graph_of("abc", {("a", "b"): 1 * GBIT, ("a", "c"): 10 * GBIT, ("c", "b"): 10 * GBIT})
    route = best_route(g, "a", "b")
    assert route == Route(("a", "c", "b"), 10 * GBIT, 9 * GBIT, 0.002, 1 * GBIT)
    assert route.relayed and route.hops == 2


def test_a_relay_is_not_used_when_the_hop_cost_eats_its_gain() -> None:
    # 1.05x wider, but a second hop costs 10%: the direct link delivers more.
    g = graph_of("abc", {("a", "b"): 100.0, ("a", "c"): 105.0, ("c", "b"): 105.0})
    route = best_route(g, "a", "b")
    assert route is not None and route.hosts == ("a", "b") and not route.relayed
    no_penalty = best_route(g, "a", "b", hop_penalty=0.0)
    assert no_penalty is not None and no_penalty.hosts == ("a", "c", "b")


def test_equal_throughput_prefers_fewer_hops_then_lower_rtt_then_names() -> None:
    links = {("s", "d"): 10.0, ("s", "x"): 10.0, ("x", "d"): 10.0}
    route = best_route(graph_of("sdx", links), "s", "d", hop_penalty=0.0)
    assert route is not None and route.hosts == ("s", "d")

    g = build_graph(
        ["s", "d", "x", "y"],
        [measured("s", "x", 10.0, 0.005), measured("x", "d", 10.0, 0.005),
         measured("s", "y", 10.0, 0.001), measured("y", "d", 10.0, 0.001)],
        now=NOW,
    )  # fmt: skip
    route = best_route(g, "s", "d")
    assert route is not None and route.hosts == ("s", "y", "d")

    g = graph_of("sdxy", {("s", "y"): 10.0, ("y", "d"): 10.0, ("s", "x"): 10.0, ("x", "d"): 10.0})
    route = best_route(g, "s", "d")
    assert route is not None and route.hosts == ("s", "x", "d")


def test_no_path_gives_none_and_same_ends_are_refused() -> None:
    g = graph_of("abc", {("a", "b"): 1.0})
    assert best_route(g, "b", "a") is None
    assert best_route(g, "a", "c") is None
    assert best_route(g, "a", "nowhere") is None
    with pytest.raises(ValueError, match="two different hosts"):
        best_route(g, "a", "a")


def test_max_hops_bounds_the_route() -> None:
    g = graph_of("abcd", {("a", "b"): 5.0, ("b", "c"): 5.0, ("c", "d"): 5.0, ("a", "d"): 1.0})
    three = best_route(g, "a", "d", hop_penalty=0.0, max_hops=3)
    assert three is not None and three.hosts == ("a", "b", "c", "d")
    two = best_route(g, "a", "d", hop_penalty=0.0, max_hops=2)
    assert two is not None and two.hosts == ("a", "d")
    assert best_route(g, "a", "c", max_hops=1) is None


def test_via_forces_the_relay_over_direct_links() -> None:
    g = graph_of("abc", {("a", "b"): 10.0, ("a", "c"): 1.0, ("c", "b"): 2.0})
    route = best_route(g, "a", "b", via="c")
    assert route == Route(("a", "c", "b"), 1.0, 0.9, 0.002, 10.0)
    assert best_route(g, "b", "a", via="c") is None
    with pytest.raises(ValueError, match="relay"):
        best_route(g, "a", "b", via="b")


def test_direct_only_ignores_better_relays() -> None:
    g = graph_of("abc", {("a", "b"): 1.0, ("a", "c"): 10.0, ("c", "b"): 10.0})
    route = best_route(g, "a", "b", direct_only=True)
    assert route is not None and route.hosts == ("a", "b") and route.direct_bps == 1.0
    assert best_route(g, "b", "a", direct_only=True) is None


def test_route_rtt_is_unknown_when_a_hop_rtt_is_unknown() -> None:
    g = build_graph(
        ["a", "b", "c"],
        [measured("a", "c", 10.0, None), measured("c", "b", 10.0, 0.004)],
        now=NOW,
    )
    route = best_route(g, "a", "b")
    assert route is not None and route.rtt_s is None and route.direct_bps is None


def _brute_force_route(
    g: nx.DiGraph, src: str, dst: str, hop_penalty: float, max_hops: int
) -> Route | None:
    """Every simple path, scored independently; the best by the documented order."""
    best: tuple[tuple[object, ...], Route] | None = None
    for path in nx.all_simple_paths(g, src, dst, cutoff=max_hops):
        hops = list(itertools.pairwise(path))
        bottleneck = min(g.edges[e]["bandwidth_bps"] for e in hops)
        rtts = [g.edges[e]["rtt_s"] for e in hops]
        rtt = None if None in rtts else sum(rtts)
        direct = g.edges[src, dst]["bandwidth_bps"] if g.has_edge(src, dst) else None
        expected = expected_throughput(bottleneck, len(hops), hop_penalty)
        route = Route(tuple(path), bottleneck, expected, rtt, direct)
        key = (-expected, len(path), (0, rtt) if rtt is not None else (1, 0.0), tuple(path))
        if best is None or key < best[0]:
            best = (key, route)
    return None if best is None else best[1]


@st.composite
def random_graphs(draw: st.DrawFn) -> tuple[nx.DiGraph, str, str]:
    n = draw(st.integers(2, 7))
    hosts = [f"h{i}" for i in range(n)]
    measurements = []
    for src, dst in itertools.permutations(hosts, 2):
        if draw(st.booleans()):
            # Few distinct values, so that ties (and their order) are exercised.
            bw = draw(st.sampled_from([1.0, 2.0, 5.0, 9.0, 10.0, 100.0]))
            rtt = draw(st.sampled_from([None, 0.001, 0.002, 0.005]))
            measurements.append(measured(src, dst, bw, rtt))
    src, dst = draw(st.lists(st.sampled_from(hosts), min_size=2, max_size=2, unique=True))
    return build_graph(hosts, measurements, now=NOW), src, dst


@settings(max_examples=300, deadline=None)
@given(
    random_graphs(),
    st.sampled_from([0.0, 0.1, 0.5, 0.75]),
    st.integers(1, 6),
)
def test_best_route_matches_brute_force_over_all_simple_paths(
    case: tuple[nx.DiGraph, str, str], hop_penalty: float, max_hops: int
) -> None:
    g, src, dst = case
    expected = _brute_force_route(g, src, dst, hop_penalty, max_hops)
    assert best_route(g, src, dst, hop_penalty=hop_penalty, max_hops=max_hops) == expected


@settings(max_examples=100, deadline=None)
@given(random_graphs())
def test_routes_only_use_existing_links(case: tuple[nx.DiGraph, str, str]) -> None:
    g, src, dst = case
    route = best_route(g, src, dst)
    if route is not None:
        assert route.hosts[0] == src and route.hosts[-1] == dst
        assert len(set(route.hosts)) == len(route.hosts)
        assert all(g.has_edge(u, v) for u, v in itertools.pairwise(route.hosts))
        assert route.expected_bps <= route.bottleneck_bps


# --------------------------------------------------------------------------
# order_chain


def _slowest_hop(g: nx.DiGraph, chain: tuple[str, ...]) -> tuple[int, float]:
    keys = [
        (1, g.edges[u, v]["bandwidth_bps"]) if g.has_edge(u, v) else (0, 0.0)
        for u, v in itertools.pairwise(chain)
    ]
    return min(keys)


def test_a_chain_is_ordered_so_that_its_slowest_hop_is_fastest() -> None:
    links = {
        ("s", "a"): 1.0, ("s", "b"): 10.0, ("s", "c"): 10.0,
        ("b", "a"): 10.0, ("a", "c"): 10.0, ("b", "c"): 1.0, ("c", "a"): 1.0,
    }  # fmt: skip
    g = graph_of("sabc", links)
    assert order_chain(g, "s", ["a", "b", "c"]) == ("b", "a", "c")


def test_chain_ties_keep_the_given_order() -> None:
    hosts = "sabcd"
    g = graph_of(hosts, {(u, v): 5.0 for u, v in itertools.permutations(hosts, 2)})
    assert order_chain(g, "s", ["c", "a", "d", "b"]) == ("c", "a", "d", "b")
    assert order_chain(g, "s", []) == ()
    assert order_chain(g, "s", ["b"]) == ("b",)


def test_unknown_links_are_worse_than_any_known_link_but_allowed() -> None:
    g = graph_of("sab", {("s", "b"): 0.001, ("b", "a"): 0.001})  # s -> a and a -> b unknown
    assert order_chain(g, "s", ["a", "b"]) == ("b", "a")
    nothing_known = graph_of("sab", {})
    assert order_chain(nothing_known, "s", ["a", "b"]) == ("a", "b")


def test_a_chain_refuses_duplicates_and_the_source_as_replica() -> None:
    g = graph_of("sab", {})
    with pytest.raises(ValueError, match="distinct"):
        order_chain(g, "s", ["a", "a"])
    with pytest.raises(ValueError, match="source"):
        order_chain(g, "s", ["s", "a"])


def test_long_chains_take_the_widest_next_hop() -> None:
    hosts = [f"r{i}" for i in range(9)]
    links = {("s", "r4"): 10.0}
    links.update({(u, v): 1.0 for u, v in itertools.permutations(hosts, 2)})
    links.update({("r4", "r7"): 10.0, ("r7", "r0"): 10.0})
    g = build_graph(["s", *hosts], [measured(u, v, bw) for (u, v), bw in links.items()], now=NOW)
    chain = order_chain(g, "s", hosts)
    assert chain[:3] == ("r4", "r7", "r0")
    assert sorted(chain) == sorted(hosts)


@st.composite
def chain_cases(draw: st.DrawFn) -> tuple[nx.DiGraph, list[str]]:
    n = draw(st.integers(0, 5))
    replicas = [f"r{i}" for i in range(n)]
    hosts = ["s", *replicas]
    measurements = [
        measured(u, v, draw(st.sampled_from([1.0, 2.0, 3.0])))
        for u, v in itertools.permutations(hosts, 2)
        if draw(st.integers(0, 3)) > 0  # about a quarter of the links unknown
    ]
    order = draw(st.permutations(replicas))
    return build_graph(hosts, measurements, now=NOW), list(order)


@settings(max_examples=200, deadline=None)
@given(chain_cases())
def test_order_chain_matches_brute_force_and_keeps_the_given_order_on_ties(
    case: tuple[nx.DiGraph, list[str]],
) -> None:
    g, replicas = case
    chain = order_chain(g, "s", replicas)
    assert sorted(chain) == sorted(replicas)
    if not replicas:
        return
    scored = [(_slowest_hop(g, ("s", *p)), p) for p in itertools.permutations(replicas)]
    best = max(score for score, _ in scored)
    first_best = next(p for score, p in scored if score == best)
    assert _slowest_hop(g, ("s", *chain)) == best
    assert chain == first_best


# --------------------------------------------------------------------------
# Units and the `links` host variable


@pytest.mark.parametrize(
    ("text", "bytes_per_s"),
    [
        ("10Gbit", 1.25e9),
        ("940Mbit/s", 117.5e6),
        ("1G", 125e6),
        ("100 kbps", 12.5e3),
        ("1.5Gb", 187.5e6),
        ("117MB/s", 117e6),
        ("2GBps", 2e9),
        ("500MiB/s", 500 * 2**20),
        ("800bit", 100.0),
    ],
)
def test_bandwidths_are_read_as_bits_unless_a_capital_b_says_bytes(
    text: str, bytes_per_s: float
) -> None:
    assert parse_bandwidth(text) == pytest.approx(bytes_per_s)


@pytest.mark.parametrize("value", ["100", 100, "fast", "-1Gbit", "0Gbit", "10 Gbit/h", True, None])
def test_bad_bandwidths_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="bandwidth"):
        parse_bandwidth(value)


@pytest.mark.parametrize(
    ("text", "seconds"), [("0.2ms", 0.0002), ("150us", 0.00015), ("1s", 1.0), ("3 µs", 3e-6)]
)
def test_latencies_are_read_in_seconds(text: str, seconds: float) -> None:
    assert parse_latency(text) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["0.2", 0.2, "2 minutes", "-1ms"])
def test_bad_latencies_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="latency"):
        parse_latency(value)


def test_hints_come_from_the_links_host_variable() -> None:
    h1 = make_host(
        "h1",
        vars=MappingProxyType(
            {"links": {"h2": {"bandwidth": "10Gbit", "latency": "0.2ms"}, "h3": "117MB/s"}}
        ),
    )
    h2 = make_host("h2", vars=MappingProxyType({"links": "{h1: {bandwidth: 1Gbit}}"}))  # INI
    h3 = make_host("h3")
    hints = hints_from_inventory([h1, h2, h3])
    assert hints == [
        LinkHint("h1", "h2", pytest.approx(1.25e9), pytest.approx(0.0002)),  # type: ignore[arg-type]
        LinkHint("h1", "h3", 117e6, None),
        LinkHint("h2", "h1", 125e6, None),
    ]


@pytest.mark.parametrize(
    ("links", "field", "detail"),
    [
        ({"h2": {"bandwidth": "fast"}}, "links.h2.bandwidth", "fast"),
        ({"h2": {"bandwidth": "1Gbit", "latency": "soon"}}, "links.h2.latency", "soon"),
        ({"h2": {"latency": "1ms"}}, "links.h2.bandwidth", "needs a bandwidth"),
        ({"h2": {"bandwith": "1Gbit"}}, "links.h2.bandwith", "unknown link field"),
        ({"h2": ["1Gbit"]}, "links.h2", "expected"),
        ({"h1": "1Gbit"}, "links.h1", "itself"),
        (["h2"], "links", "mapping"),
        ("{h2: [", "links", "YAML"),
    ],
)
def test_bad_hints_name_the_host_its_source_and_the_field(
    links: object, field: str, detail: str
) -> None:
    host = make_host("h1", vars=MappingProxyType({"links": links}), source="inv.yml:7")
    with pytest.raises(InventoryError) as caught:
        hints_from_inventory([host])
    message = str(caught.value)
    assert message.startswith(f"inv.yml:7 ({field}): host h1:")
    assert detail in message
    assert caught.value.key == field
