"""Property tests: no double-booked device, no over-commit, dependencies, backfill, plans."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from leptonctl.core.scheduler import (
    Allocation,
    Gpu,
    Job,
    Node,
    Request,
    Running,
    dispatch,
    makespan_of,
    min_min,
    plan,
    plan_etc,
)
from leptonctl.core.scheduler.allocate import gpu_matches
from leptonctl.core.scheduler.dispatch import Hold, queue_order, reservation_for

GiB = 2**30
MODELS = ["H100", "A100", "T4"]


@st.composite
def nodes_st(draw: st.DrawFn) -> list[Node]:
    count = draw(st.integers(1, 3))
    nodes = []
    for i in range(count):
        gpus = tuple(
            Gpu(g, draw(st.sampled_from(MODELS)), draw(st.sampled_from([16, 40, 80])) * GiB)
            for g in range(draw(st.integers(0, 3)))
        )
        nodes.append(
            Node(
                f"n{i}",
                cpus=draw(st.integers(1, 8)),
                memory_bytes=draw(st.integers(1, 8)) * GiB,
                gpus=gpus,
                schedulable=draw(st.booleans()) or i == 0,
            )
        )
    return nodes


@st.composite
def jobs_st(draw: st.DrawFn, prefix: str, count: int, deps: Sequence[str] = ()) -> list[Job]:
    jobs = []
    for i in range(count):
        request = Request(
            cpus=draw(st.integers(1, 4)),
            memory_bytes=draw(st.integers(0, 4)) * GiB,
            gpus=draw(st.integers(0, 2)),
            gpu_type=draw(st.sampled_from([None, "h100", "a1"])),
            gpu_memory_bytes=draw(st.sampled_from([0, 20, 60])) * GiB,
        )
        after = tuple(draw(st.lists(st.sampled_from(list(deps)), max_size=2))) if deps else ()
        jobs.append(
            Job(
                f"{prefix}{i}",
                request,
                priority=draw(st.integers(0, 2)),
                submitted=float(i),
                walltime=draw(st.sampled_from([None, 10.0, 50.0, 200.0])),
                after=after,
            )
        )
    return jobs


def _check_no_overcommit(nodes: Sequence[Node], allocations: Sequence[Allocation]) -> None:
    by_host: dict[str, list[Allocation]] = defaultdict(list)
    for a in allocations:
        by_host[a.host].append(a)
    for node in nodes:
        held = by_host[node.name]
        gpus = [i for a in held for i in a.gpus]
        assert len(gpus) == len(set(gpus)), f"GPU double-booked on {node.name}"
        assert set(gpus) <= {g.index for g in node.gpus}
        assert sum(a.cpus for a in held) <= node.cpus
        assert sum(a.memory_bytes for a in held) <= node.memory_bytes


@st.composite
def cluster_st(draw: st.DrawFn) -> tuple[list[Node], list[Running], list[Job], dict[str, str]]:
    nodes = draw(nodes_st())
    first = draw(jobs_st("r", draw(st.integers(0, 4))))
    started = dispatch(first, nodes, [], {}, 0.0).start
    walltimes = {j.id: j.walltime for j in first}
    running = [
        Running(a, started=draw(st.sampled_from([0.0, 5.0])), walltime=walltimes[a.job_id])
        for a in started
    ]
    finished = {f"f{i}": draw(st.sampled_from(["COMPLETED", "FAILED"])) for i in range(2)}
    known = [*finished, *(r.allocation.job_id for r in running), "ghost"]
    pending = draw(jobs_st("p", draw(st.integers(1, 6)), deps=[*known, "p0", "p1"]))
    return nodes, running, pending, finished


@settings(max_examples=150, deadline=None)
@given(cluster_st())
def test_dispatch_never_double_books_or_overcommits(
    cluster: tuple[list[Node], list[Running], list[Job], dict[str, str]],
) -> None:
    nodes, running, pending, finished = cluster
    result = dispatch(pending, nodes, running, finished, 10.0)
    _check_no_overcommit(nodes, [r.allocation for r in running] + list(result.start))
    requests = {j.id: j.request for j in pending}
    by_name = {n.name: n for n in nodes}
    for a in result.start:
        node = by_name[a.host]
        assert node.schedulable
        assert len(a.gpus) == requests[a.job_id].gpus
        gpus = {g.index: g for g in node.gpus}
        assert all(gpu_matches(gpus[i], requests[a.job_id]) for i in a.gpus)
    decided = [a.job_id for a in result.start] + [b.job_id for b in result.blocked + result.doomed]
    assert sorted(decided) == sorted(j.id for j in pending)


@settings(max_examples=150, deadline=None)
@given(cluster_st())
def test_dispatch_starts_only_jobs_whose_dependencies_completed(
    cluster: tuple[list[Node], list[Running], list[Job], dict[str, str]],
) -> None:
    nodes, running, pending, finished = cluster
    result = dispatch(pending, nodes, running, finished, 10.0)
    after = {j.id: j.after for j in pending}
    for a in result.start:
        assert all(finished.get(d) == "COMPLETED" for d in after[a.job_id])
    doomed = {b.job_id for b in result.doomed}
    for job in pending:
        if any(finished.get(d) == "FAILED" or d == "ghost" for d in job.after):
            assert job.id in doomed


@settings(max_examples=200, deadline=None)
@given(cluster_st())
def test_backfill_never_delays_the_top_blocked_job(
    cluster: tuple[list[Node], list[Running], list[Job], dict[str, str]],
) -> None:
    nodes, running, pending, _ = cluster
    pending = [Job(j.id, j.request, j.priority, j.submitted, j.walltime) for j in pending]
    now = 10.0
    result = dispatch(pending, nodes, running, {}, now)
    blocked = {b.job_id for b in result.blocked}
    order = queue_order(pending)
    top = next((j for j in order if j.id in blocked), None)
    if top is None:
        return
    walltime = {j.id: j.walltime for j in pending}
    base = [
        Hold(r.allocation, None if r.walltime is None else r.started + r.walltime) for r in running
    ]

    def holds(allocations: Sequence[Allocation]) -> list[Hold]:
        extra = []
        for a in allocations:
            w = walltime[a.job_id]
            extra.append(Hold(a, None if w is None else now + w))
        return base + extra

    rank = {j.id: i for i, j in enumerate(order)}
    before = [a for a in result.start if rank[a.job_id] < rank[top.id]]
    promised = reservation_for(top, nodes, holds(before), now)
    actual = reservation_for(top, nodes, holds(result.start), now)
    if promised.time is not None:
        assert actual.time is not None and actual.time <= promised.time


etc_st = st.integers(1, 5).flatmap(
    lambda machines: st.lists(
        st.lists(st.floats(1, 1000), min_size=machines, max_size=machines),
        min_size=1,
        max_size=25,
    )
)


@settings(max_examples=60, deadline=None)
@given(etc_st, st.integers(0, 3))
def test_plan_etc_is_never_worse_than_min_min(etc: list[list[float]], seed: int) -> None:
    assignment, makespan = plan_etc(etc, budget_seconds=1.0, seed=seed, rounds=50)
    assert makespan == makespan_of(etc, assignment)
    assert makespan <= min_min(etc)[1]


@st.composite
def batch_st(draw: st.DrawFn) -> tuple[list[Node], list[Job]]:
    nodes = draw(nodes_st())
    nodes = [Node(n.name, cpus=n.cpus, memory_bytes=n.memory_bytes, gpus=n.gpus) for n in nodes]
    jobs = draw(jobs_st("j", draw(st.integers(1, 8))))
    ids = [j.id for j in jobs]
    shaped = []
    for i, job in enumerate(jobs):
        after = tuple(draw(st.lists(st.sampled_from(ids[:i]), max_size=2))) if i else ()
        estimates = {n.name: draw(st.floats(1, 100)) for n in nodes}
        shaped.append(
            Job(job.id, job.request, job.priority, job.submitted, None, after, None, estimates)
        )
    return nodes, shaped


@settings(max_examples=60, deadline=None)
@given(batch_st())
def test_plan_never_overlaps_devices_or_overcommits_in_time(
    batch: tuple[list[Node], list[Job]],
) -> None:
    nodes, jobs = batch
    result = plan(jobs, nodes, budget_seconds=1.0, rounds=30)
    placed = {p.job_id: p for p in result.placements}
    by_id = {j.id: j for j in jobs}
    assert len(placed) + len(result.unplaceable) == len(jobs)
    for p in result.placements:
        for dep in by_id[p.job_id].after:
            assert dep in placed and placed[dep].end <= p.start + 1e-9
    for node in nodes:
        mine = [p for p in result.placements if p.host == node.name]
        for t in {p.start for p in mine}:
            active = [p for p in mine if p.start <= t < p.end]
            gpus = [i for p in active for i in p.gpus]
            assert len(gpus) == len(set(gpus))
            assert sum(by_id[p.job_id].request.cpus for p in active) <= node.cpus
            assert sum(by_id[p.job_id].request.memory_bytes for p in active) <= node.memory_bytes
    assert result.makespan == max((p.end for p in result.placements), default=0.0)
