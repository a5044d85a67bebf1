"""Renderers for ``leptonctl exec``: folded per-host output, or a JSON document."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import Group, RenderableType
from rich.rule import Rule
from rich.text import Text

from leptonctl.core.outputs import HostOutput, OutputGroup, fold_outputs
from leptonctl.errors import HostError
from leptonctl.inventory.ranges import fold_host_names
from leptonctl.remote.transport import RunResult


def output_groups(
    results: Mapping[str, RunResult | HostError], order: Sequence[str]
) -> tuple[list[OutputGroup], dict[str, HostError]]:
    outputs = [
        HostOutput(host, r.exit_status, r.stdout, r.stderr)
        for host, r in results.items()
        if isinstance(r, RunResult)
    ]
    errors = {host: r for host, r in results.items() if isinstance(r, HostError)}
    return fold_outputs(outputs, {h: i for i, h in enumerate(order)}), errors


def exec_report(groups: Sequence[OutputGroup], errors: Mapping[str, HostError]) -> RenderableType:
    """clubak-style: one header per set of hosts with identical output."""
    parts: list[RenderableType] = []
    for group in groups:
        status = group.exit_status
        style = "green" if status == 0 else "red"
        label = "killed by a signal" if status is None else f"exit {status}"
        title = f"{fold_host_names(group.hosts)} ({len(group.hosts)}) · {label}"
        parts.append(Rule(Text(title, style=style), align="left", style="dim"))
        if group.stdout:
            parts.append(Text(group.stdout.rstrip("\n")))
        if group.stderr:
            parts.append(Text(group.stderr.rstrip("\n"), style="yellow"))
    for host, error in errors.items():
        parts.append(Rule(Text(f"{host} · {error.kind}", style="bold red"), align="left"))
        parts.append(Text(error.message, style="red"))
        if error.hint:
            parts.append(Text(f"hint: {error.hint}", style="dim"))
    return Group(*parts)
