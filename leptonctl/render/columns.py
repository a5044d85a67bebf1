"""Plain-text tables: what a borderless table view prints without rich.

A pipe or a file gets aligned columns of plain text (no colour, no wrapping to a terminal
width, no trailing blanks).  A terminal gets the same columns with the styles the rich
table would show (bold headers, coloured states) when every line fits its width; a wider
table is left to rich, which wraps it.  Either way, every cell is shown literally,
control characters escaped (see :func:`leptonctl.core.scan.printable`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence

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


Style = Callable[[int, int, str], str]
"""A cell's style, by its line (0: the header, if any), column and text: rich's words
("bold", "dim green"; "" for none)."""

_SGR = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}


def sgr(style: str) -> str:
    """The terminal's escape sequence that starts ``style`` ("" for none); a word it does
    not know is an error (a style here is one of ours, never a host's)."""
    codes = [_SGR[word] for word in style.split()]
    return f"\x1b[{';'.join(codes)}m" if codes else ""


def plain_table(
    header: Sequence[str] | None,
    rows: Sequence[Sequence[object]],
    *,
    gap: int = 1,
    style: Style | None = None,
) -> list[str]:
    """``rows`` (and ``header`` above them) as lines of left-aligned columns ``gap`` blanks
    apart, every cell printed literally; with ``style``, each cell's text (never its
    padding) in its terminal style."""
    lines = [[printable(cell) for cell in row] for row in ([header] if header else []) + list(rows)]
    count = max((len(line) for line in lines), default=0)
    widths = [
        max((cell_width(line[i]) for line in lines if i < len(line)), default=0)
        for i in range(count)
    ]
    out = []
    for number, line in enumerate(lines):
        cells = []
        for i, cell in enumerate(line):
            start = sgr(style(number, i, cell)) if style is not None and cell else ""
            shown = f"{start}{cell}\x1b[0m" if start else cell
            cells.append(shown + " " * (widths[i] - cell_width(cell)))
        out.append((" " * gap).join(cells).rstrip())
    return out


def width_of(lines: Sequence[str]) -> int:
    """The widest of plain ``lines``, in terminal cells."""
    return max((cell_width(line) for line in lines), default=0)
