"""Opening SSH connections with asyncssh: verified host keys, no prompts, typed failures.

``connect_ssh`` honours ``~/.ssh/config`` (aliases, HostName, User, Port,
IdentityFile, ProxyJump, UserKnownHostsFile, GlobalKnownHostsFile, HostKeyAlias),
ssh-agent and the known_hosts files.  Host keys are verified, of the target and of
every jump host alike (leptonctl opens the jumps itself): an unknown key is refused
unless ``accept_new_host_keys`` is set, in which case it is appended to the first
``UserKnownHostsFile`` (hashed if that file is, or ``HashKnownHosts`` says so) and
reported through ``on_new_host_key`` so the caller can record it.  A *changed* key is
always refused.  ``StrictHostKeyChecking yes`` in the config refuses new keys even when
asked; its looser values never loosen anything.  Nothing here ever asks a human for
anything.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shlex
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from leptonctl.errors import (
    AuthFailed,
    HostError,
    HostKeyMismatch,
    HostKeyUnknown,
    Unreachable,
)
from leptonctl.inventory.model import Host
from leptonctl.paths import user_known_hosts
from leptonctl.remote.ssh import SshConnection, close_all
from leptonctl.remote.ssh_config import (
    HostKeySettings,
    host_key_settings,
    known_host_entry,
    load_known_hosts,
    uses_hashed_names,
)
from leptonctl.remote.transport import TransportOptions

NewHostKeyCallback = Callable[[str, str, str], None]  # (inventory host, known_hosts name, key line)

MAX_JUMPS = 8  # nested ProxyJump levels (a jump host's own ProxyJump); more is a loop


class _HostKeyPolicy(asyncssh.SSHClient):
    """Called by asyncssh only for keys that the known_hosts files do not already trust."""

    def __init__(self, known_hosts: asyncssh.SSHKnownHosts, accept_new: bool) -> None:
        self._known_hosts = known_hosts
        self._accept_new = accept_new
        self.verdict: str | None = None  # "mismatch", "unknown" or "accepted"
        self.accepted: tuple[str, str] | None = None  # (known_hosts name, public key)
        self.fingerprint: str | None = None
        self.known_as: str | None = None  # the name known_hosts files hold for the host

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        self.fingerprint = key.get_fingerprint()
        self.known_as = host if port == 22 else f"[{host}]:{port}"
        lookup_port = None if port == 22 else port
        trusted = asyncssh.match_known_hosts(self._known_hosts, host, addr, lookup_port)[0]
        if trusted:
            self.verdict = "mismatch"
            return False
        if not self._accept_new:
            self.verdict = "unknown"
            return False
        key_line = " ".join(key.export_public_key("openssh").decode().split()[:2])
        self.accepted = (self.known_as, key_line)
        self.verdict = "accepted"
        return True


@dataclass(frozen=True)
class _Endpoint:
    """One SSH destination on the way to an inventory host: the host itself, or a jump."""

    destination: str  # a name or address as ssh is handed it (a config alias works)
    user: str | None
    port: int | None
    jump: bool = False

    @property
    def label(self) -> str:
        return f"jump host {self.destination}" if self.jump else self.destination

    @classmethod
    def parse_jump(cls, hop: str) -> _Endpoint:
        """``[ssh://][user@]host[:port]``, one hop of a ProxyJump list."""
        text = hop.strip().removeprefix("ssh://")
        user, at, rest = text.rpartition("@")
        port: int | None = None
        if rest.startswith("[") and "]" in rest:  # [v6 address]:port
            address, _, tail = rest[1:].partition("]")
            rest, port = address, int(tail[1:]) if tail[1:].isdigit() else None
        elif rest.count(":") == 1 and rest.rpartition(":")[2].isdigit():
            rest, _, number = rest.rpartition(":")
            port = int(number)
        return cls(rest, user if at else None, port, jump=True)


async def connect_ssh(
    host: Host,
    options: TransportOptions,
    on_new_host_key: NewHostKeyCallback | None = None,
) -> SshConnection:
    """Open one verified SSH connection to ``host`` (through its jump hosts, each verified
    the same way) or raise a ``HostError``."""
    target = _Endpoint(host.ssh_target, host.user, host.port)
    opened: list[asyncssh.SSHClientConnection] = []
    try:
        settings = host_key_settings(target.destination, target.user, target.port)
        jumps = host.proxy_jump if host.proxy_jump is not None else settings.proxy_jump
        tunnel = await _open_jumps(host, jumps, options, on_new_host_key, opened, 0)
        keys = [os.path.expanduser(host.identity_file)] if host.identity_file else None
        conn = await _open(host, target, settings, options, on_new_host_key, tunnel, keys)
    except BaseException:
        await close_all(opened)
        raise
    return SshConnection(host.name, conn, host.python, jumps=opened)


async def _open_jumps(
    host: Host,
    jumps: str | None,
    options: TransportOptions,
    on_new_host_key: NewHostKeyCallback | None,
    opened: list[asyncssh.SSHClientConnection],
    depth: int,
) -> asyncssh.SSHClientConnection | None:
    """Connect through the ``ProxyJump`` list ``jumps``, hop by hop (the first hop through
    its own ProxyJump, as OpenSSH does); the last hop's connection, or None for none."""
    if not jumps:
        return None
    if depth >= MAX_JUMPS:
        raise Unreachable(
            host.name,
            f"more than {MAX_JUMPS} nested jump hosts on the way to {host.ssh_target}",
            hint="a ProxyJump loop in ~/.ssh/config? (`ssh -G HOST` shows a host's ProxyJump)",
        )
    tunnel: asyncssh.SSHClientConnection | None = None
    for index, hop in enumerate(jumps.split(",")):
        endpoint = _Endpoint.parse_jump(hop)
        settings = host_key_settings(endpoint.destination, endpoint.user, endpoint.port)
        if index == 0:
            tunnel = await _open_jumps(
                host, settings.proxy_jump, options, on_new_host_key, opened, depth + 1
            )
        tunnel = await _open(host, endpoint, settings, options, on_new_host_key, tunnel)
        opened.append(tunnel)
    return tunnel


async def _open(
    host: Host,
    endpoint: _Endpoint,
    settings: HostKeySettings,
    options: TransportOptions,
    on_new_host_key: NewHostKeyCallback | None,
    tunnel: asyncssh.SSHClientConnection | None,
    client_keys: list[str] | None = None,
) -> asyncssh.SSHClientConnection:
    """One verified connection to ``endpoint`` (through ``tunnel``, else directly: never
    through a ProxyJump asyncssh would open unverified by us)."""
    known = load_known_hosts(settings.files)
    accept = options.accept_new_host_keys and bool(settings.user_files)
    policy = _HostKeyPolicy(known, accept and not settings.refuses_new_keys)
    kwargs: dict[str, object] = {
        "known_hosts": known,
        "client_factory": lambda: policy,
        "tunnel": tunnel,
        "connect_timeout": options.connect_timeout,
        "login_timeout": options.connect_timeout,
        "keepalive_interval": options.keepalive_interval,
        "password_auth": False,
        "kbdint_auth": False,
    }
    if endpoint.port is not None:
        kwargs["port"] = endpoint.port
    if endpoint.user is not None:
        kwargs["username"] = endpoint.user
    if client_keys is not None:
        kwargs["client_keys"] = client_keys
    try:
        conn = await asyncssh.connect(endpoint.destination, **kwargs)
    except HostError:
        raise
    except Exception as exc:
        raise _connect_error(host, endpoint, exc, policy, settings, options) from exc
    if policy.accepted is not None:
        name, key = policy.accepted
        file = settings.user_files[0]
        hashed = settings.hash_names or uses_hashed_names(file)
        try:
            _record_known_host(file, name, key, hashed)
        except OSError as exc:
            conn.close()
            raise HostKeyUnknown(
                host.name,
                f"cannot record the host key of {endpoint.label} in {file}: {exc.strerror or exc}",
                hint="make the first UserKnownHostsFile of ~/.ssh/config writable",
            ) from None
        if on_new_host_key is not None:
            on_new_host_key(host.name, name, key)
    return conn


def _connect_error(
    host: Host,
    endpoint: _Endpoint,
    exc: BaseException,
    policy: _HostKeyPolicy,
    settings: HostKeySettings,
    options: TransportOptions,
) -> HostError:
    name, target, what = host.name, endpoint.destination, endpoint.label
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        if policy.verdict == "mismatch":
            return HostKeyMismatch(
                name,
                f"the host key of {what} has CHANGED (now {policy.fingerprint}); refusing to "
                "connect: this may be a reinstalled machine or a machine in the middle",
                hint=f"if the change is expected, remove the old key with "
                f"`{_keygen_remove(policy.known_as or target, settings)}` "
                "and accept the new one with --accept-new-host-keys",
            )
        return _unknown_key(name, what, policy, settings, options)
    if isinstance(exc, asyncssh.PermissionDenied):
        if not endpoint.jump and host.password_vars:
            return AuthFailed(
                name,
                f"authentication to {target} failed: {exc.reason}; leptonctl logs in with "
                f"SSH keys only and does not use the inventory's {host.password_vars[0]}",
                hint=f"install a key on the host once: `{_copy_id_command(host)}`",
            )
        return AuthFailed(
            name,
            f"authentication to {what} failed: {exc.reason}",
            hint="check the user and key (ansible_user, ansible_ssh_private_key_file, ssh-agent)",
        )
    if isinstance(exc, asyncssh.KeyImportError):
        return AuthFailed(
            name,
            f"cannot load the private key for {what}: {exc}",
            hint="load an encrypted key into ssh-agent; leptonctl never asks for a passphrase",
        )
    if isinstance(exc, asyncio.TimeoutError):
        return Unreachable(
            name,
            f"{what} did not answer within {options.connect_timeout:g} s",
            hint="is the machine up and sshd running? raise --connect-timeout for slow links",
        )
    if isinstance(exc, socket.gaierror):
        return Unreachable(
            name,
            f"cannot resolve {what}: {exc.strerror}",
            hint="set ansible_host in the inventory or a HostName in ~/.ssh/config",
        )
    if isinstance(exc, ConnectionRefusedError):
        return Unreachable(
            name, f"{what} refused the connection", hint="is sshd running on that port?"
        )
    if isinstance(exc, OSError):
        return Unreachable(name, f"cannot reach {what}: {exc.strerror or exc}")
    if isinstance(exc, asyncssh.Error):
        return Unreachable(name, f"SSH to {what} failed: {exc}")
    raise exc


def _unknown_key(
    name: str,
    what: str,
    policy: _HostKeyPolicy,
    settings: HostKeySettings,
    options: TransportOptions,
) -> HostKeyUnknown:
    """The refusal of a key no known_hosts file holds, saying why it was not accepted."""
    key = f"the host key of {what} ({policy.fingerprint or 'unknown'})"
    present = [str(p) for p in settings.files if p.is_file()]
    where = f"in {', '.join(present)}" if present else "in any known_hosts file"
    if options.accept_new_host_keys and settings.refuses_new_keys:
        return HostKeyUnknown(
            name,
            f"{key} is not {where}, and StrictHostKeyChecking yes in ~/.ssh/config "
            "forbids accepting a new key, even with --accept-new-host-keys",
            hint="verify the fingerprint and add the key yourself "
            f"({_first_file(settings)}), or relax StrictHostKeyChecking for this host",
        )
    if options.accept_new_host_keys and not settings.user_files:
        return HostKeyUnknown(
            name,
            f"{key} is not {where}, and ~/.ssh/config sets UserKnownHostsFile none: "
            "there is no file to record it in",
            hint="name a UserKnownHostsFile for this host in ~/.ssh/config",
        )
    return HostKeyUnknown(
        name,
        f"{key} is not {where}",
        hint="verify the fingerprint, then connect once with `ssh` or rerun with "
        "--accept-new-host-keys to record it",
    )


def _first_file(settings: HostKeySettings) -> str:
    return str(settings.user_files[0]) if settings.user_files else "a known_hosts file"


def _keygen_remove(name: str, settings: HostKeySettings) -> str:
    default = settings.user_files[:1] == (user_known_hosts(),)
    command = ["ssh-keygen", "-R", name] + ([] if default else ["-f", _first_file(settings)])
    return " ".join(shlex.quote(word) for word in command)


def _copy_id_command(host: Host) -> str:
    """How to install the operator's key for ``host`` with OpenSSH's ssh-copy-id."""
    key = f"{host.identity_file}.pub" if host.identity_file else "~/.ssh/id_ed25519.pub"
    words = ["ssh-copy-id", "-i", key]
    if host.port is not None:
        words += ["-p", str(host.port)]
    if host.proxy_jump is not None:
        words += ["-o", f"ProxyJump={host.proxy_jump}"]
    words.append(f"{host.user}@{host.ssh_target}" if host.user else host.ssh_target)
    quoted = [shlex.quote(word) for word in words]
    if key.startswith("~/"):  # the shell expands the tilde: keep it outside the quotes
        quoted[2] = "~/" + shlex.quote(key[2:])
    return " ".join(quoted)


def _record_known_host(path: Path, name: str, key: str, hashed: bool) -> None:
    """Append ``name``'s ``key`` to the known_hosts file ``path`` (on a line of its own),
    unless it is there already (many hosts behind one new jump host accept it at once)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        if _holds(os.pread(handle.fileno(), os.fstat(handle.fileno()).st_size, 0), name, key):
            return
        line = known_host_entry(name, key, hashed=hashed)
        size = os.fstat(handle.fileno()).st_size
        unfinished = size > 0 and os.pread(handle.fileno(), 1, size - 1) != b"\n"
        handle.write((("\n" if unfinished else "") + line + "\n").encode())
        handle.flush()
        if stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # not /dev/null, say
            os.fsync(handle.fileno())


def _holds(content: bytes, name: str, key: str) -> bool:
    """Whether known_hosts ``content`` already trusts ``key`` for ``name`` (``host`` or
    ``[host]:port``)."""
    host, port = name, None
    if name.startswith("[") and "]:" in name:
        host, _, number = name[1:].partition("]:")
        port = int(number) if number.isdigit() else None
    try:
        trusted = asyncssh.import_known_hosts(content.decode(errors="replace"))
        found = trusted.match(host, "", port)[0]
    except (ValueError, asyncssh.Error):
        return False
    blob = key.split()[1] if len(key.split()) > 1 else key
    return any(k.export_public_key("openssh").decode().split()[1] == blob for k in found)
