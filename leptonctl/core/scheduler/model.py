"""The scheduler's plain data: what jobs ask for, what nodes offer, what was decided.

Every type here is a frozen dataclass; the scheduler functions take these in and
return these out, with no I/O and no clock (``now`` is always a parameter).
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field

COMPLETED = "COMPLETED"
KIND_KEYS = ("cpu", "gpu", "fpga")
SIZES = ("cpus", "memory", "gpus", "fpgas")  # what a node offers, each known or not


@dataclass(frozen=True)
class Request:
    """What one job asks for."""

    cpus: int = 1
    memory_bytes: int = 0
    gpus: int = 0
    gpu_type: str | None = None  # case-insensitive substring of the GPU model, e.g. "h100"
    gpu_memory_bytes: int = 0  # minimum memory per GPU
    fpgas: int = 0
    fpga_type: str | None = None  # case-insensitive substring of the FPGA card name


@dataclass(frozen=True)
class Gpu:
    """A schedulable GPU device: a whole GPU, or one MIG device of a MIG-enabled GPU."""

    index: int  # the physical GPU's index on its host (a MIG device's parent)
    model: str | None  # the (parent's) model name
    memory_bytes: int | None  # of this device (a MIG device's own memory)
    numa_node: int | None = None
    uuid: str | None = None  # "GPU-..." or "MIG-..."
    mig: int | None = None  # the MIG device index on GPU ``index``; None: the whole GPU
    profile: str | None = None  # a MIG device's profile, e.g. "1g.10gb"
    busy: str | None = None  # why it is not free: "used by bob pid 4242 (python)"
    unhealthy: str | None = None  # why it must not be handed out: "2 uncorrected ECC errors"
    # (peer GPU index, active NVLink links, path) for the peers the probe told about
    links: tuple[tuple[int, int, str | None], ...] = ()

    # derived, kept as plain attributes (the scheduler reads them in its inner loops)
    id: str = field(init=False, compare=False, repr=False)  # see __post_init__
    unavailable: str | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # ``id``: the device's name on its host: "3" for GPU 3, "3/mig1" for its MIG device 1.
        # ``unavailable``: why it is not handed out now (unhealthy first), or None.
        name = str(self.index) if self.mig is None else f"{self.index}/mig{self.mig}"
        why = f"unhealthy: {self.unhealthy}" if self.unhealthy is not None else self.busy
        object.__setattr__(self, "id", name)
        object.__setattr__(self, "unavailable", why)


@dataclass(frozen=True)
class Core:
    """One CPU (a hardware thread, as the kernel numbers it) a job may be pinned to."""

    index: int
    numa_node: int | None = None


@dataclass(frozen=True)
class Fpga:
    index: int
    name: str | None


@dataclass(frozen=True)
class Node:
    """A host as the scheduler sees it (already limited by declared capacity)."""

    name: str
    groups: tuple[str, ...] = ()
    cpus: int = 0
    memory_bytes: int = 0
    gpus: tuple[Gpu, ...] = ()
    fpgas: tuple[Fpga, ...] = ()
    schedulable: bool = True  # False = drained / down: nothing new goes there
    # The sizes nobody knows yet (never probed, not declared): some of SIZES.  An unknown
    # size is not zero: the node takes no job that needs it, and proves no job impossible.
    unknown: frozenset[str] = frozenset()
    why_not: str | None = None  # why it is not schedulable, e.g. "unreachable: refused"
    # the CPUs jobs are pinned to (probed); empty: not known, jobs on it are not pinned
    cores: tuple[Core, ...] = ()


@dataclass(frozen=True)
class Job:
    """A queued job, as the scheduler sees it."""

    id: str
    request: Request
    priority: int = 0  # higher first
    submitted: float = 0.0  # FIFO tie-break within a priority
    walltime: float | None = None  # seconds; enables backfill
    after: tuple[str, ...] = ()  # ids that must be COMPLETED first
    hosts: frozenset[str] | None = None  # allowed hosts (--limit); None = any
    # key: host name, group name, "cpu"/"gpu"/"fpga", or a GPU type; value: seconds on such a node
    estimates: Mapping[str, float] = field(default_factory=dict)
    # host -> share (0..1) of the job's input bytes already stored there: among hosts that
    # fit equally well by estimate, the one holding more of the data wins
    locality: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Allocation:
    """Concrete devices: never two jobs on the same GPU/FPGA index of a host."""

    job_id: str
    host: str
    cpus: int
    memory_bytes: int
    gpus: tuple[int, ...]  # GPU indexes on that host (a MIG device's parent GPU)
    fpgas: tuple[int, ...]
    cores: tuple[int, ...] = ()  # CPU ids it is pinned to; empty: not pinned
    # the GPU devices by id (Gpu.id: "3", "3/mig1") and UUID (None where unknown), in
    # the order the job sees them; empty in allocations recorded before devices had ids
    gpu_ids: tuple[str, ...] = ()
    gpu_uuids: tuple[str | None, ...] = ()
    gpu_note: str | None = None  # why these GPUs: "GPUs 0,1: NVLink x18"

    @property
    def devices(self) -> tuple[str, ...]:
        """The GPU device ids it holds (whole GPUs by index for an old allocation)."""
        return self.gpu_ids or tuple(str(i) for i in self.gpus)


@dataclass(frozen=True)
class Running:
    """A job already running (or starting)."""

    allocation: Allocation
    started: float
    walltime: float | None = None
    estimate: float | None = None  # predicted duration if known


@dataclass(frozen=True)
class Blocked:
    """Why a pending job does not start now (or can never start)."""

    job_id: str
    reason: str


@dataclass(frozen=True)
class Dispatch:
    """The result of one scheduling pass."""

    start: tuple[Allocation, ...]  # jobs to start now, with their devices
    blocked: tuple[Blocked, ...]
    doomed: tuple[Blocked, ...]  # jobs that can never run (reason says why)


@dataclass(frozen=True)
class Placement:
    """One job of a plan: where, on which devices, and when (seconds from ``now``)."""

    job_id: str
    host: str
    gpus: tuple[int, ...]
    fpgas: tuple[int, ...]
    start: float
    end: float
    allocation: Allocation | None = None  # the devices it would get (CPU ids, GPU ids, why)


@dataclass(frozen=True)
class Plan:
    placements: tuple[Placement, ...]
    makespan: float
    unplaceable: tuple[Blocked, ...]


def estimate_for(job: Job, node: Node) -> float | None:
    """The most specific runtime estimate of ``job`` on ``node``, in seconds.

    Precedence: host name > group name (first of ``node.groups`` that has one) >
    GPU type (a key that is a case-insensitive substring of the model, or of the MIG
    profile, of a GPU device the job could use on the node; the longest such key wins) >
    resource kind ("gpu"
    if the job asks GPUs, "fpga" if FPGAs, else "cpu"). ``None`` if none applies.
    """
    est = job.estimates
    if not est:
        return None
    if node.name in est:
        return float(est[node.name])
    for group in node.groups:
        if group in est:
            return float(est[group])
    request = job.request
    if request.gpus > 0:
        wanted = request.gpu_type.lower() if request.gpu_type else None
        models = [
            name.lower()
            for g in node.gpus
            if g.model is not None
            and (wanted is None or wanted in g.model.lower() or wanted == (g.profile or "").lower())
            for name in (g.model, g.profile)
            if name
        ]
        best: tuple[int, str] | None = None
        for key in est:
            low = key.lower()
            if low in KIND_KEYS or not low:
                continue
            if any(low in model for model in models) and (best is None or len(low) > best[0]):
                best = (len(low), key)
        if best is not None:
            return float(est[best[1]])
    kind = "gpu" if request.gpus > 0 else "fpga" if request.fpgas > 0 else "cpu"
    if kind in est:
        return float(est[kind])
    return None


def dependency_cycles(jobs: Sequence[Job], settled: Container[str] = ()) -> dict[str, list[str]]:
    """Job id -> a dependency cycle through it (``[a, b, a]``), among ``jobs``.

    Dependencies outside ``jobs`` or in ``settled`` (already finished) are not followed.
    """
    by_id = {j.id: j for j in jobs}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: dict[str, list[str]] = {}

    def visit(job_id: str, path: list[str]) -> None:
        state[job_id] = 1
        path.append(job_id)
        for dep in by_id[job_id].after:
            if dep not in by_id or dep in settled:
                continue
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                for member in cycle:
                    cycles.setdefault(member, cycle)
            elif dep not in state:
                visit(dep, path)
        path.pop()
        state[job_id] = 2

    for job in jobs:
        if job.id not in state:
            visit(job.id, [])
    return cycles
