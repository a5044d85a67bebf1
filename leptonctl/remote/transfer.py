"""Host-to-host transfers: a chain of agents joined by one-shot OpenSSH keys.

A transfer moves frames (one chunk each, sha256-named) from a *source* down a
*chain* of receivers: source -> r1 -> r2 ...  Every receiver stores what it
gets (chunks into its store, or files at their destination; a relay stores
nothing) and forwards each block to the next host while it is still receiving,
so K replicas cost about one transfer (the HDFS/GFS pipeline).

Hops between two SSH hosts use OpenSSH itself (C-speed ciphers, the receiver's
host key pinned from the operator's own verified connection).  For each such
hop the operator generates an ed25519 key, installs its public half on the
receiver with ``restrict``, a forced command (``recv`` of this transfer only)
and ``expiry-time`` a few minutes ahead, and hands the private half to the
upstream host inside its spec, over the operator's encrypted session.  The
receiver deletes its key line the moment it starts, so a key works once;
``revoke`` after the transfer removes anything a crash left behind.  The
operator's own credentials never leave the operator's machine.

When the source or the first receiver is the operator's machine (a ``put`` of
a local file, a ``get``), or when two hosts cannot reach each other, the
operator *pumps*: the sender writes its frames to stdout and the operator
copies them into the receiver over its own connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from leptonctl.errors import AgentError, HostError
from leptonctl.inventory.model import Host
from leptonctl.paths import data_home
from leptonctl.remote.agent import AgentSessions, agent_command, wire
from leptonctl.remote.transport import Pipe

KEY_TTL_S = 300.0  # how long a one-shot key may wait to be used
PUMP_BLOCK = 1 << 20
ProgressCallback = Callable[[int], None]  # bytes the source has sent so far


def operator_host() -> Host:
    """The operator's own machine as a pseudo-host: local sources and destinations."""
    return Host(
        name="(operator)",
        address=None,
        port=None,
        user=None,
        identity_file=None,
        connection="local",
        python=sys.executable,
        data_dir=str(data_home()),
        groups=("all",),
        vars={},
        capacity=None,
        source="(operator)",
    )


@dataclass(frozen=True)
class Hop:
    """One receiver: where it is, and what it does with what it receives."""

    host: Host
    store: str = "chunks"  # "chunks" | "files" | "none" (a relay)
    files: Mapping[str, Any] = field(default_factory=dict)  # files mode: files, dirs, links


@dataclass(frozen=True)
class HopOutcome:
    name: str
    stored: tuple[str, ...]
    failed: Mapping[str, str]  # hash -> why it was not stored
    error: str | None
    bytes: int
    files_done: tuple[str, ...] = ()
    no_space: bool = False  # the disk filled up: its partial files were removed again


@dataclass(frozen=True)
class TransferOutcome:
    hops: tuple[HopOutcome, ...]  # the source first, then the chain in order
    seconds: float

    def outcome(self, name: str) -> HopOutcome | None:
        return next((h for h in self.hops if h.name == name), None)

    @property
    def errors(self) -> dict[str, str]:
        return {h.name: h.error for h in self.hops if h.error}


def new_transfer_id() -> str:
    return secrets.token_hex(10)


class Transfers:
    """Runs transfers for one command, over its pool and agent sessions."""

    def __init__(self, sessions: AgentSessions) -> None:
        self.sessions = sessions
        self.pool = sessions.pool

    async def run(
        self,
        source: Host,
        items: Sequence[wire.SendItem],
        chain: Sequence[Hop],
        *,
        store_at_source: bool = False,
        pump: bool = False,
        compress: bool = False,
        rate_bps: float | None = None,
        progress: ProgressCallback | None = None,
    ) -> TransferOutcome:
        """Send ``items`` from ``source`` down ``chain``.

        The first hop is pumped by the operator when asked, or when either end of it is
        local; every later hop must join two SSH hosts.  Per-host trouble during the
        stream is reported in the outcome (``error``, ``failed``), not raised; a host
        that cannot be reached to set the transfer up raises its ``HostError``.
        """
        if not chain:
            raise ValueError("a transfer needs at least one receiver")
        pump = pump or source.is_local or chain[0].host.is_local
        for hop in chain[1:]:
            if hop.host.is_local:
                raise ValueError(f"{hop.host.name} is local: it can only be a chain's first hop")
        transfer_id = new_transfer_id()
        first_keyed = 1 if pump else 0
        keys = [_new_key() if i >= first_keyed else None for i in range(len(chain))]
        links = [await self._link(hop.host, keys[i], compress) for i, hop in enumerate(chain)]
        started = time.monotonic()
        try:
            await asyncio.gather(
                *(self._grant(transfer_id, i, hop, links, keys[i]) for i, hop in enumerate(chain))
            )
            spec = {
                "transfer": transfer_id,
                "name": source.name,
                "items": [item.to_wire() for item in items],
                "store": store_at_source,
                "rate_bps": rate_bps,
                "next": {"kind": "stdout"} if pump else links[0],
            }
            if pump:
                hops = await self._pumped(source, spec, chain[0].host, transfer_id, progress)
            else:
                hops = await self._direct(source, spec, progress)
        finally:
            await self._revoke(transfer_id, [source, *(hop.host for hop in chain)])
        return TransferOutcome(tuple(hops), time.monotonic() - started)

    async def probe(
        self, source: Host, target: Host, seconds: float, max_bytes: int
    ) -> dict[str, Any]:
        """Measure source -> target over the transfer channel: ``{"rtt_s", "bandwidth_bps",
        "bytes", "error"}`` (error set when source could not reach target)."""
        transfer_id = new_transfer_id()
        key = _new_key()
        link = await self._link(target, key, compress=False)
        try:
            await self._grant(transfer_id, 0, Hop(target, store="probe"), [link], key)
            spec = {"transfer": transfer_id, "next": link, "seconds": seconds}
            spec["max_bytes"] = max_bytes
            prober = await self._open(source, ["net-probe"])
            try:
                await prober.write(json.dumps(spec).encode() + b"\n")
                await prober.write_eof()
                output = b""
                while chunk := await prober.read(PUMP_BLOCK):
                    output += chunk
                status, errors = await prober.wait(self.pool.options.command_timeout)
            except BaseException:
                await prober.kill()
                raise
        finally:
            await self._revoke(transfer_id, [source, target])
        doc = _json(output.strip().splitlines()[-1]) if output.strip() else {}
        if "rtt_s" not in doc:
            raise AgentError(source.name, f"net-probe failed (exit status {status}): {errors}")
        return doc

    # -- setting up -----------------------------------------------------------

    async def _link(
        self, host: Host, key: asyncssh.SSHKey | None, compress: bool
    ) -> dict[str, Any] | None:
        """How the upstream host reaches ``host`` with ``key`` (None: pumped, no key)."""
        if key is None:
            return None
        conn = await self.pool.connect(host)
        peer = conn.peer()
        if peer is None or not peer.host_key:
            raise AgentError(host.name, "no verified SSH host key: it cannot receive directly")
        proxied = host.proxy_jump is not None
        address = host.vars.get("data_address") or (host.address if proxied else peer.address)
        return {
            "kind": "ssh",
            "name": host.name,
            "address": str(address or host.ssh_target),
            "port": (host.port or 22) if proxied else peer.port,
            "user": host.user or peer.username,
            "key": key.export_private_key("openssh").decode(),
            "host_key": peer.host_key,
            "compress": compress,
        }

    async def _grant(
        self,
        transfer_id: str,
        index: int,
        hop: Hop,
        links: Sequence[dict[str, Any] | None],
        key: asyncssh.SSHKey | None,
    ) -> None:
        spec: dict[str, Any] = {"name": hop.host.name, "store": hop.store, **hop.files}
        if index + 1 < len(links):
            spec["next"] = links[index + 1]
        request = wire.Grant(transfer=transfer_id, spec=spec)
        if key is not None:
            public = key.export_public_key("openssh").decode().split()
            request = dataclasses.replace(request, pubkey=" ".join(public[:2]), ttl_s=KEY_TTL_S)
        try:
            await self.sessions.request(hop.host, request)
        except AgentError as exc:
            if exc.operation is None:
                raise
            raise AgentError(
                hop.host.name,
                f"cannot prepare the transfer: {exc.reason}",
                operation=exc.operation,
                reason=exc.reason,
            ) from None

    async def _revoke(self, transfer_id: str, hosts: Sequence[Host]) -> None:
        async def one(host: Host) -> None:
            with contextlib.suppress(HostError):
                await self.sessions.request(host, wire.Revoke(transfer=transfer_id))

        await asyncio.gather(*(one(h) for h in {h.name: h for h in hosts}.values()))

    async def _open(self, host: Host, args: list[str]) -> Pipe:
        await self.sessions.get(host)  # makes sure the agent is installed there
        conn = await self.pool.connect(host)
        return await conn.open_pipe(agent_command(host, args))

    # -- moving bytes ---------------------------------------------------------

    async def _direct(
        self, source: Host, spec: dict[str, Any], progress: ProgressCallback | None
    ) -> list[HopOutcome]:
        sender = await self._open(source, ["send"])
        try:
            await sender.write(json.dumps(spec).encode() + b"\n")
            await sender.write_eof()
            result: dict[str, Any] | None = None
            while line := await sender.readline():
                doc = _json(line)
                if "progress" in doc and progress is not None:
                    progress(int(doc["progress"]))
                elif "hops" in doc:
                    result = doc
            status, errors = await sender.wait(self.pool.options.command_timeout)
        except BaseException:
            await sender.kill()
            raise
        if result is None:
            raise AgentError(source.name, f"the sender failed (exit status {status}): {errors}")
        return _outcomes(result)

    async def _pumped(
        self,
        source: Host,
        spec: dict[str, Any],
        receiver: Host,
        transfer_id: str,
        progress: ProgressCallback | None,
    ) -> list[HopOutcome]:
        sender = await self._open(source, ["send"])
        try:
            target = await self._open(receiver, ["recv", "--transfer", transfer_id])
        except BaseException:
            await sender.kill()
            raise
        moved, lost = 0, None
        try:
            await sender.write(json.dumps(spec).encode() + b"\n")
            await sender.write_eof()
            while data := await sender.read(PUMP_BLOCK):
                try:
                    await target.write(data)
                except HostError as exc:
                    lost = exc
                    break
                moved += len(data)
                if progress is not None:
                    progress(moved)
            if lost is not None:
                await sender.kill()
            await target.write_eof()
            output = b""
            while chunk := await target.read(PUMP_BLOCK):
                output += chunk
            timeout = self.pool.options.command_timeout
            _, sender_errors = await sender.wait(timeout)
            _, target_errors = await target.wait(timeout)
        except BaseException:
            await sender.kill()
            await target.kill()
            raise
        sent = _last_doc(sender_errors.encode())
        received = _last_doc(output)
        hops = _outcomes(sent) if sent else [_lost_hop(source.name, sender_errors)]
        if received:
            hops[1:] = _outcomes(received)
        else:
            why = str(lost) if lost else target_errors.strip() or "the receiver ended early"
            hops[1:] = [_lost_hop(receiver.name, why)]
        return hops


def _new_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519", comment="leptonctl transfer")


def _json(line: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(line)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _last_doc(output: bytes) -> dict[str, Any] | None:
    for line in reversed(output.splitlines()):
        doc = _json(line)
        if "hops" in doc:
            return doc
    return None


def _outcomes(doc: Mapping[str, Any]) -> list[HopOutcome]:
    """The hops' results as the agents printed them, each field checked: a host's result
    is data, and a malformed one reads as that hop's error, never as a crash here."""
    hops = doc.get("hops")
    return [_outcome(h) for h in hops] if isinstance(hops, list) else []


def _outcome(raw: object) -> HopOutcome:
    if not isinstance(raw, Mapping):
        return HopOutcome("?", (), {}, "an unreadable result", 0)
    failed = raw.get("failed")
    error, size = raw.get("error"), raw.get("bytes")
    return HopOutcome(
        name=str(raw.get("name")),
        stored=_strings(raw.get("stored")),
        failed={str(k): str(v) for k, v in failed.items()} if isinstance(failed, dict) else {},
        error=None if error is None else str(error),
        bytes=size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else 0,
        files_done=_strings(raw.get("files_done")),
        no_space=raw.get("no_space") is True,
    )


def _strings(value: object) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def _lost_hop(name: str, why: str) -> HopOutcome:
    return HopOutcome(name, (), {}, why.strip()[-500:] or "lost", 0)
