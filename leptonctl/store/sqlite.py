"""The embedded state store: one SQLite file in WAL mode, private to the user.

Holds what leptonctl learned and decided (the last probe of each host, the
event log); the truth about what runs on a host stays on that host.  Schema
changes are the numbered migrations of ``leptonctl.store.schema``, tracked with
``PRAGMA user_version``.  Store-wide locks are ``flock``s on files next to the
database (``<file>.<name>.lock``), so they cover every terminal and cron job of
the machines that see that file.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import AbstractContextManager
from pathlib import Path

from leptonctl.core.records import (  # re-exported: the store's records
    Event as Event,
)
from leptonctl.core.records import (
    StoredFacts as StoredFacts,
)
from leptonctl.errors import StateError
from leptonctl.store.actor import Actor
from leptonctl.store.base import STORE_ID_KEY as STORE_ID_KEY
from leptonctl.store.base import TableStore, check_lock_name
from leptonctl.store.db import SqliteDb
from leptonctl.store.locks import file_lock
from leptonctl.store.schema import SCHEMA_VERSION, statements


class SqliteStore(TableStore):
    """A state store on one SQLite file.  Use as a context manager."""

    def __init__(self, path: Path, *, actor: Actor | None = None, migrate: bool = True) -> None:
        self.path = path
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
            os.close(fd)
            # Switching a new file to WAL needs an exclusive lock that SQLite does not wait
            # for (no busy handler): two processes opening a fresh store at once would see
            # "database is locked".  The store-open lock serialises just this opening step.
            with self.lock("open"):
                conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
                self._attach(SqliteDb(conn, str(path)), actor)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
                self.migrate(apply=migrate)
        except (OSError, sqlite3.Error) as exc:
            raise StateError(
                f"cannot open the state store {path}: {exc}",
                hint="check the path and its permissions, "
                "or point --state/LEPTONCTL_STATE elsewhere",
            ) from exc

    def __enter__(self) -> SqliteStore:
        return self

    def lock(
        self, name: str, *, shared: bool = False, wait: bool = True
    ) -> AbstractContextManager[bool]:
        """``flock`` on ``<file>.<name>.lock`` (the store-open lock: ``<file>.lock``)."""
        suffix = ".lock" if check_lock_name(name) == "open" else f".{name}.lock"
        return file_lock(self.path.with_name(self.path.name + suffix), shared=shared, wait=wait)

    def schema_version(self) -> int:
        ((version,),) = self._db.read("PRAGMA user_version")
        return int(version)

    def migrate(self, apply: bool = True) -> tuple[int, int]:
        """Apply the migrations this database lacks; returns (version before, after).
        Refuses a database newer than this program; ``apply=False`` only checks."""
        before = self.schema_version()
        if before > SCHEMA_VERSION:
            raise StateError(
                f"the state store {self.path} has schema {before}, newer than this leptonctl "
                f"({SCHEMA_VERSION})",
                hint="upgrade leptonctl, or use another --state file",
            )
        if not apply:
            return before, before
        for number in range(before, SCHEMA_VERSION):
            with self._db.transaction("migrate the state store"):
                if self.schema_version() == number:  # another process may have migrated
                    for statement in statements(number, "sqlite"):
                        self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {number + 1}")
        after = self.schema_version()
        self._migrated(before, after)
        return before, after
