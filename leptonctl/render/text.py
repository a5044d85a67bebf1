"""Strings from users and hosts, printed as they are.

Rich reads ``[bold red]`` and ``:emoji:`` in every plain ``str`` it is handed (a table
cell, a title, ``console.print``): a job called ``[bold red]X[/]`` would print red, and a
command ``echo [/]`` would crash ``show`` with a ``MarkupError``.  Every renderer wraps
what came from an inventory, a job, a host or the state store in :func:`literal`; only
our own constant styles are markup, and control characters are shown escaped.
"""

from __future__ import annotations

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from leptonctl.core.scan import printable

__all__ = ["add_row", "literal", "literal_row"]


def literal(value: object, style: str = "") -> Text:
    """``value`` as text that rich prints character for character, control characters
    escaped (an escape sequence in a job name never reaches the terminal); ``Text`` stays."""
    if isinstance(value, Text):
        return value
    return Text(printable(value), style=style)


def literal_row(*cells: RenderableType | None) -> list[RenderableType | None]:
    """Table cells with every plain string made :func:`literal`."""
    return [literal(cell) if isinstance(cell, str) else cell for cell in cells]


def add_row(table: Table, *cells: RenderableType | None) -> None:
    """``table.add_row`` with every plain string cell printed literally."""
    table.add_row(*literal_row(*cells))
