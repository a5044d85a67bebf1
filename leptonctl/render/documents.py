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
from leptonctl.core.crontab import CronEntry
from leptonctl.core.datasets import VerifyReport
from leptonctl.core.facts import GpuFacts, HostFacts
from leptonctl.core.netgraph import Route
from leptonctl.core.outputs import RunResult
from leptonctl.core.records import DatasetRecord
from leptonctl.core.reports import (
    CopyReport,
    DryRun,
    GarbageReport,
    GetReport,
    HostStatus,
    ProbeReport,
    PutReport,
    RebalanceReport,
    RemoveReport,
    RepairReport,
)
from leptonctl.core.scheduler.devices import gpu_condition
from leptonctl.core.scheduler.model import Allocation
from leptonctl.core.storages import shared_from_facts
from leptonctl.errors import HostError
from leptonctl.render.job_documents import job_document as job_document
from leptonctl.render.job_documents import jobs_document as jobs_document
from leptonctl.render.job_documents import nodes_document as nodes_document


def status_document(rows: Sequence[HostStatus], now: float) -> dict[str, Any]:
    """The ``status --json`` document (a stable contract, documented in the README)."""
    states = Counter(r.state for r in rows)
    facts = {r.host.name: r.facts for r in rows if r.facts is not None}
    return {
        "hosts": [host_document(r, now) for r in rows],
        "summary": {"total": len(rows), "up": states["up"], "down": states["down"]},
        # data dirs that several hosts share (one storage id): data commands count one copy
        "shared_storages": [s.to_dict() for s in shared_from_facts(facts)],
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
        "gpus": [_gpu(g, row.host.gpu_foreign_ignored) for g in facts.gpus] if facts else [],
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


def _gpu(gpu: GpuFacts, foreign_ignored: bool) -> dict[str, Any]:
    """A GPU as probed, and what placement makes of it: ``placement`` {"state": free, busy,
    unhealthy, mig or job, "why": "used by bob pid 4242 (python)"}."""
    state, why = gpu_condition(gpu, foreign_ignored=foreign_ignored)
    return {**dataclasses.asdict(gpu), "placement": {"state": state, "why": why}}


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


def cron_document(entries: Sequence[CronEntry]) -> dict[str, Any]:
    """``cron show --json``: our crontab entries."""
    return {
        "entries": [
            {"name": e.name, "schedule": e.schedule, "when": e.when, "command": e.command}
            for e in entries
        ]
    }


def playbooks_document(rows: Sequence[tuple[str, str, str]]) -> dict[str, Any]:
    """``maintain --list``: the shipped playbooks (name, file, what it does)."""
    return {"playbooks": [{"name": n, "file": f, "about": a} for n, f, a in rows]}


def submitted_document(ids: Sequence[int], rejected: Mapping[int, str]) -> dict[str, Any]:
    """``submit --json``: the first id, every id of a batch, and the jobs rejected."""
    document: dict[str, Any] = {"id": ids[0]}
    if len(ids) > 1:
        document["ids"] = list(ids)
    if rejected:
        document["rejected"] = [{"id": i, "reason": why} for i, why in rejected.items()]
    return document


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
                **_planned_devices(p.allocation),
            }
            for p in result.plan.placements
        ],
        "unplaceable": [
            {"job": result.names.get(b.job_id, b.job_id), "reason": b.reason}
            for b in result.plan.unplaceable
        ],
        "unknown_hosts": list(result.unknown_hosts),
    }


def _planned_devices(alloc: Allocation | None) -> dict[str, Any]:
    """A planned job's devices: GPU devices by id with their UUIDs, CPU ids, and why those
    GPUs ("GPUs 0,1: NVLink x18")."""
    if alloc is None:
        return {"gpu_devices": [], "cpus": [], "why": None}
    uuids = [*alloc.gpu_uuids, *([None] * (len(alloc.gpu_ids) - len(alloc.gpu_uuids)))]
    return {
        "gpu_devices": [{"id": i, "uuid": u} for i, u in zip(alloc.gpu_ids, uuids, strict=True)],
        "cpus": list(alloc.cores),
        "why": alloc.gpu_note,
    }


def dataset_document(
    record: DatasetRecord, replicas: Mapping[str, Mapping[str, str]]
) -> dict[str, Any]:
    """``data show --json``: one version, its files, and where each chunk's copies are.

    A chunk's ``replicas`` lists the hosts with a healthy copy (sorted); ``corrupt`` the
    hosts whose copy failed its checksum."""
    chunks = []
    for digest, size in record.manifest.chunk_sizes().items():
        states = replicas.get(digest, {})
        chunks.append(
            {
                "hash": digest,
                "size": size,
                "replicas": sorted(h for h, s in states.items() if s == "ok"),
                "corrupt": sorted(h for h, s in states.items() if s != "ok"),
            }
        )
    files = []
    for entry in record.manifest.entries:
        doc: dict[str, Any] = {
            "path": entry.path,
            "type": entry.type,
            "mode": entry.mode,
            "size": entry.size,
        }
        if entry.type == "file":
            doc["chunks"] = [c.hash for c in entry.chunks]
        if entry.target is not None:
            doc["target"] = entry.target
        files.append(doc)
    return {
        **_dataset_summary(record, replicas),
        "kind": record.manifest.kind,
        "chunk_size": record.chunk_size,
        "source": record.source,
        "files": files,
        "chunks": chunks,
    }


def datasets_document(
    records: Sequence[DatasetRecord], replicas: Mapping[str, Mapping[str, str]]
) -> dict[str, Any]:
    """``data list --json``: ``healthy_min`` is the fewest healthy copies of any chunk."""
    return {"datasets": [_dataset_summary(r, replicas) for r in records]}


def _dataset_summary(
    record: DatasetRecord, replicas: Mapping[str, Mapping[str, str]]
) -> dict[str, Any]:
    hashes = record.manifest.hashes()
    healthy = [sum(1 for s in replicas.get(h, {}).values() if s == "ok") for h in hashes]
    return {
        "name": record.name,
        "version": record.version,
        "state": record.state,
        "size": record.size,
        "replicas": record.replicas,
        "chunks": len(hashes),
        "files": record.manifest.file_count,
        "healthy_min": min(healthy, default=record.replicas),
        "created": record.created,
        "completed": record.completed,
    }


def verify_document(report: VerifyReport) -> dict[str, Any]:
    """``data verify --json`` (and the scrub step of maintenance runs)."""
    return {
        "dataset": report.dataset,
        "healthy": report.healthy,
        "replicas_checked": report.replicas_checked,
        "replicas_ok": report.replicas_ok,
        "bytes_hashed": report.bytes_hashed,
        "seconds": report.seconds,
        "problems": [
            {"hash": p.hash, "host": p.host, "problem": p.problem, "detail": p.detail}
            for p in report.problems
        ],
        "under_replicated": list(report.under_replicated),
    }


def net_document(g: Any, hosts: Sequence[str], now: float) -> dict[str, Any]:
    """``net show --json``: the links of the graph (from ``build_graph``) between ``hosts``.

    ``bandwidth_bps`` is bytes per second, ``rtt_s`` and ``age_s`` seconds; ``measured``
    is a unix time; hints have ``source: "hint"`` and no age."""
    wanted = set(hosts)
    order = {h: i for i, h in enumerate(hosts)}
    links = sorted(
        ((u, v, a) for u, v, a in g.edges(data=True) if u in wanted and v in wanted and u != v),
        key=lambda link: (order[link[0]], order[link[1]]),
    )
    unreachable = sorted(
        (
            (u, v, error)
            for (u, v), error in g.graph.get("unreachable", {}).items()
            if u in wanted and v in wanted
        ),
        key=lambda pair: (order[pair[0]], order[pair[1]]),
    )
    return {
        "hosts": list(hosts),
        "links": [
            {
                "src": u,
                "dst": v,
                "bandwidth_bps": a["bandwidth_bps"],
                "rtt_s": a.get("rtt_s"),
                "age_s": None if a.get("measured") is None else max(0.0, now - a["measured"]),
                "measured": a.get("measured"),
                "source": a.get("source"),
            }
            for u, v, a in links
        ],
        "unreachable": [{"src": u, "dst": v, "error": error} for u, v, error in unreachable],
    }


def route_document(route: Route) -> dict[str, Any]:
    """``net show --route A B --json``; bandwidths in bytes per second."""
    return {
        "route": list(route.hosts),
        "bottleneck_bps": route.bottleneck_bps,
        "expected_bps": route.expected_bps,
        "direct_bps": route.direct_bps,
        "relayed": route.relayed,
        "rtt_s": route.rtt_s,
    }


def put_document(report: PutReport, pruned: RemoveReport | None) -> dict[str, Any]:
    """``data put --json``: the put, and what ``--keep-last`` removed (or null)."""
    return dataclasses.asdict(report) | {"pruned": dataclasses.asdict(pruned) if pruned else None}


def report_document(
    report: GetReport | RemoveReport | RebalanceReport | GarbageReport,
) -> dict[str, Any]:
    """``data get|rm|rebalance|gc --json``: the report's fields as they are."""
    return dataclasses.asdict(report)


def repair_document(report: RepairReport) -> dict[str, Any]:
    return dataclasses.asdict(report) | {"healthy": report.healthy}


def probe_document(report: ProbeReport) -> dict[str, Any]:
    """``net probe --json``: every pair measured, and what could not be."""
    return {
        "measured": [
            {
                "src": m.src,
                "dst": m.dst,
                "bandwidth_bps": m.bandwidth_bps,
                "rtt_s": m.rtt_s,
                "error": m.error,
            }
            for m in report.measured
        ],
        "unreachable_hosts": report.unreachable_hosts,
        "relayed": report.relayed,  # pairs transfers relay through the operator, and why
        "skipped_pairs": report.skipped_pairs,
        "seconds": round(report.seconds, 3),
    }


def copy_document(report: CopyReport) -> dict[str, Any]:
    """``cp --json``: route, bytes and seconds first, then the rest of the report."""
    head = {"route": report.route, "bytes": report.bytes, "seconds": round(report.seconds, 3)}
    return head | {k: v for k, v in dataclasses.asdict(report).items() if k not in head}
