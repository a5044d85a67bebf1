"""The team state store: one PostgreSQL database shared by every terminal and cron host.

``--state postgresql://user@host:port/db`` selects it.  It runs the same tables and
SQL as the SQLite store (``leptonctl.store.base``) through psycopg 3, which is an
optional dependency: ``pip install 'leptonctl[postgres]'``.

Guarantees, as on SQLite:

- write transactions are serialised: each takes one transaction-level advisory lock
  first (released at commit or rollback), so a reconcile sees every allocation and
  claim committed before it, exactly like SQLite's single writer;
- a device is never allocated to two active jobs: ``job_devices``' primary key;
- start claims are leases (``JobTable.claim_start``) that another process takes over
  once they expire;
- store-wide locks (``lock``) are session-level advisory locks, each on a connection
  of its own, so they die with the process that holds them (a killed ``maintain``
  never leaves the cron host locked out);
- migrations (``leptonctl.store.schema``) run under an advisory lock, on first use or
  with ``leptonctl state migrate``; a database newer than this program is refused.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from leptonctl.errors import StateError
from leptonctl.store.actor import Actor
from leptonctl.store.base import TableStore, check_lock_name
from leptonctl.store.db import Cursor, Db, driver_error
from leptonctl.store.schema import SCHEMA_VERSION, Dialect, statements

if TYPE_CHECKING:
    import psycopg

URL_SCHEMES = ("postgresql", "postgres")
_LOCK_SPACE = 0x4C455054  # "LEPT": the first key of every advisory lock leptonctl takes
_CONNECT_TIMEOUT = 10  # seconds
_WRITE_WAIT = 30.0  # seconds a write transaction waits for the one before it


def is_postgres_url(state: str) -> bool:
    return state.split("://", 1)[0].lower() in URL_SCHEMES and "://" in state


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise StateError(
            f"a postgresql:// state store needs psycopg 3, which is not installed ({exc})",
            hint="pip install 'leptonctl[postgres]' (or: pip install 'psycopg[binary]>=3.1')",
        ) from exc
    return psycopg


def lock_key(name: str) -> int:
    """The second advisory-lock key of the lock ``name`` (a signed 32-bit integer)."""
    value = zlib.crc32(name.encode())
    return value - (1 << 32) if value >= 1 << 31 else value


class PgDb(Db):
    dialect: Dialect = "postgresql"

    def __init__(self, conn: psycopg.Connection[Any], where: str) -> None:
        self.conn = conn
        self.where = where
        self._sql: dict[str, str] = {}
        self._psycopg = _psycopg()

    def _translate(self, sql: str) -> str:
        found = self._sql.get(sql)
        if found is None:
            found = self._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        return found

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        try:
            return self.conn.execute(self._translate(sql), tuple(params))
        except self._psycopg.Error as exc:
            raise driver_error(self.where, exc) from exc

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(r) for r in rows]
        if not rows:
            return
        try:
            with self.conn.cursor() as cursor:
                cursor.executemany(self._translate(sql), rows)
        except self._psycopg.Error as exc:
            raise driver_error(self.where, exc) from exc

    def insert_id(self, sql: str, params: Sequence[Any]) -> int:
        row = self.execute(f"{sql} RETURNING id", params).fetchone()
        return int(row[0])

    @property
    def in_transaction(self) -> bool:
        status = self.conn.info.transaction_status
        return bool(status != self._psycopg.pq.TransactionStatus.IDLE)

    @contextmanager
    def _begin(self) -> Iterator[None]:
        try:
            with self.conn.transaction():
                self.conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_SPACE, 0))
                yield
        except self._psycopg.Error as exc:
            raise driver_error(self.where, exc) from exc

    def close(self) -> None:
        self.conn.close()


class PostgresStore(TableStore):
    """A state store in one PostgreSQL database.  Use as a context manager."""

    def __init__(self, url: str, *, actor: Actor | None = None, migrate: bool = True) -> None:
        self.url = url
        psycopg = _psycopg()
        where = redact(url)
        try:
            conn = psycopg.connect(
                url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT, application_name="leptonctl"
            )
        except psycopg.Error as exc:
            raise StateError(
                f"cannot open the state store {where}: {str(exc).strip()}",
                hint="check the URL (postgresql://user@host:port/db), that the server runs "
                "and that it lets this user in",
            ) from exc
        self._attach(PgDb(conn, where), actor)
        # A writer waits for the one before it at most this long, as SQLite's busy timeout
        # (the lock connections of ``lock`` wait as long as their holder takes).
        conn.execute(f"SET lock_timeout = '{int(_WRITE_WAIT * 1000)}ms'")
        self.clock_skew = self._measure_skew()
        try:
            self.migrate(apply=migrate)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> PostgresStore:
        return self

    def _measure_skew(self) -> float:
        """The server's clock minus ours, in whole seconds (under a second reads as 0)."""
        before = time.time()
        ((server,),) = self._db.read("SELECT EXTRACT(EPOCH FROM clock_timestamp())")
        after = time.time()
        return float(round(float(server) - (before + after) / 2))

    def lock(
        self, name: str, *, shared: bool = False, wait: bool = True
    ) -> AbstractContextManager[bool]:
        """A session-level advisory lock on a connection of its own."""
        return self._advisory(check_lock_name(name), shared=shared, wait=wait)

    @contextmanager
    def _advisory(self, name: str, *, shared: bool, wait: bool) -> Iterator[bool]:
        psycopg = _psycopg()
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT)
        except psycopg.Error as exc:
            raise StateError(f"cannot take the lock {name!r} in {self.where}: {exc}") from exc
        try:
            kind = "_shared" if shared else ""
            call = f"pg_advisory_lock{kind}" if wait else f"pg_try_advisory_lock{kind}"
            try:
                row = conn.execute(f"SELECT {call}(%s, %s)", (_LOCK_SPACE, lock_key(name)))
                held = wait or bool(row.fetchone()[0])
            except psycopg.Error as exc:
                raise StateError(f"cannot take the lock {name!r} in {self.where}: {exc}") from exc
            yield held
        finally:
            conn.close()  # ending the session releases its advisory locks

    def schema_version(self) -> int:
        rows = self._db.read("SELECT to_regclass('leptonctl_schema') IS NOT NULL")
        if not rows[0][0]:
            return 0
        found = self._db.read("SELECT version FROM leptonctl_schema")
        return int(found[0][0]) if found else 0

    def migrate(self, apply: bool = True) -> tuple[int, int]:
        """Apply the migrations this database lacks, under an advisory lock (two processes
        opening a new database at once); returns (version before, after).  Refuses a
        database newer than this program; ``apply=False`` only checks."""
        before = self.schema_version()
        self._refuse_newer(before)
        if before == SCHEMA_VERSION or not apply:
            return before, before
        with self.lock("migrate"):
            start = self.schema_version()  # another process may have migrated meanwhile
            for number in range(start, SCHEMA_VERSION):
                with self._db.transaction("migrate the state store"):
                    self._db.execute(
                        "CREATE TABLE IF NOT EXISTS leptonctl_schema (version INTEGER NOT NULL)"
                    )
                    for statement in statements(number, "postgresql"):
                        self._db.execute(statement)
                    self._db.execute("DELETE FROM leptonctl_schema")
                    self._db.execute("INSERT INTO leptonctl_schema VALUES (?)", (number + 1,))
            after = self.schema_version()
            self._migrated(start, after)
        return before, after

    def _refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StateError(
                f"the state store {self.where} has schema {version}, newer than this leptonctl "
                f"({SCHEMA_VERSION})",
                hint="upgrade leptonctl on this machine (every machine sharing the store "
                "needs a version that knows its schema)",
            )
