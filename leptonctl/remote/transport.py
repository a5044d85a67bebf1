"""What every connection offers, whatever carries it (SSH or a local shell).

A ``Connection`` runs shell commands and opens long-lived streams (the agent's
``serve`` loop).  Both kinds raise only ``HostError`` children; callers never
see an asyncssh or OS exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from leptonctl.errors import CommandFailed, TimedOut, Unreachable
from leptonctl.paths import GLOBAL_KNOWN_HOSTS, user_known_hosts


@dataclass(frozen=True)
class TransportOptions:
    """Knobs of the transport, set once per command."""

    forks: int = 64  # operations in flight at once (Ansible's --forks, ClusterShell's fanout)
    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    accept_new_host_keys: bool = False  # StrictHostKeyChecking=accept-new, recorded
    known_hosts: tuple[Path, ...] = field(
        default_factory=lambda: (user_known_hosts(), GLOBAL_KNOWN_HOSTS)
    )
    keepalive_interval: float = 15.0


@dataclass(frozen=True)
class RunResult:
    """A finished remote command, like ``subprocess.CompletedProcess``."""

    host: str
    command: str
    exit_status: int | None
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def check(self) -> RunResult:
        if not self.ok:
            raise CommandFailed(self.host, self.command, self.exit_status, self.stdout, self.stderr)
        return self


class Stream(Protocol):
    """A running remote process we talk to in lines."""

    async def send_line(self, line: bytes) -> None: ...

    async def read_line(self, timeout: float) -> bytes: ...

    async def close(self) -> None: ...


class Connection(Protocol):
    host: str

    async def run(self, command: str, *, input: bytes | None = None, timeout: float) -> RunResult:
        """Run ``command`` through the host's shell; never raises for a non-zero exit."""
        ...

    async def start(self, command: str) -> Stream: ...

    async def close(self) -> None: ...


# --------------------------------------------------------------------------
# connection: local — the operator's own machine, no SSH.


class LocalConnection:
    """Runs commands with ``/bin/sh -c`` on this machine, each in its own session."""

    def __init__(self, host: str) -> None:
        self.host = host

    async def run(self, command: str, *, input: bytes | None = None, timeout: float) -> RunResult:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            command,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(input), timeout)
        except asyncio.TimeoutError:
            _kill_group(proc)
            await proc.wait()
            raise TimedOut(
                self.host,
                f"`{command}` did not finish within {timeout:g} s",
                hint="raise --timeout, or look at what the command waits for",
            ) from None
        status = proc.returncode if proc.returncode is not None and proc.returncode >= 0 else None
        return RunResult(self.host, command, status, decode_output(out), decode_output(err))

    async def start(self, command: str) -> Stream:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        return _LocalStream(self.host, proc)

    async def close(self) -> None:
        return None


class _LocalStream:
    def __init__(self, host: str, proc: asyncio.subprocess.Process) -> None:
        self._host = host
        self._proc = proc

    async def send_line(self, line: bytes) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(line + b"\n")
            await self._proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise Unreachable(self._host, f"agent process went away: {exc}") from exc

    async def read_line(self, timeout: float) -> bytes:
        assert self._proc.stdout is not None
        try:
            line = await asyncio.wait_for(self._proc.stdout.readline(), timeout)
        except asyncio.TimeoutError:
            raise TimedOut(self._host, f"the agent did not answer within {timeout:g} s") from None
        if not line:
            raise Unreachable(self._host, "the agent process exited")
        return line

    async def close(self) -> None:
        if self._proc.returncode is None:
            _kill_group(self._proc)
            await self._proc.wait()


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def decode_output(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, str):
        return data
    return data.decode("utf-8", errors="replace")
