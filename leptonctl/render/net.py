"""Renderers for ``leptonctl net show``: the link matrix and a route's explanation.

The graph holds bytes per second; these show **bits** per second ("940 Mbit/s"),
which is what network people read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from leptonctl.core.netgraph import Route
from leptonctl.render.text import add_row, literal
from leptonctl.render.units import human_age

if TYPE_CHECKING:
    import networkx as nx  # type: ignore[import-untyped]


def human_bitrate(bytes_per_s: float | None) -> str:
    """Bytes/s as decimal bits/s, three significant digits: 117.5e6 -> '940 Mbit/s'."""
    if bytes_per_s is None:
        return "?"
    bits = float(bytes_per_s) * 8
    for unit in ("bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"):
        if abs(bits) < 999.5 or unit == "Tbit/s":
            return f"{bits:.3g} {unit}" if bits < 100 else f"{bits:.0f} {unit}"
        bits /= 1000
    raise AssertionError("unreachable")


def human_rtt(rtt_s: float | None) -> str:
    if rtt_s is None:
        return "rtt ?"
    ms = rtt_s * 1000
    return f"{ms:.2g} ms" if ms < 10 else f"{ms:.0f} ms"


def _heat(bandwidth: float, best: float) -> str:
    """Green near the best link, yellow at half of it, red well below."""
    share = bandwidth / best if best > 0 else 0.0
    if share >= 0.75:
        return "green"
    if share >= 0.4:
        return "yellow"
    return "red"


def compact_bitrate(bytes_per_s: float) -> str:
    """A matrix cell: bits/s with a one-letter unit, 117.5e6 -> '940M', 1.25e9 -> '10G'."""
    return human_bitrate(bytes_per_s).replace("bit/s", "").replace(" ", "")


NUMBERED_FROM = 7  # with more hosts than this, columns are numbered to fit a terminal


def link_matrix_table(g: nx.DiGraph, hosts: Sequence[str], now: float) -> Table:
    """Rows are senders, columns receivers; each cell the link's bandwidth (bits/s) over
    its rtt, coloured by bandwidth relative to the best link shown. Past a handful of
    hosts the columns are numbered (the rows say which number is which host)."""
    unreachable = g.graph.get("unreachable", {})
    relayed = g.graph.get("relayed", {})
    links = {(u, v): a for u, v, a in g.edges(data=True) if u in hosts and v in hosts and u != v}
    best = max((float(a["bandwidth_bps"]) for a in links.values()), default=0.0)
    numbered = len(hosts) >= NUMBERED_FROM
    table = Table(header_style="bold", title="links (row → column), bits/s", box=box.SIMPLE_HEAD)
    table.add_column("FROM \\ TO", style="bold", no_wrap=True)
    for number, dst in enumerate(hosts, start=1):
        # a header stays a str (tests and callers look columns up by it), escaped instead
        table.add_column(str(number) if numbered else escape(dst), justify="right", no_wrap=True)
    for number, src in enumerate(hosts, start=1):
        cells: list[Text] = []
        for dst in hosts:
            attrs = links.get((src, dst))
            if src == dst:
                cells.append(Text("—", style="dim"))
            elif (src, dst) in relayed:
                cells.append(Text("relay", style="yellow"))  # transfers go through us
            elif (src, dst) in unreachable:
                cells.append(Text("✗", style="bold red"))
            elif attrs is None:
                cells.append(Text("?", style="dim"))
            else:
                bandwidth = float(attrs["bandwidth_bps"])
                mark = "*" if attrs.get("source") == "hint" else ""
                cell = Text(compact_bitrate(bandwidth) + mark, style=_heat(bandwidth, best))
                cell.append("\n" + human_rtt(attrs.get("rtt_s")).replace(" ", ""), style="dim")
                cells.append(cell)
        add_row(table, f"{number} {src}" if numbered else src, *cells)
    table.caption = _matrix_caption(links, unreachable, now, relayed)
    return table


def matrix_width(hosts: Sequence[str]) -> int:
    """Columns the matrix needs on a terminal (cells of up to 6 characters)."""
    label = max((len(h) for h in hosts), default=0) + (3 if len(hosts) >= NUMBERED_FROM else 0)
    return label + 4 + 9 * len(hosts)


def link_list_table(g: nx.DiGraph, hosts: Sequence[str], now: float) -> Table:
    """The same links as a list, one row per directed pair (slowest first): what a terminal
    too narrow for the matrix shows."""
    unreachable = g.graph.get("unreachable", {})
    relayed = g.graph.get("relayed", {})
    wanted = set(hosts)
    table = Table(header_style="bold", title="links, slowest first", box=box.SIMPLE_HEAD)
    for column in ("FROM", "TO", "BANDWIDTH", "RTT", "SOURCE"):
        table.add_column(column, no_wrap=True, justify="right" if column == "BANDWIDTH" else "left")
    links = sorted(
        ((float(a["bandwidth_bps"]), u, v, a) for u, v, a in g.edges(data=True)
         if u in wanted and v in wanted and u != v),
        key=lambda row: (row[0], row[1], row[2]),
    )  # fmt: skip
    best = links[-1][0] if links else 0.0
    for (u, v), error in sorted(unreachable.items()):
        if u in wanted and v in wanted and (u, v) in relayed:
            add_row(table, u, v, Text("relayed by us", style="yellow"), "", relayed[(u, v)])
        elif u in wanted and v in wanted:
            add_row(table, u, v, Text("✗ unreachable", style="bold red"), "", error)
    for bandwidth, u, v, attrs in links:
        source = attrs.get("source", "?")
        if attrs.get("age_s") is not None:
            source = f"{source} {human_age(attrs['age_s'])} ago"
        bitrate = Text(human_bitrate(bandwidth), style=_heat(bandwidth, best))
        add_row(table, u, v, bitrate, human_rtt(attrs.get("rtt_s")), source)
    table.caption = _matrix_caption(
        {(u, v): a for _, u, v, a in links}, unreachable, now, relayed
    ).replace(" · ? not measured", "")
    return table


def _matrix_caption(
    links: Mapping[tuple[str, str], Mapping[str, Any]],
    unreachable: Mapping[tuple[str, str], str],
    now: float,
    relayed: Mapping[tuple[str, str], str] | None = None,
) -> str:
    measured = [a["measured"] for a in links.values() if a.get("measured") is not None]
    parts = []
    if measured:
        parts.append(f"oldest measurement {human_age(now - min(measured))} ago")
    else:
        parts.append("no measurements: run `leptonctl net probe`")
    if any(a.get("source") == "hint" for a in links.values()):
        parts.append("* inventory hint")
    if relayed:
        parts.append("relay: transfers go through the operator")
    if set(unreachable) - set(relayed or {}):
        parts.append("✗ unreachable")
    parts.append("? not measured")
    return " · ".join(parts)


def route_table(route: Route, g: nx.DiGraph) -> Table:
    """The chosen path hop by hop, and what it is expected to deliver against the direct
    link."""
    table = Table(header_style="bold", title=literal(f"route {' → '.join(route.hosts)}"))
    for column in ("HOP", "FROM", "TO", "BANDWIDTH", "RTT", "SOURCE"):
        table.add_column(column)
    for number, (u, v) in enumerate(pairwise(route.hosts), start=1):
        attrs = g.edges[u, v]
        bandwidth = float(attrs["bandwidth_bps"])
        style = "bold" if bandwidth == route.bottleneck_bps and route.relayed else ""
        source = attrs.get("source", "?")
        if attrs.get("age_s") is not None:
            source = f"{source} {human_age(attrs['age_s'])} ago"
        add_row(
            table,
            str(number),
            u,
            v,
            Text(human_bitrate(bandwidth), style=style),
            human_rtt(attrs.get("rtt_s")),
            source,
        )
    table.caption = route_summary(route)
    return table


def route_summary(route: Route) -> str:
    """One line: what the route is expected to deliver, and why it was chosen."""
    expected = f"expected {human_bitrate(route.expected_bps)}"
    if route.relayed:
        expected += f" (bottleneck {human_bitrate(route.bottleneck_bps)} over {route.hops} hops)"
    if route.direct_bps is None:
        return f"{expected}; no direct link"
    if not route.relayed:
        return f"{expected} over the direct link"
    ratio = route.expected_bps / route.direct_bps
    return f"{expected}: {ratio:.1f}× the direct link ({human_bitrate(route.direct_bps)})"
