"""Fake hosts behind ``HostPool``'s connector seam, answered in-process.

``FakeCluster.connector`` is passed to ``HostPool(options, connector=...)``.  Every
connection it opens belongs to one ``FakeHost``; that host answers what leptonctl sends
an agent, in the agent's own wire format:

* the ``serve`` session: each request line is dispatched through the real registry
  (``wire.OPS``) to the real handlers (``lepton_agent.ops.handle``) over the host's own
  data directory (a temporary directory per fake host): chunk-have, chunk-verify, chunk-rm,
  chunk-import, pins and gc, scan, file-status, path-info, materialize all run the agent's
  own code on real files.  Only what would reach outside that directory is answered by the
  fake: ``grant``/``revoke`` (the real ones edit the user's ``authorized_keys``), the jobs
  (the real ones start supervisor processes: here a job is an in-memory record the test
  moves on), and ``probe`` (a synthetic document from the host's declared size);
* the data plane (``send``, ``recv``): frames in the real format (``wire.encode_frame``),
  stored with the agent's own ``ChunkSink`` (hash checked, renamed into place).  A hop to
  an SSH next host is delivered to that fake host only if it has a grant for the transfer
  whose public key matches the private key in the link (used once) and its host key is
  the one the link pins, so chains, one-shot keys and pumping through the operator are
  exercised as they are on real hosts.  Receivers store, then pass the stream on.

Failure modes a test can inject (on ``FakeHost``): a host that is down (``go_down``:
connections refused, open sessions broken; ``come_up``, after a reboot or not), a host
that dies after storing N chunks of a transfer (``die_after_chunks``: the stream is cut
there, downstream hosts see it end early), a firewall between two hosts (``blocks``:
the names of the hosts whose SSH connections it refuses), a corrupt or missing chunk (``corrupt``,
``remove``), a full disk (``free_bytes``, enforced on every store; ``claims_free_bytes``
to report more than there is, as a quota does), an operation answered with an error
(``refuse``) or never answered (``stall``: the caller's timeout, at once).

Limits: no shell (``run`` knows the agent's commands, ``true``, and the agent-presence
check only); no ``files`` receivers (``get`` to a destination) and no ``net-probe``;
items sent must carry their hash; fake hosts share the test machine's filesystem outside
their data directories (``scan`` reads real paths); transfers complete at once (no
timing, no rate limits, no concurrency inside a chain).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import re
import shlex
from collections import deque
from pathlib import Path
from typing import Any

import asyncssh

from leptonctl.core.outputs import RunResult
from leptonctl.errors import TimedOut, Unreachable
from leptonctl.inventory.model import Host
from leptonctl.remote.agent import agent_command, payload_name
from leptonctl.remote.pool import HostPool
from leptonctl.remote.transport import (
    Connection,
    PeerInfo,
    Pipe,
    Stream,
    TransportOptions,
    finished,
)
from leptonctl.testing.fake_host import (
    GIB,
    Died,
    FakeHost,
    FakeJob,
    NoSpaceIsAProblem,
    chunks,
    wire,
)

__all__ = ["GIB", "FakeCluster", "FakeConnection", "FakeHost", "FakeJob"]

LOST_STREAM = "the stream ended early (the sender or a previous hop was lost)"
OPERATOR = "(operator)"


class FakeCluster:
    """Fake hosts by name, and the connector that reaches them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hosts: dict[str, FakeHost] = {}

    def add(self, name: str, **options: Any) -> FakeHost:
        host = FakeHost(name, self.root / _dir_name(name), **options)
        self.hosts[name] = host
        return host

    def __getitem__(self, name: str) -> FakeHost:
        return self.hosts[name]

    @property
    def operator(self) -> FakeHost:
        """The operator's machine (local sources of a put): created on first use."""
        return self.hosts.get(OPERATOR) or self.add(OPERATOR)

    async def connector(self, host: Host) -> Connection:
        """``HostPool``'s connector: a connection to the fake host of that name."""
        await asyncio.sleep(0)
        fake = self.operator if host.name == OPERATOR else self.hosts.get(host.name)
        if fake is None:
            raise Unreachable(host.name, "no such fake host")
        if not fake.up:
            raise Unreachable(host.name, "the fake host is down (connection refused)")
        return FakeConnection(self, fake, host)

    def pool(self, options: TransportOptions | None = None) -> HostPool:
        return HostPool(options or TransportOptions(command_timeout=5.0), connector=self.connector)

    def holders(self, digest: str) -> set[str]:
        """The fake hosts (the operator aside) that store this chunk."""
        return {n for n, h in self.hosts.items() if n != OPERATOR and digest in h.chunks()}

    # -- the data plane -------------------------------------------------------------

    def send(self, fake: FakeHost, spec: dict[str, Any]) -> tuple[bytes, bytes]:
        """The agent's ``send``: (stdout, stderr).  To stdout (pumped) the frames go to
        stdout and the result to stderr; to an SSH hop the chain's results go to stdout."""
        transfer = wire.check_transfer_id(spec.get("transfer"))
        nxt = spec.get("next")
        if not isinstance(nxt, dict):
            raise wire.BadRequest("send needs a next hop")
        mine = _hop(spec.get("name"))
        frames = io.BytesIO()
        for item in spec.get("items") or []:
            digest, size = item.get("h"), int(item["n"])
            if digest is None:
                mine["failed"][f"{item.get('path')}@{item.get('o')}"] = "unhashed item (fake)"
                continue
            wire.check_hash(digest)
            source = item.get("path") or chunks.chunk_path(str(fake.data_dir), digest)
            try:
                with open(source, "rb") as fh:
                    fh.seek(int(item.get("o") or 0))
                    data = fh.read(size)
            except OSError as exc:
                mine["failed"][digest] = f"cannot read {source}: {exc}"
                continue
            if len(data) < size:
                mine["failed"][digest] = f"source {source} is shorter than expected"
                data += b"\0" * (size - len(data))
            frames.write(wire.encode_frame({"h": digest, "n": size}) + data)
            mine["bytes"] += size
            if spec.get("store") and item.get("path"):
                with NoSpaceIsAProblem(mine):
                    if fake._store(digest, data) is None:
                        mine["stored"].append(digest)
        frames.write(wire.END_FRAME)
        if nxt.get("kind") == "stdout":
            doc = {"schema": 1, "seconds": 0.0, "hops": [mine]}
            return frames.getvalue(), wire.json_line(doc).encode()
        downstream, mine["error"] = self._forward(fake, nxt, transfer, frames.getvalue())
        doc = {"schema": 1, "seconds": 0.0, "hops": [mine, *downstream]}
        return wire.json_line(doc).encode(), b""

    def receive(self, fake: FakeHost, transfer: str, data: bytes) -> list[dict[str, Any]]:
        """The agent's ``recv``: store the frames, pass them on; the chain's results from
        here on.  Raises ``Died`` when the host goes down part way."""
        spec = fake.specs.pop(transfer, None)
        if spec is None:
            return [_hop(fake.name, f"no spec for transfer {transfer} (expired or used)")]
        mode, nxt = spec.get("store", "chunks"), spec.get("next")
        mine = _hop(spec.get("name"))
        if mode not in ("chunks", "none"):
            return [_hop(fake.name, f"the fake agent cannot receive store={mode!r}")]
        stream, passed = io.BytesIO(data), bytearray()
        broken, died = None, False
        try:
            while True:
                header = wire.read_frame_line(stream)
                if not header:
                    broken = LOST_STREAM
                    break
                frame = wire.frame_object(header)
                if frame.get("end"):
                    passed += header
                    break
                digest, size = wire.check_hash(frame.get("h")), wire.frame_size(frame)
                block = stream.read(size)
                passed += header + block
                if len(block) < size:
                    broken = (
                        "the stream ended inside a chunk (the sender or a previous hop was lost)"
                    )
                    break
                mine["bytes"] += size
                if mode != "chunks" or mine["error"]:
                    continue
                with NoSpaceIsAProblem(mine):
                    problem = fake._store(digest, block)
                    if problem:
                        mine["failed"][digest] = problem
                    else:
                        mine["stored"].append(digest)
                        if fake.die_after_chunks is not None:
                            fake.die_after_chunks -= 1
                            if fake.die_after_chunks <= 0:
                                fake.die_after_chunks = None
                                fake.go_down()
                                died = True
                                break
        except (ValueError, wire.BadRequest) as exc:
            broken = f"malformed stream: {exc}"
        downstream: list[dict[str, Any]] = []
        if isinstance(nxt, dict):
            downstream, error = self._forward(fake, nxt, transfer, bytes(passed))
            if error and downstream and not downstream[0].get("error"):
                downstream[0]["error"] = error
        if died:
            raise Died(fake.name)
        mine["error"] = broken or mine["error"]
        return [mine, *downstream]

    def _forward(
        self, source: FakeHost, link: dict[str, Any], transfer: str, data: bytes
    ) -> tuple[list[dict[str, Any]], str | None]:
        """What ``ssh ... lepton-recv`` from ``source`` to the link's host does: (its
        results, the error of the connection to it)."""
        name = str(link.get("name"))
        target = next((h for h in self.hosts.values() if h.name == link.get("address")), None)
        lost = "lost the connection to the next hop: [Errno 32] Broken pipe"
        if target is None or not target.up or source.name in target.blocks:
            why = f"ssh exited with status 255: ssh: connect to host {link.get('address')}"
            return [_hop(name, why + " port 22: Connection refused")], lost
        if link.get("host_key") != target.host_key:
            why = "ssh exited with status 255: Host key verification failed."
            return [_hop(name, why)], lost
        # sshd finds the key, and its line's forced command names the receiver's transfer
        # (each host of a chain has an id of its own); the command blanks its key line
        public = _public_key(str(link.get("key")))
        theirs = next((t for t, k in target.keys.items() if public and k == public), None)
        if theirs is None:
            why = "ssh exited with status 255: Permission denied (publickey)."
            return [_hop(name, why)], lost
        del target.keys[theirs]
        try:
            return self.receive(target, theirs, data), None
        except Died:
            why = f"ssh exited with status 255: Connection to {target.name} closed by remote host."
            return [_hop(name, why)], lost


class FakeConnection:
    """A connection to one fake host (see the module's docstring for what it answers)."""

    def __init__(self, cluster: FakeCluster, fake: FakeHost, host: Host) -> None:
        self.host = host.name
        self._cluster = cluster
        self._fake = fake
        self._inventory_host = host
        self._boot = fake.boot

    async def run(
        self, command: str, *, input: bytes | None = None, timeout: float, group: bool = False
    ) -> RunResult:
        await asyncio.sleep(0)
        self._fake.check(self._boot)
        args = self._agent_args(command)
        if args is None:
            present = f"{payload_name()} ] || exit 97" in command and "exec" not in command
            if command.strip() == "true" or present:
                return finished(self.host, command, 0, b"", b"")
            return finished(self.host, command, 127, b"", b"fake host: no shell\n")
        if args[:1] == ["probe"]:
            return finished(self.host, command, 0, _line(self._fake._probe()), b"")
        error = _line({"schema": 1, "error": f"the fake agent has no one-shot {args[:1]}"})
        return finished(self.host, command, 2, error, b"")

    async def start(self, command: str) -> Stream:
        self._fake.check(self._boot)
        if self._agent_args(command) != ["serve"]:
            raise Unreachable(self.host, f"the fake host cannot start {command!r}")
        return _ServeStream(self._fake, self._boot)

    async def open_pipe(self, command: str) -> Pipe:
        self._fake.check(self._boot)
        args = self._agent_args(command) or []
        if args == ["send"]:
            return _Pipe(self._fake, self._boot, lambda spec: self._cluster.send(self._fake, spec))
        if args[:2] == ["recv", "--transfer"] and len(args) == 3:
            return _Pipe(self._fake, self._boot, None, self._cluster, args[2])
        raise Unreachable(self.host, f"the fake host cannot run {command!r}")

    def peer(self) -> PeerInfo | None:
        if self._inventory_host.is_local:
            return None
        return PeerInfo(self._fake.name, 22, "root", self._fake.host_key)

    async def close(self) -> None:
        return None

    def _agent_args(self, command: str) -> list[str] | None:
        """The agent's argv if ``command`` runs the agent (``agent_command``), else None."""
        base = agent_command(dataclasses.replace(self._inventory_host, data_dir=None), [])
        if not command.startswith(base):
            return None
        args = shlex.split(command[len(base) :])
        if "--data-dir" in args:  # the fake host's data dir is its own
            at = args.index("--data-dir")
            del args[at : at + 2]
        return args


class _ServeStream:
    def __init__(self, fake: FakeHost, boot: int) -> None:
        self._fake, self._boot = fake, boot
        self._replies: deque[dict[str, Any] | None] = deque()
        self._out = b""  # the framed replies not read yet

    async def send_line(self, line: bytes) -> None:
        self._fake.check(self._boot)
        header, body = line.split(b"\n", 1)  # a framed request (wire's "messages")
        assert wire.message_header(header + b"\n") == len(body), header
        self._replies.append(self._fake.answer(body))

    async def read_exactly(self, size: int, timeout: float) -> bytes:
        await asyncio.sleep(0)
        self._fake.check(self._boot)
        if not self._out:
            reply = self._replies.popleft()
            if reply is None:  # a stalled op: the caller's timeout, without the wait
                raise TimedOut(self._fake.name, f"the agent did not answer within {timeout:g} s")
            self._out = wire.frame_message(reply) + b"\n"
        data, self._out = self._out[:size], self._out[size:]
        return data

    async def close(self) -> None:
        return None


class _Pipe:
    """A ``send`` (``run`` given) or a ``recv`` (``cluster`` and ``transfer`` given)."""

    def __init__(
        self,
        fake: FakeHost,
        boot: int,
        run: Any,
        cluster: FakeCluster | None = None,
        transfer: str | None = None,
    ) -> None:
        self._fake, self._boot, self._run = fake, boot, run
        self._cluster, self._transfer = cluster, transfer
        self._stdin = bytearray()
        self._stdout, self._stderr, self._at = b"", b"", 0
        self._status: int | None = 0

    async def write(self, data: bytes) -> None:
        self._fake.check(self._boot)
        self._stdin += data

    async def write_eof(self) -> None:
        await asyncio.sleep(0)
        if not self._fake.up or self._boot != self._fake.boot:
            self._status, self._stderr = None, b"Connection closed by remote host\n"
            return
        if self._run is not None:  # send: one request line, then it runs
            spec = json.loads(bytes(self._stdin).split(b"\n", 1)[0])
            try:
                self._stdout, self._stderr = self._run(spec)
            except wire.BadRequest as exc:
                self._stdout, self._status = _line({"schema": 1, "error": str(exc)}), 2
            return
        assert self._cluster is not None and self._transfer is not None
        try:
            hops = self._cluster.receive(self._fake, self._transfer, bytes(self._stdin))
        except Died:
            self._status, self._stderr = None, b"Connection closed by remote host\n"
            return
        self._stdout = _line({"schema": 1, "hops": hops})

    async def read(self, size: int) -> bytes:
        data = self._stdout[self._at : self._at + size]
        self._at += len(data)
        return data

    async def readline(self) -> bytes:
        end = self._stdout.find(b"\n", self._at)
        end = len(self._stdout) if end < 0 else end + 1
        data, self._at = self._stdout[self._at : end], end
        return data

    async def wait(self, timeout: float) -> tuple[int | None, str]:
        return self._status, self._stderr.decode("utf-8", "replace")

    async def kill(self) -> None:
        return None


def _hop(name: object, error: str | None = None) -> dict[str, Any]:
    return {"name": name, "stored": [], "failed": {}, "error": error, "bytes": 0}


def _line(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), default=str).encode() + b"\n"


def _public_key(private: str) -> str | None:
    try:
        key = asyncssh.import_private_key(private)
    except (asyncssh.KeyImportError, ValueError):
        return None
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


def _dir_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"
