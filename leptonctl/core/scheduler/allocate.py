"""Resource accounting on one node: what is free, which devices a request gets, what is short.

Pure helpers shared by :mod:`dispatch` (now) and :mod:`plan` (over time).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from leptonctl.core.scheduler.model import Allocation, Core, Fpga, Gpu, Node, Request
from leptonctl.core.scheduler.topology import pick_gpus


@dataclass(frozen=True)
class Usage:
    """Resources held on one node by some set of jobs."""

    cpus: int = 0
    memory_bytes: int = 0
    gpus: frozenset[str] = frozenset()  # GPU device ids (Gpu.id)
    fpgas: frozenset[int] = frozenset()
    cores: frozenset[int] = frozenset()

    def plus(self, alloc: Allocation) -> Usage:
        return Usage(
            self.cpus + alloc.cpus,
            self.memory_bytes + alloc.memory_bytes,
            self.gpus | frozenset(alloc.devices),
            self.fpgas | frozenset(alloc.fpgas),
            self.cores | frozenset(alloc.cores),
        )


def usage_of(allocations: Iterable[Allocation]) -> Usage:
    usage = Usage()
    for alloc in allocations:
        usage = usage.plus(alloc)
    return usage


def gpu_matches(gpu: Gpu, request: Request) -> bool:
    """Whether ``gpu`` satisfies the request's type and per-GPU memory minimum.  The type
    is a substring of the model (a MIG device's parent's) or, for a MIG device, its whole
    profile ("1g.10gb")."""
    wanted = request.gpu_type.lower() if request.gpu_type else None
    if wanted is not None:
        by_profile = gpu.profile is not None and wanted == gpu.profile.lower()
        if not by_profile and (gpu.model is None or wanted not in gpu.model.lower()):
            return False
    if request.gpu_memory_bytes > 0:
        return gpu.memory_bytes is not None and gpu.memory_bytes >= request.gpu_memory_bytes
    return True


def fpga_matches(fpga: Fpga, request: Request) -> bool:
    if request.fpga_type:
        return fpga.name is not None and request.fpga_type.lower() in fpga.name.lower()
    return True


def _gpu_order(gpu: Gpu) -> tuple[int, int, int, int, int]:
    # Whole GPUs before MIG devices (a MIG device is taken when the request names its
    # profile, or when no whole GPU is left); then the smallest adequate memory first
    # (unknown memory last): big GPUs stay free for big jobs.
    unknown = gpu.memory_bytes is None
    return (int(gpu.mig is not None), int(unknown), gpu.memory_bytes or 0, gpu.index, gpu.mig or 0)


def gpu_taken(gpu: Gpu, used: frozenset[str]) -> bool:
    """Whether ``used`` (device ids) holds ``gpu``, its parent GPU or one of its MIG devices
    (an allocation from before MIG was switched on or off holds what it held)."""
    return _is_taken(gpu, used, _mig_parents(used))


def _mig_parents(used: frozenset[str]) -> frozenset[str]:
    """The GPU indexes (as text) of which ``used`` holds a MIG device."""
    return frozenset(u.partition("/")[0] for u in used if "/" in u)


def _is_taken(gpu: Gpu, used: frozenset[str], parents: frozenset[str]) -> bool:
    if gpu.id in used:
        return True
    if gpu.mig is not None:
        return str(gpu.index) in used
    return bool(parents) and gpu.id in parents


def free_gpus(node: Node, request: Request, usage: Usage, *, ever: bool = False) -> list[Gpu]:
    """Free GPUs of ``node`` that suit ``request``, in the order they should be taken.
    Busy (another user's process) and unhealthy devices are not free, unless ``ever``
    (whether the request could run once they are free again)."""
    used = usage.gpus
    gpus = node.gpus if ever else [g for g in node.gpus if g.unavailable is None]
    if used:
        parents = _mig_parents(used)
        gpus = [g for g in gpus if not _is_taken(g, used, parents)]
    return sorted((g for g in gpus if gpu_matches(g, request)), key=_gpu_order)


def unavailable_gpus(node: Node, request: Request, usage: Usage) -> list[Gpu]:
    """The devices of ``node`` that would suit ``request`` and are not taken by our jobs, but
    are busy or unhealthy (why a GPU was not used)."""
    return [g for g in free_gpus(node, request, usage, ever=True) if g.unavailable is not None]


def describe_unavailable(gpus: Iterable[Gpu], limit: int = 3) -> str:
    """'GPU 2: used by bob pid 4242 (python); GPU 3: unhealthy: ...' (the first few)."""
    found = list(gpus)
    text = "; ".join(f"GPU {g.id}: {g.unavailable}" for g in found[:limit])
    if len(found) > limit:
        text += f"; and {len(found) - limit} more"
    return text


def free_fpgas(node: Node, request: Request, usage: Usage) -> list[Fpga]:
    found = [f for f in node.fpgas if f.index not in usage.fpgas and fpga_matches(f, request)]
    return sorted(found, key=lambda f: f.index)


def pick_cores(node: Node, count: int, usage: Usage, gpus: Iterable[int] = ()) -> tuple[int, ...]:
    """``count`` free CPUs of ``node``: those on the NUMA node(s) of the job's GPUs first,
    then the NUMA node with most free CPUs (a job stays on one node where it can), then by
    index.  Empty when the node's CPUs are not known (no pinning) or too few are free."""
    free = [c for c in node.cores if c.index not in usage.cores]
    if count <= 0 or len(free) < count:
        return ()
    near = {g.numa_node for g in node.gpus if g.index in set(gpus) and g.numa_node is not None}
    per_node: dict[int | None, int] = {}
    for core in free:
        per_node[core.numa_node] = per_node.get(core.numa_node, 0) + 1

    def order(core: Core) -> tuple[int, int, int, int]:
        room = per_node[core.numa_node]
        fits = room >= count
        return (core.numa_node not in near, not fits, -room if not fits else room, core.index)

    return tuple(sorted(c.index for c in sorted(free, key=order)[:count]))


def allocate(job_id: str, node: Node, request: Request, usage: Usage) -> Allocation | None:
    """Concrete devices for ``request`` on ``node`` given what ``usage`` holds; None if short."""
    if node.cpus - usage.cpus < request.cpus:
        return None
    if node.memory_bytes - usage.memory_bytes < request.memory_bytes:
        return None
    gpus: tuple[int, ...] = ()
    fpgas: tuple[int, ...] = ()
    chosen: list[Gpu] = []
    note: str | None = None
    if request.gpus > 0:
        candidates = free_gpus(node, request, usage)
        if len(candidates) < request.gpus:
            return None
        chosen, note = pick_gpus(candidates, request.gpus)
        chosen.sort(key=lambda g: (g.index, g.mig or 0))
        gpus = tuple(sorted({g.index for g in chosen}))
        skipped = (
            unavailable_gpus(node, request, usage)
            if any(g.unavailable is not None for g in node.gpus)
            else []
        )
        if skipped:
            note = (f"{note}; " if note else "") + "not used: " + describe_unavailable(skipped)
    if request.fpgas > 0:
        cards = free_fpgas(node, request, usage)
        if len(cards) < request.fpgas:
            return None
        fpgas = tuple(sorted(f.index for f in cards[: request.fpgas]))
    cores = pick_cores(node, request.cpus, usage, gpus)
    if node.cores and request.cpus > 0 and not cores:
        return None  # the count says free, but not that many of its CPUs are
    return Allocation(
        job_id,
        node.name,
        request.cpus,
        request.memory_bytes,
        gpus,
        fpgas,
        cores,
        gpu_ids=tuple(g.id for g in chosen),
        gpu_uuids=tuple(g.uuid for g in chosen),
        gpu_note=note,
    )


def fits_empty(node: Node, request: Request, *, ever: bool = False) -> bool:
    """Whether ``request`` fits ``node`` with nothing else on it (with ``ever``: once its
    busy and unhealthy GPUs are free and well again)."""
    return allocate("", as_if_free(node) if ever else node, request, Usage()) is not None


def as_if_free(node: Node) -> Node:
    """``node`` with its busy and unhealthy GPUs counted as free."""
    if all(g.unavailable is None for g in node.gpus):
        return node
    gpus = tuple(replace(g, busy=None, unhealthy=None) for g in node.gpus)
    return replace(node, gpus=gpus)


def could_ever_fit(node: Node, request: Request) -> bool:
    """Whether ``request`` may fit ``node`` with nothing else on it, once what is unknown
    about the node is known: only known sizes can rule it out (a GPU that is busy or
    unhealthy now may be free later: it counts)."""
    return not shortfalls(node, request, Usage(), ever=True)


def gib(n: int) -> str:
    value = n / 2**30
    return f"{value:.0f} GiB" if value == round(value) else f"{value:.1f} GiB"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def describe_gpus(request: Request) -> str:
    text = _plural(request.gpus, "GPU")
    if request.gpu_type:
        text += f" matching {request.gpu_type!r}"
    if request.gpu_memory_bytes > 0:
        text += f" with >= {gib(request.gpu_memory_bytes)}"
    return text


def describe_fpgas(request: Request) -> str:
    text = _plural(request.fpgas, "FPGA")
    if request.fpga_type:
        text += f" matching {request.fpga_type!r}"
    return text


def shortfalls(
    node: Node, request: Request, usage: Usage, *, ever: bool = False
) -> list[tuple[str, str]]:
    """What ``request`` lacks on ``node``: (needed, free on the node) pairs, scarcest first.
    A size the node does not know yet is never short (nor read as zero).  With ``ever``,
    busy and unhealthy GPUs count as free."""
    short: list[tuple[str, str]] = []
    unknown = node.unknown
    if request.gpus > 0 and "gpus" not in unknown:
        have = len(free_gpus(node, request, usage, ever=ever))
        if have < request.gpus:
            skipped = [] if ever else unavailable_gpus(node, request, usage)
            why = f" ({describe_unavailable(skipped)})" if skipped else ""
            short.append((describe_gpus(request), f"{have} free{why}"))
    if request.fpgas > 0 and "fpgas" not in unknown:
        have = len(free_fpgas(node, request, usage))
        if have < request.fpgas:
            short.append((describe_fpgas(request), f"{have} free"))
    cpus = node.cpus - usage.cpus
    if cpus < request.cpus and "cpus" not in unknown:
        short.append((_plural(request.cpus, "CPU"), f"{max(cpus, 0)} free"))
    memory = node.memory_bytes - usage.memory_bytes
    if memory < request.memory_bytes and "memory" not in unknown:
        short.append((f"{gib(request.memory_bytes)} memory", f"{gib(max(memory, 0))} free"))
    return short


def explain_shortage(
    request: Request, candidates: Iterable[tuple[Node, Usage]], *, ever: bool = False
) -> str:
    """A one-line reason naming the short resource on the closest host.

    With ``ever`` the usages are ignored wording-wise ("has N" instead of "has N free").
    """
    best: tuple[int, str, list[tuple[str, str]]] | None = None
    for node, usage in candidates:
        short = shortfalls(node, request, usage, ever=ever)
        if not short:
            continue
        if best is None or len(short) < best[0]:
            best = (len(short), node.name, short)
    if best is None:
        return "no allowed host"
    _, host, short = best
    need, have = short[0]
    if ever:
        have = have.removesuffix(" free")
    text = f"needs {need}; best host {host} has {have}"
    if len(short) > 1:
        text += " (also short: " + ", ".join(s[0] for s in short[1:]) + ")"
    return text
