"""The job queue and history, in the state store's SQLite database.

Every change that allocates devices happens inside ``JobTable.exclusive()``
(``BEGIN IMMEDIATE``): two terminals reconciling at once are serialised by
SQLite, so the second one sees the first one's allocations and can never
double-book a device.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
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
from leptonctl.store.tx import write_transaction

_COLUMNS = (
    "id, name, spec, state, priority, submitted, started, ended, host, allocation, exit_code, "
    "reason, attempt, retries, lost_since, cancel_requested, peak_rss_bytes"
)
_UPDATABLE = {
    "state", "started", "ended", "host", "allocation", "exit_code", "reason", "attempt",
    "lost_since", "cancel_requested", "peak_rss_bytes",
}  # fmt: skip


class JobTable:
    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self._path = path

    def exclusive(self) -> AbstractContextManager[None]:
        """One write transaction (joins the caller's when one is open); everything inside
        sees and changes one consistent queue."""
        return write_transaction(self._db, self._path, "update the job queue")

    def insert(
        self, name: str, spec: Mapping[str, Any], priority: int, retries: int, now: float
    ) -> int:
        """Insert one PENDING job inside the caller's ``exclusive()``; returns its id."""
        cursor = self._db.execute(
            "INSERT INTO jobs(name, spec, state, priority, submitted, retries) "
            "VALUES (?, ?, 'PENDING', ?, ?, ?)",
            (name, json.dumps(spec), priority, now, retries),
        )
        return int(cursor.lastrowid or 0)

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
        try:
            with self.exclusive():
                return self._db.execute(sql, params).rowcount > 0
        except sqlite3.Error as exc:
            raise StateError(f"cannot update job {job_id} in {self._path}: {exc}") from exc

    def add_orphan(self, host: str, agent_id: str, now: float) -> None:
        """A job attempt given up on while its host was unreachable: kill it if it comes back.
        Call inside ``exclusive()``."""
        try:
            self._db.execute(
                "INSERT OR IGNORE INTO orphans(host, agent_id, since) VALUES (?, ?, ?)",
                (host, agent_id, now),
            )
        except sqlite3.Error as exc:
            raise StateError(f"cannot record an orphan in {self._path}: {exc}") from exc

    def orphans(self) -> dict[str, list[str]]:
        try:
            rows = self._db.execute("SELECT host, agent_id FROM orphans ORDER BY since").fetchall()
        except sqlite3.Error as exc:
            raise StateError(f"cannot read the orphan list in {self._path}: {exc}") from exc
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
    # claim whose lease ran out (its owner was killed) may be taken over.

    def claim_start(self, job_id: int, owner: str, now: float, lease: float) -> str | None:
        """Take or renew the claim on starting ``job_id``; None if taken, else the owner
        that holds it.  Call inside ``exclusive()``."""
        held = self.start_claim(job_id, now)
        if held is not None and held[0] != owner:
            return held[0]
        value = json.dumps({"owner": owner, "until": now + lease})
        self._write("INSERT OR REPLACE INTO kv(key, value) VALUES (?, ?)", (_claim(job_id), value))
        return None

    def start_claim(self, job_id: int, now: float) -> tuple[str, float] | None:
        """(owner, lease end) of a live claim on starting ``job_id``, or None."""
        try:
            row = self._db.execute("SELECT value FROM kv WHERE key = ?", (_claim(job_id),))
            found = row.fetchone()
        except sqlite3.Error as exc:
            raise StateError(f"cannot read a start claim in {self._path}: {exc}") from exc
        if found is None:
            return None
        try:
            value = json.loads(found[0])
            owner, until = str(value["owner"]), float(value["until"])
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: as good as expired
        return (owner, until) if until > now else None

    def release_start(self, job_id: int, owner: str) -> None:
        """Drop ``owner``'s claim on starting ``job_id`` (no-op if another holds it now)."""
        with self.exclusive():
            held = self.start_claim(job_id, float("-inf"))
            if held is not None and held[0] == owner:
                self._write("DELETE FROM kv WHERE key = ?", (_claim(job_id),))

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        try:
            self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise StateError(f"cannot update a start claim in {self._path}: {exc}") from exc

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
        rows = self._db.execute(f"SELECT id, state FROM jobs WHERE id IN ({marks})", wanted)  # noqa: S608
        return {int(i): str(s) for i, s in rows}

    def _select(self, where: str, params: tuple[Any, ...]) -> list[JobRecord]:
        try:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs {where}", params).fetchall()  # noqa: S608
        except sqlite3.Error as exc:
            raise StateError(f"cannot read the job queue in {self._path}: {exc}") from exc
        return [_record(row) for row in rows]


def _claim(job_id: int) -> str:
    return f"start-claim:{int(job_id)}"


def _record(row: tuple[Any, ...]) -> JobRecord:
    (id_, name, spec, state, priority, submitted, started, ended, host, allocation, exit_code,
     reason, attempt, retries, lost_since, cancel_requested, peak_rss) = row  # fmt: skip
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
        cancel_requested=bool(cancel_requested),
        peak_rss_bytes=peak_rss,
    )
