"""Maintenance runs (``leptonctl maintain``) in the state store.

A run is recorded when it starts and updated after every step, so a run that
died half-way still shows what it did; the next run that takes the lock marks
such runs ``abandoned``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from leptonctl.core.records import (  # re-exported: the store's records
    MaintenanceRun as MaintenanceRun,
)
from leptonctl.store.db import Cursor, Db

_COLUMNS = "id, started, ended, playbooks, check_mode, outcome, exit_code, steps"


class MaintenanceTable:
    def __init__(self, db: Db) -> None:
        self._db = db

    def start(self, playbooks: Sequence[str], check: bool, now: float) -> int:
        """Record a run that begins now; returns its id."""
        with self._db.transaction("write maintenance records"):
            return self._db.insert_id(
                "INSERT INTO maintenance_runs(started, playbooks, check_mode) VALUES (?, ?, ?)",
                (now, json.dumps(list(playbooks)), int(check)),
            )

    def set_steps(self, run_id: int, steps: Sequence[Mapping[str, Any]]) -> None:
        self._write("UPDATE maintenance_runs SET steps = ? WHERE id = ?", (_dumps(steps), run_id))

    def finish(
        self,
        run_id: int,
        ended: float,
        outcome: str,
        exit_code: int,
        steps: Sequence[Mapping[str, Any]],
    ) -> None:
        self._write(
            "UPDATE maintenance_runs SET ended = ?, outcome = ?, exit_code = ?, steps = ? "
            "WHERE id = ?",
            (ended, outcome, exit_code, _dumps(steps), run_id),
        )

    def record_skip(self, playbooks: Sequence[str], now: float, why: str, exit_code: int) -> int:
        """A run that did not start because another one holds the lock."""
        with self._db.transaction("write maintenance records"):
            return self._db.insert_id(
                "INSERT INTO maintenance_runs(started, ended, playbooks, check_mode, outcome, "
                "exit_code, steps) VALUES (?, ?, ?, 0, 'skipped', ?, ?)",
                (now, now, json.dumps(list(playbooks)), exit_code, _dumps([{"skipped": why}])),
            )

    def abandon_unfinished(self, now: float) -> int:
        """Mark runs that never ended (their process died) ``abandoned``.  Call only while
        holding the run lock: then no other real run can be in progress."""
        cursor = self._write(
            "UPDATE maintenance_runs SET ended = ?, outcome = 'abandoned' "
            "WHERE ended IS NULL AND check_mode = 0",
            (now,),
        )
        return cursor.rowcount

    def get(self, run_id: int) -> MaintenanceRun | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM maintenance_runs WHERE id = ?", (run_id,))  # noqa: S608
        return _run(rows[0]) if rows else None

    def recent(self, limit: int = 20) -> list[MaintenanceRun]:
        """The latest runs, newest first."""
        rows = self._read(
            f"SELECT {_COLUMNS} FROM maintenance_runs ORDER BY id DESC LIMIT ?",  # noqa: S608
            (limit,),
        )
        return [_run(row) for row in rows]

    # -- counts for metrics ------------------------------------------------------------

    def job_counts(self) -> dict[str, int]:
        """Jobs by state."""
        rows = self._read("SELECT state, COUNT(*) FROM jobs GROUP BY state", ())
        return {str(state): int(count) for state, count in rows}

    def replica_counts(self) -> dict[str, int]:
        """Chunk replicas by state ("ok", "corrupt")."""
        rows = self._read("SELECT state, COUNT(*) FROM replicas GROUP BY state", ())
        return {str(state): int(count) for state, count in rows}

    def chunk_shortfall(self) -> tuple[int, int]:
        """(chunks with fewer good replicas than their datasets ask for, chunks with none)."""
        rows = self._read(
            "SELECT COALESCE(have.n, 0), need.k FROM "
            "(SELECT c.hash AS hash, MAX(d.replicas) AS k FROM dataset_chunks c "
            " JOIN datasets d ON d.name = c.name AND d.version = c.version GROUP BY c.hash) need "
            "LEFT JOIN (SELECT hash, COUNT(*) AS n FROM replicas WHERE state = 'ok' "
            " GROUP BY hash) have ON have.hash = need.hash",
            (),
        )
        under = sum(1 for have, need in rows if have < need)
        return under, sum(1 for have, _ in rows if have == 0)

    # -- plumbing --------------------------------------------------------------------

    def _write(self, sql: str, params: tuple[Any, ...]) -> Cursor:
        with self._db.transaction("write maintenance records"):
            return self._db.execute(sql, params)

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self._db.read(sql, params, "read maintenance records")


def _dumps(steps: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps(list(steps), separators=(",", ":"), default=str)


def _run(row: tuple[Any, ...]) -> MaintenanceRun:
    id_, started, ended, playbooks, check, outcome, exit_code, steps = row
    return MaintenanceRun(
        id=int(id_),
        started=float(started),
        ended=ended,
        playbooks=tuple(json.loads(playbooks)),
        check=bool(check),
        outcome=outcome,
        exit_code=exit_code,
        steps=tuple(json.loads(steps)),
    )
