"""The ``jobs --watch`` screen: ``QueueFrame`` in, squeue-style tables out (pure), cut to
the width it is given like the cluster dashboard (``leptonctl.render.dashboard``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from leptonctl.core.dashboard import QueueFrame, remaining
from leptonctl.core.records import JobRecord
from leptonctl.core.scan import printable
from leptonctl.render.dashboard import GAP, Column, cut, fit_columns, pack_lines
from leptonctl.render.jobs import JOB_STYLE, devices
from leptonctl.render.units import human_age


def queue_view(
    frame: QueueFrame,
    width: int,
    height: int | None = None,
    title: str = "leptonctl jobs",
    interval: float | None = None,
) -> RenderableType:
    """The ``jobs --watch`` screen: running and pending jobs squeue-style, then the jobs
    that ended in the last minutes."""
    running = sum(1 for r in frame.active if r.state != "PENDING")
    pending = len(frame.active) - running
    head = Text.assemble(
        (title, "bold"), "  ", time.strftime("%H:%M:%S", time.localtime(frame.now))
    )
    if interval is not None:
        head.append(f"  every {interval:g}s", style="dim")
    head.append("  q quits", style="dim")
    counts = Text.assemble(
        (f"{running} running", "green" if running else ""),
        " · ",
        (f"{pending} pending", "yellow" if pending else ""),
        " · ",
        f"{len(frame.ended)} ended recently",
    )
    parts: list[RenderableType] = [*pack_lines([head, counts], width)]
    if frame.unreachable:
        gone = Text(
            f"unreachable (jobs there as last seen): {printable(', '.join(frame.unreachable))}",
            style="yellow",
        )
        parts.append(cut(gone, width))
    parts += [Text(""), queue_table(frame.active, frame.now, width, ended=False)]
    if frame.ended:
        room = None if height is None else height - len(frame.active) - len(parts) - 3
        shown = frame.ended if room is None else frame.ended[: max(0, room)]
        if shown:
            parts += [Text(""), Text("recently ended", style="bold")]
            parts.append(queue_table(shown, frame.now, width, ended=True))
    return Group(*parts)


def queue_table(records: Sequence[JobRecord], now: float, width: int, ended: bool) -> Table:
    """ID NAME STATE HOST DEVICES ELAPSED LEFT REASON (squeue's columns), cut to ``width``."""
    roomy = width >= 100
    longest = max([4, *(len(printable(r.name)) for r in records)])
    name_width = min(longest, 24 if roomy else 12)
    host_width = min(
        max([4, *(len(printable(r.host or "-")) for r in records)]), 16 if roomy else 10
    )
    devices_width = min(max([7, *(len(devices(r)) for r in records)]), 24 if roomy else 10)
    specs: list[tuple[str, int, int, Callable[[JobRecord], Text], bool]] = [
        ("ID", max([2, *(len(str(r.id)) for r in records)]), 0, lambda r: Text(str(r.id)), False),
        ("STATE", 9, 0, lambda r: Text(r.state, style=JOB_STYLE.get(r.state, "")), False),
        ("NAME", name_width, 1, lambda r: Text(printable(r.name)), False),
        ("HOST", host_width, 2, lambda r: Text(printable(r.host or "-")), False),
        ("ELAPSED", 8, 3, lambda r: Text(_elapsed(r, now)), False),
        ("LEFT" if not ended else "ENDED", 8, 4, _left(now, ended), False),
        ("DEVICES", devices_width, 5, lambda r: Text(devices(r)), False),
        ("REASON" if not ended else "EXIT", 10, 1, _reason(ended), True),
    ]
    columns = [Column(h, w, p, c, f) for h, w, p, c, f in specs]
    columns = fit_columns(columns, width)
    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, GAP, 0, 0))
    for column in columns:
        table.add_column(
            column.header,
            width=column.width,
            no_wrap=True,
            overflow="ellipsis",
            max_width=column.width,
        )
    for record in records:
        table.add_row(*[cut(c.cell(record), c.width) for c in columns])
    return table


def _elapsed(r: JobRecord, now: float) -> str:
    if r.started is None:
        return "-" if r.state != "PENDING" else f"+{human_age(now - r.submitted)}"
    return _clock((r.ended or now) - r.started)


def _clock(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    hours, rest = divmod(seconds, 3600)
    if hours >= 100:
        return f"{hours // 24}d"
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _left(now: float, ended: bool) -> Callable[[JobRecord], Text]:
    def cell(r: JobRecord) -> Text:
        if ended:
            return Text(f"{human_age(now - (r.ended or now))} ago", style="dim")
        left = remaining(r, now)
        if left is None:
            walltime = r.spec.get("walltime")
            if r.state == "PENDING" and isinstance(walltime, (int, float)) and walltime:
                return Text(_clock(walltime), style="dim")
            return Text("-", style="dim")
        return Text(_clock(left), style="red" if left < 60 else "")

    return cell


def _reason(ended: bool) -> Callable[[JobRecord], Text]:
    def cell(r: JobRecord) -> Text:
        if ended:
            code = "-" if r.exit_code is None else str(r.exit_code)
            text = Text(f"exit {code}", style="" if r.exit_code == 0 else "red")
            if r.reason:
                text.append(f" {printable(r.reason)}", style="dim")
            return text
        return Text(printable(r.reason or ""), style="yellow" if r.state == "PENDING" else "dim")

    return cell
