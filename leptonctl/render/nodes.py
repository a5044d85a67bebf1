"""Renderer for ``leptonctl node list``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from leptonctl.render.units import human_age

if TYPE_CHECKING:  # a pipe gets plain columns (node_lines): no rich
    from rich.table import Table

    from leptonctl.core.reports import NodeRow

NODE_COLUMNS = ("HOST", "STATE", "JOBS", "SINCE", "REASON")
NODE_STYLE = {"drained": "yellow", "active": "green"}


def node_lines(rows: Sequence[NodeRow], now: float) -> list[tuple[str, ...]]:
    """One row per host, in ``NODE_COLUMNS`` order."""
    return [
        (
            row.host,
            "drained" if row.drained else "active",
            str(row.running),
            "-" if row.since is None else f"{human_age(now - row.since)} ago",
            row.reason or "",
        )
        for row in rows
    ]


def node_style(line: int, column: int, text: str) -> str:
    """A cell's style in ``nodes_table`` (line 0: the header)."""
    if line == 0:
        return "bold"
    return NODE_STYLE.get(text, "") if column == 1 else ""


def nodes_table(rows: Sequence[NodeRow], now: float) -> Table:
    from rich.table import Table
    from rich.text import Text

    from leptonctl.render.text import add_row

    table = Table(box=None, header_style="bold", pad_edge=False, collapse_padding=True)
    for column in NODE_COLUMNS:
        table.add_column(column)
    for host, state, *rest in node_lines(rows, now):
        add_row(table, host, Text(state, style=NODE_STYLE[state]), *rest)
    return table
