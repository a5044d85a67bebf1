"""Fold identical per-host outputs together, like ClusterShell's ``clubak -b``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class HostOutput:
    host: str
    exit_status: int | None
    stdout: bytes  # exactly as the command wrote it
    stderr: bytes


@dataclass(frozen=True)
class OutputGroup:
    """Hosts that printed exactly the same bytes and exited the same way."""

    hosts: tuple[str, ...]
    exit_status: int | None
    stdout: bytes
    stderr: bytes


def fold_outputs(outputs: Sequence[HostOutput], order: Mapping[str, int]) -> list[OutputGroup]:
    """Group identical outputs; groups follow the position of their first host in ``order``.
    Linear in the size of the output (one hash of each host's bytes)."""
    groups: dict[tuple[int | None, bytes, bytes], list[str]] = {}
    for out in sorted(outputs, key=lambda o: order.get(o.host, len(order))):
        groups.setdefault((out.exit_status, out.stdout, out.stderr), []).append(out.host)
    return [
        OutputGroup(tuple(hosts), status, stdout, stderr)
        for (status, stdout, stderr), hosts in groups.items()
    ]
