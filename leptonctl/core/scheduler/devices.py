"""A host's schedulable GPU devices, from its probe: whole GPUs and MIG devices, each
with its UUID, its NVLink peers, and why it is not handed out (busy, unhealthy).

Pure: probe facts and the GPUs the node may use (declared capacity applied) in, scheduler
``Gpu`` devices out.  The placement rules are gpu_facts' (see docs/design.md):

- a GPU with MIG enabled is no device itself; each of its MIG devices is one;
- a device with a process that is no leptonctl job's is busy ("used by bob pid 4242
  (python)"), unless the host says ``lepton_gpu_foreign: ignore``;
- a GPU with uncorrected ECC errors, pending page retirement or row remapping, a failed
  remapping or a recent Xid is unhealthy (:func:`leptonctl.core.health.gpu_problems`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence

from leptonctl.core.capacity import GpuSlot
from leptonctl.core.facts import GpuFacts, GpuProcess, HostFacts
from leptonctl.core.health import gpu_problems
from leptonctl.core.scheduler.model import Gpu


def gpu_devices(
    slots: Sequence[GpuSlot],
    facts: HostFacts | None,
    *,
    foreign_ignored: bool = False,
    ours: Collection[str] | None = None,
) -> tuple[Gpu, ...]:
    """The devices of the GPUs in ``slots`` (what the node may use), as ``facts`` saw them.
    A slot the probe does not describe (declared capacity only) is a plain whole GPU.
    ``ours``: the agent job ids of this state store's jobs among those the probe names (see
    :func:`foreign_use`); None: every leptonctl job's process counts as ours."""
    by_index: Mapping[int, GpuFacts] = {g.index: g for g in facts.gpus} if facts else {}
    index_of = {g.uuid: g.index for g in by_index.values() if g.uuid}
    devices: list[Gpu] = []
    for slot in slots:
        gpu = by_index.get(slot.index)
        if gpu is None:
            devices.append(Gpu(slot.index, slot.model, slot.memory_bytes, slot.numa_node))
            continue
        unhealthy = "; ".join(gpu_problems(gpu)) or None
        if gpu.mig_enabled:
            devices.extend(
                Gpu(
                    slot.index,
                    slot.model,
                    mig.memory_total_bytes,
                    slot.numa_node,
                    uuid=mig.uuid,
                    mig=mig.index,
                    profile=mig.profile,
                    busy=None if foreign_ignored else foreign_use(mig.processes, ours),
                    unhealthy=unhealthy,
                )
                for mig in gpu.mig_devices
                if mig.uuid is not None  # a MIG device is named to CUDA by its UUID only
            )
            continue
        links = tuple(
            (index_of[link.peer], link.nvlink, link.path)
            for link in gpu.topology
            if link.peer in index_of and index_of[link.peer] != slot.index
        )
        devices.append(
            Gpu(
                slot.index,
                slot.model,
                slot.memory_bytes,
                slot.numa_node,
                uuid=gpu.uuid,
                busy=None if foreign_ignored else foreign_use(gpu.processes, ours),
                unhealthy=unhealthy,
                links=links,
            )
        )
    return tuple(devices)


def foreign_use(processes: Sequence[GpuProcess], ours: Collection[str] | None = None) -> str | None:
    """Why the processes that are no leptonctl job's make a GPU busy: "used by bob pid 4242
    (python)" (the first one named, the rest counted); None when there are none.  With
    ``ours`` (the agent job ids of this state store's jobs), a process of another store's
    job is foreign too: that store's jobs hold GPUs this one does not know about."""
    foreign = [p for p in processes if p.job is None or (ours is not None and p.job not in ours)]
    if not foreign:
        return None
    first = foreign[0]
    text = f"used by {describe_process(first)}"
    if first.job is not None:
        text += f", leptonctl job {first.job.split('.')[0]} of another state store"
    if len(foreign) > 1:
        text += f" and {len(foreign) - 1} more process{'es' if len(foreign) > 2 else ''}"
    return text


def describe_process(process: GpuProcess) -> str:
    """ "bob pid 4242 (python)"; "uid 1001 pid 7" when the user has no name; "pid 7" when
    not even the uid could be read."""
    who = process.user or (f"uid {process.uid}" if process.uid is not None else None)
    text = f"{who} pid {process.pid}" if who else f"pid {process.pid}"
    return f"{text} ({process.name})" if process.name else text


def gpu_condition(gpu: GpuFacts, *, foreign_ignored: bool = False) -> tuple[str, str]:
    """What placement makes of one probed GPU, for ``status``: (kind, words), kind one of
    ``unhealthy``, ``busy``, ``mig``, ``job`` (only leptonctl jobs' processes), ``free``.
    A MIG-enabled GPU lists its devices and the busy ones."""
    problems = gpu_problems(gpu)
    if problems:
        return "unhealthy", "unhealthy: " + "; ".join(problems)
    if gpu.mig_enabled:
        profiles = Counter(m.profile or "?" for m in gpu.mig_devices)
        words = "MIG: " + (", ".join(f"{n}x {p}" for p, n in profiles.items()) or "no devices")
        busy = [
            f"mig{m.index} {why}"
            for m in gpu.mig_devices
            if not foreign_ignored and (why := foreign_use(m.processes)) is not None
        ]
        return "mig", "; ".join([words, *busy])
    busy_by = None if foreign_ignored else foreign_use(gpu.processes)
    if busy_by is not None:
        return "busy", busy_by
    jobs = sorted({p.job.split(".")[0] for p in gpu.processes if p.job})
    if jobs:
        return "job", "leptonctl job " + ", ".join(jobs)
    if gpu.processes and foreign_ignored:
        return "free", "free (other processes ignored: lepton_gpu_foreign)"
    return "free", "free"


def job_tags(facts: Iterable[HostFacts | None]) -> set[str]:
    """The agent job ids the probes name as the jobs of GPU processes (to ask the store
    which of them are its own)."""
    tags: set[str] = set()
    for host in facts:
        for gpu in host.gpus if host is not None else ():
            procs = [*gpu.processes, *(p for m in gpu.mig_devices for p in m.processes)]
            tags.update(p.job for p in procs if p.job is not None)
    return tags
