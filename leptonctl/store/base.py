"""What both backends share: the tables, host facts, drains, small values and events,
written once over a ``Db`` (``leptonctl.store.db``).

A backend subclasses ``TableStore`` with how it connects, migrates and locks
(``SqliteStore``, ``PostgresStore``).
"""

from __future__ import annotations

import json
import re
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from leptonctl.core.records import Event, StoredFacts
from leptonctl.errors import StateError
from leptonctl.store.actor import Actor, current_actor
from leptonctl.store.data import DataTable
from leptonctl.store.db import Db
from leptonctl.store.jobs import JobTable
from leptonctl.store.links import LinkTable
from leptonctl.store.maintenance import MaintenanceTable
from leptonctl.store.schema import DEVICES_STEP

STORE_ID_KEY = "store.id"
LOCK_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")


class TableStore(ABC):
    """A state store over one database connection.  Use as a context manager."""

    _db: Db
    actor: Actor
    clock_skew: float = 0.0  # the database's clock minus ours, whole seconds (PostgreSQL)

    def _attach(self, db: Db, actor: Actor | None) -> None:
        self._db = db
        self.actor = actor or current_actor()

    def __enter__(self) -> TableStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def where(self) -> str:
        """The store in messages: a file, or a URL without its password."""
        return self._db.where

    @property
    def db(self) -> Db:
        """The connection (for ``state copy``/``export``/``import`` only)."""
        return self._db

    def close(self) -> None:
        self._db.close()

    @abstractmethod
    def lock(
        self, name: str, *, shared: bool = False, wait: bool = True
    ) -> AbstractContextManager[bool]:
        """Hold the store-wide lock ``name`` for the block: every leptonctl using this
        store, on any machine, sees it.  Yields True when held, False when ``wait`` is
        off and another holds it."""

    @abstractmethod
    def schema_version(self) -> int:
        """How many migrations the database has applied."""

    @abstractmethod
    def migrate(self, apply: bool = True) -> tuple[int, int]:
        """Apply the migrations the database lacks; (version before, after).  A database
        newer than this program is refused; ``apply=False`` only checks."""

    def _migrated(self, before: int, after: int) -> None:
        """What a migration needs beyond SQL (both backends call it after migrating)."""
        if before < DEVICES_STEP <= after:
            self.jobs.hold_active_devices()

    def transaction(self) -> AbstractContextManager[None]:
        """One write transaction over every table: all the writes inside commit together
        or not at all (a write method called inside joins it)."""
        return self._db.transaction("write the state store")

    @property
    def maintenance(self) -> MaintenanceTable:
        """Maintenance runs (same database, same connection)."""
        return MaintenanceTable(self._db)

    @property
    def jobs(self) -> JobTable:
        """The job queue and history (same database, same connection)."""
        return JobTable(self._db, self.actor, self.clock_skew)

    @property
    def data(self) -> DataTable:
        """Datasets, chunks and replicas (same database, same connection)."""
        return DataTable(self._db, self.actor)

    @property
    def links(self) -> LinkTable:
        """Measured network links (same database, same connection)."""
        return LinkTable(self._db)

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
        rows = self._db.read("SELECT host, probed_at, facts FROM host_facts ORDER BY host")
        wanted = None if hosts is None else set(hosts)
        return {
            host: StoredFacts(host, probed_at, json.loads(facts))
            for host, probed_at, facts in rows
            if wanted is None or host in wanted
        }

    # -- drained hosts ------------------------------------------------------

    def drain(self, hosts: Iterable[str], reason: str, now: float) -> None:
        """Nothing new is scheduled on these hosts until ``resume``; running jobs go on.
        Each drain is also an event (``host_drained``) that records who drained it."""
        names = list(hosts)
        with self.transaction():
            self._write(
                "INSERT INTO drained(host, reason, since) VALUES (?, ?, ?) "
                "ON CONFLICT(host) DO UPDATE SET reason = excluded.reason",
                [(h, reason, now) for h in names],
            )
            for host in names:
                self.record_event(now, "host_drained", host, {"reason": reason})

    def resume(self, hosts: Iterable[str], now: float | None = None) -> None:
        """Schedule on these hosts again (an event ``host_resumed`` for each drained one)."""
        names = list(hosts)
        with self.transaction():
            drained = self.drained()
            self._write("DELETE FROM drained WHERE host = ?", [(h,) for h in names])
            at = time.time() if now is None else now
            for host in names:
                if host in drained:
                    self.record_event(at, "host_resumed", host, {})

    def drained(self) -> dict[str, tuple[str, float]]:
        """Host -> (reason, since) for every drained host."""
        rows = self._db.read("SELECT host, reason, since FROM drained ORDER BY host")
        return {host: (reason, since) for host, reason, since in rows}

    # -- small named values (kv) ---------------------------------------------

    def value(self, key: str) -> str | None:
        rows = self._db.read("SELECT value FROM kv WHERE key = ?", (key,))
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
        only when no store references it.  A copy of the store (a copied file, ``state copy``)
        shares the id."""
        with self.transaction():
            self._db.execute(
                "INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (STORE_ID_KEY, secrets.token_hex(16)),
            )
            ((value,),) = self._db.read("SELECT value FROM kv WHERE key = ?", (STORE_ID_KEY,))
        if not re.fullmatch(r"[0-9a-f]{32}", str(value)):
            raise StateError(f"the store id in {self.where} is malformed: {str(value)!r}")
        return str(value)

    # -- events -------------------------------------------------------------

    def record_event(
        self, at: float, kind: str, host: str | None, detail: Mapping[str, Any]
    ) -> None:
        """Log an event; it records this store's actor (who did it, from where)."""
        self._write(
            "INSERT INTO events(at, kind, host, detail, actor) VALUES (?, ?, ?, ?, ?)",
            [(at, kind, host, json.dumps(detail, separators=(",", ":")), str(self.actor))],
        )

    def events(self, kind: str | None = None) -> list[Event]:
        select = "SELECT at, kind, host, detail, actor FROM events"
        if kind is None:
            rows = self._db.read(f"{select} ORDER BY id")
        else:
            rows = self._db.read(f"{select} WHERE kind = ? ORDER BY id", (kind,))
        return [Event(at, k, host, json.loads(text), by) for at, k, host, text, by in rows]

    # -- plumbing -----------------------------------------------------------

    def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """One transaction for all ``rows`` (or a part of the caller's)."""
        with self.transaction():
            self._db.executemany(sql, rows)


def check_lock_name(name: str) -> str:
    if not LOCK_NAME.fullmatch(name):
        raise ValueError(f"not a lock name: {name!r}")
    return name
