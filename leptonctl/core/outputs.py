"""Fold identical per-host outputs together, like ClusterShell's ``clubak -b``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from leptonctl.errors import CommandFailed


@dataclass(frozen=True)
class RunResult:
    """A finished remote command, like ``subprocess.CompletedProcess``.

    ``stdout``/``stderr`` are decoded (invalid UTF-8 replaced); ``raw_stdout``/``raw_stderr``
    hold the bytes exactly as the command wrote them, for callers that pass output on."""

    host: str
    command: str
    exit_status: int | None
    stdout: str
    stderr: str
    raw_stdout: bytes | None = field(default=None, repr=False, compare=False)
    raw_stderr: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    @property
    def stdout_bytes(self) -> bytes:
        return self.stdout.encode() if self.raw_stdout is None else self.raw_stdout

    @property
    def stderr_bytes(self) -> bytes:
        return self.stderr.encode() if self.raw_stderr is None else self.raw_stderr

    def check(self) -> RunResult:
        if not self.ok:
            raise CommandFailed(self.host, self.command, self.exit_status, self.stdout, self.stderr)
        return self


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
