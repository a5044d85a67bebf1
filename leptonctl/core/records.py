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
