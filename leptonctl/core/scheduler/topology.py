"""Which of a node's free GPU devices a multi-GPU job gets: the best-connected set.

The order (gpu_facts contract): most NVLink links among the set's members, then the
fewest NUMA nodes, then the best PCIe paths between them, then the order the devices
were offered in (smallest adequate memory, lowest index).  Pure: devices in, devices and
a one-line reason out.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from itertools import combinations
from math import comb

from leptonctl.core.scheduler.model import Gpu

# nvidia-smi topo -m paths, best first; unknown is ranked last
PATH_RANK = {"NV": 0, "PIX": 1, "PXB": 2, "PHB": 3, "NODE": 4, "SYS": 5}
_UNKNOWN_PATH = 6
EXHAUSTIVE_LIMIT = 5000  # sets tried one by one; beyond, a greedy growth from each device


def _pair(a: Gpu, b: Gpu) -> tuple[int, int]:
    """(NVLink links, path rank) between two devices.  MIG devices have no peer-to-peer
    path (CUDA does not do P2P between MIG devices): no links, path unknown."""
    if a.mig is not None or b.mig is not None:
        return 0, _UNKNOWN_PATH
    links, rank = 0, _UNKNOWN_PATH
    for peer, count, path in a.links:
        if peer == b.index:
            links = count
            rank = PATH_RANK.get(path or "", _UNKNOWN_PATH)
            if count > 0:
                rank = PATH_RANK["NV"]
    return links, rank


def _score(members: Sequence[Gpu], order: dict[str, int]) -> tuple[int, ...]:
    links = paths = 0
    for a, b in combinations(members, 2):
        count, rank = _pair(a, b)
        links += count
        paths += rank
    numa = {g.numa_node for g in members if g.numa_node is not None}
    rest = sorted(order[g.id] for g in members)
    migs = sum(1 for g in members if g.mig is not None)  # whole GPUs first, as one by one
    return (migs, -links, len(numa), paths, *rest)


def pick_gpus(candidates: Sequence[Gpu], count: int) -> tuple[list[Gpu], str | None]:
    """``count`` of ``candidates`` (in the order they are preferred one by one) and why
    that set: "NVLink x18, NUMA node 0" (None for a single device).  Assumes enough."""
    if count <= 1 or len(candidates) <= count:
        chosen = list(candidates[:count])
        return chosen, describe_set(chosen)
    if not any(g.links for g in candidates) and len({g.numa_node for g in candidates}) <= 1:
        chosen = list(candidates[:count])  # nothing to tell them apart: the order decides
        return chosen, describe_set(chosen)
    found, why = _pick(tuple(candidates), count)
    return list(found), why


@lru_cache(maxsize=4096)  # the planner asks the same question many times over
def _pick(candidates: tuple[Gpu, ...], count: int) -> tuple[tuple[Gpu, ...], str | None]:
    order = {g.id: i for i, g in enumerate(candidates)}
    if comb(len(candidates), count) <= EXHAUSTIVE_LIMIT:
        best = min(combinations(candidates, count), key=lambda s: _score(s, order))
        chosen = list(best)
    else:
        chosen = _greedy(candidates, count, order)
    chosen.sort(key=lambda g: order[g.id])
    return tuple(chosen), describe_set(chosen)


def _greedy(candidates: Sequence[Gpu], count: int, order: dict[str, int]) -> list[Gpu]:
    """From each device, add the device that scores best with the set so far; the best set."""
    best: tuple[tuple[int, ...], list[Gpu]] | None = None
    for seed in candidates:
        members = [seed]
        while len(members) < count:
            rest = [g for g in candidates if g not in members]
            members.append(min(rest, key=lambda g: _score([*members, g], order)))
        score = _score(members, order)
        if best is None or score < best[0]:
            best = (score, members)
    assert best is not None
    return best[1]


def describe_set(members: Sequence[Gpu]) -> str | None:
    """ "GPUs 0,1: NVLink x18, NUMA node 0" — how a chosen set is joined; None for one GPU."""
    if not members:
        return None
    names = ",".join(g.id for g in members)
    if len(members) == 1:
        only = members[0]
        return f"GPU {names}: MIG {only.profile or 'device'}" if only.mig is not None else None
    links = 0
    worst = -1
    for a, b in combinations(members, 2):
        count, rank = _pair(a, b)
        links += count
        worst = max(worst, rank)
    parts = []
    if links:
        parts.append(f"NVLink x{links}")
    if worst > PATH_RANK["NV"] or not links:
        path = next((p for p, r in PATH_RANK.items() if r == worst), None)
        if path is not None:
            parts.append(f"PCIe {path}" if links == 0 else f"some pairs PCIe {path}")
    numa = sorted({g.numa_node for g in members if g.numa_node is not None})
    if len(numa) == 1 and all(g.numa_node is not None for g in members):
        parts.append(f"NUMA node {numa[0]}")
    elif len(numa) > 1:
        parts.append("NUMA nodes " + ",".join(str(n) for n in numa))
    return f"GPUs {names}: " + (", ".join(parts) or "topology unknown")
