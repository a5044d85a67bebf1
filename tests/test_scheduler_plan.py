"""plan() and the ETC heuristics: capacity over time, dependencies, never worse than Min-min."""

from __future__ import annotations

import itertools
import random

from leptonctl.core.scheduler import (
    Allocation,
    Gpu,
    Job,
    Node,
    Request,
    Running,
    makespan_of,
    mct,
    min_min,
    plan,
    plan_etc,
    sufferage,
)
from leptonctl.core.scheduler.plan import DEFAULT_DURATION

GiB = 2**30


def timed(job_id: str, seconds: float, request: Request | None = None, **kw: object) -> Job:
    return Job(job_id, request or Request(), estimates={"cpu": seconds, "gpu": seconds}, **kw)  # type: ignore[arg-type]


def test_min_min_on_a_textbook_instance() -> None:
    etc = [[3.0, 5.0], [4.0, 2.0], [6.0, 7.0]]
    assignment, makespan = min_min(etc)
    assert assignment == [0, 1, 0]  # ties go to the lower machine
    assert makespan == 9.0
    assert makespan_of(etc, assignment) == 9.0


def test_heuristics_return_consistent_makespans() -> None:
    rng = random.Random(3)
    etc = [[rng.uniform(1, 100) for _ in range(4)] for _ in range(30)]
    for heuristic in (min_min, mct, sufferage):
        assignment, makespan = heuristic(etc)
        assert makespan == makespan_of(etc, assignment)


def test_plan_etc_is_no_worse_than_min_min() -> None:
    rng = random.Random(7)
    etc = [[rng.uniform(1, 1000) * rng.uniform(1, 10) for _ in range(8)] for _ in range(64)]
    assignment, makespan = plan_etc(etc, budget_seconds=0.5, seed=0)
    assert makespan == makespan_of(etc, assignment)
    assert makespan <= min_min(etc)[1]


def test_plan_etc_is_deterministic_for_a_seed() -> None:
    rng = random.Random(9)
    etc = [[rng.uniform(1, 100) for _ in range(4)] for _ in range(20)]
    assert plan_etc(etc, 5.0, seed=1, rounds=200) == plan_etc(etc, 5.0, seed=1, rounds=200)


def test_plan_shares_a_node_when_resources_allow() -> None:
    node = Node("c1", cpus=8, memory_bytes=8 * GiB)
    jobs = [timed("a", 10, Request(cpus=4)), timed("b", 10, Request(cpus=4))]
    result = plan(jobs, [node], budget_seconds=0.2)
    assert [(p.start, p.end) for p in result.placements] == [(0, 10), (0, 10)]
    assert result.makespan == 10


def test_plan_respects_capacity_over_time() -> None:
    node = Node("c1", cpus=8, memory_bytes=8 * GiB)
    jobs = [timed(str(i), 10, Request(cpus=6)) for i in range(3)]
    result = plan(jobs, [node], budget_seconds=0.2)
    assert sorted(p.start for p in result.placements) == [0, 10, 20]
    assert result.makespan == 30


def test_plan_gives_distinct_gpus_to_overlapping_jobs() -> None:
    node = Node("g1", cpus=32, memory_bytes=GiB, gpus=(Gpu(0, "H100", None), Gpu(1, "H100", None)))
    jobs = [timed("a", 10, Request(gpus=1)), timed("b", 10, Request(gpus=1))]
    result = plan(jobs, [node], budget_seconds=0.2)
    assert sorted(p.gpus for p in result.placements) == [(0,), (1,)]
    assert result.makespan == 10


def test_plan_respects_dependencies() -> None:
    nodes = [Node("c1", cpus=8), Node("c2", cpus=8)]
    jobs = [timed("a", 10), timed("b", 5, after=("a",)), timed("c", 7, after=("b",))]
    result = plan(jobs, nodes, budget_seconds=0.2)
    at = {p.job_id: p for p in result.placements}
    assert at["b"].start >= at["a"].end
    assert at["c"].start >= at["b"].end
    assert result.makespan == 22


def test_plan_waits_for_running_jobs_to_free_resources() -> None:
    node = Node("c1", cpus=4)
    held = Running(Allocation("r", "c1", 4, 0, (), ()), started=90.0, estimate=30.0)
    result = plan([timed("a", 10, Request(cpus=2))], [node], [held], now=100.0, budget_seconds=0.2)
    assert (result.placements[0].start, result.placements[0].end) == (20, 30)


def test_job_without_estimate_gets_default_duration() -> None:
    result = plan([Job("a", Request())], [Node("c1", cpus=1)], budget_seconds=0.1)
    assert result.makespan == DEFAULT_DURATION


def test_unfittable_job_is_unplaceable_with_reason() -> None:
    jobs = [Job("big", Request(cpus=64)), timed("dep", 1, after=("big",))]
    result = plan(jobs, [Node("c1", cpus=8)], budget_seconds=0.1)
    reasons = {b.job_id: b.reason for b in result.unplaceable}
    assert reasons["big"] == "can never run: needs 64 CPUs; best host c1 has 8"
    assert reasons["dep"] == "dependency job big is unplaceable"
    assert result.placements == ()


def test_plan_with_exclusive_nodes_is_no_worse_than_min_min() -> None:
    rng = random.Random(5)
    nodes = [Node(f"n{m}", cpus=4) for m in range(4)]
    etc = [[rng.uniform(1, 100) for _ in nodes] for _ in range(25)]
    jobs = [
        Job(f"j{i}", Request(cpus=4), estimates={n.name: etc[i][m] for m, n in enumerate(nodes)})
        for i in range(25)
    ]
    result = plan(jobs, nodes, budget_seconds=0.3)
    assert result.makespan <= min_min(etc)[1] + 1e-9
    for host in {p.host for p in result.placements}:
        spans = sorted((p.start, p.end) for p in result.placements if p.host == host)
        assert all(a[1] <= b[0] + 1e-9 for a, b in itertools.pairwise(spans))


def test_plan_on_shared_nodes_is_no_worse_than_its_min_min_start() -> None:
    rng = random.Random(11)
    nodes = [Node(f"n{m}", cpus=8) for m in range(3)]
    jobs = [
        Job(
            f"j{i}",
            Request(cpus=rng.choice([1, 2, 4])),
            estimates={n.name: rng.uniform(5, 50) for n in nodes},
        )
        for i in range(20)
    ]
    from leptonctl.core.scheduler.plan import _build, _greedy

    reference = _greedy(_build(jobs, nodes, (), 0.0), "minmin").makespan
    assert plan(jobs, nodes, budget_seconds=0.3).makespan <= reference + 1e-9


def test_shared_node_batch_with_no_budget_still_gets_a_complete_plan() -> None:
    # MCT always completes; Min-min and Sufferage only join when the budget allows.
    from leptonctl.core.scheduler import Job, Node, Request, plan

    nodes = [Node(name=f"n{i}", cpus=8, memory_bytes=2**30) for i in range(3)]
    jobs = [
        Job(id=str(j), request=Request(cpus=1 + j % 3), submitted=j, estimates={"cpu": 10 + j})
        for j in range(30)
    ]
    result = plan(jobs, nodes, budget_seconds=0.0)
    assert sorted(p.job_id for p in result.placements) == sorted(j.id for j in jobs)
    assert result.makespan == max(p.end for p in result.placements)
