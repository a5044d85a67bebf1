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
a local file, a ``get``), the operator *pumps*: the sender writes its frames to
stdout and the operator copies them into the receiver over its own connections.

A hop between two hosts that cannot carry the transfer itself (the receiver's
sshd ignores ``~/.ssh/authorized_keys``: central keys; or the two cannot
connect) is *relayed by the operator*: the chain is cut there, and the rest of it
is fed by the source through the operator's pump, while the first part runs as
before -- both streaming, each receiver checking every chunk's hash.  Such hops
are found at first use (the hop fails with "Permission denied (publickey)", or
cannot connect) and remembered (``leptonctl.remote.hopmemory``), so later chains go
straight through the operator.  A host key that does not match the operator's is
never relayed around.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import secrets
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from leptonctl.core.hops import (
    OPERATOR,
    RelayedHop,
    classify_hop_error,
    host_key_error,
    plan_relays,
    segments,
)
from leptonctl.errors import AgentError, HostError
from leptonctl.inventory.model import Host
from leptonctl.paths import data_home
from leptonctl.remote.agent import AgentSessions, agent_command, wire
from leptonctl.remote.hopmemory import HopMemory, ValueStore, hop_memory
from leptonctl.remote.transport import Pipe

if TYPE_CHECKING:
    import asyncssh

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
    relayed: tuple[RelayedHop, ...] = ()  # hops that went through the operator instead

    def outcome(self, name: str) -> HopOutcome | None:
        return next((h for h in self.hops if h.name == name), None)

    @property
    def errors(self) -> dict[str, str]:
        return {h.name: h.error for h in self.hops if h.error}


def new_transfer_id() -> str:
    return secrets.token_hex(10)


class Transfers:
    """Runs transfers for one command, over its pool and agent sessions."""

    def __init__(
        self,
        sessions: AgentSessions,
        store: ValueStore | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``store``: where findings about hops are kept between commands (the command's
        transfers share them in any case)."""
        self.sessions = sessions
        self.pool = sessions.pool
        self.memory: HopMemory = hop_memory(sessions, store, clock)

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
        local; every later hop must join two SSH hosts.  A hop that cannot carry the
        transfer (central keys, no connection) is relayed by the operator, and said so in
        ``relayed``.  Per-host trouble during the stream is reported in the outcome
        (``error``, ``failed``), not raised; a host that cannot be reached to set the
        transfer up raises its ``HostError``.
        """
        if not chain:
            raise ValueError("a transfer needs at least one receiver")
        first_pumped = pump or source.is_local or chain[0].host.is_local
        for hop in chain[1:]:
            if hop.host.is_local:
                raise ValueError(f"{hop.host.name} is local: it can only be a chain's first hop")
        names = [source.name, *(hop.host.name for hop in chain)]
        remote = {hop.host.name for hop in chain if not hop.host.is_local}
        refused = {n: why for n in remote if (why := self.memory.refused(n))}
        pairs = [(a, b) for a, b in itertools.pairwise(names) if b in remote]
        cut = {(a, b): why for a, b in pairs if (why := self.memory.cut(a, b))}
        relays = plan_relays(names, first_pumped, refused, cut)
        relayed = list(relays.values())
        started = time.monotonic()
        furthest: dict[int, int] = {}

        def ticker(run: int) -> ProgressCallback | None:
            if progress is None:
                return None

            def tick(sent: int) -> None:  # the furthest stream says how far the source is
                furthest[run] = sent
                progress(max(furthest.values()))

            return tick

        hops: dict[int, HopOutcome] = {}
        sent: list[HopOutcome] = []  # the source's side of every run
        pending: list[tuple[int, int, bool, bool]] = []  # first, last, pumped, store at source
        for first, last in segments(len(chain), list(relays)):
            if first > 1 and all(hop.store == "none" for hop in chain[first - 1 : last]):
                hops.update(
                    {i: HopOutcome(names[i], (), {}, None, 0) for i in range(first, last + 1)}
                )
                continue  # relays with nothing behind them: skipped
            pumped = first in relays or (first == 1 and first_pumped)
            pending.append((first, last, pumped, store_at_source and first == 1))
        run_numbers = itertools.count()
        while pending:
            runs = await asyncio.gather(
                *(
                    self._run_once(
                        source,
                        items,
                        chain[first - 1 : last],
                        store_at_source=store,
                        pump=pumped,
                        compress=compress,
                        rate_bps=rate_bps,
                        progress=ticker(next(run_numbers)),
                    )
                    for first, last, pumped, store in pending
                ),
                return_exceptions=True,
            )
            for result in runs:
                if isinstance(result, BaseException):
                    raise result
            retry: list[tuple[int, int, bool, bool]] = []
            for (first, last, pumped, store), result in zip(pending, runs, strict=True):
                assert isinstance(result, TransferOutcome)
                sent.append(result.hops[0] if result.hops else _lost_hop(source.name, "lost"))
                received = list(result.hops[1:])
                for i in range(first, last + 1):
                    at = i - first
                    hops[i] = received[at] if at < len(received) else _not_reached(names[i])
                again = self._relay_failed(names, hops, first, last, pumped)
                if again is not None:
                    # the sender stopped at its lost hop: a copy it keeps is made again
                    retry.append((again.index, last, True, store and again.index == 1))
                    relayed.append(again.hop)
                    if again.index == 1:
                        sent[-1] = _without_hop_error(sent[-1])
            pending = retry
        self.memory.relayed.extend(relayed)
        source_hop = _merge_sent(source.name, sent)
        outcome = [source_hop, *(hops[i] for i in range(1, len(chain) + 1))]
        return TransferOutcome(tuple(outcome), time.monotonic() - started, tuple(relayed))

    def _relay_failed(
        self,
        names: Sequence[str],
        hops: dict[int, HopOutcome],
        first: int,
        last: int,
        pumped: bool,
    ) -> _Relay | None:
        """Learn from the hops ``first..last`` of one run: a direct hop that worked says
        the receiver honours transfer keys; the first one that could not connect is
        relayed (central keys, unreachable) or refused for good (a host key mismatch)."""
        for i in range(first, last + 1):
            hop, direct = hops[i], i > first or not pumped
            a, b = names[i - 1], names[i]
            if not hop.error or hop.bytes or hop.stored:
                if direct and hop.bytes:
                    self.memory.remember_honoured(b)
                    self.memory.forget_cut(a, b)
                continue
            verdict = classify_hop_error(hop.error) if direct else None
            if verdict is None:
                return None
            kind, detail = verdict
            if kind == "host_key":
                hops[i] = dataclasses.replace(hop, error=host_key_error(a, b, hop.error))
                return None
            if kind == "key_refused":
                reason = self.memory.remember_refused(b)
            else:
                reason = self.memory.remember_cut(a, b, detail)
            return _Relay(i, RelayedHop(a, b, OPERATOR, reason))
        return None

    async def _run_once(
        self,
        source: Host,
        items: Sequence[wire.SendItem],
        chain: Sequence[Hop],
        *,
        store_at_source: bool,
        pump: bool,
        compress: bool,
        rate_bps: float | None,
        progress: ProgressCallback | None,
    ) -> TransferOutcome:
        """One chain of agents joined directly (the first hop pumped when ``pump``).

        Every host of the chain gets a transfer id of its own: hosts that share a home
        share ``authorized_keys`` (and may share a data dir), and a receiver that blanks
        its one-shot key, or sweeps its transfer's files, must not touch another hop's."""
        transfer_id = new_transfer_id()  # the source's
        hop_ids = [new_transfer_id() for _ in chain]
        first_keyed = 1 if pump else 0
        keys = [_new_key() if i >= first_keyed else None for i in range(len(chain))]
        links = [await self._link(hop.host, keys[i], compress) for i, hop in enumerate(chain)]
        started = time.monotonic()
        try:
            await asyncio.gather(
                *(self._grant(hop_ids[i], i, hop, links, keys[i]) for i, hop in enumerate(chain))
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
                hops = await self._pumped(source, spec, chain[0].host, hop_ids[0], progress)
            else:
                hops = await self._direct(source, spec, progress)
        finally:
            hosts = [source, *(hop.host for hop in chain)]
            await self._revoke(list(zip([transfer_id, *hop_ids], hosts, strict=True)))
        return TransferOutcome(tuple(hops), time.monotonic() - started)

    async def probe(
        self, source: Host, target: Host, seconds: float, max_bytes: int
    ) -> dict[str, Any]:
        """Measure source -> target over the transfer channel: ``{"rtt_s", "bandwidth_bps",
        "bytes", "error"}`` (error set when source could not reach target)."""
        transfer_id, target_id = new_transfer_id(), new_transfer_id()  # one id per host
        key = _new_key()
        link = await self._link(target, key, compress=False)
        try:
            await self._grant(target_id, 0, Hop(target, store="probe"), [link], key)
            spec = {"transfer": transfer_id, "next": link, "seconds": seconds}
            spec["max_bytes"] = max_bytes
            prober = await self._open(source, ["net-probe"])
            try:
                await prober.write(json.dumps(spec).encode() + b"\n")
                await prober.write_eof()
                output = await read_result(prober, source.name)
                status, errors = await prober.wait(self.pool.options.command_timeout)
            except BaseException:
                await prober.kill()
                raise
        finally:
            await self._revoke([(transfer_id, source), (target_id, target)])
        doc = _json(output.strip().splitlines()[-1]) if output.strip() else {}
        if "rtt_s" not in doc:
            raise AgentError(
                source.name, f"net-probe failed (exit status {status}): {shown(errors)}"
            )
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

    async def _revoke(self, grants: Sequence[tuple[str, Host]]) -> None:
        """Revoke each (transfer id, host) grant: its key line and its files there."""

        async def one(transfer_id: str, host: Host) -> None:
            with contextlib.suppress(HostError):
                await self.sessions.request(host, wire.Revoke(transfer=transfer_id))

        await asyncio.gather(*(one(t, h) for t, h in grants))

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
            async for line in bounded_lines(sender, source.name, "the sender"):
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
            raise AgentError(
                source.name, f"the sender failed (exit status {status}): {shown(errors)}"
            )
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
            output = await read_result(target, receiver.name)
            timeout = self.pool.options.command_timeout
            _, sender_errors = await sender.wait(timeout)
            _, target_errors = await target.wait(timeout)
        except BaseException:
            await sender.kill()
            await target.kill()
            raise
        sent = _last_doc(sender_errors.encode())
        received = _last_doc(output)
        hops = _outcomes(sent) if sent else [_lost_hop(source.name, shown(sender_errors))]
        if received:
            hops[1:] = _outcomes(received)
        else:
            said = shown(target_errors.strip())  # why the receiver ended, in its own words
            why = (f"{lost} ({said})" if said else str(lost)) if lost else said
            why = why or "the receiver ended early"
            hops[1:] = [_lost_hop(receiver.name, why)]
        return hops


async def bounded_lines(pipe: Pipe, host: str, who: str) -> AsyncIterator[bytes]:
    """The lines a transfer process prints, none longer than ``wire.MAX_RESULT_LINE``
    (a longer one is an ``AgentError``, never a buffer without bound)."""
    parts: list[bytes] = []
    held = 0
    while block := await pipe.read(PUMP_BLOCK):
        *lines, rest = block.split(b"\n")
        for line in lines:
            yield b"".join([*parts, line, b"\n"])
            parts, held = [], 0
        if rest:
            parts.append(rest)
            held += len(rest)
            if held > wire.MAX_RESULT_LINE:
                raise _too_long(host, who)
    if parts:
        yield b"".join(parts)


async def read_result(pipe: Pipe, host: str) -> bytes:
    """A receiver's whole stdout (its result line), at most ``wire.MAX_RESULT_LINE`` bytes."""
    parts: list[bytes] = []
    held = 0
    while block := await pipe.read(PUMP_BLOCK):
        parts.append(block)
        held += len(block)
        if held > wire.MAX_RESULT_LINE + 2:  # the newlines around the result line
            raise _too_long(host, "the receiver")
    return b"".join(parts)


def shown(errors: str) -> str:
    """The tail of a process's stderr that an error message shows."""
    return errors[-2000:]


def _too_long(host: str, who: str) -> AgentError:
    bound = wire.MAX_RESULT_LINE // wire.MIB
    return AgentError(
        host,
        f"{who} printed a line over the bound of {bound} MiB",
        hint="transfer fewer files at a time (a sub-directory), and report it",
    )


def _new_key() -> asyncssh.SSHKey:
    import asyncssh  # imported by the commands that move data, when they first do

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


def _not_reached(name: str) -> HopOutcome:
    return HopOutcome(name, (), {}, "not reached: a hop before it failed", 0)


@dataclass(frozen=True)
class _Relay:
    index: int  # the chain from here on goes through the operator
    hop: RelayedHop


def _without_hop_error(hop: HopOutcome) -> HopOutcome:
    """The source's outcome once its failed first hop was relayed: the lost connection was
    that hop's, and the relay carried the data instead."""
    if hop.error and hop.error.startswith("lost the connection to the next hop"):
        return dataclasses.replace(hop, error=None)
    return hop


def _merge_sent(name: str, runs: Sequence[HopOutcome]) -> HopOutcome:
    """The source's side of one transfer that ran as several streams."""
    if len(runs) == 1:
        return runs[0]
    failed: dict[str, str] = {}
    for run in runs:
        failed.update(run.failed)
    return HopOutcome(
        name=runs[0].name if runs else name,
        stored=tuple(dict.fromkeys(d for run in runs for d in run.stored)),
        failed=failed,
        error=next((run.error for run in runs if run.error), None),
        bytes=sum(run.bytes for run in runs),
    )
