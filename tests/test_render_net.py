"""`net show` renderers and JSON documents, read as an operator would."""

from __future__ import annotations

from rich.console import Console

from leptonctl.core.netgraph import LinkHint, LinkMeasurement, best_route, build_graph
from leptonctl.render.documents import net_document, route_document
from leptonctl.render.net import human_bitrate, human_rtt, link_matrix_table, route_table

NOW = 1_000_000.0
HOSTS = ["a", "b", "c", "d"]


def text_of(renderable: object) -> str:
    console = Console(record=True, width=160, color_system=None)
    console.print(renderable)
    return console.export_text()


def words_of(text: str) -> str:
    """The text with runs of whitespace as one space: captions wrap to the table's width."""
    return " ".join(text.split())


def sample_graph():  # type: ignore[no-untyped-def]
    return build_graph(
        HOSTS,
        [
            LinkMeasurement("a", "b", NOW - 3 * 3600, 117.5e6, 0.00021),  # 940 Mbit/s
            LinkMeasurement("a", "c", NOW - 60, 1.25e9, 0.0001),  # 10 Gbit/s
            LinkMeasurement("c", "b", NOW - 120, 1.25e9, 0.0004),
            LinkMeasurement("b", "a", NOW - 60, None, None, "connection refused"),
        ],
        [LinkHint("d", "a", 12.5e6, None)],  # 100 Mbit/s
        now=NOW,
    )


def test_bitrates_are_shown_in_bits_per_second() -> None:
    assert human_bitrate(117.5e6) == "940 Mbit/s"
    assert human_bitrate(1.25e9) == "10 Gbit/s"
    assert human_bitrate(1.5e3) == "12 kbit/s"
    assert human_bitrate(None) == "?"
    assert human_rtt(0.00021) == "0.21 ms"
    assert human_rtt(0.0425) == "42 ms"


def cells_by_row(text: str) -> dict[str, list[str]]:
    """Row label -> the first line of each cell, from the rendered matrix."""
    rows = {}
    for line in text.splitlines():
        words = line.split()
        if words and words[0] in HOSTS and len(words) == len(HOSTS) + 1:
            rows[words[0]] = words[1:]
    return rows


def test_the_matrix_shows_bandwidth_rtt_and_what_is_unknown() -> None:
    text = text_of(link_matrix_table(sample_graph(), HOSTS, NOW))
    rows = cells_by_row(text)
    assert rows["a"] == ["—", "940M", "10G", "?"]
    assert rows["b"] == ["✗", "—", "?", "?"]
    assert rows["d"][0] == "100M*"
    assert "0.21ms" in text and "0.1ms" in text
    caption = words_of(text)
    assert "oldest measurement 3h ago" in caption
    assert "* inventory hint" in caption and "✗ unreachable" in caption


def test_a_big_matrix_numbers_its_columns_and_keeps_host_names_whole() -> None:
    hosts = [f"gpu{i:02d}.rack1.example.net" for i in range(1, 13)]
    graph = build_graph(hosts, [LinkMeasurement(hosts[0], hosts[11], NOW, 1.25e9, 0.0002)], now=NOW)
    text = Console(record=True, width=120, color_system=None)
    text.print(link_matrix_table(graph, hosts, NOW))
    lines = text.export_text().splitlines()
    first = next(line for line in lines if line.split()[:2] == ["1", hosts[0]])
    assert first.split()[-1] == "10G"  # the last column: host 12
    assert any(line.split()[:2] == ["12", hosts[11]] for line in lines)


def test_the_matrix_colours_links_by_their_share_of_the_best_one() -> None:
    table = link_matrix_table(sample_graph(), HOSTS, NOW)
    cells = {c.header: list(c.cells) for c in table.columns}
    a_row, d_row = 0, 3
    assert cells["c"][a_row].style == "green"  # 10 Gbit/s, the best
    assert cells["b"][a_row].style == "red"  # 940 Mbit/s, under 10% of it
    assert cells["a"][d_row].style == "red"


def test_an_empty_matrix_says_how_to_measure() -> None:
    text = text_of(link_matrix_table(build_graph(HOSTS, [], now=NOW), HOSTS, NOW))
    assert "run `leptonctl net probe`" in words_of(text)


def test_the_route_explains_each_hop_and_the_gain_over_the_direct_link() -> None:
    g = sample_graph()
    route = best_route(g, "a", "b")
    assert route is not None and route.hosts == ("a", "c", "b")
    text = text_of(route_table(route, g))
    assert "route a → c → b" in text
    summary = words_of(text)
    assert (
        "expected 9 Gbit/s (bottleneck 10 Gbit/s over 2 hops): 9.6× the direct link (940 Mbit/s)"
        in summary
    )
    hops = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in text.splitlines()
        if line.startswith("│")
    ]
    assert hops == [
        ["1", "a", "c", "10 Gbit/s", "0.1 ms", "measured 1m ago"],
        ["2", "c", "b", "10 Gbit/s", "0.4 ms", "measured 2m ago"],
    ]


def test_a_direct_route_says_so() -> None:
    g = sample_graph()
    route = best_route(g, "a", "c")
    assert route is not None
    assert "expected 10 Gbit/s over the direct link" in words_of(text_of(route_table(route, g)))


def test_the_net_document_lists_links_and_unreachable_pairs() -> None:
    doc = net_document(sample_graph(), HOSTS, NOW)
    assert doc["hosts"] == HOSTS
    assert [(link["src"], link["dst"]) for link in doc["links"]] == [
        ("a", "b"),
        ("a", "c"),
        ("c", "b"),
        ("d", "a"),
    ]
    first = doc["links"][0]
    assert first == {
        "src": "a",
        "dst": "b",
        "bandwidth_bps": 117.5e6,
        "rtt_s": 0.00021,
        "age_s": 3 * 3600.0,
        "measured": NOW - 3 * 3600,
        "source": "measured",
    }
    assert doc["links"][3]["source"] == "hint" and doc["links"][3]["age_s"] is None
    assert doc["unreachable"] == [{"src": "b", "dst": "a", "error": "connection refused"}]


def test_the_net_document_keeps_to_the_hosts_asked_for() -> None:
    doc = net_document(sample_graph(), ["a", "b"], NOW)
    assert [(link["src"], link["dst"]) for link in doc["links"]] == [("a", "b")]
    assert len(doc["unreachable"]) == 1


def test_the_route_document_has_its_fields() -> None:
    route = best_route(sample_graph(), "a", "b")
    assert route is not None
    assert route_document(route) == {
        "route": ["a", "c", "b"],
        "bottleneck_bps": 1.25e9,
        "expected_bps": route.expected_bps,
        "direct_bps": 117.5e6,
        "relayed": True,
        "rtt_s": route.rtt_s,
    }
    assert route.expected_bps == 1.125e9
