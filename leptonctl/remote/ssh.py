"""An open SSH connection (asyncssh): commands under ``/bin/sh`` whatever the login shell,
what the shell's rc files print dropped, long-lived agent sessions and transfer pipes, typed
failures.  Opening one (options, known hosts, jump hosts, authentication) is connect.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Sequence

import asyncssh

from leptonctl.core.outputs import RunResult
from leptonctl.errors import HostError, TimedOut, Unreachable
from leptonctl.remote.transport import (
    PeerInfo,
    Pipe,
    Stream,
    decode_output,
    ended,
    finished,
    group_command,
    keep_tail,
    kill_group_command,
    sh_line,
    timed_out,
)

_PIPE = asyncssh.PIPE


PREAMBLE_TIMEOUT_S = 30.0  # for the login shell's rc files to run before our command


def with_boundary(marker: bytes, command: str) -> str:
    """The line that runs the sh ``command`` with ``/bin/sh`` whatever the login shell
    (``sh_line``), after a line on stdout and one on stderr that mark where its own output
    starts: whatever the login shell's rc files print first (a chatty ``.bashrc`` or
    ``.cshrc``, a ``module`` system, a motd script) comes before them."""
    word = marker.decode()
    return sh_line(f"echo {word}; echo {word} >&2; {command}")


def after_boundary(data: bytes, marker: bytes) -> bytes:
    """``data`` (stderr) after the boundary line; all of it when the line never came (the
    command did not start: then what the shell said is the error)."""
    _, found, rest = data.partition(marker + b"\n")
    return rest if found else data


async def skip_preamble(
    reader: asyncssh.SSHReader[bytes], marker: bytes, timeout: float
) -> bytes | None:
    """Read up to and including the boundary line: None when it came.  Otherwise what was
    read instead (the command never ran: the shell's own error, then end of output)."""
    try:
        await asyncio.wait_for(reader.readuntil(marker + b"\n"), timeout)
    except asyncio.IncompleteReadError as exc:
        return bytes(exc.partial)
    except asyncio.TimeoutError:
        return b""
    return None


class SshConnection:
    """One asyncssh connection to one inventory host, reused for the whole command."""

    def __init__(
        self,
        host: str,
        conn: asyncssh.SSHClientConnection,
        python: str = "python3",
        jumps: Sequence[asyncssh.SSHClientConnection] = (),
    ) -> None:
        self.host = host
        self._conn = conn
        self._jumps = tuple(jumps)  # the jump hosts' connections, first hop first
        self._python = python  # runs the wrapper of ``run(..., group=True)``
        self._marker = b"leptonctl-output-" + secrets.token_hex(8).encode()

    async def run(
        self, command: str, *, input: bytes | None = None, timeout: float, group: bool = False
    ) -> RunResult:
        line = with_boundary(
            self._marker, group_command(self._python, command) if group else command
        )
        try:
            process = await self._conn.create_process(
                line,
                input=input or None,
                stdin=_PIPE if input else asyncssh.DEVNULL,  # end-of-file, not an open pipe
                encoding=None,
            )
        except (asyncssh.Error, OSError) as exc:
            raise _lost(self.host, exc) from exc
        pgid: list[int] = []
        try:
            out, err = await asyncio.wait_for(
                self._collect(process, pgid if group else None), timeout
            )
        except asyncio.TimeoutError:
            await self._kill(process, pgid)
            raise timed_out(self.host, command, timeout) from None
        except (asyncssh.Error, OSError) as exc:
            process.close()
            raise _lost(self.host, exc) from exc
        except BaseException:  # interrupted (Ctrl-C cancels the task): kill what runs there
            await asyncio.shield(self._kill(process, pgid))
            raise
        status = process.exit_status
        if status is not None and status < 0:  # asyncssh reports -1 when killed by a signal
            status = None
        return finished(self.host, command, status, out, err)

    async def _collect(
        self, process: asyncssh.SSHClientProcess[bytes], pgid: list[int] | None
    ) -> tuple[bytes, bytes]:
        """stdout and stderr to the end, without what the login shell printed before the
        command; with ``pgid``, first the group id line the wrapper writes (absent when the
        wrapper could not start: then the shell's error is all)."""
        unstarted = await skip_preamble(process.stdout, self._marker, PREAMBLE_TIMEOUT_S)
        if unstarted is not None:
            _, err = await process.communicate()
            return unstarted, bytes(err or b"")
        if pgid is not None:
            first = await process.stdout.readline()
            if first.strip().isdigit():
                pgid.append(int(first))
            else:  # not our line: keep it as output
                rest, err = await process.communicate()
                return bytes(first) + bytes(rest or b""), after_boundary(err or b"", self._marker)
        out, err = await process.communicate()
        return bytes(out or b""), after_boundary(err or b"", self._marker)

    async def _kill(self, process: asyncssh.SSHClientProcess[bytes], pgid: list[int]) -> None:
        """Kill the command's process group on the host (best effort), then the channel."""
        if pgid and process.exit_status is None:
            with contextlib.suppress(asyncssh.Error, OSError, asyncio.TimeoutError):
                kill = await self._conn.create_process(
                    sh_line(kill_group_command(pgid[0])), stdin=asyncssh.DEVNULL, encoding=None
                )
                await kill.wait(timeout=5.0)
        process.close()

    async def start(self, command: str) -> Stream:
        return _SshStream(self.host, await self._started(command))

    async def open_pipe(self, command: str) -> Pipe:
        return _SshPipe(self.host, await self._started(command), self._marker)

    async def _started(self, command: str) -> asyncssh.SSHClientProcess[bytes]:
        """A long-lived process whose stdout starts with the command's own output."""
        try:
            process = await self._conn.create_process(
                with_boundary(self._marker, command), encoding=None
            )
            unstarted = await skip_preamble(process.stdout, self._marker, PREAMBLE_TIMEOUT_S)
        except (asyncssh.Error, OSError) as exc:
            raise _lost(self.host, exc) from exc
        if unstarted is not None:
            process.close()
            said = decode_output(unstarted).strip()[-300:]
            raise Unreachable(self.host, "the login shell did not run the command: " + said)
        return process

    def peer(self) -> PeerInfo:
        address, port = self._conn.get_extra_info("peername")[:2]
        key = self._conn.get_server_host_key()
        host_key = (
            "" if key is None else " ".join(key.export_public_key("openssh").decode().split()[:2])
        )
        return PeerInfo(
            str(address), int(port), str(self._conn.get_extra_info("username")), host_key
        )

    async def close(self) -> None:
        await close_all([*self._jumps, self._conn])


async def close_all(conns: Sequence[asyncssh.SSHClientConnection]) -> None:
    """Close connections, the last opened first (a jump host after what it carries)."""
    for conn in reversed(conns):
        conn.close()
        with contextlib.suppress(asyncio.TimeoutError, asyncssh.Error, OSError):
            await asyncio.wait_for(conn.wait_closed(), 2.0)


class _SshStream:
    def __init__(self, host: str, process: asyncssh.SSHClientProcess[bytes]) -> None:
        self._host = host
        self._process = process

    async def send_line(self, line: bytes) -> None:
        try:
            self._process.stdin.write(line + b"\n")
            await self._process.stdin.drain()
        except (asyncssh.Error, OSError) as exc:
            raise _lost(self._host, exc) from exc

    async def read_exactly(self, size: int, timeout: float) -> bytes:
        try:
            data = await asyncio.wait_for(self._process.stdout.readexactly(size), timeout)
        except asyncio.TimeoutError:
            raise TimedOut(self._host, f"the agent did not answer within {timeout:g} s") from None
        except asyncio.IncompleteReadError as exc:
            raise Unreachable(self._host, ended("the agent session ended", exc.partial)) from None
        except (asyncssh.Error, OSError) as exc:
            raise _lost(self._host, exc) from exc
        return bytes(data)

    async def close(self) -> None:
        self._process.close()


class _SshPipe:
    def __init__(self, host: str, process: asyncssh.SSHClientProcess[bytes], marker: bytes) -> None:
        self._host = host
        self._process = process
        self._marker = marker  # stderr starts after it (what rc files printed is not ours)
        self._errors = asyncio.ensure_future(keep_tail(process.stderr.read))

    async def write(self, data: bytes) -> None:
        try:
            self._process.stdin.write(data)
            await self._process.stdin.drain()
        except (asyncssh.Error, OSError) as exc:
            raise _lost(self._host, exc) from exc

    async def write_eof(self) -> None:
        with contextlib.suppress(asyncssh.Error, OSError):
            self._process.stdin.write_eof()

    async def read(self, size: int) -> bytes:
        try:
            return bytes(await self._process.stdout.read(size))
        except (asyncssh.Error, OSError) as exc:
            raise _lost(self._host, exc) from exc

    async def readline(self) -> bytes:
        try:
            return bytes(await self._process.stdout.readline())
        except (asyncssh.Error, OSError) as exc:
            raise _lost(self._host, exc) from exc

    async def wait(self, timeout: float) -> tuple[int | None, str]:
        try:
            result = await self._process.wait(timeout=timeout)
        except asyncssh.TimeoutError:
            await self.kill()
            raise TimedOut(
                self._host, f"a transfer process did not end within {timeout:g} s"
            ) from None
        except (asyncssh.Error, OSError) as exc:
            raise _lost(self._host, exc) from exc
        errors = decode_output(after_boundary(await self._errors, self._marker))
        status = result.exit_status
        return (status if status is not None and status >= 0 else None), errors

    async def kill(self) -> None:
        self._process.close()


def _lost(host: str, exc: BaseException) -> HostError:
    return Unreachable(host, f"connection lost: {exc}", hint="the host or its sshd went away")
