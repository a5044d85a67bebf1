"""The cluster dashboard (``status --watch``): ``ClusterFrame`` in, one screen out (pure).
``jobs --watch`` is drawn by ``leptonctl.render.queue_dashboard`` with the same pieces.

Everything fits the width it is given: columns are dropped, least useful first, until the
table fits, and every cell is cut with an ellipsis rather than wrapped, so one host is one
line at 80 columns as at 200.  With a height, the per-GPU detail is shown only when it
fits under the hosts.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from leptonctl.core.dashboard import ClusterFrame, ClusterTotals, HostView, gpu_busy
from leptonctl.core.facts import GpuFacts
from leptonctl.core.history import BLOCKS, sparkline
from leptonctl.core.scan import printable
from leptonctl.core.scheduler.devices import gpu_condition
from leptonctl.render.jobs import JOB_STYLE
from leptonctl.render.units import human_age, human_bytes, short_gpu_name

STATE_STYLE = {
    "up": "green",
    "down": "bold red",
    "unhealthy": "red",
    "drained": "yellow",
    "pending": "dim",
}
GAP = 1  # spaces between columns


@dataclass(frozen=True)
class Column:
    """A dashboard column: its header, width, priority (lower is kept longer) and cell."""

    header: str
    width: int
    priority: int
    cell: Callable[[Any], Text]  # a HostView or a JobRecord -> its cell
    flexible: bool = False  # takes the width left over


# -- shared pieces ---------------------------------------------------------------------


def bar(percent: float | None, width: int, label: bool = True) -> Text:
    """A bar of ``width`` cells, green, yellow past 70 %, red past 90 %, then the number."""
    if percent is None:
        return Text("·" * width + ("    -" if label else ""), style="dim")
    percent = max(0.0, min(100.0, percent))
    filled = round(width * percent / 100)
    style = _level_style(percent)
    text = Text.assemble(("█" * filled, style), ("░" * (width - filled), "dim"))
    if label:
        text.append(f" {percent:3.0f}%")
    return text


def _level_style(percent: float) -> str:
    return "red" if percent >= 90 else "yellow" if percent >= 70 else "green"


def _pct(part: int | None, whole: int | None) -> float | None:
    return None if part is None or not whole else 100.0 * part / whole


def cut(text: Text, width: int) -> Text:
    text.no_wrap = True
    text.overflow = "ellipsis"
    text.truncate(width, overflow="ellipsis")
    return text


def pack_lines(parts: Sequence[Text], width: int) -> list[Text]:
    """Pack header parts into lines of at most ``width`` cells (a part is never split;
    one wider than the line is cut)."""
    lines: list[Text] = []
    current = Text()
    for part in parts:
        sep = 3 if current.plain else 0
        if current.plain and current.cell_len + sep + part.cell_len > width:
            lines.append(current)
            current, sep = Text(), 0
        if sep:
            current.append("   ")
        current.append_text(part)
    if current.plain:
        lines.append(current)
    return [cut(line, width) for line in lines]


# -- status --watch ----------------------------------------------------------------------


def totals_parts(totals: ClusterTotals) -> list[Text]:
    """The header's pieces: hosts, CPU, memory, GPUs by model, jobs, data."""
    hosts = totals.hosts
    host_part = Text("hosts ", style="bold")
    order = ("up", "down", "unhealthy", "drained", "pending")
    shown = [(s, hosts.get(s, 0)) for s in order if hosts.get(s) or s == "up"]
    for i, (state, count) in enumerate(shown):
        if i:
            host_part.append(" · ")
        host_part.append(f"{count} {state}", style=STATE_STYLE[state] if count else "dim")
    parts = [host_part]
    cpu_pct = _pct(round(totals.cpu_busy_threads * 1000), totals.cpu_threads * 1000)
    cpu = Text("cpu ", style="bold")
    cpu.append_text(bar(cpu_pct, 8))
    cpu.append(
        f" {totals.cpu_busy_threads:.1f}/{totals.cpu_threads} threads busy, "
        f"{totals.cpu_allocated} allocated"
    )
    parts.append(cpu)
    mem = Text("mem ", style="bold")
    mem.append_text(bar(_pct(totals.memory_used_bytes, totals.memory_total_bytes), 8))
    mem.append(
        f" {human_bytes(totals.memory_used_bytes, True)}/"
        f"{human_bytes(totals.memory_total_bytes, True)}"
    )
    parts.append(mem)
    for model in totals.gpus:
        gpu = Text("gpu ", style="bold")
        gpu.append(printable(short_gpu_name(model.model)))
        gpu.append(f" {model.allocated}/{model.total} allocated, {model.busy} busy")
        parts.append(gpu)
    jobs = Text("jobs ", style="bold")
    jobs.append(f"{totals.jobs_running} running", style="green" if totals.jobs_running else "")
    jobs.append(" · ")
    jobs.append(f"{totals.jobs_pending} pending", style="yellow" if totals.jobs_pending else "")
    longest = totals.longest_pending
    if longest is not None:
        jobs.append(f" (longest {human_age(longest.waiting)}: {longest.job_id} ")
        jobs.append(printable(longest.reason or "waiting"), style="yellow")
        jobs.append(")")
    parts.append(jobs)
    data = totals.data
    if data is not None:
        part = Text("data ", style="bold")
        if data.healthy:
            part.append(f"{data.datasets} datasets ok", style="green")
        else:
            bad = [
                f"{n} {what}"
                for n, what in (
                    (data.under_replicated, "chunks under-replicated"),
                    (data.lost, "lost"),
                    (data.corrupt, "corrupt replicas"),
                )
                if n
            ]
            part.append(", ".join(bad), style="red")
        parts.append(part)
    return parts


def cluster_view(
    frame: ClusterFrame,
    width: int,
    height: int | None = None,
    title: str = "leptonctl status",
    interval: float | None = None,
) -> RenderableType:
    """The whole ``status --watch`` screen for a terminal of ``width`` x ``height``."""
    head = Text.assemble(
        (title, "bold"), "  ", time.strftime("%H:%M:%S", time.localtime(frame.now))
    )
    if interval is not None:
        head.append(f"  every {interval:g}s", style="dim")
    head.append("  q quits", style="dim")
    header = pack_lines([head, *totals_parts(frame.totals)], width)
    trouble = problem_lines(frame, width)
    shown, more = frame, None
    if height is not None and _rows(frame.hosts, frame.grouped) > height - len(header) - 2:
        keep = _fitting(frame.hosts, frame.grouped, max(1, height - len(header) - 3))
        shown = dataclasses.replace(frame, hosts=frame.hosts[:keep])
        more = _more_hosts(frame.hosts[keep:], width)
        trouble = []  # no room: problems come first, so their rows are on the screen
    parts: list[RenderableType] = [*header, Text(""), hosts_table(shown, width)]
    if more is not None:
        return Group(*parts, more)
    used = len(header) + 2 + _rows(frame.hosts, frame.grouped)
    if height is not None and len(trouble) > height - used - 1:
        trouble = trouble[: max(0, height - used - 1)]
    detail = gpu_detail(frame, width)
    room = None if height is None else height - used - len(trouble) - 1
    if detail is not None:
        rows = sum(len(v.gpus) for v in frame.hosts) + 2
        if room is None or rows <= room:
            parts += [Text(""), detail]
        elif room > 0:
            hidden = Text(
                f"per-GPU detail: {rows - 2} GPUs, hidden (it needs {rows} more lines)", "dim"
            )
            parts += [cut(hidden, width)]
    if trouble:
        parts += [Text(""), *trouble]
    return Group(*parts)


def _rows(views: Sequence[HostView], grouped: bool) -> int:
    """Lines of the hosts table's body: one per host, and one per group label."""
    return len(views) + (len({v.group for v in views}) if grouped else 0)


def _fitting(views: Sequence[HostView], grouped: bool, lines: int) -> int:
    """How many of the first hosts fit in ``lines`` lines (group labels included)."""
    count = 0
    while count < len(views) and _rows(views[: count + 1], grouped) <= lines:
        count += 1
    return max(1, count)


def _more_hosts(hidden: Sequence[HostView], width: int) -> Text:
    states = Counter(v.state for v in hidden)
    said = ", ".join(f"{n} {state}" for state, n in states.items())
    line = Text(f"… {len(hidden)} more hosts ({said}): a taller terminal shows them", "dim")
    return cut(line, width)


def hosts_table(frame: ClusterFrame, width: int) -> Table:
    """One line per host, the columns that fit ``width``."""
    columns = fit_columns(_host_columns(frame, width), width)
    table = Table(
        box=None,
        header_style="bold",
        pad_edge=False,
        padding=(0, GAP, 0, 0),
        show_edge=False,
        expand=False,
    )
    for column in columns:
        table.add_column(
            column.header,
            width=column.width,
            no_wrap=True,
            overflow="ellipsis",
            max_width=column.width,
        )
    group = None
    for view in frame.hosts:
        if frame.grouped and view.group != group:
            group = view.group
            label = cut(Text(f"[{printable(group)}]", style="bold cyan"), columns[0].width)
            table.add_row(label, *[Text("") for _ in columns[1:]])
        table.add_row(*[cut(c.cell(view), c.width) for c in columns])
    return table


def fit_columns(columns: list[Column], width: int) -> list[Column]:
    """Drop the columns of the highest priority number until the rest fit; the flexible
    column takes what is left."""
    kept = list(columns)

    def needed(cols: list[Column]) -> int:
        return sum(c.width for c in cols) + GAP * (len(cols) - 1)

    while needed(kept) > width and any(c.priority > 0 for c in kept):
        drop = max((c for c in kept if c.priority > 0), key=lambda c: c.priority)
        kept.remove(drop)
    spare = max(0, width - needed(kept))
    return [
        Column(c.header, c.width + spare, c.priority, c.cell, True) if c.flexible else c
        for c in kept
    ]


def _host_columns(frame: ClusterFrame, width: int) -> list[Column]:
    views = frame.hosts
    name_width = max([4, *(len(printable(v.name)) for v in views)])
    name_width = min(name_width, 24)
    max_gpus = max([0, *(len(v.status.facts.gpus) for v in views if v.status.facts)])
    wide = width >= 160
    cpu_bar = 10 if wide else 5
    spark = max(11, min(30, (width - 110) // 2)) if width >= 110 else 11
    columns = [
        Column("HOST", name_width, 0, lambda v: Text(printable(v.name), style="bold")),
        Column("STATE", 9, 0, lambda v: Text(v.state, style=STATE_STYLE[v.state])),
        Column("CPU", cpu_bar + 5, 1, lambda v: bar(v.cpu_pct, cpu_bar)),
        Column("JOBS", 18, 2, _jobs_cell, flexible=True),
        Column("MEM", (cpu_bar + 1 if wide else 0) + 10, 3, lambda v: _mem_cell(v, wide, cpu_bar)),
    ]
    if max_gpus:
        columns.append(Column("GPUS", max(4, max_gpus) + 5, 4, _gpus_cell))
    columns.append(Column("CPU HISTORY", spark, 6, _spark(frame, "cpu", spark)))
    if max_gpus:
        columns.append(Column("GPU HISTORY", spark, 7, _spark(frame, "gpu", spark)))
        columns.append(Column("HOTTEST", 11, 8, _hottest_cell))
    columns.append(Column("LOAD", 5, 9, _load_cell))
    return columns


def _jobs_cell(view: HostView) -> Text:
    if not view.jobs:
        return Text("-", style="dim")
    text = Text()
    for i, job in enumerate(view.jobs):
        if i:
            text.append(" ")
        text.append(str(job.id), style=JOB_STYLE.get(job.state, ""))
        text.append(f" {printable(job.name)}")
    return text


def _mem_cell(view: HostView, wide: bool, width: int) -> Text:
    facts = view.status.facts
    if facts is None or view.state == "down":
        return Text("-", style="dim")
    used = facts.memory.total_bytes - facts.memory.available_bytes
    figures = f"{human_bytes(used, True)}/{human_bytes(facts.memory.total_bytes, True)}"
    if not wide:
        return Text(figures, style=_level_style(_pct(used, facts.memory.total_bytes) or 0.0))
    text = bar(_pct(used, facts.memory.total_bytes), width, label=False)
    text.append(f" {figures}")
    return text


def _gpus_cell(view: HostView) -> Text:
    """One block per GPU, its height the utilisation, its colour the memory in use."""
    gpus = view.gpus
    if not gpus:
        return Text("-", style="dim")
    text = Text()
    for gpu in gpus:
        util = gpu.utilization_pct
        level = 0 if util is None else round(max(0.0, min(100.0, util)) / 100 * (len(BLOCKS) - 1))
        mem = _pct(gpu.memory_used_bytes, gpu.memory_total_bytes)
        text.append(BLOCKS[level], style=_level_style(mem or 0.0) if util is not None else "dim")
    utils = [g.utilization_pct for g in gpus if g.utilization_pct is not None]
    if utils:
        text.append(f" {sum(utils) / len(utils):3.0f}%")
    return text


def _hottest_cell(view: HostView) -> Text:
    temps = [g.temperature_c for g in view.gpus if g.temperature_c is not None]
    power = [g.power_w for g in view.gpus if g.power_w is not None]
    if not temps and not power:
        return Text("-", style="dim")
    text = Text()
    if temps:
        top = max(temps)
        text.append(f"{top:.0f}°C", style="red" if top >= 85 else "")
    if power:
        text.append(f" {max(power):.0f}W")
    return text


def _load_cell(view: HostView) -> Text:
    facts = view.status.facts
    if facts is None or view.state == "down":
        return Text("-", style="dim")
    return Text(f"{facts.cpu.load[0]:.1f}")


def _spark(frame: ClusterFrame, kind: str, width: int) -> Callable[[HostView], Text]:
    def cell(view: HostView) -> Text:
        values = frame.history.buckets(f"{kind}:{view.name}", frame.now, width)
        if all(v is None for v in values):
            return Text("-", style="dim")
        return Text(sparkline(values), style="cyan" if kind == "cpu" else "magenta")

    return cell


def gpu_detail(frame: ClusterFrame, width: int) -> Table | None:
    """Per-GPU bars of the hosts that are up: utilisation, memory, temperature, power,
    and the job holding it."""
    gpus = [(v, g) for v in frame.hosts for g in v.gpus if v.state != "pending"]
    if not gpus:
        return None
    bar_width = 20 if width >= 160 else 10 if width >= 100 else 5
    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, GAP, 0, 0))
    headers = ["HOST", "GPU", "MODEL", "UTIL", "MEMORY", "TEMP", "POWER", "JOB"]
    if width < 100:
        headers.remove("MODEL")
    if width < 90:
        headers.remove("POWER")
    for header in headers:
        table.add_column(header, no_wrap=True, overflow="ellipsis")
    for view, gpu in gpus:
        cells = {
            "HOST": Text(printable(view.name)),
            "GPU": Text(str(gpu.index)),
            "MODEL": Text(printable(short_gpu_name(gpu.name))),
            "UTIL": bar(gpu.utilization_pct, bar_width),
            "MEMORY": _gpu_memory(gpu, bar_width),
            "TEMP": Text("-" if gpu.temperature_c is None else f"{gpu.temperature_c:.0f}°C"),
            "POWER": Text(_power(gpu)),
            "JOB": _gpu_job(view, gpu),
        }
        table.add_row(*[cells[h] for h in headers])
    return table


def _gpu_memory(gpu: GpuFacts, width: int) -> Text:
    text = bar(_pct(gpu.memory_used_bytes, gpu.memory_total_bytes), width, label=False)
    text.append(
        f" {human_bytes(gpu.memory_used_bytes, True)}/{human_bytes(gpu.memory_total_bytes, True)}"
    )
    return text


def _power(gpu: GpuFacts) -> str:
    if gpu.power_w is None:
        return "-"
    limit = "" if gpu.power_limit_w is None else f"/{gpu.power_limit_w:.0f}"
    return f"{gpu.power_w:.0f}{limit}W"


def _gpu_job(view: HostView, gpu: GpuFacts) -> Text:
    for job in view.jobs:
        if gpu.index in ((job.allocation or {}).get("gpus") or []):
            return Text(f"{job.id} {printable(job.name)}", style="green")
    # not ours: why placement passes it over (unhealthy, another user's process), if it does
    state, why = gpu_condition(gpu, foreign_ignored=view.status.host.gpu_foreign_ignored)
    if state in ("unhealthy", "busy"):
        return Text(printable(why), style="red" if state == "unhealthy" else "yellow")
    return Text("busy" if gpu_busy(gpu) else "-", style="yellow" if gpu_busy(gpu) else "dim")


def problem_lines(frame: ClusterFrame, width: int) -> list[Text]:
    """Why each host is down, drained or unhealthy, one line each (cut, never wrapped)."""
    lines = []
    for view in frame.hosts:
        if view.state in ("up", "pending"):
            continue
        line = Text(f"{printable(view.name)}: ", style=STATE_STYLE[view.state])
        row = view.status
        if view.state == "down" and row.error is not None:
            seen = (
                "never seen"
                if row.probed_at is None
                else (f"last seen {human_age(frame.now - row.probed_at)} ago")
            )
            line.append(f"{printable(row.error.message)} ({seen})")
        else:
            line.append(f"{view.state}: {printable(view.reason or '-')}")
        lines.append(cut(line, width))
    return lines
