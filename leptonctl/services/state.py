"""``leptonctl state``: the state store itself — its schema, and moving it whole.

A team that started on one laptop's SQLite file moves to PostgreSQL with
``state copy OLD.db postgresql://...`` (or ``export`` to a file and ``import`` it
elsewhere): jobs and their history, datasets, replicas, links, maintenance runs,
facts, drains, values and events, ids kept.  Nothing here talks to a host.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from leptonctl.errors import StateError, UsageError
from leptonctl.store.base import TableStore
from leptonctl.store.location import state_location
from leptonctl.store.open import describe, open_store
from leptonctl.store.postgres import is_postgres_url
from leptonctl.store.schema import SCHEMA_VERSION
from leptonctl.store.transfer import (
    check_same_schema,
    counts,
    from_document,
    read_tables,
    to_document,
    write_tables,
)

_MAX_IMPORT = 4 << 30  # bytes: a state export larger than this is not one of ours


@dataclass(frozen=True)
class StoreInfo:
    store: str
    backend: str
    schema: int
    program_schema: int
    rows: dict[str, int]

    def to_json(self) -> dict[str, object]:
        return {
            "store": self.store,
            "backend": self.backend,
            "schema": self.schema,
            "program_schema": self.program_schema,
            "rows": self.rows,
        }


@dataclass(frozen=True)
class Moved:
    source: str
    target: str
    rows: dict[str, int]

    def to_json(self) -> dict[str, object]:
        return {"from": self.source, "to": self.target, "rows": self.rows}


def location(text: str) -> str:
    """A store named on the command line: a path (made absolute) or a postgresql:// URL."""
    if not text:
        raise UsageError("an empty store name")
    return state_location(text)


def _existing(location: str, migrate: bool = True) -> TableStore:
    """Open a store that must exist already (a missing SQLite file is a usage error, not a
    new empty store)."""
    if not is_postgres_url(location) and not Path(location).expanduser().is_file():
        raise UsageError(f"no state store at {location}")
    return open_store(location, migrate=migrate)


def info(location: str) -> StoreInfo:
    """Backend, schema version (without migrating) and rows per table."""
    with _existing(location, migrate=False) as store:
        version = store.schema_version()
        rows = counts(store) if version == SCHEMA_VERSION else {}
        backend = "postgresql" if is_postgres_url(location) else "sqlite"
        return StoreInfo(describe(location), backend, version, SCHEMA_VERSION, rows)


def migrate(location: str) -> tuple[int, int]:
    """Bring the store to this program's schema; (version before, after)."""
    with open_store(location, migrate=False) as store:
        return store.migrate()


def copy(source: str, target: str, *, force: bool) -> Moved:
    """Every row of ``source`` into ``target`` (refused when ``target`` holds anything,
    unless ``force``)."""
    if source == target:
        raise UsageError("state copy: FROM and TO are the same store")
    with _existing(source) as src, open_store(target) as dst:
        check_same_schema(src, dst)
        rows = write_tables(dst, read_tables(src), replace=force)
    return Moved(describe(source), describe(target), rows)


def export(location: str, file: Path, *, force: bool) -> Moved:
    """Every row of the store into ``file`` (JSON, mode 0600; an existing file only with
    ``force``)."""
    with _existing(location) as store:
        document = to_document(read_tables(store))
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(file, flags, 0o600)
    except FileExistsError:
        raise UsageError(f"{file} exists", hint="add --force to overwrite it") from None
    except OSError as exc:
        raise StateError(f"cannot write {file}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(document, out, separators=(",", ":"))
        out.write("\n")
    rows = {name: len(table["rows"]) for name, table in document["tables"].items()}
    return Moved(describe(location), str(file), rows)


def import_(location: str, file: Path, *, force: bool) -> Moved:
    """The rows of an export into the store (refused when it holds anything, unless
    ``force``)."""
    try:
        if file.stat().st_size > _MAX_IMPORT:
            raise UsageError(f"{file} is too large to be a state export")
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror or exc}") from exc
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{file} is not a leptonctl state export: {exc}") from exc
    tables = from_document(document, str(file))
    with open_store(location) as store:
        rows = write_tables(store, tables, replace=force)
    return Moved(str(file), describe(location), rows)
