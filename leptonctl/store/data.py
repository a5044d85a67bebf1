"""Datasets, their chunks and where the replicas are, in the state store's database.

A dataset version is written in two steps: ``begin_version`` records it as
'writing' (its manifest, its chunks), the data plane copies the chunks, and
``complete`` flips it to 'ready' in one statement.  Readers asking for the latest
version only ever see ready ones, so a put that dies half-way is invisible, and
running the same put again resumes the same 'writing' version.

Removing a version returns the chunk hashes nothing references any more; the
caller deletes those files on the hosts, then calls ``forget_chunks``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any

from leptonctl.core.datasets import Manifest
from leptonctl.core.records import (  # re-exported: the store's records
    DatasetRecord as DatasetRecord,
)
from leptonctl.errors import StateError
from leptonctl.store.actor import Actor
from leptonctl.store.db import Db

REPLICA_STATES = ("ok", "corrupt")

_COLUMNS = (
    "name, version, state, created, completed, replicas, chunk_size, size, source, manifest, "
    "created_by, created_from, files"
)
# What a record is read with: every column but the manifest, which is read when an entry is
# first asked for (a listing of datasets never reads the manifest of a million files). A
# version written before the files column (a small manifest, one object per file) is read
# at once: a listing counts its files.
_SUMMARY = (
    "name, version, state, created, completed, replicas, chunk_size, size, source, "
    "CASE WHEN files IS NULL THEN manifest END, created_by, created_from, files"
)
_BATCH = 500  # host parameters per statement, well below SQLite's limit


class DataTable:
    def __init__(self, db: Db, actor: Actor) -> None:
        self._db = db
        self._actor = actor

    def exclusive(self) -> AbstractContextManager[None]:
        """One write transaction (joins the caller's when one is open)."""
        return self._db.transaction("update the datasets")

    # -- versions -----------------------------------------------------------

    def begin_version(
        self,
        name: str,
        *,
        manifest: Manifest,
        replicas: int,
        chunk_size: int,
        source: str,
        now: float,
    ) -> DatasetRecord:
        """A new 'writing' version of ``name``, or the unfinished one with this manifest.

        Resuming keeps the version number and creation time; ``replicas`` and ``source``
        take the new values (the version is still invisible to readers).  The version
        records who wrote it from where (this store's actor)."""
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {replicas}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        text = _manifest_text(manifest)
        with self.exclusive():
            for record in self._select(
                "WHERE name = ? AND state = 'writing' ORDER BY version DESC", (name,)
            ):
                if record.manifest == manifest and record.chunk_size == chunk_size:
                    self._db.execute(
                        "UPDATE datasets SET replicas = ?, source = ? "
                        "WHERE name = ? AND version = ?",
                        (replicas, source, name, record.version),
                    )
                    return replace(record, replicas=replicas, source=source)
            ((latest,),) = self._db.read(
                "SELECT COALESCE(MAX(version), 0) FROM datasets WHERE name = ?", (name,)
            )
            version = int(latest) + 1
            self._db.execute(
                f"INSERT INTO datasets({_COLUMNS}) "  # noqa: S608 - a constant column list
                "VALUES (?, ?, 'writing', ?, NULL, ?, ?, ?, ?, '', ?, ?, ?)",
                (name, version, now, replicas, chunk_size, manifest.size, source,
                 self._actor.user, self._actor.machine, manifest.file_count),
            )  # fmt: skip
            self._db.execute(
                "INSERT INTO dataset_manifests(name, version, manifest) VALUES (?, ?, ?)",
                (name, version, text),
            )
            sizes = manifest.chunk_sizes()
            self._db.executemany(
                "INSERT INTO dataset_chunks(name, version, hash) VALUES (?, ?, ?)",
                [(name, version, h) for h in sizes],
            )
            self._db.executemany(
                "INSERT INTO chunks(hash, size) VALUES (?, ?) ON CONFLICT DO NOTHING",
                list(sizes.items()),
            )
        return DatasetRecord(
            name=name,
            version=version,
            state="writing",
            created=now,
            completed=None,
            replicas=replicas,
            chunk_size=chunk_size,
            size=manifest.size,
            source=source,
            manifest=manifest,
            created_by=self._actor.user,
            created_from=self._actor.machine,
        )

    def complete(self, name: str, version: int, now: float) -> None:
        """'writing' -> 'ready': from now on readers see this version.  Idempotent."""
        with self.exclusive():
            row = self._db.execute(
                "SELECT state FROM datasets WHERE name = ? AND version = ?", (name, version)
            ).fetchone()
            if row is None:
                raise StateError(
                    f"dataset {name}@{version} is not in the state store {self._db.where}",
                    hint="it may have been removed meanwhile; run the put again",
                )
            if row[0] == "writing":
                self._db.execute(
                    "UPDATE datasets SET state = 'ready', completed = ? "
                    "WHERE name = ? AND version = ?",
                    (now, name, version),
                )

    def get(self, name: str, version: int | None = None) -> DatasetRecord | None:
        """One version in any state, or (``version=None``) the latest ready one."""
        if version is None:
            rows = self._select(
                "WHERE name = ? AND state = 'ready' ORDER BY version DESC LIMIT 1", (name,)
            )
        else:
            rows = self._select("WHERE name = ? AND version = ?", (name, version))
        return rows[0] if rows else None

    def versions(self, name: str) -> list[DatasetRecord]:
        """Every version of ``name``, ready or not, oldest first."""
        return self._select("WHERE name = ? ORDER BY version", (name,))

    def datasets(self) -> list[DatasetRecord]:
        """The latest ready version of each name; a name with no ready version shows its
        newest 'writing' one.  By name."""
        return self._select(
            "AS d WHERE version = (SELECT COALESCE(MAX(CASE WHEN state = 'ready' "
            "THEN version END), MAX(version)) FROM datasets WHERE name = d.name) ORDER BY name",
            (),
        )

    def all_records(self) -> list[DatasetRecord]:
        """Every version of every dataset, by name then version."""
        return self._select("ORDER BY name, version", ())

    def remove(self, name: str, version: int | None = None) -> list[str]:
        """Delete one version (or all of ``name``); returns the hashes no remaining version
        references (sorted).  Their ``chunks`` and ``replicas`` rows stay until
        ``forget_chunks``.  Removing what is not there returns []."""
        with self.exclusive():
            if version is None:
                return self._remove_versions(name, [v.version for v in self.versions(name)])
            return self._remove_versions(name, [version])

    def keep_last(
        self, name: str, n: int, spare: Collection[int] = ()
    ) -> tuple[list[int], list[str]]:
        """Remove the ready versions older than the newest ``n`` ready ones ('writing'
        versions stay, and so do the versions in ``spare``).  Returns (removed versions,
        freed hashes)."""
        if n < 0:
            raise ValueError(f"cannot keep {n} versions")
        with self.exclusive():
            ready = [r.version for r in self.versions(name) if r.state == "ready"]
            doomed = [v for v in ready[: max(0, len(ready) - n)] if v not in spare]
            return doomed, self._remove_versions(name, doomed)

    def _remove_versions(self, name: str, versions: Sequence[int]) -> list[str]:
        candidates: set[str] = set()
        for version in versions:
            candidates.update(
                h
                for (h,) in self._db.read(
                    "SELECT hash FROM dataset_chunks WHERE name = ? AND version = ?",
                    (name, version),
                )
            )
            self._db.execute(
                "DELETE FROM dataset_chunks WHERE name = ? AND version = ?", (name, version)
            )
            self._db.execute(
                "DELETE FROM dataset_manifests WHERE name = ? AND version = ?", (name, version)
            )
            self._db.execute("DELETE FROM datasets WHERE name = ? AND version = ?", (name, version))
        still = self._referenced_among(candidates)
        return sorted(candidates - still)

    # -- chunks and replicas ------------------------------------------------

    def replicas(self, hashes: Iterable[str] | None = None) -> dict[str, dict[str, str]]:
        """Hash -> host -> replica state ("ok" | "corrupt")."""
        rows = self._rows_for("SELECT hash, host, state FROM replicas", "hash", hashes)
        out: dict[str, dict[str, str]] = {}
        for digest, host, state in sorted(rows):
            out.setdefault(digest, {})[host] = state
        return out

    def set_replicas(self, rows: Iterable[tuple[str, str, str]], now: float) -> None:
        """Record (hash, host, state) rows; a row for a known pair replaces it."""
        wanted = list(rows)
        for _, _, state in wanted:
            if state not in REPLICA_STATES:
                raise ValueError(f"replica state must be 'ok' or 'corrupt', got {state!r}")
        with self.exclusive():
            self._db.executemany(
                "INSERT INTO replicas(hash, host, state, checked) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(hash, host) DO UPDATE SET "
                "state = excluded.state, checked = excluded.checked",
                [(h, host, state, now) for h, host, state in wanted],
            )

    def drop_replicas(self, rows: Iterable[tuple[str, str]]) -> None:
        """Forget (hash, host) replicas (the copy was deleted or found missing)."""
        pairs = list(rows)
        with self.exclusive():
            self._db.executemany("DELETE FROM replicas WHERE hash = ? AND host = ?", pairs)

    def forget_chunks(self, hashes: Iterable[str]) -> list[str]:
        """Delete the ``chunks`` and ``replicas`` rows of hashes no dataset references.
        A hash that a version references again (a put that ran meanwhile) is kept.
        Returns the hashes forgotten."""
        wanted = set(hashes)
        with self.exclusive():
            gone = sorted(wanted - self._referenced_among(wanted))
            self._db.executemany("DELETE FROM replicas WHERE hash = ?", [(h,) for h in gone])
            self._db.executemany("DELETE FROM chunks WHERE hash = ?", [(h,) for h in gone])
        return gone

    def chunk_sizes(self, hashes: Iterable[str] | None = None) -> dict[str, int]:
        rows = self._rows_for("SELECT hash, size FROM chunks", "hash", hashes)
        return {str(h): int(s) for h, s in sorted(rows)}

    def referenced_hashes(self) -> set[str]:
        """Every hash some version (ready or writing) references."""
        return {str(h) for (h,) in self._read("SELECT DISTINCT hash FROM dataset_chunks", ())}

    def host_usage(self) -> dict[str, int]:
        """Bytes of 'ok' replicas per host."""
        rows = self._read(
            "SELECT r.host, SUM(c.size) FROM replicas r JOIN chunks c ON c.hash = r.hash "
            "WHERE r.state = 'ok' GROUP BY r.host ORDER BY r.host",
            (),
        )
        return {str(host): int(total) for host, total in rows}

    # -- plumbing -----------------------------------------------------------

    def _referenced_among(self, hashes: set[str]) -> set[str]:
        rows = self._rows_for("SELECT DISTINCT hash FROM dataset_chunks", "hash", hashes)
        return {str(h) for (h,) in rows}

    def _rows_for(
        self, select: str, column: str, keys: Iterable[str] | None
    ) -> list[tuple[Any, ...]]:
        if keys is None:
            return self._read(select, ())
        wanted = sorted(set(keys))
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(wanted), _BATCH):
            batch = tuple(wanted[start : start + _BATCH])
            marks = ", ".join("?" for _ in batch)
            rows.extend(self._read(f"{select} WHERE {column} IN ({marks})", batch))
        return rows

    def _select(self, where: str, params: tuple[Any, ...]) -> list[DatasetRecord]:
        rows = self._read(f"SELECT {_SUMMARY} FROM datasets {where}", params)  # noqa: S608
        if not rows:
            return []
        names = sorted({str(row[0]) for row in rows})
        tables: dict[tuple[str, int], dict[str, int]] = {}
        for start in range(0, len(names), _BATCH):
            batch = tuple(names[start : start + _BATCH])
            marks = ", ".join("?" for _ in batch)
            for name, version, digest, size in self._read(
                "SELECT dc.name, dc.version, dc.hash, c.size FROM dataset_chunks dc "  # noqa: S608
                f"JOIN chunks c ON c.hash = dc.hash WHERE dc.name IN ({marks}) "
                "ORDER BY dc.name, dc.version, dc.hash",
                batch,
            ):
                tables.setdefault((str(name), int(version)), {})[str(digest)] = int(size)
        return [self._record(row, tables.get((str(row[0]), int(row[1])), {})) for row in rows]

    def manifest_of(self, name: str, version: int) -> Manifest:
        """The manifest of one version, read and checked (a damaged one says why)."""
        rows = [
            row
            for table in ("datasets", "dataset_manifests")  # before step 11: in the row itself
            for row in self._read(
                f"SELECT manifest FROM {table} WHERE name = ? AND version = ?",  # noqa: S608
                (name, version),
            )
            if row[0]
        ]
        if not rows:
            return Manifest.damaged(
                f"dataset {name}@{version} is no longer in the state store {self._db.where}"
            )
        return self._parse(name, version, str(rows[0][0]))

    def _parse(self, name: str, version: int, text: str) -> Manifest:
        try:
            return Manifest.from_dict(json.loads(text))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            # That version cannot be used (find_record and to_dict say why), the others can.
            return Manifest.damaged(
                f"the manifest of dataset {name}@{version} in {self._db.where} is unreadable: {exc}"
            )

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self._db.read(sql, params, "read the datasets")

    def _record(self, row: tuple[Any, ...], chunks: dict[str, int]) -> DatasetRecord:
        (name, version, state, created, completed, replicas, chunk_size, size, source, text,
         by, origin, files) = row  # fmt: skip
        if text is not None:
            manifest = self._parse(str(name), int(version), str(text))
        else:
            manifest = Manifest.lazy(
                lambda: self.manifest_of(str(name), int(version)),
                files=None if files is None else int(files),
                chunks=lambda: chunks,
            )
        return DatasetRecord(
            name=str(name),
            version=int(version),
            state=str(state),
            created=float(created),
            completed=None if completed is None else float(completed),
            replicas=int(replicas),
            chunk_size=int(chunk_size),
            size=int(size),
            source=str(source),
            manifest=manifest,
            created_by=by,
            created_from=origin,
        )


def _manifest_text(manifest: Manifest) -> str:
    return json.dumps(manifest.to_dict(), separators=(",", ":"), sort_keys=True)
