"""The JSON documents of the reading commands ``jobs``, ``show`` and ``node list``.

Kept apart from :mod:`leptonctl.render.documents` so that ``jobs --json`` imports only
the store's records: no scheduler, facts or reports (a test checks that the documents
``render.documents`` makes of the same records are these).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from leptonctl.core.records import JobRecord, containment

if TYPE_CHECKING:
    from leptonctl.core.reports import NodeRow


def job_document(record: JobRecord) -> dict[str, Any]:
    """One job as ``jobs --json`` and ``show --json`` print it."""
    spec = record.spec
    alloc = record.allocation or {}
    return {
        "id": record.id,
        "name": record.name,
        "state": record.state,
        "host": record.host,
        "exit_code": record.exit_code,
        "submitted": record.submitted,
        "submitted_by": record.submitted_by,
        "submitted_from": record.submitted_from,
        "started": record.started,
        "ended": record.ended,
        "priority": record.priority,
        "reason": record.reason,
        "attempt": record.attempt,
        "retries": record.retries,
        "devices": {
            "gpus": list(alloc.get("gpus", [])),
            "fpgas": list(alloc.get("fpgas", [])),
            "cpus": list(alloc.get("cores", [])),
        },
        "containment": containment(record),
        "allocation": dict(record.allocation) if record.allocation else None,
        "request": spec.get("request"),
        "command": spec.get("command"),
        "walltime": spec.get("walltime"),
        "after": spec.get("after", []),
        "inputs": [
            {"name": i.get("name"), "version": i.get("version"), "mount": i.get("mount")}
            for i in spec.get("inputs") or []
        ],
        "peak_rss_bytes": record.peak_rss_bytes,
    }


def jobs_document(records: Sequence[JobRecord]) -> dict[str, Any]:
    return {"jobs": [job_document(r) for r in records]}


def nodes_document(rows: Sequence[NodeRow]) -> dict[str, Any]:
    """``node list --json``."""
    return {
        "nodes": [
            {
                "host": r.host,
                "state": "drained" if r.drained else "active",
                "reason": r.reason,
                "since": r.since,
                "jobs": r.running,
            }
            for r in rows
        ]
    }
