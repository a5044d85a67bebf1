"""Views of stored jobs, pure: what the scheduler sees, what the agent is sent to start a
job, and which job directories on a host may go.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from leptonctl.core.capacity import effective_capacity
from leptonctl.core.facts import HostFacts
from leptonctl.core.records import FINAL, JobRecord
from leptonctl.core.records import NOT_PROBED as NOT_PROBED  # re-exported: a record's views
from leptonctl.core.records import containment as containment
from leptonctl.core.records import gpu_devices_of as gpu_devices_of
from leptonctl.core.scheduler import Allocation, Core, Fpga, Job, Node, Request, Running
from leptonctl.core.scheduler.devices import gpu_devices, job_tags
from leptonctl.core.scheduler.model import SIZES
from leptonctl.errors import LimitError
from leptonctl.inventory import DeclaredCapacity, Host, Inventory, select_hosts

LIVE_JOB_STATES = ("STARTING", "RUNNING", "UNKNOWN")  # job-status states gc leaves alone


def nodes_from(
    hosts: Sequence[Host],
    facts: Mapping[str, HostFacts | None],
    up: set[str],
    why_not: Mapping[str, str] | None = None,
    *,
    ours: Collection[str] | None = None,
) -> list[Node]:
    """Scheduler nodes: probed facts limited by declared capacity; unreachable = unschedulable.
    What neither a probe nor the inventory says is unknown, not zero (``Node.unknown``);
    ``why_not`` says why a host is not schedulable (drained, unreachable).  A GPU with a
    process that is no leptonctl job's is busy; with ``ours`` (:func:`owned_job_tags`), a
    process of another state store's job is busy too."""
    nodes = []
    for host in hosts:
        host_facts = facts.get(host.name)
        cap = effective_capacity(host_facts, host.capacity)
        fpga_names = [f.name or f.vendor for f in host_facts.fpgas] if host_facts else []
        nodes.append(
            Node(
                name=host.name,
                groups=tuple(host.groups),
                cpus=cap.cpus or 0,
                memory_bytes=cap.memory_bytes or 0,
                gpus=gpu_devices(
                    cap.gpus, host_facts, foreign_ignored=host.gpu_foreign_ignored, ours=ours
                ),
                fpgas=tuple(
                    Fpga(i, fpga_names[i] if i < len(fpga_names) else None)
                    for i in range(cap.fpgas)
                ),
                schedulable=host.name in up and cap.source != "unknown",
                unknown=unknown_sizes(host_facts, host.capacity),
                why_not=(why_not or {}).get(host.name),
                cores=tuple(Core(i, numa) for i, numa in cap.cores),
            )
        )
    return nodes


def owned_job_tags(
    facts: Iterable[HostFacts | None], get: Callable[[int], JobRecord | None]
) -> frozenset[str]:
    """The agent job ids named by the probes' GPU processes that are this store's jobs
    (``get``: the store's job lookup; an id is ``<job>.<attempt>.<uid>``, and the uid drawn
    at submit tells this store's job from another store's job of the same number)."""
    owned = set()
    for tag in job_tags(facts):
        number, _, rest = tag.partition(".")
        _, _, uid = rest.partition(".")
        record = get(int(number)) if number.isdigit() else None
        if record is not None and str(record.spec.get("uid", "x")) == uid:
            owned.add(tag)
    return frozenset(owned)


def unknown_sizes(facts: HostFacts | None, declared: DeclaredCapacity | None) -> frozenset[str]:
    """The sizes of a host nobody knows yet: all of them before its first probe, less what
    the inventory declares."""
    if facts is not None:
        return frozenset()
    if declared is None:
        return frozenset(SIZES)
    given = {
        "cpus": declared.cpus,
        "memory": declared.memory_bytes,
        "gpus": declared.gpus,
        "fpgas": declared.fpgas,
    }
    return frozenset(size for size, value in given.items() if value is None)


def job_view(
    record: JobRecord,
    inventory: Inventory,
    up: set[str] | None = None,
    locality: Mapping[str, float] | None = None,
) -> Job:
    """The scheduler's view of a queued job.  A job the planner assigned to a host
    (``planned_host``, from a batch with estimates) is kept for that host while it is up."""
    spec = record.spec
    limit = spec.get("limit")
    try:
        allowed = frozenset(h.name for h in select_hosts(inventory, limit)) if limit else None
    except LimitError:  # the inventory changed under a queued job: it fits nowhere now
        allowed = frozenset()
    planned = spec.get("planned_host")
    if planned and up is not None and planned in up and (allowed is None or planned in allowed):
        allowed = frozenset({planned})
    return Job(
        id=str(record.id),
        request=Request(**spec["request"]),
        priority=record.priority,
        submitted=record.submitted,
        walltime=spec.get("walltime"),
        after=tuple(str(a) for a in spec.get("after", ())),
        hosts=allowed,
        estimates=spec.get("estimates") or {},
        locality=locality or {},
    )


def running_view(record: JobRecord) -> Running:
    alloc = record.allocation or {}
    return Running(
        allocation=Allocation(
            job_id=str(record.id),
            host=record.host or "",
            cpus=int(alloc.get("cpus", 0)),
            memory_bytes=int(alloc.get("memory_bytes", 0)),
            gpus=tuple(alloc.get("gpus", ())),
            fpgas=tuple(alloc.get("fpgas", ())),
            cores=tuple(alloc.get("cores", ())),
            gpu_ids=tuple(str(d["id"]) for d in gpu_devices_of(alloc)),
        ),
        started=record.started or record.submitted,
        walltime=record.spec.get("walltime"),
    )


def allocation_record(alloc: Allocation) -> dict[str, Any]:
    """What the store keeps of an allocation (``JobRecord.allocation``): counts, GPU indexes
    (the physical GPUs), FPGA indexes, CPU ids, and ``gpu_devices``, one entry per GPU
    device in the order the job sees them: ``{"id": "0" | "0/mig1", "uuid", "note"}``."""
    record: dict[str, Any] = {
        "cpus": alloc.cpus,
        "memory_bytes": alloc.memory_bytes,
        "gpus": list(alloc.gpus),
        "fpgas": list(alloc.fpgas),
        "cores": list(alloc.cores),
    }
    if alloc.gpu_ids:
        uuids = list(alloc.gpu_uuids) + [None] * (len(alloc.gpu_ids) - len(alloc.gpu_uuids))
        record["gpu_devices"] = [
            {"id": device, "uuid": uuid} for device, uuid in zip(alloc.gpu_ids, uuids, strict=True)
        ]
        if alloc.gpu_note:
            record["gpu_note"] = alloc.gpu_note
    return record


def visible_devices(alloc: Mapping[str, Any]) -> str:
    """CUDA_VISIBLE_DEVICES for a stored allocation: the devices' UUIDs ("GPU-...",
    "MIG-...") when every one has one (stable across reordering, the only way to name a
    MIG device), else the GPU indexes ("" for none)."""
    devices = gpu_devices_of(alloc)
    uuids = [d["uuid"] for d in devices]
    if devices and all(isinstance(u, str) and u for u in uuids):
        return ",".join(str(u) for u in uuids)
    return ",".join(str(g) for g in alloc.get("gpus") or ())


def agent_spec(record: JobRecord, extra_env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What the agent's ``job-start`` gets: command, environment with devices, limits (the
    CPUs to pin it to, its memory limit: the supervisor enforces both)."""
    alloc = record.allocation or {}
    cores = [int(c) for c in alloc.get("cores", ())]
    gpus = visible_devices(alloc)
    env = {
        **record.spec.get("env", {}),
        "LEPTON_JOB_ID": str(record.id),
        "LEPTON_HOST": record.host or "",
        "CUDA_VISIBLE_DEVICES": gpus,
        "NVIDIA_VISIBLE_DEVICES": gpus or "void",
        "LEPTON_FPGA_DEVICES": ",".join(str(f) for f in alloc.get("fpgas", ())),
        **(extra_env or {}),
    }
    return {
        "id": record.agent_id,
        "command": record.spec["command"],
        "env": env,
        "workdir": record.spec.get("workdir"),
        "walltime": record.spec.get("walltime"),
        "cpus": cores or None,
        "memory_bytes": int(alloc.get("memory_bytes") or 0) or None,
    }


def removable_job_dirs(
    entries: Iterable[Mapping[str, Any]], records: Mapping[int, JobRecord], cutoff: float
) -> list[str]:
    """Job directories (agent ids) of *this* state store's jobs that ended before
    ``cutoff`` and are not a job's current, unfinished attempt."""
    doomed = []
    for entry in entries:
        agent_id = str(entry.get("id") or "")
        number, _, rest = agent_id.partition(".")
        attempt, _, uid = rest.partition(".")
        record = records.get(int(number)) if number.isdigit() and attempt.isdigit() else None
        if record is None or str(record.spec.get("uid", "x")) != uid:
            continue  # not a job of this store (another operator's, or not a job at all)
        if entry.get("state") in LIVE_JOB_STATES:
            continue
        if record.agent_id == agent_id and record.state not in FINAL:
            continue
        when = entry.get("ended") or entry.get("started")
        if isinstance(when, int | float) and when < cutoff:
            doomed.append(agent_id)
    return doomed
