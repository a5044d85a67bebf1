"""JSON documents printed under ``--json``: stable contracts, documented in the README.

Kept apart from the rich renderers so that scripts and cron never pay for
importing rich.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from leptonctl.core.capacity import NodeCapacity
from leptonctl.core.facts import HostFacts
from leptonctl.errors import HostError
from leptonctl.remote.transport import RunResult
from leptonctl.services.jobs import DryRun
from leptonctl.services.nodes import NodeRow
from leptonctl.services.status import HostStatus
from leptonctl.store.jobs import JobRecord


def status_document(rows: Sequence[HostStatus], now: float) -> dict[str, Any]:
    """The ``status --json`` document (a stable contract, documented in the README)."""
    states = Counter(r.state for r in rows)
    return {
        "hosts": [host_document(r, now) for r in rows],
        "summary": {"total": len(rows), "up": states["up"], "down": states["down"]},
    }


def host_document(row: HostStatus, now: float) -> dict[str, Any]:
    facts = row.facts if row.state == "up" else None
    doc: dict[str, Any] = {
        "host": row.host.name,
        "state": row.state,
        "address": row.host.address,
        "groups": list(row.host.groups),
        "probed_at": row.probed_at,
        "hostname": facts.hostname if facts else None,
        "os": _os(facts),
        "agent_version": facts.agent_version if facts else None,
        "cpus": facts.cpu.threads if facts else None,
        "cpu_cores": facts.cpu.cores if facts else None,
        "cpu_model": facts.cpu.model if facts else None,
        "load": list(facts.cpu.load) if facts else None,
        "memory_bytes": facts.memory.total_bytes if facts else None,
        "memory_available_bytes": facts.memory.available_bytes if facts else None,
        "gpus": [dataclasses.asdict(g) for g in facts.gpus] if facts else [],
        "gpu_driver_version": facts.gpu_driver_version if facts else None,
        "fpgas": [dataclasses.asdict(f) for f in facts.fpgas] if facts else [],
        "disks": [dataclasses.asdict(d) for d in facts.disks] if facts else [],
        "unavailable": dict(facts.unavailable) if facts else {},
        "capacity": _capacity(row.capacity),
    }
    if row.error is not None:
        doc["error"] = row.error.to_json()
        doc["last_probed_at"] = row.probed_at
        doc["probed_at"] = None
    return doc


def _os(facts: HostFacts | None) -> dict[str, Any] | None:
    if facts is None:
        return None
    return {"system": facts.os_system, "release": facts.os_release, "distro": facts.os_distro}


def _capacity(cap: NodeCapacity) -> dict[str, Any]:
    return {
        "cpus": cap.cpus,
        "memory_bytes": cap.memory_bytes,
        "gpus": [dataclasses.asdict(g) for g in cap.gpus],
        "fpgas": cap.fpgas,
        "disk_free_bytes": cap.disk_free_bytes,
        "source": cap.source,
    }


def exec_document(
    command: str, results: Mapping[str, RunResult | HostError], order: Sequence[str]
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for host in order:
        result = results[host]
        if isinstance(result, RunResult):
            rows.append(
                {
                    "host": host,
                    "exit_status": result.exit_status,
                    "stdout": result.stdout,
                    "stderr": result.stderr,
                }
            )
        else:
            rows.append({"host": host, "exit_status": None, "error": result.to_json()})
    ok = sum(1 for r in rows if r.get("exit_status") == 0)
    return {"command": command, "results": rows, "summary": {"total": len(rows), "ok": ok}}


def job_document(record: JobRecord) -> dict[str, Any]:
    """One job as ``jobs --json`` and ``show --json`` print it."""
    spec = record.spec
    return {
        "id": record.id,
        "name": record.name,
        "state": record.state,
        "host": record.host,
        "exit_code": record.exit_code,
        "submitted": record.submitted,
        "started": record.started,
        "ended": record.ended,
        "priority": record.priority,
        "reason": record.reason,
        "attempt": record.attempt,
        "retries": record.retries,
        "devices": {
            "gpus": list((record.allocation or {}).get("gpus", [])),
            "fpgas": list((record.allocation or {}).get("fpgas", [])),
        },
        "allocation": dict(record.allocation) if record.allocation else None,
        "request": spec.get("request"),
        "command": spec.get("command"),
        "walltime": spec.get("walltime"),
        "after": spec.get("after", []),
        "peak_rss_bytes": record.peak_rss_bytes,
    }


def jobs_document(records: Sequence[JobRecord]) -> dict[str, Any]:
    return {"jobs": [job_document(r) for r in records]}


def dry_run_document(result: DryRun) -> dict[str, Any]:
    """``submit --dry-run --json``: start/end are seconds from now."""
    return {
        "makespan": result.plan.makespan,
        "placements": [
            {
                "job": result.names.get(p.job_id, p.job_id),
                "host": p.host,
                "gpus": list(p.gpus),
                "fpgas": list(p.fpgas),
                "start": p.start,
                "end": p.end,
            }
            for p in result.plan.placements
        ],
        "unplaceable": [
            {"job": result.names.get(b.job_id, b.job_id), "reason": b.reason}
            for b in result.plan.unplaceable
        ],
        "unknown_hosts": list(result.unknown_hosts),
    }


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
