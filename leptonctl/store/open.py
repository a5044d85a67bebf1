"""Open the state store that ``--state`` (or ``LEPTONCTL_STATE``, or a ``state:``
setting) names: a ``postgresql://`` URL, or a SQLite file."""

from __future__ import annotations

from pathlib import Path

from leptonctl.store.actor import Actor
from leptonctl.store.base import TableStore


def open_store(
    state: str | Path, *, migrate: bool = True, actor: Actor | None = None
) -> TableStore:
    """The store at ``state``, used by ``actor`` (default: this process's user and
    machine).  psycopg is imported only for a PostgreSQL URL."""
    text = str(state)
    from leptonctl.store.postgres import is_postgres_url

    if is_postgres_url(text):
        from leptonctl.store.postgres import PostgresStore

        return PostgresStore(text, migrate=migrate, actor=actor)
    from leptonctl.store.sqlite import SqliteStore

    return SqliteStore(Path(text).expanduser(), migrate=migrate, actor=actor)


def describe(state: str | Path) -> str:
    """``state`` for messages (a URL loses its password)."""
    from leptonctl.store.postgres import is_postgres_url, redact

    return redact(str(state)) if is_postgres_url(str(state)) else str(state)
