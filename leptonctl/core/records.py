"""The records a state store keeps, as plain frozen data (no database in sight).

Every store backend returns these; renderers and the pure core read them without
importing the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from leptonctl.core.datasets import Manifest

ACTIVE = ("PENDING", "STARTING", "RUNNING")
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL")


@dataclass(frozen=True)
class JobRecord:
    id: int
    name: str
    spec: Mapping[str, Any]  # command, env, workdir, request, walltime, estimates, limit, after...
    state: str
    priority: int
    submitted: float
    started: float | None
    ended: float | None
    host: str | None
    allocation: Mapping[str, Any] | None  # {"cpus", "memory_bytes", "gpus", "fpgas"}
    exit_code: int | None
    reason: str | None
    attempt: int
    retries: int
    lost_since: float | None
    cancel_requested: bool
    peak_rss_bytes: int | None
    submitted_by: str | None = None  # the user who submitted it (None: before it was kept)
    submitted_from: str | None = None  # and the machine they submitted from

    @property
    def agent_id(self) -> str:
        """The job's directory name on its host: one per attempt.  The random ``uid`` drawn
        at submit keeps two state stores (two operators, or a store that was reset) from
        ever meeting each other's job directories on a shared host."""
        return f"{self.id}.{self.attempt}.{self.spec.get('uid', 'x')}"


@dataclass(frozen=True)
class DatasetRecord:
    name: str
    version: int
    state: str  # "writing" | "ready"
    created: float
    completed: float | None
    replicas: int  # K
    chunk_size: int
    size: int
    source: str
    manifest: Manifest
    created_by: str | None = None  # the user who wrote this version (None: not recorded)
    created_from: str | None = None  # and from which machine


@dataclass(frozen=True)
class MaintenanceRun:
    id: int
    started: float
    ended: float | None
    playbooks: tuple[str, ...]
    check: bool
    outcome: str | None  # ok | unhealthy | failed | skipped | check | abandoned | interrupted
    exit_code: int | None
    steps: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class StoredFacts:
    host: str
    probed_at: float
    document: Mapping[str, Any]


@dataclass(frozen=True)
class Event:
    at: float
    kind: str
    host: str | None
    detail: Mapping[str, Any]
    actor: str | None = None  # "user@machine" of the leptonctl that recorded it


# -- what a stored job holds (read by renderers: no scheduler needed) ----------------


def gpu_devices_of(alloc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The GPU devices of a stored allocation (``{"id", "uuid"}``, uuid None where unknown);
    an allocation recorded before devices had ids holds its whole GPUs by index."""
    found = alloc.get("gpu_devices")
    if isinstance(found, list) and all(isinstance(d, Mapping) and "id" in d for d in found):
        return [{"id": str(d["id"]), "uuid": d.get("uuid")} for d in found]
    return [{"id": str(g), "uuid": None} for g in alloc.get("gpus") or ()]


NOT_PROBED = "not pinned: the host's CPUs are not known (never probed, capacity only declared)"


def containment(r: JobRecord) -> dict[str, Any]:
    """What confines a started job: ``cpus`` (the CPU ids it is pinned to, or None),
    ``cpus_note`` (why not pinned), ``memory_limit_bytes`` (None: no limit) and
    ``memory_enforcement`` (how the host enforces it: sampling, rlimit; None before start)."""
    alloc = r.allocation or {}
    held = alloc.get("containment")
    limit = int(alloc.get("memory_bytes") or 0) or None
    if not alloc:
        return {"cpus": None, "cpus_note": None, "memory_limit_bytes": None,
                "memory_enforcement": None}  # fmt: skip
    if isinstance(held, dict):
        cpus, note = held.get("cpus"), held.get("cpus_note")
        memory = held.get("memory") if limit else None
    else:
        cpus = list(alloc.get("cores") or ()) or None
        note = None if cpus else NOT_PROBED
        memory = None
    return {"cpus": cpus, "cpus_note": note, "memory_limit_bytes": limit,
            "memory_enforcement": memory}  # fmt: skip
