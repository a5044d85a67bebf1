"""The one write transaction of the SQLite store.

Every change to the database goes through ``write_transaction``: ``BEGIN IMMEDIATE``
(so two processes writing at once are serialised by SQLite, the second one seeing
what the first committed), commit on success, roll back on any exception.  Opened
while a transaction is already open on the connection, it joins that one: the
outermost block decides, so a service can group writes to several tables into one
atomic change (``SqliteStore.transaction()``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from leptonctl.errors import StateError


@contextmanager
def write_transaction(db: sqlite3.Connection, path: Path, what: str) -> Iterator[None]:
    """One write transaction on ``db`` (joins the caller's when one is open).

    A database error inside becomes a ``StateError`` that says ``cannot {what}``."""
    try:
        if db.in_transaction:
            yield
            return
        with db:  # commits when the block ends, rolls back when it raises
            db.execute("BEGIN IMMEDIATE")
            yield
    except sqlite3.Error as exc:
        raise StateError(f"cannot {what} in {path}: {exc}") from exc
