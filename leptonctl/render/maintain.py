"""Renderers for ``leptonctl maintain``: a readable summary, and JSON lines for logs.

The JSON-line functions never import rich (cron pays for nothing it does not print).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from leptonctl.core.reports import RunReport, StepResult
from leptonctl.core.scan import printable

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.text import Text

_STEP_STYLE = {
    "ok": ("✓", "green"),
    "changed": ("●", "cyan"),
    "failed": ("✗", "bold red"),
    "skipped": ("-", "dim"),
    "check": ("?", "yellow"),
}
_HOST_STYLE = {"down": "red", "unhealthy": "yellow", "failed": "red", "changed": "cyan"}
_OUTCOME_STYLE = {
    "ok": "bold green",
    "check": "bold yellow",
    "unhealthy": "bold yellow",
    "failed": "bold red",
    "skipped": "bold yellow",
}


# -- JSON lines --------------------------------------------------------------------------


def step_event(result: StepResult) -> dict[str, Any]:
    """One JSON line per step, printed as the step ends."""
    return {"event": "step", **result.to_json()}


def run_event(report: RunReport) -> dict[str, Any]:
    """The last JSON line of a run (or the only one, for a skipped run)."""
    return {"event": "skipped" if report.outcome == "skipped" else "run", **report.to_json()}


# -- the terminal summary ----------------------------------------------------------------


def step_lines(result: StepResult) -> Text:
    """A step as it ends: one line, then one line per host worth a look."""
    from rich.text import Text

    mark, style = _STEP_STYLE.get(result.status, ("?", ""))
    planned = result.planned
    text = Text()
    text.append(f"{mark} ", style=style)
    text.append(f"{planned.playbook}#{planned.step.index} {planned.label}", style="bold")
    text.append(f"  {printable(result.summary)}")
    if result.ended > result.started:
        text.append(f"  ({result.ended - result.started:.1f}s)", style="dim")
    if result.error and result.error != result.summary:
        text.append(f"\n    error: {printable(result.error)}", style="red")
    hint = result.details.get("hint")
    if hint:
        text.append(f"\n    hint: {printable(hint)}", style="dim")
    for host, outcome in result.hosts.items():
        if outcome.status in _HOST_STYLE and outcome.message:
            text.append(f"\n    {host}: ", style=_HOST_STYLE[outcome.status])
            text.append(f"{outcome.status} · {printable(outcome.message)}")
    return text


def run_summary(report: RunReport) -> RenderableType:
    """The closing lines: the outcome, the exit code, and every host with a problem."""
    from rich.console import Group
    from rich.text import Text

    if report.outcome == "skipped":
        return Text(f"skipped: {report.skipped_because}", style=_OUTCOME_STYLE["skipped"])
    head = Text()
    head.append(f"{report.outcome}", style=_OUTCOME_STYLE.get(report.outcome, "bold"))
    counts = _count(report.steps)
    head.append(
        f"  run {report.run_id} · {', '.join(report.playbooks)} · {counts} · "
        f"{report.ended - report.started:.1f}s · exit {report.exit_code}"
    )
    parts: list[RenderableType] = [head]
    for host, reasons in report.problems.items():
        line = Text(f"  {host}: ", style="yellow")
        line.append(printable("; ".join(reasons)))
        parts.append(line)
    if report.error:
        parts.append(Text(f"  error: {printable(report.error)}", style="red"))
    if report.metrics_file:
        parts.append(Text(f"  metrics: {report.metrics_file}", style="dim"))
    return Group(*parts)


def _count(steps: Sequence[StepResult]) -> str:
    order = ("ok", "changed", "failed", "skipped", "check")
    found = {s: sum(1 for r in steps if r.status == s) for s in order}
    return ", ".join(f"{n} {s}" for s, n in found.items() if n) or "no steps"


def playbooks_table(rows: Sequence[tuple[str, str, str]]) -> RenderableType:
    """``maintain --list``: (name, file, first line of its description)."""
    from rich.table import Table

    from leptonctl.render.text import add_row

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("PLAYBOOK", "FILE", "WHAT"):
        table.add_column(column)
    for name, path, about in rows:
        add_row(table, name, path, about)
    return table
