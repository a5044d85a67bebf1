"""The JSON documents of ``status --watch --json`` and ``jobs --watch --json``: one per
refresh, the same data the screens show (pure, no rich)."""

from __future__ import annotations

import dataclasses
from typing import Any

from leptonctl.core.dashboard import ClusterFrame, ClusterTotals, HostView, QueueFrame, remaining
from leptonctl.core.records import JobRecord
from leptonctl.render.documents import host_document, job_document, status_document

HISTORY_POINTS = 30  # buckets of the utilisation history in each host's document


def cluster_document(frame: ClusterFrame) -> dict[str, Any]:
    """``status --json``'s document (hosts in display order) with, per host, its dashboard
    state, CPU %, jobs and utilisation history, and the cluster totals."""
    rows = [v.status for v in frame.hosts]
    doc = status_document(rows, frame.now)
    doc["time"] = frame.now
    doc["hosts"] = [_host(v, frame) for v in frame.hosts]
    doc["totals"] = totals_document(frame.totals)
    return doc


def _host(view: HostView, frame: ClusterFrame) -> dict[str, Any]:
    doc = host_document(view.status, frame.now)
    history = frame.history
    doc["dashboard"] = {
        "state": view.state,
        "reason": view.reason,
        "cpu_pct": None if view.cpu_pct is None else round(view.cpu_pct, 1),
        "jobs": [_job_brief(j) for j in view.jobs],
        "history_window_s": history.window,
        "cpu_history": _rounded(history.buckets(f"cpu:{view.name}", frame.now, HISTORY_POINTS)),
        "gpu_history": _rounded(history.buckets(f"gpu:{view.name}", frame.now, HISTORY_POINTS)),
    }
    return doc


def totals_document(totals: ClusterTotals) -> dict[str, Any]:
    longest = totals.longest_pending
    return {
        "hosts": dict(totals.hosts),
        "cpu_threads": totals.cpu_threads,
        "cpu_busy_threads": round(totals.cpu_busy_threads, 2),
        "cpu_allocated": totals.cpu_allocated,
        "memory_total_bytes": totals.memory_total_bytes,
        "memory_used_bytes": totals.memory_used_bytes,
        "gpus": [dataclasses.asdict(g) for g in totals.gpus],
        "jobs_running": totals.jobs_running,
        "jobs_pending": totals.jobs_pending,
        "longest_pending": None if longest is None else dataclasses.asdict(longest),
        "data": None if totals.data is None else dataclasses.asdict(totals.data),
    }


def queue_document(frame: QueueFrame) -> dict[str, Any]:
    """The queue (as ``jobs --json`` writes each job, plus elapsed and remaining seconds) and
    the jobs that ended recently."""
    return {
        "time": frame.now,
        "jobs": [_job_live(r, frame.now) for r in frame.active],
        "recently_ended": [_job_live(r, frame.now) for r in frame.ended],
        "unreachable": list(frame.unreachable),
    }


def _job_live(record: JobRecord, now: float) -> dict[str, Any]:
    doc = job_document(record)
    started = record.started
    doc["elapsed_s"] = None if started is None else round((record.ended or now) - started, 1)
    left = remaining(record, now) if record.ended is None else None
    doc["remaining_s"] = None if left is None else round(left, 1)
    return doc


def _job_brief(record: JobRecord) -> dict[str, Any]:
    alloc = record.allocation or {}
    return {
        "id": record.id,
        "name": record.name,
        "state": record.state,
        "gpus": list(alloc.get("gpus") or []),
        "started": record.started,
    }


def _rounded(values: list[float | None]) -> list[float | None]:
    return [None if v is None else round(v, 1) for v in values]
