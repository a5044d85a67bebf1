"""Renderers for the job commands: queue table, one job, a dry-run plan.

The rows are plain strings (:func:`job_rows`, :func:`panel_rows`): a terminal gets them
as rich tables, a pipe as plain columns (``leptonctl.render.columns``), so printing the
queue into a pipe loads no rich."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING

from leptonctl.core.records import containment, gpu_devices_of
from leptonctl.render.units import human_age, human_bytes

if TYPE_CHECKING:  # annotations only: listing jobs loads no plan (and no rich into a pipe)
    from rich.table import Table

    from leptonctl.core.records import JobRecord
    from leptonctl.core.reports import DryRun

JOB_STYLE = {  # a job state's colour, in every view of jobs
    "PENDING": "yellow",
    "STARTING": "cyan",
    "RUNNING": "green",
    "COMPLETED": "dim green",
    "FAILED": "red",
    "CANCELLED": "dim",
    "TIMEOUT": "red",
    "NODE_FAIL": "bold red",
}


JOB_COLUMNS = ("ID", "NAME", "STATE", "HOST", "DEVICES", "TIME", "EXIT", "REASON")


def job_rows(records: Sequence[JobRecord], now: float) -> list[tuple[str, ...]]:
    """The queue's rows, one per job, in ``JOB_COLUMNS`` order."""
    return [
        (
            str(r.id),
            r.name,
            r.state,
            r.host or "-",
            devices(r),
            _elapsed(r, now),
            "-" if r.exit_code is None else str(r.exit_code),
            r.reason or "",
        )
        for r in records
    ]


def job_style(line: int, column: int, text: str) -> str:
    """A cell's style in the queue table, as ``jobs_table`` shows it (line 0: the header)."""
    if line == 0:
        return "bold"
    return JOB_STYLE.get(text, "") if column == JOB_COLUMNS.index("STATE") else ""


def jobs_table(records: Sequence[JobRecord], now: float) -> Table:
    from rich.table import Table
    from rich.text import Text

    from leptonctl.render.text import add_row

    table = Table(box=None, header_style="bold", pad_edge=False, collapse_padding=True)
    for column in JOB_COLUMNS:
        table.add_column(column, no_wrap=column not in ("NAME", "REASON"))
    for row in job_rows(records, now):
        state = row[2]
        add_row(table, *row[:2], Text(state, style=JOB_STYLE.get(state, "")), *row[3:])
    return table


def panel_rows(r: JobRecord, now: float) -> list[tuple[str, str]]:
    """Everything about one job (``show``): (what, value) rows."""
    command = r.spec.get("command")
    request = r.spec.get("request") or {}
    return [
        ("id", str(r.id)),
        ("name", r.name),
        ("state", r.state),
        ("reason", r.reason or "-"),
        ("command", command if isinstance(command, str) else shlex.join(command or [])),
        ("host", r.host or "-"),
        ("devices", devices(r)),
        ("GPUs", gpus_text(r)),
        ("CPUs", cpus_text(r)),
        ("memory limit", memory_text(r)),
        ("request", ", ".join(f"{k}={v}" for k, v in request.items() if v)),
        ("priority", str(r.priority)),
        ("walltime", "-" if not r.spec.get("walltime") else f"{r.spec['walltime']:.0f} s"),
        ("after", ", ".join(str(a) for a in r.spec.get("after", [])) or "-"),
        ("inputs", input_list(r) or "-"),
        ("attempt", f"{r.attempt + 1} of {r.retries + 1}"),
        ("submitted", f"{human_age(now - r.submitted)} ago"),
        ("run time", _elapsed(r, now)),
        ("exit code", "-" if r.exit_code is None else str(r.exit_code)),
        ("peak RSS", human_bytes(r.peak_rss_bytes) if r.peak_rss_bytes else "-"),
    ]


def panel_style(line: int, column: int, text: str) -> str:
    """A cell's style in ``job_panel``: the names bold."""
    return "bold" if column == 0 else ""


def job_panel(r: JobRecord, now: float) -> Table:
    from rich.table import Table

    from leptonctl.render.text import add_row

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in panel_rows(r, now):
        add_row(table, key, value)
    return table


def plan_table(result: DryRun) -> Table:
    from rich.table import Table
    from rich.text import Text

    from leptonctl.render.text import add_row

    table = Table(box=None, header_style="bold", pad_edge=False, collapse_padding=True)
    for column in ("JOB", "HOST", "DEVICES", "START", "END", "WHY"):
        table.add_column(column, no_wrap=column != "WHY")
    for p in sorted(result.plan.placements, key=lambda p: (p.start, p.host)):
        alloc = p.allocation
        if alloc is not None:
            parts = [f"gpu{g}" for g in alloc.devices] + [f"fpga{f}" for f in alloc.fpgas]
            if alloc.cores:
                parts.append(f"cpu{cpu_list(alloc.cores)}")
        else:
            parts = [f"gpu{g}" for g in p.gpus] + [f"fpga{f}" for f in p.fpgas]
        add_row(
            table,
            result.names.get(p.job_id, p.job_id),
            p.host,
            ",".join(parts) or "-",
            f"+{p.start:.0f}s",
            f"+{p.end:.0f}s",
            (alloc.gpu_note if alloc is not None else None) or "",
        )
    for b in result.plan.unplaceable:
        add_row(
            table,
            result.names.get(b.job_id, b.job_id),
            Text("unplaceable", style="red"),
            "",
            "",
            "",
            b.reason,
        )
    return table


def input_list(r: JobRecord) -> str:
    """The job's input datasets: ``name@version -> mount`` (default: under its inputs/)."""
    shown = []
    for item in r.spec.get("inputs") or []:
        label = f"{item.get('name')}@{item.get('version')}"
        mount = item.get("mount") or f"inputs/{label} (in the agent's data dir)"
        shown.append(f"{label} -> {mount}")
    return ", ".join(shown)


def devices(r: JobRecord) -> str:
    alloc = r.allocation or {}
    parts = [f"gpu{d['id']}" for d in gpu_devices_of(alloc)] + [
        f"fpga{f}" for f in alloc.get("fpgas", [])
    ]
    if alloc.get("cores"):
        parts.append(f"cpu{cpu_list(alloc['cores'])}")
    return ",".join(parts) or "-"


def gpus_text(r: JobRecord) -> str:
    """The job's GPU devices with their UUIDs, and why those: "0 GPU-8f.., 1 GPU-3a..
    (GPUs 0,1: NVLink x18)"; "-" when it holds none."""
    alloc = r.allocation or {}
    shown = [
        f"{d['id']} {d['uuid']}" if d.get("uuid") else str(d["id"]) for d in gpu_devices_of(alloc)
    ]
    if not shown:
        return "-"
    note = alloc.get("gpu_note")
    text = ", ".join(shown)
    return f"{text} ({note})" if isinstance(note, str) and note else text


ENFORCEMENT = {
    "sampling": "enforced by the supervisor, which sums the RSS of the job's processes and "
    "kills them over it",
    "rlimit": "enforced as an address-space limit (RLIMIT_AS): allocations over it fail",
    "cgroup": "enforced by the kernel in a memory cgroup of its own",
}


def cpu_list(ids: Sequence[int]) -> str:
    """CPU ids as the kernel writes a CPU list: runs as ranges (``0-3,8``)."""
    runs: list[list[int]] = []
    for cpu in sorted(set(ids)):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def cpus_text(r: JobRecord) -> str:
    held = containment(r)
    if not r.allocation:
        return "-"
    count = str((r.allocation or {}).get("cpus", "-"))
    if held["cpus"]:
        return cpu_list(held["cpus"]) + " (pinned)"
    return f"{count}, {held['cpus_note'] or 'not pinned'}"


def memory_text(r: JobRecord) -> str:
    held = containment(r)
    limit = held["memory_limit_bytes"]
    if limit is None:
        return "none" if r.allocation else "-"
    how = ENFORCEMENT.get(held["memory_enforcement"] or "")
    return f"{human_bytes(limit)}, {how}" if how else human_bytes(limit)


def _elapsed(r: JobRecord, now: float) -> str:
    if r.started is None:
        return "-"
    return human_age((r.ended or now) - r.started)
