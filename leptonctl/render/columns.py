"""Plain-text tables: what a table view prints when its output is not a terminal.

A pipe or a file gets aligned columns of plain text (no colour, no wrapping to a terminal
width, no trailing blanks), and the program loads no rich at all.  Every cell is shown
literally, control characters escaped (see :func:`leptonctl.core.scan.printable`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from leptonctl.core.scan import printable


def cell_width(text: str) -> int:
    """Columns ``text`` takes on a terminal: wide (East Asian) characters take two,
    combining marks none."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def plain_table(
    header: Sequence[str] | None, rows: Sequence[Sequence[object]], *, gap: int = 1
) -> list[str]:
    """``rows`` (and ``header`` above them) as lines of left-aligned columns ``gap`` blanks
    apart, every cell printed literally."""
    lines = [[printable(cell) for cell in row] for row in ([header] if header else []) + list(rows)]
    count = max((len(line) for line in lines), default=0)
    widths = [
        max((cell_width(line[i]) for line in lines if i < len(line)), default=0)
        for i in range(count)
    ]
    out = []
    for line in lines:
        cells = [cell + " " * (widths[i] - cell_width(cell)) for i, cell in enumerate(line)]
        out.append((" " * gap).join(cells).rstrip())
    return out
