"""SSH connections with asyncssh: verified host keys, no prompts, typed failures.

``connect_ssh`` honours ``~/.ssh/config`` (aliases, HostName, User, Port,
IdentityFile, ProxyJump), ssh-agent and the known_hosts files.  Host keys are
verified; an unknown key is refused unless ``accept_new_host_keys`` is set, in
which case it is appended to ``~/.ssh/known_hosts`` and reported through
``on_new_host_key`` so the caller can record it.  A *changed* key is always
refused.  Nothing here ever asks a human for anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import socket
from collections.abc import Callable
from pathlib import Path

import asyncssh

from leptonctl.core.outputs import RunResult
from leptonctl.errors import (
    AuthFailed,
    HostError,
    HostKeyMismatch,
    HostKeyUnknown,
    TimedOut,
    Unreachable,
)
from leptonctl.inventory.model import Host
from leptonctl.paths import user_known_hosts
from leptonctl.remote.transport import (
    PeerInfo,
    Pipe,
    Stream,
    TransportOptions,
    decode_output,
    finished,
    group_command,
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


NewHostKeyCallback = Callable[[str, str, str], None]  # (inventory host, known_hosts name, key line)


class _HostKeyPolicy(asyncssh.SSHClient):
    """Called by asyncssh only for keys that known_hosts does not already trust."""

    def __init__(self, known_hosts: list[str], accept_new: bool) -> None:
        self._known_hosts = known_hosts
        self._accept_new = accept_new
        self.verdict: str | None = None  # "mismatch", "unknown" or "accepted"
        self.accepted: tuple[str, str] | None = None  # (known_hosts name, public key)
        self.fingerprint: str | None = None

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        self.fingerprint = key.get_fingerprint()
        lookup_port = None if port == 22 else port
        trusted = asyncssh.match_known_hosts(self._known_hosts, host, addr, lookup_port)[0]
        if trusted:
            self.verdict = "mismatch"
            return False
        if not self._accept_new:
            self.verdict = "unknown"
            return False
        name = host if port == 22 else f"[{host}]:{port}"
        self.accepted = (name, key.export_public_key("openssh").decode().strip())
        self.verdict = "accepted"
        return True


class SshConnection:
    """One asyncssh connection to one inventory host, reused for the whole command."""

    def __init__(
        self, host: str, conn: asyncssh.SSHClientConnection, python: str = "python3"
    ) -> None:
        self.host = host
        self._conn = conn
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
        self._conn.close()
        with contextlib.suppress(asyncio.TimeoutError, asyncssh.Error, OSError):
            await asyncio.wait_for(self._conn.wait_closed(), 2.0)


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

    async def read_line(self, timeout: float) -> bytes:
        try:
            line = await asyncio.wait_for(self._process.stdout.readline(), timeout)
        except asyncio.TimeoutError:
            raise TimedOut(self._host, f"the agent did not answer within {timeout:g} s") from None
        except (asyncssh.Error, OSError) as exc:
            raise _lost(self._host, exc) from exc
        if not line:
            raise Unreachable(self._host, "the agent session ended")
        return bytes(line)

    async def close(self) -> None:
        self._process.close()


class _SshPipe:
    def __init__(self, host: str, process: asyncssh.SSHClientProcess[bytes], marker: bytes) -> None:
        self._host = host
        self._process = process
        self._marker = marker  # stderr starts after it (what rc files printed is not ours)
        self._errors = asyncio.ensure_future(process.stderr.read())

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
        return (status if status is not None and status >= 0 else None), errors[-2000:]

    async def kill(self) -> None:
        self._process.close()


async def connect_ssh(
    host: Host,
    options: TransportOptions,
    on_new_host_key: NewHostKeyCallback | None = None,
) -> SshConnection:
    """Open one verified SSH connection to ``host`` or raise a ``HostError``."""
    known_hosts = [str(p) for p in options.known_hosts if p.is_file()]
    policy = _HostKeyPolicy(known_hosts, options.accept_new_host_keys)
    target = host.ssh_target
    kwargs: dict[str, object] = {
        "known_hosts": known_hosts or b"",
        "client_factory": lambda: policy,
        "connect_timeout": options.connect_timeout,
        "login_timeout": options.connect_timeout,
        "keepalive_interval": options.keepalive_interval,
        "password_auth": False,
        "kbdint_auth": False,
    }
    if host.port is not None:
        kwargs["port"] = host.port
    if host.user is not None:
        kwargs["username"] = host.user
    if host.proxy_jump is not None:
        kwargs["tunnel"] = host.proxy_jump
    if host.identity_file is not None:
        kwargs["client_keys"] = [os.path.expanduser(host.identity_file)]
    try:
        conn = await asyncssh.connect(target, **kwargs)
    except HostError:
        raise
    except Exception as exc:
        raise _connect_error(host.name, target, exc, policy, options) from exc
    if policy.accepted is not None:
        name, key = policy.accepted
        _append_known_host(user_known_hosts(), f"{name} {key}")
        if on_new_host_key is not None:
            on_new_host_key(host.name, name, key)
    return SshConnection(host.name, conn, host.python)


def _connect_error(
    name: str, target: str, exc: BaseException, policy: _HostKeyPolicy, options: TransportOptions
) -> HostError:
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        if policy.verdict == "mismatch":
            return HostKeyMismatch(
                name,
                f"the host key of {target} has CHANGED (now {policy.fingerprint}); refusing to "
                "connect: this may be a reinstalled machine or a machine in the middle",
                hint=f"if the change is expected, remove the old key with `ssh-keygen -R {target}` "
                "and accept the new one with --accept-new-host-keys",
            )
        return HostKeyUnknown(
            name,
            f"the host key of {target} ({policy.fingerprint or 'unknown'}) is not in known_hosts",
            hint="verify the fingerprint, then connect once with `ssh` or rerun with "
            "--accept-new-host-keys to record it",
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        return AuthFailed(
            name,
            f"authentication to {target} failed: {exc.reason}",
            hint="check the user and key (ansible_user, ansible_ssh_private_key_file, ssh-agent)",
        )
    if isinstance(exc, asyncssh.KeyImportError):
        return AuthFailed(
            name,
            f"cannot load the private key for {target}: {exc}",
            hint="load an encrypted key into ssh-agent; leptonctl never asks for a passphrase",
        )
    if isinstance(exc, asyncio.TimeoutError):
        return Unreachable(
            name,
            f"{target} did not answer within {options.connect_timeout:g} s",
            hint="is the machine up and sshd running? raise --connect-timeout for slow links",
        )
    if isinstance(exc, socket.gaierror):
        return Unreachable(
            name,
            f"cannot resolve {target}: {exc.strerror}",
            hint="set ansible_host in the inventory or a HostName in ~/.ssh/config",
        )
    if isinstance(exc, ConnectionRefusedError):
        return Unreachable(
            name, f"{target} refused the connection", hint="is sshd running on that port?"
        )
    if isinstance(exc, OSError):
        return Unreachable(name, f"cannot reach {target}: {exc.strerror or exc}")
    if isinstance(exc, asyncssh.Error):
        return Unreachable(name, f"SSH to {target} failed: {exc}")
    raise exc


def _lost(host: str, exc: BaseException) -> HostError:
    return Unreachable(host, f"connection lost: {exc}", hint="the host or its sshd went away")


def _append_known_host(path: Path, line: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())
