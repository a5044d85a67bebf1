"""Batch planning for ``--dry-run``: predicted start and end of every job, minimising makespan.

Durations come from :func:`~.model.estimate_for`; a job with no applicable
estimate on a node is assumed to take :data:`DEFAULT_DURATION` (60 s) there, and
so is a running job with neither estimate nor walltime (counted from ``now``).
Only ``after`` orders jobs; priorities merely break ties.

Method: constructive heuristics (Min-min, MCT, Sufferage) build candidate
schedules with a resource-aware list simulation (several jobs share a node when
CPUs, memory and devices allow; devices are tracked by index over time); the
best is improved by local search (reassign a job, swap two jobs' nodes, reorder)
that keeps only improvements. When every node can hold only one job at a time
and there are no dependencies, the problem is the classic ETC one and the fast
delta-evaluated search of :mod:`.etc` runs instead. Min-min is always a
candidate, so the plan is never worse than Min-min.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from leptonctl.core.scheduler.allocate import (
    Usage,
    allocate,
    could_ever_fit,
    explain_shortage,
    fits_empty,
)
from leptonctl.core.scheduler.dispatch import (
    allowed_nodes,
    describe_away,
    never_fits_reason,
    queue_order,
)
from leptonctl.core.scheduler.etc import plan_etc
from leptonctl.core.scheduler.model import (
    Allocation,
    Blocked,
    Job,
    Node,
    Placement,
    Plan,
    Running,
    dependency_cycles,
    estimate_for,
)

DEFAULT_DURATION = 60.0  # seconds, for a job (or running job) with no applicable estimate


@dataclass(frozen=True)
class _Interval:
    start: float
    end: float
    alloc: Allocation


class _Timeline:
    """What one node holds over time; finds the earliest start that fits a request."""

    def __init__(self, node: Node, intervals: Sequence[_Interval] = ()) -> None:
        self.node = node
        self.intervals = list(intervals)

    def earliest(self, job: Job, ready: float, duration: float) -> tuple[float, Allocation]:
        times = sorted({ready} | {iv.end for iv in self.intervals if iv.end > ready})
        for t in times:
            end = t + duration
            overlap = [
                iv
                for iv in self.intervals
                if iv.end > t and (iv.start < end or (duration <= 0 and iv.start <= t))
            ]
            cpus, memory = _peak(overlap, t)
            usage = Usage(
                cpus,
                memory,
                frozenset(i for iv in overlap for i in iv.alloc.devices),
                frozenset(i for iv in overlap for i in iv.alloc.fpgas),
            )
            alloc = allocate(job.id, self.node, job.request, usage)
            if alloc is not None:
                return t, alloc
        raise AssertionError("a job that fits the empty node always fits after the last end")


def _peak(intervals: Sequence[_Interval], t: float) -> tuple[int, int]:
    """Peak CPUs and memory in use from ``t`` on, by a sweep over interval ends and starts
    (half-open intervals: at equal times, an end frees before a start takes)."""
    events = sorted(
        [(iv.end, 0, iv.alloc) for iv in intervals]
        + [(max(iv.start, t), 1, iv.alloc) for iv in intervals],
        key=lambda e: (e[0], e[1]),
    )
    cpus = memory = peak_cpus = peak_memory = 0
    for _, starts, alloc in events:
        sign = 1 if starts else -1
        cpus += sign * alloc.cpus
        memory += sign * alloc.memory_bytes
        peak_cpus, peak_memory = max(peak_cpus, cpus), max(peak_memory, memory)
    return peak_cpus, peak_memory


@dataclass
class _Problem:
    jobs: list[Job]
    nodes: list[Node]
    options: list[list[int]]  # job -> candidate node indexes
    duration: list[dict[int, float]]  # job -> node -> seconds
    deps: list[list[int]]  # job -> indexes of planned jobs it waits for
    dep_floor: list[float]  # job -> earliest start from running dependencies
    base: list[list[_Interval]]  # node -> intervals of running jobs


@dataclass
class _Schedule:
    placements: dict[int, tuple[int, float, float, Allocation]]  # job -> node, start, end, alloc
    makespan: float
    total: float

    def order(self) -> list[int]:
        return sorted(self.placements, key=lambda j: (self.placements[j][1], j))

    def assignment(self) -> dict[int, int]:
        return {j: p[0] for j, p in self.placements.items()}

    def better_than(self, other: _Schedule) -> bool:
        eps = 1e-9 * max(1.0, other.makespan)
        if self.makespan < other.makespan - eps:
            return True
        return self.makespan <= other.makespan + eps and self.total < other.total - eps


def _timelines(problem: _Problem) -> list[_Timeline]:
    return [_Timeline(n, problem.base[i]) for i, n in enumerate(problem.nodes)]


def _commit(
    problem: _Problem,
    lines: list[_Timeline],
    sched: dict[int, tuple[int, float, float, Allocation]],
    job: int,
    node: int,
    start: float,
    alloc: Allocation,
) -> None:
    end = start + problem.duration[job][node]
    lines[node].intervals.append(_Interval(start, end, alloc))
    sched[job] = (node, start, end, alloc)


def _finish(sched: dict[int, tuple[int, float, float, Allocation]]) -> _Schedule:
    ends = [p[2] for p in sched.values()]
    return _Schedule(sched, max(ends, default=0.0), sum(ends))


def _ready(
    problem: _Problem, sched: dict[int, tuple[int, float, float, Allocation]], j: int
) -> float:
    return max([problem.dep_floor[j], *(sched[d][2] for d in problem.deps[j])])


def _decode(problem: _Problem, order: Sequence[int], assign: dict[int, int]) -> _Schedule:
    """List simulation: each job, in order (dependencies first), at its node's earliest fit."""
    lines = _timelines(problem)
    sched: dict[int, tuple[int, float, float, Allocation]] = {}
    for j in _topological(problem, order):
        node = assign[j]
        start, alloc = lines[node].earliest(
            problem.jobs[j], _ready(problem, sched, j), problem.duration[j][node]
        )
        _commit(problem, lines, sched, j, node, start, alloc)
    return _finish(sched)


def _topological(problem: _Problem, order: Sequence[int]) -> list[int]:
    """``order`` made dependency-consistent, keeping it where it already is."""
    done: set[int] = set()
    result: list[int] = []

    def place(j: int) -> None:
        if j in done:
            return
        done.add(j)
        for d in problem.deps[j]:
            place(d)
        result.append(j)

    for j in order:
        place(j)
    return result


def _greedy(problem: _Problem, rule: str, deadline: float | None = None) -> _Schedule | None:
    """Min-min, Sufferage or MCT over the resource-aware list simulation.

    With a ``deadline``, gives up (returns None) once it passes: on large batches that
    share nodes, Min-min and Sufferage are quadratic in the number of jobs.
    """
    lines = _timelines(problem)
    sched: dict[int, tuple[int, float, float, Allocation]] = {}
    waiting = {j: set(problem.deps[j]) for j in range(len(problem.jobs))}
    cache: dict[tuple[int, int], tuple[float, float, Allocation]] = {}

    def completion(j: int, n: int) -> tuple[float, float, Allocation]:
        key = (j, n)
        if key not in cache:
            start, alloc = lines[n].earliest(
                problem.jobs[j], _ready(problem, sched, j), problem.duration[j][n]
            )
            cache[key] = (start + problem.duration[j][n], start, alloc)
        return cache[key]

    while waiting:
        if deadline is not None and time.perf_counter() > deadline:
            return None
        ready = [j for j, deps in waiting.items() if not deps]
        if rule == "mct":
            ready = [min(ready)]  # jobs are indexed in queue order
        best: tuple[float, int, int] | None = None  # (-score or ct, job, node)
        for j in ready:
            cts = sorted((completion(j, n)[0], n) for n in problem.options[j])
            if rule == "sufferage":
                score = -(cts[1][0] - cts[0][0]) if len(cts) > 1 else -math.inf
            else:
                score = cts[0][0]
            if best is None or (score, j) < (best[0], best[1]):
                best = (score, j, cts[0][1])
        assert best is not None
        _, j, n = best
        _, start, alloc = completion(j, n)
        _commit(problem, lines, sched, j, n, start, alloc)
        del waiting[j]
        for k, deps in waiting.items():
            if j in deps:
                deps.discard(j)
                for m in problem.options[k]:
                    cache.pop((k, m), None)
        for k in waiting:
            cache.pop((k, n), None)
    return _finish(sched)


def _improve(
    problem: _Problem, start: _Schedule, deadline: float, rng: random.Random, rounds: int | None
) -> _Schedule:
    """Local search on (order, assignment): reassign, swap nodes, reorder; keep improvements."""
    best = start
    order = best.order()
    assign = best.assignment()
    movable = [j for j in order if len(problem.options[j]) > 1]
    done = 0
    stale = 0
    patience = 300 + 30 * len(order)
    while len(order) > 1 and stale < patience:
        if rounds is not None and done >= rounds:
            break
        if rounds is None and time.perf_counter() >= deadline:
            break
        done += 1
        new_order, new_assign = list(order), dict(assign)
        late = [j for j in order if best.placements[j][2] >= best.makespan - 1e-9]
        j = rng.choice(late) if late and rng.random() < 0.5 else rng.choice(order)
        kind = rng.random()
        if kind < 0.4 and movable and len(problem.options[j]) > 1:
            new_assign[j] = rng.choice([n for n in problem.options[j] if n != assign[j]])
        elif kind < 0.7:
            k = rng.choice(order)
            if assign[k] in problem.options[j] and assign[j] in problem.options[k]:
                new_assign[j], new_assign[k] = assign[k], assign[j]
        else:
            new_order.remove(j)
            new_order.insert(rng.randrange(len(new_order) + 1), j)
        trial = _decode(problem, new_order, new_assign)
        if trial.better_than(best):
            best, order, assign, stale = trial, trial.order(), trial.assignment(), 0
        else:
            stale += 1
    return best


def _exclusive(problem: _Problem) -> bool:
    """Whether no node can ever hold two of the planned jobs at once (the ETC model)."""
    if any(problem.deps):
        return False
    for n, node in enumerate(problem.nodes):
        asks = [
            problem.jobs[j].request for j in range(len(problem.jobs)) if n in problem.options[j]
        ]
        if len(asks) <= 1:
            continue
        dims = [
            (node.cpus, [r.cpus for r in asks]),
            (node.memory_bytes, [r.memory_bytes for r in asks]),
            (len(node.gpus), [r.gpus for r in asks]),
            (len(node.fpgas), [r.fpgas for r in asks]),
        ]
        if not any(cap > 0 and all(2 * a > cap for a in amounts) for cap, amounts in dims):
            return False
    return True


def _plan_exclusive(
    problem: _Problem, budget_seconds: float, seed: int, rounds: int | None
) -> _Schedule:
    machines = len(problem.nodes)
    ready = [max((iv.end for iv in problem.base[n]), default=0.0) for n in range(machines)]
    etc = [
        [problem.duration[j].get(n, math.inf) for n in range(machines)]
        for j in range(len(problem.jobs))
    ]
    assignment, _ = plan_etc(etc, budget_seconds, seed, ready=ready, rounds=rounds)
    sched: dict[int, tuple[int, float, float, Allocation]] = {}
    clock = list(ready)
    for j in range(len(problem.jobs)):  # jobs are in queue order: a machine runs them so
        n = assignment[j]
        alloc = allocate(problem.jobs[j].id, problem.nodes[n], problem.jobs[j].request, Usage())
        assert alloc is not None
        end = clock[n] + problem.duration[j][n]
        sched[j] = (n, clock[n], end, alloc)
        clock[n] = end
    return _finish(sched)


def plan(
    jobs: Sequence[Job],
    nodes: Sequence[Node],
    running: Sequence[Running] = (),
    *,
    now: float = 0.0,
    budget_seconds: float = 2.0,
    seed: int = 0,
    rounds: int | None = None,
) -> Plan:
    """Predicted placement, start and end (seconds from ``now``) of every job; see the module doc.

    Deterministic for a given seed when the search ends before ``budget_seconds``
    (it stops early once it stops improving); pass ``rounds`` to bound the search
    by steps instead of time and make it deterministic on any machine.
    """
    deadline = time.perf_counter() + budget_seconds
    order = queue_order(jobs)
    unplaceable: dict[str, str] = {}
    usable = [n for n in nodes if n.schedulable]
    for job in order:
        if not any(fits_empty(n, job.request) for n in allowed_nodes(job, usable)):
            reason = never_fits_reason(job, usable) or _not_now(job, usable)
            unplaceable[job.id] = _unplanned_reason(job, nodes, reason)
    changed = True
    while changed:  # a job after an unplaceable job is unplaceable too
        changed = False
        for job in order:
            bad = next((d for d in job.after if d in unplaceable), None)
            if job.id not in unplaceable and bad is not None:
                unplaceable[job.id] = f"dependency job {bad} is unplaceable"
                changed = True
    planned = [j for j in order if j.id not in unplaceable]
    cyclic = _cyclic(planned)
    for job in planned:
        if job.id in cyclic:
            unplaceable[job.id] = "dependency cycle"
    planned = [j for j in planned if j.id not in unplaceable]
    problem = _build(planned, list(nodes), running, now)
    if not planned:
        sched = _Schedule({}, 0.0, 0.0)
    elif _exclusive(problem):
        left = deadline - time.perf_counter()
        sched = _plan_exclusive(problem, left, seed, rounds)
    else:
        # MCT (linear in the jobs) always completes; Min-min and Sufferage join when they
        # finish within the budget, which they do for the batch sizes people plan by hand.
        # The ETC path above always includes Min-min: that is where the guarantee is measured.
        mct_plan = _greedy(problem, "mct")
        assert mct_plan is not None
        best = mct_plan
        for rule in ("minmin", "sufferage"):
            if time.perf_counter() < deadline:
                other = _greedy(problem, rule, deadline)
                if other is not None and other.better_than(best):
                    best = other
        sched = _improve(problem, best, deadline, random.Random(seed), rounds)
    placements = tuple(
        sorted(
            (
                Placement(
                    problem.jobs[j].id, alloc.host, alloc.gpus, alloc.fpgas, start, end, alloc
                )
                for j, (_, start, end, alloc) in sched.placements.items()
            ),
            key=lambda p: (p.start, p.job_id),
        )
    )
    blocked = tuple(Blocked(j.id, unplaceable[j.id]) for j in order if j.id in unplaceable)
    return Plan(placements, sched.makespan, blocked)


def _not_now(job: Job, nodes: Sequence[Node]) -> str:
    """Why a job that some host could run someday is not planned: the GPUs it needs are
    busy with others' processes or unhealthy (how long is not known)."""
    allowed = [(n, Usage()) for n in allowed_nodes(job, nodes)]
    return (
        f"not planned: {explain_shortage(job.request, allowed)}"
        if allowed
        else ("not planned: no host fits it")
    )


def _unplanned_reason(job: Job, nodes: Sequence[Node], reason: str) -> str:
    """Why ``job`` is not planned: it can never run, or (not the same) only hosts whose
    capacity is not known yet might run it."""
    unknown = [
        n
        for n in allowed_nodes(job, nodes)
        if n.unknown and could_ever_fit(n, job.request) and not fits_empty(n, job.request)
    ]
    if not unknown:
        return reason
    return (
        f"not planned: only hosts whose capacity is not known yet might run it: "
        f"{describe_away(unknown)} (`leptonctl status` probes them)"
    )


def _cyclic(jobs: Sequence[Job]) -> set[str]:
    """Jobs on a dependency cycle, and every job that waits on one."""
    cyclic = set(dependency_cycles(jobs))
    changed = True
    while changed:
        changed = False
        for job in jobs:
            if job.id not in cyclic and any(d in cyclic for d in job.after):
                cyclic.add(job.id)
                changed = True
    return cyclic


def _build(jobs: list[Job], nodes: list[Node], running: Sequence[Running], now: float) -> _Problem:
    index = {j.id: i for i, j in enumerate(jobs)}
    node_index = {n.name: i for i, n in enumerate(nodes)}
    base: list[list[_Interval]] = [[] for _ in nodes]
    running_end: dict[str, float] = {}
    for r in running:
        length = r.estimate if r.estimate is not None else r.walltime
        end = r.started + length if length is not None else now + DEFAULT_DURATION
        rel = max(end - now, 0.0)
        running_end[r.allocation.job_id] = rel
        if r.allocation.host in node_index:
            base[node_index[r.allocation.host]].append(_Interval(0.0, rel, r.allocation))
    options: list[list[int]] = []
    duration: list[dict[int, float]] = []
    for job in jobs:
        allowed = {n.name for n in allowed_nodes(job, nodes)}
        opts = [
            i
            for i, n in enumerate(nodes)
            if n.schedulable and n.name in allowed and fits_empty(n, job.request)
        ]
        options.append(opts)
        times = {}
        for i in opts:
            est = estimate_for(job, nodes[i])
            times[i] = max(est if est is not None else DEFAULT_DURATION, 0.0)
        duration.append(times)
    deps = [[index[d] for d in job.after if d in index] for job in jobs]
    floor = [max([0.0, *(running_end.get(d, 0.0) for d in job.after)]) for job in jobs]
    return _Problem(jobs, nodes, options, duration, deps, floor, base)
