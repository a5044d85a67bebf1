"""What services report, as plain data: the types renderers read.

Renderers (``leptonctl.render``) import these and the store's records
(``leptonctl.core.records``), never a service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leptonctl.errors import HostError
from leptonctl.inventory.model import Host

if TYPE_CHECKING:  # annotations only: a command that reads jobs loads no playbook code
    from leptonctl.core.capacity import NodeCapacity
    from leptonctl.core.facts import HostFacts
    from leptonctl.core.netgraph import LinkMeasurement
    from leptonctl.core.playbook import PlannedStep
    from leptonctl.core.scheduler import Plan

# -- status ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HostStatus:
    """One row of ``leptonctl status``: fresh facts, or the error and the last known facts."""

    host: Host
    facts: HostFacts | None
    probed_at: float | None
    error: HostError | None = None
    agent_pushed: bool = False

    @property
    def state(self) -> str:
        """ "up", "down", or "pending" (a live view that has not heard from the host yet)."""
        if self.error is not None:
            return "down"
        return "pending" if self.facts is None else "up"

    @property
    def capacity(self) -> NodeCapacity:
        from leptonctl.core.capacity import effective_capacity  # `node list` needs none

        return effective_capacity(self.facts, self.host.capacity)


# -- datasets ------------------------------------------------------------------------


@dataclass(frozen=True)
class PutReport:
    name: str
    version: int
    size: int
    chunks: int
    replicas: int
    requested_replicas: int
    sent_bytes: int
    reused_chunks: int  # already on enough hosts before this put
    seconds: float
    notes: tuple[str, ...]
    relayed: tuple[dict[str, str], ...] = ()  # hops relayed by the operator: from/to/via/reason


@dataclass(frozen=True)
class GetReport:
    name: str
    version: int
    dest: str
    size: int
    fetched_bytes: int
    reused_chunks: int  # already at the destination (a resumed get)
    seconds: float
    notes: tuple[str, ...]


@dataclass(frozen=True)
class RemoveReport:
    name: str
    versions: tuple[int, ...]
    freed_chunks: int
    freed_bytes: int
    left_on: Mapping[str, str]  # host -> why its copies are still there (gc removes them)
    notes: tuple[str, ...] = ()


@dataclass
class RepairReport:
    dataset: str | None
    chunks: int
    copies_made: int = 0
    corrupt_removed: int = 0
    sent_bytes: int = 0
    lost: list[str] = field(default_factory=list)  # no healthy copy anywhere
    short: dict[str, str] = field(default_factory=dict)  # hash -> why still below K
    problems: dict[str, str] = field(default_factory=dict)  # host -> what failed there
    relayed: list[dict[str, str]] = field(default_factory=list)  # hops relayed by the operator

    @property
    def healthy(self) -> bool:
        return not (self.lost or self.short)


@dataclass
class RebalanceReport:
    moves_planned: int = 0
    moves_done: int = 0
    bytes_moved: int = 0
    problems: dict[str, str] = field(default_factory=dict)
    spread_before: float = 0.0
    spread_after: float = 0.0
    relayed: list[dict[str, str]] = field(default_factory=list)  # hops relayed by the operator


@dataclass
class GarbageReport:
    removed: dict[str, int] = field(default_factory=dict)  # host -> chunks deleted
    freed_bytes: int = 0
    problems: dict[str, str] = field(default_factory=dict)  # host -> why it was skipped
    stale_refs: dict[str, int] = field(default_factory=dict)  # host -> our refs dropped there
    legacy: dict[str, int] = field(default_factory=dict)  # host -> chunks the legacy ref keeps
    released_legacy: list[str] = field(default_factory=list)  # hosts whose legacy ref went


# -- network and copies ----------------------------------------------------------------


@dataclass
class ProbeReport:
    """What ``net probe`` measured."""

    measured: list[LinkMeasurement] = field(default_factory=list)
    skipped_pairs: int = 0  # left for a later probe (budget spent)
    unreachable_hosts: dict[str, str] = field(default_factory=dict)  # from the operator
    seconds: float = 0.0
    relayed: list[dict[str, str]] = field(default_factory=list)  # pairs transfers relay


@dataclass
class CopyReport:
    """What ``cp`` did."""

    route: list[str]
    bytes: int  # bytes sent this time
    seconds: float
    total_bytes: int  # size of everything copied
    reused_bytes: int  # already at the destination (a resumed copy)
    stream_seconds: float = 0.0  # the transfers themselves (setup and scan excluded)
    expected_bps: float | None = None
    direct_bps: float | None = None
    notes: list[str] = field(default_factory=list)
    relayed: list[dict[str, str]] = field(default_factory=list)  # hops relayed by the operator
    files: int = 0  # regular files in the copy
    files_sent: int = 0  # of them, sent (in part or whole) this time
    files_up_to_date: int = 0  # already there: same size and mtime (or contents: --checksum)


# -- jobs and nodes --------------------------------------------------------------------


@dataclass(frozen=True)
class DryRun:
    plan: Plan
    names: Mapping[str, str]  # job id in the plan -> job name
    unknown_hosts: tuple[str, ...]  # selected hosts with neither declared capacity nor a probe


@dataclass(frozen=True)
class NodeRow:
    host: str
    drained: bool
    reason: str | None
    since: float | None
    running: int  # jobs STARTING or RUNNING there, as last reconciled


# -- maintenance -----------------------------------------------------------------------

# A host's outcome in one step.  "down" and "unhealthy" make the run's exit code 3;
# "failed" (a command that exited non-zero, a refused removal) fails the step.
HOST_STATES = ("ok", "changed", "skipped", "unhealthy", "down", "failed")


@dataclass
class HostResult:
    status: str
    message: str = ""


@dataclass
class StepResult:
    planned: PlannedStep
    status: str = "ok"  # ok | changed | failed | skipped | check
    summary: str = ""
    hosts: dict[str, HostResult] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    started: float = 0.0
    ended: float = 0.0

    def settle(self) -> StepResult:
        """The step's status from its hosts: failed, changed or ok (a check stays a check)."""
        states = {h.status for h in self.hosts.values()}
        if self.error or "failed" in states:
            self.status = "failed"
        elif self.status not in ("check", "skipped"):
            self.status = "changed" if self.status == "changed" or "changed" in states else "ok"
        return self

    def problems(self) -> dict[str, str]:
        """Hosts that were down or unhealthy in this step -> why."""
        return {
            name: f"{h.status}: {h.message}"
            for name, h in self.hosts.items()
            if h.status in ("down", "unhealthy")
        }

    def to_json(self) -> dict[str, Any]:
        planned = self.planned
        return {
            "playbook": planned.playbook,
            "step": planned.step.index,
            "action": planned.action,
            "name": planned.step.name,
            "status": self.status,
            "summary": self.summary,
            "hosts": {n: {"status": h.status, "message": h.message} for n, h in self.hosts.items()},
            "details": self.details,
            "error": self.error,
            "started": self.started,
            "ended": self.ended,
        }


@dataclass
class RunReport:
    run_id: int | None
    playbooks: tuple[str, ...]
    check: bool
    started: float
    ended: float
    steps: list[StepResult]
    outcome: str  # ok | unhealthy | failed | skipped | check
    exit_code: int
    problems: dict[str, list[str]] = field(default_factory=dict)  # host -> why
    skipped_because: str | None = None
    metrics_file: Path | None = None
    error: str | None = None  # the run's own failure (not a step's), e.g. metrics not written

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "playbooks": list(self.playbooks),
            "check": self.check,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "started": self.started,
            "ended": self.ended,
            "duration_s": round(self.ended - self.started, 3),
            "problems": self.problems,
            "failed_steps": [
                f"{s.planned.playbook}#{s.planned.step.index}"
                for s in self.steps
                if s.status == "failed"
            ],
            "skipped": self.skipped_because,
            "metrics_file": str(self.metrics_file) if self.metrics_file else None,
            "error": self.error,
        }
