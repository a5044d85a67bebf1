"""One database connection as the store's tables see it, whatever the backend.

The tables write their SQL once, with ``?`` parameters, in the subset SQLite and
PostgreSQL share (``ON CONFLICT ... DO UPDATE/NOTHING``, no ``INSERT OR ...``).  A
``Db`` runs it: ``execute``/``executemany``/``insert_id``, and ``transaction`` — the
one write transaction, joined when one is open, committed when the outermost block
ends, rolled back when it raises.  Every database error leaves here as a
``StateError`` that names the store.

Write transactions are serialised on both backends: SQLite's ``BEGIN IMMEDIATE``
admits one writer at a time, and PostgreSQL's take one transaction-level advisory
lock first.  A writer therefore always sees what the writers before it committed,
which is what the job queue's allocation and claim logic relies on.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from leptonctl.errors import StateError
from leptonctl.store.schema import Dialect


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class QueryError(StateError):
    """The database refused a statement (the message names the store and the reason)."""


class DeviceTaken(StateError):
    """A write would allocate a device that an active job already holds."""


class Db(ABC):
    """A connection to one state store (``where`` names it in messages)."""

    dialect: Dialect
    where: str

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    @abstractmethod
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    @abstractmethod
    def insert_id(self, sql: str, params: Sequence[Any]) -> int:
        """Run one ``INSERT`` into a table with an ``id`` key; returns the new id."""

    @property
    @abstractmethod
    def in_transaction(self) -> bool: ...

    @abstractmethod
    def _begin(self) -> Any:
        """A context manager: one write transaction (commit on success, else roll back)."""

    @abstractmethod
    def close(self) -> None: ...

    @contextmanager
    def transaction(self, what: str = "write the state store") -> Iterator[None]:
        """One write transaction (joins the caller's when one is open).  A database error
        inside becomes a ``StateError`` that says ``cannot {what}``."""
        if self.in_transaction:
            yield
            return
        try:
            with self._begin():
                yield
        except QueryError as exc:
            raise StateError(f"cannot {what}: {exc.message}", hint=exc.hint) from exc

    def read(
        self, sql: str, params: Sequence[Any] = (), what: str | None = None
    ) -> list[tuple[Any, ...]]:
        """Every row of a query (``what``: the error says ``cannot {what}``)."""
        try:
            return [tuple(row) for row in self.execute(sql, params).fetchall()]
        except QueryError as exc:
            if what is None:
                raise
            raise StateError(f"cannot {what}: {exc.message}") from exc


class SqliteDb(Db):
    dialect: Dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection, where: str) -> None:
        self.conn = conn
        self.where = where

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        try:
            return self.conn.execute(sql, tuple(params))
        except sqlite3.Error as exc:
            raise _error(self.where, exc) from exc

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            self.conn.executemany(sql, [tuple(r) for r in rows])
        except sqlite3.Error as exc:
            raise _error(self.where, exc) from exc

    def insert_id(self, sql: str, params: Sequence[Any]) -> int:
        try:
            return int(self.conn.execute(sql, tuple(params)).lastrowid or 0)
        except sqlite3.Error as exc:
            raise _error(self.where, exc) from exc

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    @contextmanager
    def _begin(self) -> Iterator[None]:
        try:
            with self.conn:  # commits when the block ends, rolls back when it raises
                self.conn.execute("BEGIN IMMEDIATE")
                yield
        except sqlite3.Error as exc:
            raise _error(self.where, exc) from exc

    def close(self) -> None:
        self.conn.close()


def _error(where: str, exc: Exception) -> StateError:
    text = str(exc)
    if "job_devices" in text and ("UNIQUE" in text or "unique" in text or "duplicate" in text):
        return DeviceTaken(
            f"the state store {where} refused to allocate a device an active job holds: {text}",
            hint="another leptonctl allocated it first; the next reconcile places the job again",
        )
    return QueryError(f"the state store {where}: {text}")


def driver_error(where: str, exc: Exception) -> StateError:
    """A backend's database error as the store's ``StateError``."""
    return _error(where, exc)
