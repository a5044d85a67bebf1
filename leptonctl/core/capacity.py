"""What a host offers to the scheduler: probed facts limited by declared capacity.

An inventory may declare ``capacity:`` for a host.  A declared number *limits*
what the agent reports (reserve part of a machine for its owner); with no
probe at all, the declaration stands on its own (plan without connecting).
"""

from __future__ import annotations

from dataclasses import dataclass

from leptonctl.core.facts import HostFacts
from leptonctl.inventory.model import DeclaredCapacity


@dataclass(frozen=True)
class GpuSlot:
    index: int
    model: str | None
    memory_bytes: int | None
    numa_node: int | None = None


@dataclass(frozen=True)
class NodeCapacity:
    """Schedulable resources of one host, and where each number came from."""

    cpus: int | None
    memory_bytes: int | None
    gpus: tuple[GpuSlot, ...]
    fpgas: int
    disk_free_bytes: int | None
    source: str  # "probe", "declared", "probe+declared" or "unknown"
    # the CPU ids jobs are pinned to, with their NUMA node where known: probed only (a host
    # that only declares capacity, or was never probed, has none and its jobs are not pinned)
    cores: tuple[tuple[int, int | None], ...] = ()


def effective_capacity(facts: HostFacts | None, declared: DeclaredCapacity | None) -> NodeCapacity:
    if facts is None and declared is None:
        return NodeCapacity(None, None, (), 0, None, "unknown")
    if facts is None:
        assert declared is not None
        return _declared_only(declared)
    probed_gpus = tuple(
        GpuSlot(g.index, g.name, g.memory_total_bytes, g.numa_node) for g in facts.gpus
    )
    nodes = dict(facts.cpu.numa_nodes)
    cores = tuple((i, nodes.get(i)) for i in facts.cpu.ids)
    disk = facts.data_disk
    probed = NodeCapacity(
        cpus=facts.cpu.usable_threads,
        memory_bytes=facts.memory.total_bytes,
        gpus=probed_gpus,
        fpgas=len(facts.fpgas),
        disk_free_bytes=disk.free_bytes if disk else None,
        source="probe",
        cores=cores,
    )
    if declared is None:
        return probed
    gpus = probed.gpus
    if declared.gpu_model is not None:
        wanted = declared.gpu_model.lower()
        gpus = tuple(g for g in gpus if g.model and wanted in g.model.lower())
    if declared.gpus is not None:
        gpus = gpus[: declared.gpus]
    return NodeCapacity(
        cpus=_limit(probed.cpus, declared.cpus),
        memory_bytes=_limit(probed.memory_bytes, declared.memory_bytes),
        gpus=gpus,
        fpgas=probed.fpgas if declared.fpgas is None else min(probed.fpgas, declared.fpgas),
        disk_free_bytes=_limit(probed.disk_free_bytes, declared.disk_bytes),
        source="probe+declared",
        cores=cores if declared.cpus is None else cores[: declared.cpus],
    )


def _declared_only(declared: DeclaredCapacity) -> NodeCapacity:
    gpus = tuple(
        GpuSlot(i, declared.gpu_model, declared.gpu_memory_bytes) for i in range(declared.gpus or 0)
    )
    return NodeCapacity(
        cpus=declared.cpus,
        memory_bytes=declared.memory_bytes,
        gpus=gpus,
        fpgas=declared.fpgas or 0,
        disk_free_bytes=declared.disk_bytes,
        source="declared",
    )


def _limit(probed: int | None, declared: int | None) -> int | None:
    if declared is None:
        return probed
    if probed is None:
        return declared
    return min(probed, declared)
