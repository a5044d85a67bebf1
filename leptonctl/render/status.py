"""Renderers for ``leptonctl status``: rows in, rich tables and the dashboard out."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from leptonctl.core.capacity import NodeCapacity
from leptonctl.core.facts import GpuFacts, HostFacts
from leptonctl.core.reports import HostStatus
from leptonctl.core.scan import printable
from leptonctl.core.scheduler.devices import gpu_condition
from leptonctl.core.storages import SharedStorage, shared_from_facts
from leptonctl.render.text import add_row
from leptonctl.render.units import human_age, human_bytes, short_gpu_name

_STATE_STYLE = {"up": "green", "down": "bold red", "pending": "yellow"}


def hosts_table(rows: Sequence[HostStatus], now: float) -> Table:
    """One row per host; a down host shows its reason and, dimmed, what we last knew."""
    table = Table(box=None, header_style="bold", pad_edge=False, collapse_padding=True)
    for column in ("HOST", "STATE", "CPU", "LOAD", "MEMORY", "GPUS", "FPGAS", "DISK", "AGENT"):
        table.add_column(column, no_wrap=column != "GPUS")
    table.add_column("NOTE", min_width=12)
    sharing = {h for s in shared_storages(rows) for h in s.hosts}
    for row in rows:
        facts = row.facts
        style = "dim" if row.state != "up" else None
        state = Text(row.state, style=_STATE_STYLE[row.state])
        note = _note(row, now, row.host.name in sharing)
        if facts is None:
            add_row(table, row.host.name, state, *(["-"] * 7), note)
            continue
        add_row(
            table,
            row.host.name,
            state,
            Text(_cpu_cell(facts, row.capacity), style=style or ""),
            Text(f"{facts.cpu.load[0]:.2f}", style=style or ""),
            Text(_memory_cell(facts), style=style or ""),
            Text(_gpus_cell(facts.gpus, row.host.gpu_foreign_ignored), style=style or ""),
            Text(_fpgas_cell(facts), style=style or ""),
            Text(_disk_cell(facts), style=style or ""),
            Text(facts.agent_version, style=style or ""),
            note,
        )
    return table


def gpu_table(rows: Sequence[HostStatus]) -> Table | None:
    """Per-GPU bars of the hosts that are up (stale bars would mislead), or None."""
    gpus = [(row, gpu) for row in rows if row.state == "up" and row.facts for gpu in row.facts.gpus]
    if not gpus:
        return None
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("HOST", "GPU", "MODEL", "UTIL", "MEMORY", "TEMP", "POWER", "PROCS"):
        table.add_column(column, no_wrap=True)
    table.add_column("PLACEMENT")  # free, busy (whose), unhealthy (why), MIG devices
    for row, gpu in gpus:
        kind, words = gpu_condition(gpu, foreign_ignored=row.host.gpu_foreign_ignored)
        mem_pct = _pct(gpu.memory_used_bytes, gpu.memory_total_bytes)
        add_row(
            table,
            row.host.name,
            str(gpu.index),
            short_gpu_name(gpu.name),
            bar(gpu.utilization_pct),
            Text.assemble(
                bar(mem_pct),
                f" {human_bytes(gpu.memory_used_bytes)}/{human_bytes(gpu.memory_total_bytes)}",
            ),
            "-" if gpu.temperature_c is None else f"{gpu.temperature_c:.0f}°C",
            _power(gpu),
            str(len(gpu.processes)),
            Text(printable(words), style=_CONDITION_STYLE.get(kind, "")),
        )
    return table


_CONDITION_STYLE = {"unhealthy": "bold red", "busy": "yellow", "free": "green", "job": "cyan"}


def shared_storages(rows: Sequence[HostStatus]) -> list[SharedStorage]:
    """The data dirs that several hosts share (one storage id), from what each reported."""
    return shared_from_facts({r.host.name: r.facts for r in rows if r.facts is not None})


def sharing_lines(rows: Sequence[HostStatus]) -> Text | None:
    """'h1,h2,h3 share /home/u/.local/share/leptonctl (nfs4, network)' per shared data dir,
    under the table: data commands count such hosts as one replica."""
    out = Text()
    for storage in shared_storages(rows):
        out.append(printable(storage.describe()), style="yellow")
        out.append(": one storage, one replica for data commands\n", style="dim")
    out.rstrip()
    return out if out.plain else None


def problems(rows: Sequence[HostStatus], now: float) -> Text | None:
    """The full reason and hint of every host that is down, under the table."""
    out = Text()
    for row in rows:
        if row.error is None:
            continue
        seen = (
            "never probed"
            if row.probed_at is None
            else f"last seen {human_age(now - row.probed_at)} ago"
        )
        out.append(f"{row.host.name}: ", style="bold red")
        out.append(f"{printable(row.error.message)} ({seen})\n")
        if row.error.hint:
            out.append(f"  hint: {printable(row.error.hint)}\n", style="dim")
    out.rstrip()
    return out if out.plain else None


def dashboard(rows: Sequence[HostStatus], now: float, title: str) -> RenderableType:
    """The whole ``status --watch`` screen."""
    up = sum(1 for r in rows if r.state == "up")
    header = Text.assemble((title, "bold"), f"  {up}/{len(rows)} up", ("  (Ctrl-C to quit)", "dim"))
    return Group(header, status_view(rows, now))


def status_view(rows: Sequence[HostStatus], now: float) -> RenderableType:
    """Hosts table, per-GPU table when there are GPUs, and the reasons of down hosts."""
    parts: list[RenderableType] = [hosts_table(rows, now)]
    gpus = gpu_table(rows)
    if gpus is not None:
        parts += [Text(""), gpus]
    shared = sharing_lines(rows)
    if shared is not None:
        parts += [Text(""), shared]
    trouble = problems(rows, now)
    if trouble is not None:
        parts += [Text(""), trouble]
    return Group(*parts)


def bar(percent: float | None, width: int = 12) -> Text:
    """A fixed-width bar with the number after it: green, yellow past 70 %, red past 90 %."""
    if percent is None:
        return Text("n/a".ljust(width + 5), style="dim")
    percent = max(0.0, min(100.0, percent))
    filled = round(width * percent / 100)
    style = "red" if percent >= 90 else "yellow" if percent >= 70 else "green"
    return Text.assemble(
        ("█" * filled, style), ("░" * (width - filled), "dim"), f" {percent:3.0f}%"
    )


def _note(row: HostStatus, now: float, shared: bool = False) -> Text:
    if row.error is not None:
        return Text(row.error.kind, style="red")
    if row.facts is None:
        return Text("waiting for the first probe", style="dim")
    notes = []
    if row.capacity.source == "probe+declared":
        notes.append("capacity limited by inventory")
    if shared:
        notes.append("shared data dir")
    return Text("; ".join(notes), style="dim")


def _cpu_cell(facts: HostFacts, cap: NodeCapacity) -> str:
    cores = f"{facts.cpu.cores}c/" if facts.cpu.cores else ""
    cell = f"{cores}{facts.cpu.threads}t"
    if cap.cpus is not None and cap.cpus < facts.cpu.threads:
        cell += f" (use {cap.cpus})"
    return cell


def _memory_cell(facts: HostFacts) -> str:
    used = facts.memory.total_bytes - facts.memory.available_bytes
    return f"{human_bytes(used, True)}/{human_bytes(facts.memory.total_bytes, True)}"


def _gpus_cell(gpus: Sequence[GpuFacts], foreign_ignored: bool = False) -> str:
    if not gpus:
        return "-"
    kinds = Counter(gpu_condition(g, foreign_ignored=foreign_ignored)[0] for g in gpus)
    trouble = ", ".join(f"{kinds[k]} {k}" for k in ("busy", "unhealthy") if kinds[k])
    cell = _gpus_summary(gpus)
    return f"{cell} ({trouble})" if trouble else cell


def _gpus_summary(gpus: Sequence[GpuFacts]) -> str:
    models = Counter(short_gpu_name(g.name) for g in gpus)
    kinds = ", ".join(f"{n}× {m}" for m, n in models.items())
    utils = [g.utilization_pct for g in gpus if g.utilization_pct is not None]
    used = sum(g.memory_used_bytes or 0 for g in gpus)
    total = sum(g.memory_total_bytes or 0 for g in gpus)
    util = f" {sum(utils) / len(utils):.0f}%" if utils else ""
    return f"{kinds}{util} {human_bytes(used, True)}/{human_bytes(total, True)}"


def _fpgas_cell(facts: HostFacts) -> str:
    if not facts.fpgas:
        return "-"
    vendors = Counter(f.name or f.vendor or f.device_id or "FPGA" for f in facts.fpgas)
    return ", ".join(f"{n}× {v}" for v, n in vendors.items())


def _disk_cell(facts: HostFacts) -> str:
    disk = facts.data_disk
    if disk is None:
        return "-"
    where = f" ({disk.fs_type})" if disk.network and disk.fs_type else ""
    return f"{human_bytes(disk.free_bytes, True)} free{where}"


def _power(gpu: GpuFacts) -> str:
    if gpu.power_w is None:
        return "-"
    limit = "" if gpu.power_limit_w is None else f"/{gpu.power_limit_w:.0f}"
    return f"{gpu.power_w:.0f}{limit} W"


def _pct(part: int | None, whole: int | None) -> float | None:
    if part is None or not whole:
        return None
    return 100.0 * part / whole
