"""Moving a whole store: every table's rows out of one store and into another.

``read_tables`` reads every table of ``schema.TABLES`` (rows in key order);
``write_tables`` writes them into a store in one transaction, ids kept, and advances
PostgreSQL's id sequences past them so the next job or event gets a new number.  A
target that holds anything is refused unless ``replace`` says to empty it first.
The same rows travel through a file (``state export``/``import``) as one JSON
document, ``to_document``/``from_document``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from leptonctl.errors import StateError, UsageError
from leptonctl.store.base import TableStore
from leptonctl.store.schema import NUMBERED_TABLES, SCHEMA_VERSION, TABLES

FORMAT = "leptonctl-state"
_COLUMNS = dict(TABLES)


@dataclass(frozen=True)
class TableRows:
    name: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


def read_tables(store: TableStore) -> list[TableRows]:
    """Every table's rows, read in one consistent snapshot (one transaction)."""
    out = []
    with store.transaction():  # a writer elsewhere waits: the copy is one moment's state
        for name, columns in TABLES:
            order = ", ".join(columns)
            rows = store.db.read(f"SELECT {order} FROM {name} ORDER BY {order}")  # noqa: S608
            out.append(TableRows(name, columns, rows))
    return out


def counts(store: TableStore) -> dict[str, int]:
    """Rows per table."""
    return {
        name: int(store.db.read(f"SELECT COUNT(*) FROM {name}")[0][0])  # noqa: S608
        for name, _ in TABLES
    }


def write_tables(
    store: TableStore, tables: Sequence[TableRows], *, replace: bool
) -> dict[str, int]:
    """Write ``tables`` into ``store`` in one transaction; returns rows per table.  A store
    with any row is refused unless ``replace`` (then it is emptied first, in the same
    transaction: a failure leaves it as it was)."""
    for table in tables:
        known = _COLUMNS.get(table.name)
        if known is None:
            raise UsageError(f"unknown table {table.name!r}: not a leptonctl state store")
        unknown = sorted(set(table.columns) - set(known))
        if unknown:
            raise UsageError(
                f"table {table.name} has columns this leptonctl does not know: {unknown}",
                hint="upgrade leptonctl on this machine",
            )
    with store.transaction():
        held = {name: n for name, n in counts(store).items() if n}
        if held and not replace:
            listed = ", ".join(f"{name} ({n})" for name, n in sorted(held.items()))
            raise UsageError(
                f"the target store {store.where} is not empty: {listed}",
                hint="copy into a new store, or add --force to replace everything in it",
            )
        for name, _ in reversed(TABLES):  # children before parents
            store.db.execute(f"DELETE FROM {name}")  # noqa: S608
        by_name = {t.name: t for t in tables}
        for name, _ in TABLES:  # parents before children
            found = by_name.get(name)
            if found is None or not found.rows:
                continue
            marks = ", ".join("?" for _ in found.columns)
            store.db.executemany(
                f"INSERT INTO {name}({', '.join(found.columns)}) VALUES ({marks})",  # noqa: S608
                found.rows,
            )
        if store.db.dialect == "postgresql":
            for name in NUMBERED_TABLES:
                store.db.execute(
                    f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "  # noqa: S608
                    f"COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM {name}"
                )
        return {t.name: len(t.rows) for t in tables}


def to_document(tables: Sequence[TableRows]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "schema": SCHEMA_VERSION,
        "tables": {t.name: {"columns": list(t.columns), "rows": t.rows} for t in tables},
    }


def from_document(document: Any, source: str) -> list[TableRows]:
    """The tables of an export, checked for shape (``UsageError`` naming ``source``)."""
    if not isinstance(document, Mapping) or document.get("format") != FORMAT:
        raise UsageError(f"{source} is not a leptonctl state export")
    schema = document.get("schema")
    if not isinstance(schema, int) or schema > SCHEMA_VERSION:
        raise UsageError(
            f"{source} was exported from schema {schema!r}, newer than this leptonctl "
            f"({SCHEMA_VERSION})",
            hint="import it with the leptonctl that exported it, or a newer one",
        )
    tables = document.get("tables")
    if not isinstance(tables, Mapping):
        raise UsageError(f"{source} has no tables")
    out = []
    for name, table in tables.items():
        columns, rows = (
            (table.get("columns"), table.get("rows"))
            if isinstance(table, Mapping)
            else (None, None)
        )
        if not isinstance(columns, list) or not isinstance(rows, list):
            raise UsageError(f"{source}: table {name!r} needs columns and rows")
        for row in rows:
            if not isinstance(row, list) or len(row) != len(columns):
                raise UsageError(f"{source}: a row of table {name!r} does not match its columns")
        out.append(TableRows(str(name), tuple(str(c) for c in columns), [tuple(r) for r in rows]))
    return out


def check_same_schema(source: TableStore, target: TableStore) -> None:
    if source.schema_version() != target.schema_version():
        raise StateError(
            f"{source.where} has schema {source.schema_version()} and {target.where} has "
            f"{target.schema_version()}",
            hint="run `leptonctl state migrate` on the older one",
        )
