"""One fake host: what its agent answers, over a chunk store of its own.

A ``FakeHost`` answers ``serve`` request lines the way ``lepton_agent``'s serve loop does,
through the real registry (``wire.OPS``) and, wherever the handler only touches the
host's data directory, the real handler (``lepton_agent.ops.handle``).  The rest is
answered here: ``grant``/``revoke`` (the real ones edit the user's ``authorized_keys``),
the jobs (the real ones start supervisor processes; here a job is a record the test
moves on), ``probe`` (a synthetic document from the host's declared size) and
``chunk-have`` (the real one, with ``free_bytes`` from the host's declared room).
See ``fake_agent`` for the connections and the data plane.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leptonctl.errors import Unreachable


def _agent(module: str) -> Any:
    try:  # the agent bundled in an installed wheel
        return importlib.import_module(f"leptonctl._agent.lepton_agent.{module}")
    except ModuleNotFoundError:  # a checkout
        return importlib.import_module(f"agent.lepton_agent.{module}")


wire: Any = _agent("wire")
_ops: Any = _agent("ops")
chunks: Any = _agent("chunks")
_jobstate: Any = _agent("jobstate")

GIB = 1 << 30
ENOSPC = "cannot store: [Errno 28] No space left on device"


class Died(Exception):
    """The receiving host went down in the middle of a stream."""


@dataclass
class FakeJob:
    id: str
    spec: dict[str, Any]
    state: str = "RUNNING"
    started: float = field(default_factory=time.time)
    ended: float | None = None
    exit_code: int | None = None
    reason: str | None = None
    log: str = ""

    def entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = dict.fromkeys(_jobstate.JOB_FIELDS)
        entry.update(
            id=self.id,
            state=self.state,
            pid=4242,
            pgid=4242,
            started=self.started,
            ended=self.ended,
            exit_code=self.exit_code,
            reason=self.reason,
            log_bytes=len(self.log.encode()),
        )
        return entry


class FakeHost:
    """One fake host: a chunk store on disk, jobs in memory, and the failures to inject."""

    def __init__(
        self,
        name: str,
        data_dir: Path,
        *,
        free_bytes: int = 10 * GIB,
        cpus: int = 8,
        memory_bytes: int = 32 * GIB,
    ) -> None:
        self.name = name
        self.data_dir = data_dir
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.free_bytes = free_bytes  # room for chunks, enforced on every store
        self.claims_free_bytes: int | None = None  # what chunk-have reports instead
        self.die_after_chunks: int | None = None  # go down after storing this many more
        self.refuse: dict[str, str] = {}  # op -> the error it is answered with
        self.stall: set[str] = set()  # ops never answered (the caller times out)
        self.blocks: set[str] = set()  # hosts whose SSH connections to here are refused
        self.cpus = cpus
        self.memory_bytes = memory_bytes
        self.host_key = "ssh-ed25519 " + secrets.token_urlsafe(32).replace("-", "A")
        self.jobs: dict[str, FakeJob] = {}
        self.specs: dict[str, dict[str, Any]] = {}  # transfer -> its granted spec
        self.keys: dict[str, str] = {}  # transfer -> the public key allowed to recv it
        self.up = True
        self.boot = 0  # bumped when it goes down: connections from before are dead

    # -- state, for tests ---------------------------------------------------------

    def chunks(self) -> dict[str, int]:
        """Every chunk stored here: hash -> size."""
        found: dict[str, int] = chunks.stored_chunks(str(self.data_dir))
        return found

    def add_chunk(self, data: bytes) -> str:
        digest = sha256(data)
        problem = self._store(digest, data)
        assert problem is None, problem
        return digest

    def corrupt(self, digest: str) -> None:
        """Flip the first byte of a stored chunk (its name no longer matches its bytes)."""
        path = Path(chunks.chunk_path(str(self.data_dir), digest))
        data = bytearray(path.read_bytes())
        data[0] ^= 0xFF
        path.chmod(0o600)
        path.write_bytes(bytes(data))

    def remove(self, digest: str) -> None:
        Path(chunks.chunk_path(str(self.data_dir), digest)).unlink()

    def go_down(self) -> None:
        """Unreachable: new connections are refused, open ones are broken.  Jobs run on."""
        self.up = False
        self.boot += 1

    def come_up(self, *, rebooted: bool = False) -> None:
        """Reachable again; after a reboot its running jobs are LOST."""
        self.up = True
        if rebooted:
            for job in self.jobs.values():
                if job.state in _jobstate.JOB_LIVE:
                    job.state, job.reason = "LOST", "the host rebooted (fake)"

    def end_job(self, job_id: str, exit_code: int = 0) -> None:
        job = self.jobs[job_id]
        job.state = "COMPLETED" if exit_code == 0 else "FAILED"
        job.exit_code, job.ended = exit_code, time.time()

    # -- the agent ------------------------------------------------------------------

    def check(self, boot: int) -> None:
        if not self.up or boot != self.boot:
            raise Unreachable(self.name, "the fake host is down (connection lost)")

    def used_bytes(self) -> int:
        return sum(self.chunks().values())

    def answer(self, line: bytes) -> dict[str, Any] | None:
        """One serve request line -> its reply, as the agent's serve loop answers it (None:
        a stalled op, never answered)."""
        try:
            request = json.loads(line)
        except ValueError as exc:
            return {"schema": 1, "error": f"invalid JSON request: {exc}"}
        if not isinstance(request, dict):
            return {"schema": 1, "error": "request must be a JSON object"}
        op = request.get("op")
        if op in self.stall:
            return None
        own = {
            "probe": self._probe,
            "grant": self._grant,
            "revoke": self._revoke,
            "chunk-have": self._chunk_have,
            "job-start": self._job_start,
            "job-status": self._job_status,
            "job-kill": self._job_kill,
            "job-log": self._job_log,
            "job-rm": self._job_rm,
        }
        try:
            if isinstance(op, str) and op in self.refuse:
                reply: dict[str, Any] = {"schema": 1, "error": self.refuse[op]}
            elif isinstance(op, str) and op in own:
                reply = own[op](wire.OPS[op].from_wire(request))
            else:
                reply = _ops.handle(request, _ops.Context("/", str(self.data_dir)))
        except wire.BadRequest as exc:
            reply = {"schema": 1, "error": str(exc)}
        except Exception as exc:
            reply = {"schema": 1, "error": f"{op} failed: {type(exc).__name__}: {exc}"}
        if "id" in request:
            reply.setdefault("id", request["id"])
        return reply

    def _probe(self, request: Any = None) -> dict[str, Any]:
        return {
            "schema": 1,
            "agent_version": wire.AGENT_VERSION,
            "time": time.time(),
            "probe_ms": 0.1,
            "hostname": self.name,
            "os": {"system": "Linux", "release": "fake", "machine": "x86_64"},
            "python": {"version": "3.11.0"},
            "cpu": {
                "model": "fake",
                "cores": self.cpus,
                "threads": self.cpus,
                "usable_threads": self.cpus,
                "load": [0.0, 0.0, 0.0],
            },
            "memory": {"total_bytes": self.memory_bytes, "available_bytes": self.memory_bytes},
            "disks": [],
            "gpus": [],
            "fpgas": [],
            "unavailable": {},
        }

    def _grant(self, request: Any) -> dict[str, Any]:
        transfer = wire.check_transfer_id(request.transfer)
        if not isinstance(request.spec, dict):
            raise wire.BadRequest("grant needs a spec object")
        pubkey = request.pubkey
        if pubkey is not None and not (
            isinstance(pubkey, str) and re.fullmatch(r"ssh-ed25519 [A-Za-z0-9+/=]+", pubkey)
        ):
            raise wire.BadRequest("pubkey must be one 'ssh-ed25519 BASE64' key")
        self.specs[transfer] = dict(request.spec)
        if pubkey is not None:
            self.keys[transfer] = pubkey
        return {"schema": 1, "granted": transfer, "key": pubkey is not None}

    def _revoke(self, request: Any) -> dict[str, Any]:
        transfer = wire.check_transfer_id(request.transfer)
        self.specs.pop(transfer, None)
        removed = 1 if self.keys.pop(transfer, None) else 0
        return {"schema": 1, "revoked": transfer, "key_lines_removed": removed,
                "stale_files_removed": 0}  # fmt: skip

    def _chunk_have(self, request: Any) -> dict[str, Any]:
        hashes = wire.check_hashes(request.hashes, allow_all=True)
        reply: dict[str, Any] = chunks.chunk_have(str(self.data_dir), hashes)
        free = max(0, self.free_bytes - self.used_bytes())
        reply["free_bytes"] = free if self.claims_free_bytes is None else self.claims_free_bytes
        return reply

    def _job_start(self, request: Any) -> dict[str, Any]:
        spec = _jobstate.normalize_spec(request.spec)
        job = self.jobs.get(spec["id"])
        created = job is None
        if job is None:
            job = self.jobs[spec["id"]] = FakeJob(spec["id"], spec)
        return {"schema": 1, "created": created, **job.entry()}

    def _job_status(self, request: Any) -> dict[str, Any]:
        ids = list(self.jobs) if request.ids is None else request.ids
        if not isinstance(ids, list):
            raise wire.BadRequest("ids must be a list of job ids or null")
        entries = []
        for job_id in ids:
            job = self.jobs.get(wire.check_job_id(job_id))
            if job is None:
                entry: dict[str, Any] = dict.fromkeys(_jobstate.JOB_FIELDS)
                entry.update(id=job_id, state="UNKNOWN", reason="no such job", log_bytes=0)
                entries.append(entry)
            else:
                entries.append(job.entry())
        return {"schema": 1, "jobs": entries}

    def _job_kill(self, request: Any) -> dict[str, Any]:
        job = self.jobs.get(wire.check_job_id(request.id))
        if job is None or job.state not in (*_jobstate.JOB_LIVE, "LOST"):
            entry = job.entry() if job else {"id": request.id, "state": "UNKNOWN"}
            return {"schema": 1, "cancel_requested": False, **entry}
        job.state, job.ended, job.reason = "CANCELLED", time.time(), "cancelled by job-kill"
        return {"schema": 1, "cancel_requested": True, **job.entry()}

    def _job_log(self, request: Any) -> dict[str, Any]:
        job = self.jobs.get(wire.check_job_id(request.id))
        data = (job.log if job else "")[request.offset :]
        state = job.state if job else "UNKNOWN"
        return {"schema": 1, "id": request.id, "offset": request.offset, "data": data,
                "next_offset": request.offset + len(data.encode()),
                "eof": state not in _jobstate.JOB_LIVE, "state": state}  # fmt: skip

    def _job_rm(self, request: Any) -> dict[str, Any]:
        job = self.jobs.get(wire.check_job_id(request.id))
        reply: dict[str, Any] = {"schema": 1, "id": request.id, "removed": False}
        if job is None:
            return {**reply, "state": "UNKNOWN"}
        if job.state in _jobstate.JOB_LIVE:
            return {**reply, "state": job.state, "error": f"job {job.id} is {job.state}"}
        del self.jobs[job.id]
        return {**reply, "state": job.state, "removed": True}

    def _store(self, digest: str, data: bytes) -> str | None:
        """Store one chunk with the agent's own sink: None, or why it was not stored."""
        if self.used_bytes() + len(data) > self.free_bytes:
            raise OSError(28, "No space left on device")
        sink = chunks.ChunkSink(str(self.data_dir), digest)
        try:
            sink.write(data)
            problem: str | None = sink.commit()
        finally:
            sink.abort()
        return problem


class NoSpaceIsAProblem:
    """A store that hits a full disk marks the hop's error, as the agent's does."""

    def __init__(self, mine: dict[str, Any]) -> None:
        self._mine = mine

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: object, tb: object) -> bool:
        if isinstance(exc, OSError):
            self._mine["error"] = ENOSPC if exc.errno == 28 else f"cannot store: {exc}"
            return True
        return False


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
