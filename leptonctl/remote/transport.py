"""What every connection offers, whatever carries it (SSH or a local shell).

A ``Connection`` runs sh scripts (with ``/bin/sh``, whatever the login shell) and opens
long-lived streams (the agent's ``serve`` loop).  Both kinds raise only ``HostError``
children; callers never see an asyncssh or OS exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from leptonctl.core.outputs import RunResult
from leptonctl.errors import TimedOut, Unreachable


@dataclass(frozen=True)
class TransportOptions:
    """Knobs of the transport, set once per command."""

    forks: int = 64  # operations in flight at once (Ansible's --forks, ClusterShell's fanout)
    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    accept_new_host_keys: bool = False  # StrictHostKeyChecking=accept-new, recorded
    keepalive_interval: float = 15.0


# What a pipe keeps of its process's stderr: the last 65 MiB, room for a transfer sender's
# result line (at most the agent wire's MAX_RESULT_LINE, 64 MiB) and what follows it.
PIPE_STDERR_BYTES = 65 * 1024 * 1024


class Stream(Protocol):
    """A running remote process (``agent serve``): we send it lines, read its answers by
    size (never a line of unknown length)."""

    async def send_line(self, line: bytes) -> None: ...

    async def read_exactly(self, size: int, timeout: float) -> bytes:
        """``size`` bytes of stdout, within ``timeout``; ``Unreachable`` at an early end."""
        ...

    async def close(self) -> None: ...


class Pipe(Protocol):
    """A running process we stream raw bytes through (a transfer's sender or receiver)."""

    async def write(self, data: bytes) -> None: ...

    async def write_eof(self) -> None: ...

    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of stdout; ``b""`` at its end."""
        ...

    async def readline(self) -> bytes: ...

    async def wait(self, timeout: float) -> tuple[int | None, str]:
        """The exit status (None: killed) and the tail of stderr (its last
        ``PIPE_STDERR_BYTES``: a transfer's result line fits whole; trim it to show it)."""
        ...

    async def kill(self) -> None: ...


@dataclass(frozen=True)
class PeerInfo:
    """How the operator reached an SSH host: what another host needs to reach it too."""

    address: str
    port: int
    username: str
    host_key: str  # "ssh-ed25519 AAAA…", the key the operator verified


class Connection(Protocol):
    host: str

    async def run(
        self, command: str, *, input: bytes | None = None, timeout: float, group: bool = False
    ) -> RunResult:
        """Run the sh script ``command`` with ``/bin/sh`` on the host (whatever the user's
        login shell: an SSH connection sends ``sh_line``); never raises for a non-zero exit.

        Its stdin is ``input`` then end-of-file (at once, without ``input``).  With
        ``group``, ``command`` runs under ``/bin/sh`` in a session of its own on the host,
        and a timeout or an interrupt (cancellation) kills that whole process group there
        before ``TimedOut`` or the cancellation goes on: nothing is left running."""
        ...

    async def start(self, command: str) -> Stream: ...

    async def open_pipe(self, command: str) -> Pipe: ...

    def peer(self) -> PeerInfo | None:
        """None for the local connection."""
        ...

    async def close(self) -> None: ...


# --------------------------------------------------------------------------
# connection: local — the operator's own machine, no SSH.


class LocalConnection:
    """Runs commands with ``/bin/sh -c`` on this machine, each in its own session."""

    def __init__(self, host: str) -> None:
        self.host = host

    async def run(
        self, command: str, *, input: bytes | None = None, timeout: float, group: bool = False
    ) -> RunResult:
        # Every local command has its own session already: ``group`` changes nothing here.
        stdin = asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL
        proc = await _shell(command, stdin, asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(input), timeout)
        except asyncio.TimeoutError:
            _kill_group(proc)
            await proc.wait()
            raise timed_out(self.host, command, timeout) from None
        except BaseException:  # interrupted (Ctrl-C cancels the command's task): leave nothing
            _kill_group(proc)
            raise
        status = proc.returncode if proc.returncode is not None and proc.returncode >= 0 else None
        return finished(self.host, command, status, out, err)

    async def start(self, command: str) -> Stream:
        proc = await _shell(command, asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL)
        return _LocalStream(self.host, proc)

    async def open_pipe(self, command: str) -> Pipe:
        proc = await _shell(command, asyncio.subprocess.PIPE, asyncio.subprocess.PIPE)
        return _LocalPipe(self.host, proc)

    def peer(self) -> PeerInfo | None:
        return None

    async def close(self) -> None:
        return None


class _LocalPipe:
    def __init__(self, host: str, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self._host = host
        self._proc = proc
        self._stdin, self._stdout, self._stderr = proc.stdin, proc.stdout, proc.stderr
        self._errors = asyncio.ensure_future(keep_tail(self._stderr.read))

    async def write(self, data: bytes) -> None:
        try:
            self._stdin.write(data)
            await self._stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise Unreachable(self._host, f"the local process went away: {exc}") from exc

    async def write_eof(self) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._stdin.close()

    async def read(self, size: int) -> bytes:
        return await self._stdout.read(size)

    async def readline(self) -> bytes:
        return await self._stdout.readline()

    async def wait(self, timeout: float) -> tuple[int | None, str]:
        try:
            code = await asyncio.wait_for(self._proc.wait(), timeout)
        except asyncio.TimeoutError:
            await self.kill()
            raise TimedOut(
                self._host, f"a transfer process did not end within {timeout:g} s"
            ) from None
        errors = decode_output(await self._errors)
        return (code if code >= 0 else None), errors

    async def kill(self) -> None:
        if self._proc.returncode is None:
            _kill_group(self._proc)
            await self._proc.wait()


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

    async def read_exactly(self, size: int, timeout: float) -> bytes:
        assert self._proc.stdout is not None
        try:
            return await asyncio.wait_for(self._proc.stdout.readexactly(size), timeout)
        except asyncio.TimeoutError:
            raise TimedOut(self._host, f"the agent did not answer within {timeout:g} s") from None
        except asyncio.IncompleteReadError as exc:
            raise Unreachable(self._host, ended("the agent process exited", exc.partial)) from None

    async def close(self) -> None:
        if self._proc.returncode is None:
            _kill_group(self._proc)
            await self._proc.wait()


async def _shell(command: str, stdin: int, stderr: int) -> asyncio.subprocess.Process:
    """``/bin/sh -c command`` in its own session (so a timeout kills the whole group),
    stdout piped."""
    return await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        command,
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        start_new_session=True,
    )


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def timed_out(host: str, command: str, timeout: float) -> TimedOut:
    return TimedOut(
        host,
        f"`{command}` did not finish within {timeout:g} s (it was killed)",
        hint="raise --timeout, or look at what the command waits for",
    )


def finished(host: str, command: str, status: int | None, out: bytes, err: bytes) -> RunResult:
    return RunResult(
        host, command, status, decode_output(out), decode_output(err), bytes(out), bytes(err)
    )


# What a login shell reads.  sshd hands every command line to the user's login shell (sh,
# bash, dash, zsh, tcsh/csh, fish...), which do not agree on quoting: tcsh expands ``!`` and
# refuses newlines between single quotes and has no ``${x:-y}``, fish takes ``\\`` and ``\'``
# as escapes between single quotes.  So the line is always ``exec /bin/sh -c '<text>'`` where
# <text> holds only printable ASCII other than ``'``, ``\`` and ``!``: every one of those shells
# passes <text> to /bin/sh unchanged.  A script with other characters goes as an octal-escaped
# printf format (the escapes are a backslash and three digits, which all of them keep too) that
# /bin/sh decodes and evals: ``exec /bin/sh -c 'eval "$(printf "...")"'``.
_PLAIN = frozenset(chr(c) for c in range(0x20, 0x7F)) - frozenset("'\\!")
_LITERAL = _PLAIN - frozenset('"$`%')  # kept as is inside the printf format in double quotes
_FORMAT = tuple(chr(b) if chr(b) in _LITERAL else f"\\{b:03o}" for b in range(256))  # by byte


def sh_line(script: str) -> str:
    """The command line that runs the sh ``script`` with ``/bin/sh`` whatever the login
    shell; the agent's twin is ``keys.sh_line`` (the forced command of a transfer key)."""
    if set(script) <= _PLAIN:
        return f"exec /bin/sh -c '{script}'"
    data = script.encode("utf-8", "surrogateescape")
    escaped = "".join([_FORMAT[b] for b in data])
    return f'exec /bin/sh -c \'eval "$(printf "{escaped}")"\''


# Run a command in a process group of its own on the host, after writing that group's id on
# the first line of stdout.  The sh that sshd's login shell exec'd is a session leader (sshd
# calls setsid), so it writes its own pid and execs the command: no Python needed.  Where it
# is not a group leader (or /proc is missing), a Python wrapper starts a session first.
_GROUP_WRAPPER = (
    "import os,sys;os.getpgrp()==os.getpid() or os.setsid();"
    "sys.stdout.write(str(os.getpgrp())+chr(10));sys.stdout.flush();"
    'os.execv("/bin/sh",["sh","-c",bytes.fromhex(sys.argv[1])])'
)
_GROUP_LEADER = (  # this sh leads its process group: field 5 of /proc/$$/stat is the group
    '{ read -r s </proc/$$/stat && s=${s##*) } && set -- $s && [ "$3" = $$ ]; } 2>/dev/null'
)


def group_command(python: str, command: str) -> str:
    """The sh script that runs ``command`` under ``/bin/sh`` in a process group of its own,
    the group's id on the first line of stdout."""
    encoded = command.encode("utf-8", "surrogateescape").hex()
    wrapper = f"exec {shlex.quote(python)} -c {shlex.quote(_GROUP_WRAPPER)} {shlex.quote(encoded)}"
    return f"{_GROUP_LEADER} || {wrapper}\necho $$\nexec /bin/sh -c {shlex.quote(command)}"


def kill_group_command(pgid: int) -> str:
    """The sh script that kills a process group on the host."""
    return f"kill -s KILL -- -{int(pgid)}"


async def keep_tail(read: Callable[[int], Awaitable[bytes]]) -> bytes:
    """Everything ``read`` gives until its end, of which only the last
    ``PIPE_STDERR_BYTES`` are kept (a chatty process never costs more memory)."""
    kept = bytearray()
    while block := await read(1 << 16):
        kept += block
        if len(kept) > 2 * PIPE_STDERR_BYTES:
            del kept[:-PIPE_STDERR_BYTES]
    return bytes(kept[-PIPE_STDERR_BYTES:])


def ended(what: str, partial: bytes) -> str:
    """An early end of an agent's stdout, with the start of what it did print."""
    if not partial:
        return what
    return f"{what} after printing {decode_output(partial[:200])!r}"


def decode_output(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, str):
        return data
    return data.decode("utf-8", errors="replace")
