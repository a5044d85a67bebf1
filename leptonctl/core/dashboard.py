"""What the live dashboards show, as plain data: hosts with their state, utilisation and jobs,
and the cluster totals (pure: rows, job records and store counts in, frames out).

``cluster_frame`` builds one refresh of ``status --watch``; ``queue_frame`` one refresh of
``jobs --watch``.  Renderers (``leptonctl.render.dashboard``) and the JSON documents read
these and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from leptonctl.core.facts import GpuFacts
from leptonctl.core.health import HealthThresholds, check_health
from leptonctl.core.history import History
from leptonctl.core.records import ACTIVE, JobRecord
from leptonctl.core.reports import HostStatus

# Problems first: a host that is down matters more than one that is busy.
STATE_ORDER = ("down", "unhealthy", "drained", "pending", "up")
GPU_BUSY_PCT = 10.0  # a GPU above this utilisation, or with a process on it, is busy
RECENT_ENDS = 600.0  # seconds an ended job stays in ``jobs --watch``


@dataclass(frozen=True)
class DataHealth:
    """The state store's view of the datasets' chunks."""

    datasets: int
    under_replicated: int  # chunks with fewer good replicas than their datasets ask for
    lost: int  # chunks with no good replica
    corrupt: int  # replicas a verify found corrupt

    @property
    def healthy(self) -> bool:
        return not (self.under_replicated or self.lost or self.corrupt)


@dataclass(frozen=True)
class HostView:
    status: HostStatus
    state: str  # one of STATE_ORDER
    reason: str | None  # why it is down, drained or unhealthy
    cpu_pct: float | None  # busy share of its CPUs since the previous sample
    jobs: tuple[JobRecord, ...]  # STARTING and RUNNING there

    @property
    def name(self) -> str:
        return self.status.host.name

    @property
    def group(self) -> str:
        """The host's most specific group (``all`` when it has no other)."""
        groups = [g for g in self.status.host.groups if g != "all"]
        return groups[-1] if groups else "all"

    @property
    def gpus(self) -> tuple[GpuFacts, ...]:
        facts = self.status.facts
        return facts.gpus if facts is not None and self.state != "down" else ()


@dataclass(frozen=True)
class GpuModelTotals:
    model: str | None
    total: int
    allocated: int  # held by running jobs
    busy: int  # utilised, or running a process


@dataclass(frozen=True)
class LongestPending:
    job_id: int
    name: str
    waiting: float  # seconds since submission
    reason: str | None


@dataclass(frozen=True)
class ClusterTotals:
    hosts: Mapping[str, int]  # state -> hosts
    cpu_threads: int  # of the hosts that are up
    cpu_busy_threads: float  # threads' worth of busy time (utilisation x threads)
    cpu_allocated: int  # threads held by running jobs
    memory_total_bytes: int
    memory_used_bytes: int
    gpus: tuple[GpuModelTotals, ...]
    jobs_running: int
    jobs_pending: int
    longest_pending: LongestPending | None
    data: DataHealth | None


@dataclass(frozen=True)
class ClusterFrame:
    """One refresh of ``status --watch``."""

    now: float
    hosts: tuple[HostView, ...]  # in display order
    totals: ClusterTotals
    history: History = field(default_factory=History)
    grouped: bool = False  # hosts are in group order (the renderer labels each group)


@dataclass(frozen=True)
class QueueFrame:
    """One refresh of ``jobs --watch``: the queue, and what ended in the last minutes."""

    now: float
    active: tuple[JobRecord, ...]  # RUNNING/STARTING first, then PENDING by priority and age
    ended: tuple[JobRecord, ...]  # most recent first
    unreachable: tuple[str, ...] = ()


def host_view(
    row: HostStatus,
    cpu_pct: float | None,
    drained: Mapping[str, tuple[str, float]],
    jobs: Sequence[JobRecord],
    thresholds: HealthThresholds | None = None,
) -> HostView:
    name = row.host.name
    mine = tuple(j for j in jobs if j.host == name and j.state in ("STARTING", "RUNNING"))
    if row.state == "down":
        error = row.error
        return HostView(row, "down", error.kind if error else None, None, mine)
    if row.state == "pending":
        return HostView(row, "pending", None, None, mine)
    if name in drained:
        return HostView(row, "drained", drained[name][0], cpu_pct, mine)
    assert row.facts is not None
    problems = check_health(row.facts, thresholds or HealthThresholds())
    if problems:
        return HostView(row, "unhealthy", "; ".join(problems), cpu_pct, mine)
    return HostView(row, "up", None, cpu_pct, mine)


def order_hosts(views: Sequence[HostView], by: str = "state") -> list[HostView]:
    """Problems first (down, unhealthy, drained, pending, up), inventory order within a
    state; ``by="group"``: by group first, problems first inside each group."""
    position = {v.name: i for i, v in enumerate(views)}

    def key(v: HostView) -> tuple[str, int, int]:
        group = v.group if by == "group" else ""
        return (group, STATE_ORDER.index(v.state), position[v.name])

    return sorted(views, key=key)


def cluster_totals(
    views: Sequence[HostView],
    jobs: Sequence[JobRecord],
    now: float,
    data: DataHealth | None = None,
) -> ClusterTotals:
    counts = {state: 0 for state in STATE_ORDER}
    threads = 0
    busy = 0.0
    memory_total = memory_used = 0
    gpu_totals: dict[str | None, list[int]] = {}
    held = {(j.host, g) for j in jobs if j.state in ("STARTING", "RUNNING") for g in _gpus_of(j)}
    for view in views:
        counts[view.state] += 1
        facts = view.status.facts
        if facts is None or view.state == "down":
            continue
        threads += facts.cpu.threads
        busy += (view.cpu_pct or 0.0) * facts.cpu.threads / 100.0
        memory_total += facts.memory.total_bytes
        memory_used += facts.memory.total_bytes - facts.memory.available_bytes
        for gpu in facts.gpus:
            entry = gpu_totals.setdefault(gpu.name, [0, 0, 0])
            entry[0] += 1
            entry[1] += (view.name, gpu.index) in held
            entry[2] += gpu_busy(gpu)
    running = [j for j in jobs if j.state in ("STARTING", "RUNNING")]
    pending = sorted((j for j in jobs if j.state == "PENDING"), key=lambda j: j.submitted)
    longest = None
    if pending:
        first = pending[0]
        longest = LongestPending(first.id, first.name, now - first.submitted, first.reason)
    return ClusterTotals(
        hosts=counts,
        cpu_threads=threads,
        cpu_busy_threads=busy,
        cpu_allocated=sum(int((j.allocation or {}).get("cpus") or 0) for j in running),
        memory_total_bytes=memory_total,
        memory_used_bytes=memory_used,
        gpus=tuple(GpuModelTotals(m, *v) for m, v in gpu_totals.items()),
        jobs_running=len(running),
        jobs_pending=len(pending),
        longest_pending=longest,
        data=data,
    )


def cluster_frame(
    rows: Sequence[HostStatus],
    cpu_pct: Mapping[str, float | None],
    drained: Mapping[str, tuple[str, float]],
    jobs: Sequence[JobRecord],
    now: float,
    *,
    data: DataHealth | None = None,
    history: History | None = None,
    by: str = "state",
) -> ClusterFrame:
    """One refresh of the cluster dashboard from the rows, the CPU % measured since the
    previous refresh, the drained hosts and the active jobs of the state store."""
    views = [host_view(r, cpu_pct.get(r.host.name), drained, jobs) for r in rows]
    return ClusterFrame(
        now=now,
        hosts=tuple(order_hosts(views, by)),
        totals=cluster_totals(views, jobs, now, data),
        history=history if history is not None else History(),
        grouped=by == "group",
    )


def queue_frame(
    records: Sequence[JobRecord],
    now: float,
    recent: float = RECENT_ENDS,
    unreachable: Sequence[str] = (),
) -> QueueFrame:
    """The active jobs (running first) and those that ended less than ``recent`` s ago."""
    order = {"RUNNING": 0, "STARTING": 1, "PENDING": 2}
    active = sorted(
        (r for r in records if r.state in ACTIVE),
        key=lambda r: (order[r.state], -r.priority, r.submitted, r.id),
    )
    ended = sorted(
        (r for r in records if r.state not in ACTIVE and r.ended and now - r.ended <= recent),
        key=lambda r: (-(r.ended or 0.0), -r.id),
    )
    return QueueFrame(now, tuple(active), tuple(ended), tuple(sorted(unreachable)))


ENDED_ON_HOST = frozenset({"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "LOST"})


def live_jobs(
    records: Sequence[JobRecord], states: Mapping[str, Mapping[str, str]]
) -> list[JobRecord]:
    """The records less the running ones whose host's agent says they have ended: the
    dashboard reads the queue as last reconciled, and shows what the hosts know since
    (the next reconcile records how they ended).  ``states``: host -> agent id -> state."""
    return [
        r
        for r in records
        if not (
            r.state in ("STARTING", "RUNNING")
            and states.get(r.host or "", {}).get(r.agent_id) in ENDED_ON_HOST
        )
    ]


def remaining(record: JobRecord, now: float) -> float | None:
    """Seconds of walltime left for a running job (None: no walltime, or not started)."""
    walltime = record.spec.get("walltime")
    if not isinstance(walltime, (int, float)) or record.started is None or not walltime:
        return None
    return max(0.0, record.started + float(walltime) - now)


def gpu_busy(gpu: GpuFacts) -> bool:
    return bool(gpu.processes) or (gpu.utilization_pct or 0.0) >= GPU_BUSY_PCT


def _gpus_of(job: JobRecord) -> list[int]:
    gpus = (job.allocation or {}).get("gpus") or []
    return [g for g in gpus if isinstance(g, int)]
