"""Measured links (``net probe``), in the state store's database.

One row per directed pair: the latest measurement replaces the one before.
``bandwidth_bps`` is in **bytes per second**; ``rtt_s`` in seconds; ``error`` is set
when ``src`` could not reach ``dst``.
"""

from __future__ import annotations

from collections.abc import Iterable

from leptonctl.core.netgraph import LinkMeasurement
from leptonctl.store.db import Db


class LinkTable:
    def __init__(self, db: Db) -> None:
        self._db = db

    def save(self, measurements: Iterable[LinkMeasurement]) -> None:
        """Store each measurement as the latest of its (src, dst) pair, all in one
        transaction."""
        rows = [(m.src, m.dst, m.measured, m.bandwidth_bps, m.rtt_s, m.error) for m in measurements]
        with self._db.transaction("save link measurements"):
            self._db.executemany(
                "INSERT INTO links(src, dst, measured, bandwidth_bps, rtt_s, error) "
                "VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(src, dst) DO UPDATE SET measured = excluded.measured, "
                "bandwidth_bps = excluded.bandwidth_bps, rtt_s = excluded.rtt_s, "
                "error = excluded.error",
                rows,
            )

    def load(self) -> list[LinkMeasurement]:
        """Every stored measurement, ordered by (src, dst)."""
        rows = self._db.read(
            "SELECT src, dst, measured, bandwidth_bps, rtt_s, error FROM links ORDER BY src, dst",
            what="read link measurements",
        )
        return [
            LinkMeasurement(
                src=src,
                dst=dst,
                measured=float(measured),
                bandwidth_bps=None if bandwidth is None else float(bandwidth),
                rtt_s=None if rtt is None else float(rtt),
                error=error,
            )
            for src, dst, measured, bandwidth, rtt, error in rows
        ]

    def prune(self, older_than: float) -> int:
        """Forget measurements taken before the unix time ``older_than``; returns how many."""
        with self._db.transaction("prune link measurements"):
            return self._db.execute("DELETE FROM links WHERE measured < ?", (older_than,)).rowcount
