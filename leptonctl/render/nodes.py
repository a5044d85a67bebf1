"""Renderer for ``leptonctl node list``."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from leptonctl.core.reports import NodeRow
from leptonctl.render.text import add_row
from leptonctl.render.units import human_age


def nodes_table(rows: Sequence[NodeRow], now: float) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False, collapse_padding=True)
    for column in ("HOST", "STATE", "JOBS", "SINCE", "REASON"):
        table.add_column(column)
    for row in rows:
        state = Text("drained", style="yellow") if row.drained else Text("active", style="green")
        since = "-" if row.since is None else f"{human_age(now - row.since)} ago"
        add_row(table, row.host, state, str(row.running), since, row.reason or "")
    return table
