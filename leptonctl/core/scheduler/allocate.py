"""Resource accounting on one node: what is free, which devices a request gets, what is short.

Pure helpers shared by :mod:`dispatch` (now) and :mod:`plan` (over time).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from leptonctl.core.scheduler.model import Allocation, Core, Fpga, Gpu, Node, Request


@dataclass(frozen=True)
class Usage:
    """Resources held on one node by some set of jobs."""

    cpus: int = 0
    memory_bytes: int = 0
    gpus: frozenset[int] = frozenset()
    fpgas: frozenset[int] = frozenset()
    cores: frozenset[int] = frozenset()

    def plus(self, alloc: Allocation) -> Usage:
        return Usage(
            self.cpus + alloc.cpus,
            self.memory_bytes + alloc.memory_bytes,
            self.gpus | frozenset(alloc.gpus),
            self.fpgas | frozenset(alloc.fpgas),
            self.cores | frozenset(alloc.cores),
        )


def usage_of(allocations: Iterable[Allocation]) -> Usage:
    usage = Usage()
    for alloc in allocations:
        usage = usage.plus(alloc)
    return usage


def gpu_matches(gpu: Gpu, request: Request) -> bool:
    """Whether ``gpu`` satisfies the request's type (substring) and per-GPU memory minimum."""
    wanted = request.gpu_type.lower() if request.gpu_type else None
    if wanted is not None and (gpu.model is None or wanted not in gpu.model.lower()):
        return False
    if request.gpu_memory_bytes > 0:
        return gpu.memory_bytes is not None and gpu.memory_bytes >= request.gpu_memory_bytes
    return True


def fpga_matches(fpga: Fpga, request: Request) -> bool:
    if request.fpga_type:
        return fpga.name is not None and request.fpga_type.lower() in fpga.name.lower()
    return True


def _gpu_order(gpu: Gpu) -> tuple[int, int, int]:
    # Smallest adequate memory first (unknown memory last): big GPUs stay free for big jobs.
    unknown = gpu.memory_bytes is None
    return (int(unknown), gpu.memory_bytes or 0, gpu.index)


def free_gpus(node: Node, request: Request, usage: Usage) -> list[Gpu]:
    """Free GPUs of ``node`` that suit ``request``, in the order they should be taken."""
    found = [g for g in node.gpus if g.index not in usage.gpus and gpu_matches(g, request)]
    return sorted(found, key=_gpu_order)


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
    if request.gpus > 0:
        candidates = free_gpus(node, request, usage)
        if len(candidates) < request.gpus:
            return None
        gpus = tuple(sorted(g.index for g in candidates[: request.gpus]))
    if request.fpgas > 0:
        cards = free_fpgas(node, request, usage)
        if len(cards) < request.fpgas:
            return None
        fpgas = tuple(sorted(f.index for f in cards[: request.fpgas]))
    cores = pick_cores(node, request.cpus, usage, gpus)
    if node.cores and request.cpus > 0 and not cores:
        return None  # the count says free, but not that many of its CPUs are
    return Allocation(job_id, node.name, request.cpus, request.memory_bytes, gpus, fpgas, cores)


def fits_empty(node: Node, request: Request) -> bool:
    """Whether ``request`` fits ``node`` with nothing else on it."""
    return allocate("", node, request, Usage()) is not None


def could_ever_fit(node: Node, request: Request) -> bool:
    """Whether ``request`` may fit ``node`` with nothing else on it, once what is unknown
    about the node is known: only known sizes can rule it out."""
    return not shortfalls(node, request, Usage())


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


def shortfalls(node: Node, request: Request, usage: Usage) -> list[tuple[str, str]]:
    """What ``request`` lacks on ``node``: (needed, free on the node) pairs, scarcest first.
    A size the node does not know yet is never short (nor read as zero)."""
    short: list[tuple[str, str]] = []
    unknown = node.unknown
    if request.gpus > 0 and "gpus" not in unknown:
        have = len(free_gpus(node, request, usage))
        if have < request.gpus:
            short.append((describe_gpus(request), f"{have} free"))
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
        short = shortfalls(node, request, usage)
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
