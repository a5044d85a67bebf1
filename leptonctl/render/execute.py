"""Renderers for ``leptonctl exec``: folded per-host output, written byte for byte.

The commands' output is never re-wrapped, re-encoded or re-styled: each group's bytes go
to the binary stream as the hosts wrote them, in time linear in their size.  Only the
header lines are ours (coloured on a terminal)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from leptonctl.core.outputs import HostOutput, OutputGroup, RunResult, fold_outputs
from leptonctl.errors import HostError
from leptonctl.inventory.ranges import fold_host_names

_RESET = b"\x1b[0m"
_STYLES = {
    "ok": b"\x1b[32m",
    "bad": b"\x1b[31m",
    "error": b"\x1b[1;31m",
    "stderr": b"\x1b[33m",
    "dim": b"\x1b[2m",
}


def output_groups(
    results: Mapping[str, RunResult | HostError], order: Sequence[str]
) -> tuple[list[OutputGroup], dict[str, HostError]]:
    outputs = [
        HostOutput(host, r.exit_status, r.stdout_bytes, r.stderr_bytes)
        for host, r in results.items()
        if isinstance(r, RunResult)
    ]
    errors = {host: r for host, r in results.items() if isinstance(r, HostError)}
    return fold_outputs(outputs, {h: i for i, h in enumerate(order)}), errors


def exec_report(
    groups: Sequence[OutputGroup], errors: Mapping[str, HostError], color: bool = False
) -> Iterator[bytes]:
    """clubak-style: one header per set of hosts with identical output, then that output
    as it was written (a missing final newline is added, nothing else changes)."""

    def styled(text: str, style: str) -> bytes:
        data = text.encode("utf-8", "replace")
        return _STYLES[style] + data + _RESET if color else data

    for group in groups:
        status = group.exit_status
        label = "killed by a signal" if status is None else f"exit {status}"
        title = f"── {fold_host_names(group.hosts)} ({len(group.hosts)}) · {label}"
        yield styled(title, "ok" if status == 0 else "bad") + b"\n"
        for data, style in ((group.stdout, None), (group.stderr, "stderr")):
            if not data:
                continue
            if color and style:
                yield _STYLES[style]
            yield data
            if color and style:
                yield _RESET
            if not data.endswith(b"\n"):
                yield b"\n"
    for host, error in errors.items():
        yield styled(f"── {host} · {error.kind}", "error") + b"\n"
        yield styled(error.message, "bad") + b"\n"
        if error.hint:
            yield styled(f"hint: {error.hint}", "dim") + b"\n"
