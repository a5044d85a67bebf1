"""The embedded state store: one SQLite file in WAL mode, private to the user.

Holds what leptonctl learned and decided (the last probe of each host, the
event log); the truth about what runs on a host stays on that host.  Schema
changes are numbered migrations tracked with ``PRAGMA user_version``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from leptonctl.core.records import (  # re-exported: the store's records
    Event as Event,
)
from leptonctl.core.records import (
    StoredFacts as StoredFacts,
)
from leptonctl.errors import StateError
from leptonctl.store.data import DataTable
from leptonctl.store.jobs import JobTable
from leptonctl.store.links import LinkTable
from leptonctl.store.maintenance import MaintenanceTable
from leptonctl.store.tx import write_transaction

STORE_ID_KEY = "store.id"

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE host_facts (
        host TEXT PRIMARY KEY,
        probed_at REAL NOT NULL,
        facts TEXT NOT NULL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        host TEXT,
        detail TEXT NOT NULL
    );
    CREATE INDEX events_by_kind ON events(kind, at);
    """,
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        spec TEXT NOT NULL,
        state TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        submitted REAL NOT NULL,
        started REAL,
        ended REAL,
        host TEXT,
        allocation TEXT,
        exit_code INTEGER,
        reason TEXT,
        attempt INTEGER NOT NULL DEFAULT 0,
        retries INTEGER NOT NULL DEFAULT 0,
        lost_since REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        peak_rss_bytes INTEGER
    );
    CREATE INDEX jobs_by_state ON jobs(state);
    """,
    """
    CREATE TABLE orphans (
        host TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        since REAL NOT NULL,
        PRIMARY KEY (host, agent_id)
    );
    """,
    """
    CREATE TABLE drained (
        host TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        since REAL NOT NULL
    );
    """,
    # 5: datasets.  A version is 'writing' until every chunk has K replicas, then 'ready'.
    """
    CREATE TABLE datasets (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        state TEXT NOT NULL,
        created REAL NOT NULL,
        completed REAL,
        replicas INTEGER NOT NULL,
        chunk_size INTEGER NOT NULL,
        size INTEGER NOT NULL,
        source TEXT NOT NULL,
        manifest TEXT NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE TABLE dataset_chunks (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        hash TEXT NOT NULL,
        PRIMARY KEY (name, version, hash),
        FOREIGN KEY (name, version) REFERENCES datasets(name, version) ON DELETE CASCADE
    );
    CREATE INDEX dataset_chunks_by_hash ON dataset_chunks(hash);
    CREATE TABLE chunks (
        hash TEXT PRIMARY KEY,
        size INTEGER NOT NULL
    );
    CREATE TABLE replicas (
        hash TEXT NOT NULL,
        host TEXT NOT NULL,
        state TEXT NOT NULL,
        checked REAL NOT NULL,
        PRIMARY KEY (hash, host)
    );
    CREATE INDEX replicas_by_host ON replicas(host);
    """,
    # 6: measured links (net probe).  error is set when src could not reach dst.
    """
    CREATE TABLE links (
        src TEXT NOT NULL,
        dst TEXT NOT NULL,
        measured REAL NOT NULL,
        bandwidth_bps REAL,
        rtt_s REAL,
        error TEXT,
        PRIMARY KEY (src, dst)
    );
    """,
    # 7: maintenance runs, and small named values (e.g. the scrub rotation's cursor).
    """
    CREATE TABLE maintenance_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        started REAL NOT NULL,
        ended REAL,
        playbooks TEXT NOT NULL,
        check_mode INTEGER NOT NULL,
        outcome TEXT,
        exit_code INTEGER,
        steps TEXT NOT NULL DEFAULT '[]'
    );
    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
)


class SqliteStore:
    """A state store on one SQLite file.  Use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
            os.close(fd)
            # Switching a new file to WAL needs an exclusive lock that SQLite does not wait
            # for (no busy handler): two processes opening a fresh store at once would see
            # "database is locked".  A lock file serialises just this opening step.
            with _opening_lock(path):
                self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("PRAGMA foreign_keys=ON")
                self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise StateError(
                f"cannot open the state store {path}: {exc}",
                hint="check the path and its permissions, "
                "or point --state/LEPTONCTL_STATE elsewhere",
            ) from exc

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def transaction(self) -> AbstractContextManager[None]:
        """One write transaction over every table: all the writes inside commit together
        or not at all (a write method called inside joins it)."""
        return write_transaction(self._db, self.path, "write the state store")

    @property
    def maintenance(self) -> MaintenanceTable:
        """Maintenance runs and small named values (same database, same connection)."""
        return MaintenanceTable(self._db, self.path)

    @property
    def jobs(self) -> JobTable:
        """The job queue and history (same database, same connection)."""
        return JobTable(self._db, self.path)

    @property
    def data(self) -> DataTable:
        """Datasets, chunks and replicas (same database, same connection)."""
        return DataTable(self._db, self.path)

    @property
    def links(self) -> LinkTable:
        """Measured network links (same database, same connection)."""
        return LinkTable(self._db, self.path)

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > len(_MIGRATIONS):
            raise StateError(
                f"the state store {self.path} has schema {version}, newer than this leptonctl "
                f"({len(_MIGRATIONS)})",
                hint="upgrade leptonctl, or use another --state file",
            )
        for number in range(version, len(_MIGRATIONS)):
            with write_transaction(self._db, self.path, "migrate the state store"):
                (current,) = self._db.execute("PRAGMA user_version").fetchone()
                if current == number:  # another process may have migrated meanwhile
                    for statement in _split_sql(_MIGRATIONS[number]):
                        self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {number + 1}")

    # -- host facts ---------------------------------------------------------

    def save_facts(self, probed_at: float, documents: Mapping[str, Mapping[str, Any]]) -> None:
        """Store the latest probe of each host, all in one transaction."""
        self._write(
            "INSERT INTO host_facts(host, probed_at, facts) VALUES (?, ?, ?) "
            "ON CONFLICT(host) DO UPDATE SET "
            "probed_at = excluded.probed_at, facts = excluded.facts",
            [(h, probed_at, json.dumps(d, separators=(",", ":"))) for h, d in documents.items()],
        )

    def load_facts(self, hosts: Iterable[str] | None = None) -> dict[str, StoredFacts]:
        rows = self._read("SELECT host, probed_at, facts FROM host_facts", ())
        wanted = None if hosts is None else set(hosts)
        return {
            host: StoredFacts(host, probed_at, json.loads(facts))
            for host, probed_at, facts in rows
            if wanted is None or host in wanted
        }

    # -- drained hosts ------------------------------------------------------

    def drain(self, hosts: Iterable[str], reason: str, now: float) -> None:
        """Nothing new is scheduled on these hosts until ``resume``; running jobs go on."""
        self._write(
            "INSERT INTO drained(host, reason, since) VALUES (?, ?, ?) "
            "ON CONFLICT(host) DO UPDATE SET reason = excluded.reason",
            [(h, reason, now) for h in hosts],
        )

    def resume(self, hosts: Iterable[str]) -> None:
        self._write("DELETE FROM drained WHERE host = ?", [(h,) for h in hosts])

    def drained(self) -> dict[str, tuple[str, float]]:
        """Host -> (reason, since) for every drained host."""
        rows = self._read("SELECT host, reason, since FROM drained", ())
        return {host: (reason, since) for host, reason, since in rows}

    # -- small named values (kv) ---------------------------------------------

    def value(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM kv WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_value(self, key: str, value: str) -> None:
        self._write(
            "INSERT INTO kv(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(key, value)],
        )

    def store_id(self) -> str:
        """This store's random id (32 hex digits), drawn on first use and kept for its life.

        Hosts keep one set of chunk refs per store id (``DATA/refs/<id>/``): a chunk is deleted
        only when no store references it.  A copy of the database file shares the id."""
        with self.transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO kv(key, value) VALUES (?, ?)",
                (STORE_ID_KEY, secrets.token_hex(16)),
            )
            (value,) = self._db.execute(
                "SELECT value FROM kv WHERE key = ?", (STORE_ID_KEY,)
            ).fetchone()
        if not re.fullmatch(r"[0-9a-f]{32}", str(value)):
            raise StateError(f"the store id in {self.path} is malformed: {str(value)!r}")
        return str(value)

    # -- events -------------------------------------------------------------

    def record_event(
        self, at: float, kind: str, host: str | None, detail: Mapping[str, Any]
    ) -> None:
        self._write(
            "INSERT INTO events(at, kind, host, detail) VALUES (?, ?, ?, ?)",
            [(at, kind, host, json.dumps(detail, separators=(",", ":")))],
        )

    def events(self, kind: str | None = None) -> list[Event]:
        if kind is None:
            rows = self._read("SELECT at, kind, host, detail FROM events ORDER BY id", ())
        else:
            rows = self._read(
                "SELECT at, kind, host, detail FROM events WHERE kind = ? ORDER BY id", (kind,)
            )
        return [Event(at, k, host, json.loads(detail)) for at, k, host, detail in rows]

    # -- plumbing -----------------------------------------------------------

    def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """One transaction for all ``rows`` (or a part of the caller's)."""
        with self.transaction():
            self._db.executemany(sql, rows)

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            return list(self._db.execute(sql, params))
        except sqlite3.Error as exc:
            raise StateError(f"cannot read the state store {self.path}: {exc}") from exc


@contextmanager
def _opening_lock(path: Path) -> Iterator[None]:
    fd = os.open(path.with_name(path.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
