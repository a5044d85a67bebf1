"""The job queue and history, in the state store's database (SQLite or PostgreSQL).

Every change that allocates devices happens inside ``JobTable.exclusive()`` (one
serialised write transaction, see ``leptonctl.store.db``): two terminals reconciling
at once run one after the other, so the second one sees the first one's allocations.
The database enforces it too: each device (GPU, FPGA) a STARTING or RUNNING job holds
is a row of ``job_devices`` whose key is (host, device), so a second allocation of a
held device fails with ``DeviceTaken`` and its whole transaction rolls back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from leptonctl.core.records import (  # re-exported: the store's records
    ACTIVE as ACTIVE,
)
from leptonctl.core.records import (
    FINAL as FINAL,
)
from leptonctl.core.records import (
    JobRecord as JobRecord,
)
from leptonctl.errors import StateError
from leptonctl.store.actor import Actor
from leptonctl.store.claims import claimant_is_dead
from leptonctl.store.db import Db

_COLUMNS = (
    "id, name, spec, state, priority, submitted, started, ended, host, allocation, exit_code, "
    "reason, attempt, retries, lost_since, cancel_requested, peak_rss_bytes, submitted_by, "
    "submitted_from"
)
_HOLDING = ("STARTING", "RUNNING")  # the states in which a job holds its devices
_UPDATABLE = {
    "state", "started", "ended", "host", "allocation", "exit_code", "reason", "attempt",
    "lost_since", "cancel_requested", "peak_rss_bytes",
}  # fmt: skip


class JobTable:
    def __init__(self, db: Db, actor: Actor, clock_skew: float = 0.0) -> None:
        self._db = db
        self._actor = actor
        self._skew = clock_skew  # the database's clock minus ours (whole seconds)

    def exclusive(self) -> AbstractContextManager[None]:
        """One write transaction (joins the caller's when one is open); everything inside
        sees and changes one consistent queue."""
        return self._db.transaction("update the job queue")

    def insert(
        self, name: str, spec: Mapping[str, Any], priority: int, retries: int, now: float
    ) -> int:
        """Insert one PENDING job inside the caller's ``exclusive()``; returns its id.  The
        job records who submitted it from where (this store's actor)."""
        with self.exclusive():
            return self._db.insert_id(
                "INSERT INTO jobs(name, spec, state, priority, submitted, retries, "
                "submitted_by, submitted_from) VALUES (?, ?, 'PENDING', ?, ?, ?, ?, ?)",
                (name, json.dumps(spec), priority, now, retries, self._actor.user,
                 self._actor.machine),
            )  # fmt: skip

    def add(self, jobs: Sequence[tuple[str, Mapping[str, Any], int, int]], now: float) -> list[int]:
        """Insert (name, spec, priority, retries) rows as PENDING, all or none."""
        with self.exclusive():
            return [self.insert(n, spec, prio, retries, now) for n, spec, prio, retries in jobs]

    def update(self, job_id: int, **fields: Any) -> None:
        """Change some columns of one job (call inside ``exclusive()`` or on its own)."""
        self.update_if(job_id, None, **fields)

    def update_if(self, job_id: int, expect: tuple[str, int] | None, **fields: Any) -> bool:
        """Compare-and-set: change the job only while it is still in state ``expect[0]`` at
        attempt ``expect[1]`` (or always, with ``expect=None``).  True if a row changed.

        This is how a slow writer (a start that took seconds, a cancel) never overwrites
        what another leptonctl process decided meanwhile."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        if "allocation" in fields and fields["allocation"] is not None:
            fields["allocation"] = json.dumps(fields["allocation"])
        assignments = ", ".join(f"{name} = ?" for name in fields)
        sql = f"UPDATE jobs SET {assignments} WHERE id = ?"  # noqa: S608 - names are whitelisted
        params: tuple[Any, ...] = (*fields.values(), job_id)
        if expect is not None:
            sql += " AND state = ? AND attempt = ?"
            params = (*params, *expect)
        with self._db.transaction(f"update job {job_id}"):
            changed = self._db.execute(sql, params).rowcount > 0
            if changed and ({"state", "host", "allocation"} & set(fields)):
                self._hold_devices(job_id)
            return changed

    def _hold_devices(self, job_id: int) -> None:
        """Make the job's ``job_devices`` rows match its state and allocation (inside the
        write transaction that changed them): its devices while it is STARTING or RUNNING,
        none otherwise.  A device another active job holds fails the transaction."""
        self._db.execute("DELETE FROM job_devices WHERE job_id = ?", (job_id,))
        rows = self._db.read("SELECT state, host, allocation FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            return
        state, host, allocation = rows[0]
        if state not in _HOLDING or host is None or not allocation:
            return
        devices = held_devices(json.loads(allocation))
        self._db.executemany(
            "INSERT INTO job_devices(host, device, job_id) VALUES (?, ?, ?)",
            [(host, device, job_id) for device in devices],
        )

    def hold_active_devices(self) -> int:
        """Fill ``job_devices`` from the STARTING and RUNNING jobs (after the migration that
        made the table, for jobs that were running then).  A device two jobs name is kept
        by the older job.  Returns the rows written."""
        marks = ", ".join("?" for _ in _HOLDING)
        rows = self._db.read(
            f"SELECT id, host, allocation FROM jobs WHERE state IN ({marks}) "  # noqa: S608
            "AND host IS NOT NULL AND allocation IS NOT NULL ORDER BY id",
            _HOLDING,
        )
        held: dict[tuple[str, str], int] = {}
        for job_id, host, allocation in rows:
            try:
                devices = held_devices(json.loads(allocation))
            except (ValueError, StateError, AttributeError):
                continue  # an unreadable allocation holds nothing
            for device in devices:
                held.setdefault((str(host), device), int(job_id))
        with self._db.transaction("record the devices running jobs hold"):
            self._db.executemany(
                "INSERT INTO job_devices(host, device, job_id) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                [(h, d, j) for (h, d), j in held.items()],
            )
        return len(held)

    def device_holders(self) -> dict[tuple[str, str], int]:
        """(host, device) -> the id of the active job that holds it."""
        rows = self._db.read("SELECT host, device, job_id FROM job_devices", ())
        return {(str(h), str(d)): int(j) for h, d, j in rows}

    def add_orphan(self, host: str, agent_id: str, now: float) -> None:
        """A job attempt given up on while its host was unreachable: kill it if it comes back.
        Call inside ``exclusive()``."""
        with self._db.transaction("record an orphan"):
            self._db.execute(
                "INSERT INTO orphans(host, agent_id, since) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (host, agent_id, now),
            )

    def orphans(self) -> dict[str, list[str]]:
        rows = self._db.read("SELECT host, agent_id FROM orphans ORDER BY since, host, agent_id")
        out: dict[str, list[str]] = {}
        for host, agent_id in rows:
            out.setdefault(host, []).append(agent_id)
        return out

    def forget_orphans(self, host: str, agent_ids: Iterable[str]) -> None:
        """Drop orphans (inside the caller's ``exclusive()``, or in a transaction of its own)."""
        rows = [(host, a) for a in agent_ids]
        if not rows:
            return
        with self.exclusive():
            self._db.executemany("DELETE FROM orphans WHERE host = ? AND agent_id = ?", rows)

    # -- start claims: who stages a job's inputs and starts it ---------------------------
    #
    # A job whose inputs must be copied to its host before it starts is started by one
    # leptonctl process at a time: the one holding its claim (owner, lease end), kept in the
    # kv table as ``start-claim:<job id>``.  The owner renews the lease while it stages; a
    # claim whose lease ran out (its owner was killed) may be taken over.  Lease ends are
    # kept on the database's clock (``clock_skew``: terminals on several machines sharing a
    # PostgreSQL store judge one lease alike however far their own clocks drift apart).

    def claim_start(self, job_id: int, owner: str, now: float, lease: float) -> str | None:
        """Take or renew the claim on starting ``job_id``; None if taken, else the owner
        that holds it.  Call inside ``exclusive()``."""
        held = self.start_claim(job_id, now)
        if held is not None and held[0] != owner:
            return held[0]
        value = json.dumps({"owner": owner, "until": now + self._skew + lease})
        with self._db.transaction("take a start claim"):
            self._db.execute(
                "INSERT INTO kv(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (_claim(job_id), value),
            )
        return None

    def start_claim(self, job_id: int, now: float) -> tuple[str, float] | None:
        """(owner, lease end) of a live claim on starting ``job_id``, or None."""
        found = self._db.execute("SELECT value FROM kv WHERE key = ?", (_claim(job_id),)).fetchone()
        if found is None:
            return None
        try:
            value = json.loads(found[0])
            owner, until = str(value["owner"]), float(value["until"])
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: as good as expired
        if claimant_is_dead(owner):
            return None  # its process died on this machine: as good as expired
        return (owner, until - self._skew) if until > now + self._skew else None

    def release_start(self, job_id: int, owner: str) -> None:
        """Drop ``owner``'s claim on starting ``job_id`` (no-op if another holds it now)."""
        with self.exclusive():
            held = self.start_claim(job_id, float("-inf"))
            if held is not None and held[0] == owner:
                self._db.execute("DELETE FROM kv WHERE key = ?", (_claim(job_id),))

    def get(self, job_id: int) -> JobRecord | None:
        rows = self._select("WHERE id = ?", (job_id,))
        return rows[0] if rows else None

    def in_states(self, states: Iterable[str]) -> list[JobRecord]:
        wanted = tuple(states)
        marks = ", ".join("?" for _ in wanted)
        return self._select(f"WHERE state IN ({marks}) ORDER BY id", wanted)

    def all(self) -> list[JobRecord]:
        return self._select("ORDER BY id", ())

    def states_of(self, ids: Iterable[int]) -> dict[int, str]:
        wanted = tuple(ids)
        if not wanted:
            return {}
        marks = ", ".join("?" for _ in wanted)
        rows = self._db.read(f"SELECT id, state FROM jobs WHERE id IN ({marks})", wanted)  # noqa: S608
        return {int(i): str(s) for i, s in rows}

    def _select(self, where: str, params: tuple[Any, ...]) -> list[JobRecord]:
        rows = self._db.read(f"SELECT {_COLUMNS} FROM jobs {where}", params, "read the job queue")  # noqa: S608
        return [_record(row) for row in rows]


def _claim(job_id: int) -> str:
    return f"start-claim:{int(job_id)}"


def held_devices(allocation: Mapping[str, Any]) -> list[str]:
    """The devices an allocation holds, as ``job_devices`` names them: ``gpu:<id>`` (a
    GPU device's id: ``gpu:3``, or ``gpu:3/mig1`` for a MIG device), ``fpga:<id>``,
    ``cpu:<id>`` (the CPUs it is pinned to).  Memory, and the CPUs of a host whose CPUs are
    not known (no pinning), are counted, not held one by one.  An allocation recorded
    before GPU devices had ids holds its GPUs by index (the same names)."""
    gpu_devices = allocation.get("gpu_devices")
    if isinstance(gpu_devices, list) and gpu_devices:
        devices = [f"gpu:{d['id']}" for d in gpu_devices]
    else:
        devices = [f"gpu:{g}" for g in allocation.get("gpus") or ()]
    devices += [f"fpga:{f}" for f in allocation.get("fpgas") or ()]
    devices += [f"cpu:{c}" for c in allocation.get("cores") or ()]
    if len(set(devices)) != len(devices):
        raise StateError(f"an allocation names one device twice: {sorted(devices)}")
    return devices


def _record(row: tuple[Any, ...]) -> JobRecord:
    (id_, name, spec, state, priority, submitted, started, ended, host, allocation, exit_code,
     reason, attempt, retries, lost_since, cancel, peak_rss, by, origin) = row  # fmt: skip
    return JobRecord(
        id=int(id_),
        name=name,
        spec=json.loads(spec),
        state=state,
        priority=int(priority),
        submitted=float(submitted),
        started=started,
        ended=ended,
        host=host,
        allocation=json.loads(allocation) if allocation else None,
        exit_code=exit_code,
        reason=reason,
        attempt=int(attempt),
        retries=int(retries),
        lost_since=lost_since,
        cancel_requested=bool(cancel),
        peak_rss_bytes=peak_rss,
        submitted_by=by,
        submitted_from=origin,
    )
