"""Fold identical per-host outputs together, like ClusterShell's ``clubak -b``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class HostOutput:
    host: str
    exit_status: int | None
    stdout: str
    stderr: str


@dataclass(frozen=True)
class OutputGroup:
    """Hosts that printed exactly the same thing and exited the same way."""

    hosts: tuple[str, ...]
    exit_status: int | None
    stdout: str
    stderr: str


def fold_outputs(outputs: Sequence[HostOutput], order: Mapping[str, int]) -> list[OutputGroup]:
    """Group identical outputs; groups follow the position of their first host in ``order``."""
    groups: dict[tuple[int | None, str, str], list[str]] = {}
    for out in sorted(outputs, key=lambda o: order.get(o.host, len(order))):
        groups.setdefault((out.exit_status, out.stdout, out.stderr), []).append(out.host)
    return [
        OutputGroup(tuple(hosts), status, stdout, stderr)
        for (status, stdout, stderr), hosts in groups.items()
    ]
