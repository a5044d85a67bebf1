"""dispatch(): device choice, accounting, priorities, dependencies, reasons and EASY backfill."""

from __future__ import annotations

from leptonctl.core.scheduler import (
    Allocation,
    Fpga,
    Gpu,
    Job,
    Node,
    Request,
    Running,
    dispatch,
)
from leptonctl.core.scheduler.dispatch import queue_order

GiB = 2**30


def gpu_node(name: str, *gpus: tuple[str, int], cpus: int = 32, memory: int = 256 * GiB) -> Node:
    return Node(
        name,
        cpus=cpus,
        memory_bytes=memory,
        gpus=tuple(Gpu(i, model, mem * GiB) for i, (model, mem) in enumerate(gpus)),
    )


def cpu_node(name: str, cpus: int = 32, memory: int = 128 * GiB) -> Node:
    return Node(name, cpus=cpus, memory_bytes=memory)


def job(job_id: str, **request: object) -> Job:
    return Job(job_id, Request(**request))  # type: ignore[arg-type]


def running(
    job_id: str,
    host: str,
    *,
    cpus: int = 1,
    memory: int = 0,
    gpus: tuple[int, ...] = (),
    started: float = 0.0,
    walltime: float | None = None,
) -> Running:
    return Running(Allocation(job_id, host, cpus, memory, gpus, ()), started, walltime)


def test_gpu_job_gets_smallest_adequate_gpu_memory() -> None:
    node = gpu_node("g1", ("NVIDIA H100 80GB", 80), ("NVIDIA A100 40GB", 40), ("NVIDIA T4", 16))
    result = dispatch([job("1", gpus=1, gpu_memory_bytes=20 * GiB)], [node], [], {}, 0.0)
    assert result.start[0].gpus == (1,)


def test_gpu_type_is_a_case_insensitive_substring_of_the_model() -> None:
    node = gpu_node("g1", ("NVIDIA A100-SXM4-80GB", 80), ("NVIDIA H100 80GB HBM3", 80))
    result = dispatch([job("1", gpus=1, gpu_type="h100")], [node], [], {}, 0.0)
    assert result.start[0].gpus == (1,)


def test_gpu_memory_minimum_excludes_small_gpus() -> None:
    node = gpu_node("g1", ("T4", 16), ("T4", 16))
    result = dispatch([job("1", gpus=1, gpu_memory_bytes=24 * GiB)], [node], [], {}, 0.0)
    assert result.start == ()
    assert "with >= 24 GiB" in result.doomed[0].reason


def test_gpu_job_prefers_the_host_with_smaller_gpus() -> None:
    nodes = [gpu_node("big", ("H100", 80)), gpu_node("small", ("L4", 24))]
    result = dispatch([job("1", gpus=1)], nodes, [], {}, 0.0)
    assert result.start[0].host == "small"


def test_cpu_only_job_avoids_gpu_node_when_a_cpu_node_fits() -> None:
    nodes = [gpu_node("g1", ("H100", 80), cpus=8), cpu_node("c1", cpus=64)]
    result = dispatch([job("1", cpus=4)], nodes, [], {}, 0.0)
    assert result.start[0].host == "c1"


def test_cpu_only_job_uses_gpu_node_when_no_cpu_node_fits() -> None:
    nodes = [gpu_node("g1", ("H100", 80), cpus=64), cpu_node("c1", cpus=4)]
    result = dispatch([job("1", cpus=16)], nodes, [], {}, 0.0)
    assert result.start[0].host == "g1"


def test_best_fit_picks_the_host_with_least_cpu_slack() -> None:
    nodes = [cpu_node("wide", cpus=64), cpu_node("snug", cpus=8)]
    result = dispatch([job("1", cpus=6)], nodes, [], {}, 0.0)
    assert result.start[0].host == "snug"


def test_cpu_and_memory_are_accounted_across_jobs_in_one_pass() -> None:
    node = cpu_node("c1", cpus=8, memory=16 * GiB)
    jobs = [
        Job("a", Request(cpus=4, memory_bytes=8 * GiB), submitted=1),
        Job("b", Request(cpus=4, memory_bytes=8 * GiB), submitted=2),
        Job("c", Request(cpus=1, memory_bytes=1 * GiB), submitted=3, walltime=10),
    ]
    result = dispatch(jobs, [node], [], {}, 0.0)
    assert [a.job_id for a in result.start] == ["a", "b"]
    assert result.blocked[0].job_id == "c"
    assert "needs 1 CPU" in result.blocked[0].reason


def test_memory_shortage_names_memory() -> None:
    node = cpu_node("c1", cpus=8, memory=16 * GiB)
    held = running("r", "c1", cpus=1, memory=12 * GiB)
    result = dispatch([job("1", memory_bytes=8 * GiB)], [node], [held], {}, 0.0)
    assert result.blocked[0].reason == "needs 8 GiB memory; best host c1 has 4 GiB free"


def test_declared_limits_in_node_cap_allocation() -> None:
    # The node arrives already limited (e.g. capacity: cpus: 4 on a 64-core box).
    node = cpu_node("c1", cpus=4)
    result = dispatch([job("1", cpus=8)], [node], [], {}, 0.0)
    assert result.start == ()
    assert result.doomed[0].reason == "can never run: needs 8 CPUs; best host c1 has 4"


def test_never_double_books_a_gpu_held_by_a_running_job() -> None:
    node = gpu_node("g1", ("H100", 80), ("H100", 80))
    held = running("r", "g1", gpus=(0,))
    result = dispatch([job("1", gpus=1), job("2", gpus=1)], [node], [held], {}, 0.0)
    assert [a.gpus for a in result.start] == [(1,)]
    assert result.blocked[0].reason == "needs 1 GPU; best host g1 has 0 free"


def test_fpga_type_selects_matching_card() -> None:
    node = Node(
        "f1", cpus=8, memory_bytes=GiB, fpgas=(Fpga(0, "Intel PAC"), Fpga(1, "Xilinx U250"))
    )
    result = dispatch([job("1", fpgas=1, fpga_type="u250")], [node], [], {}, 0.0)
    assert result.start[0].fpgas == (1,)


def test_drained_node_gets_nothing_new() -> None:
    nodes = [Node("c1", cpus=8, memory_bytes=GiB, schedulable=False)]
    result = dispatch([job("1")], nodes, [], {}, 0.0)
    assert result.start == ()
    assert "drained" in result.blocked[0].reason


def test_limit_restricts_hosts() -> None:
    nodes = [cpu_node("a"), cpu_node("b")]
    limited = Job("1", Request(), hosts=frozenset({"b"}))
    assert dispatch([limited], nodes, [], {}, 0.0).start[0].host == "b"


def test_higher_priority_starts_first() -> None:
    node = gpu_node("g1", ("H100", 80))
    jobs = [Job("low", Request(gpus=1), priority=0), Job("high", Request(gpus=1), priority=5)]
    result = dispatch(jobs, [node], [], {}, 0.0)
    assert [a.job_id for a in result.start] == ["high"]


def test_fifo_breaks_ties_within_a_priority() -> None:
    node = gpu_node("g1", ("H100", 80))
    jobs = [Job("late", Request(gpus=1), submitted=20), Job("early", Request(gpus=1), submitted=10)]
    result = dispatch(jobs, [node], [], {}, 0.0)
    assert [a.job_id for a in result.start] == ["early"]


def test_job_waits_for_running_dependency() -> None:
    node = cpu_node("c1")
    dependent = Job("2", Request(), after=("1",))
    result = dispatch([dependent], [node], [running("1", "c1")], {}, 0.0)
    assert result.start == ()
    assert result.blocked[0].reason == "waiting for job 1 (RUNNING)"


def test_job_starts_after_dependency_completed() -> None:
    dependent = Job("2", Request(), after=("1",))
    result = dispatch([dependent], [cpu_node("c1")], [], {"1": "COMPLETED"}, 0.0)
    assert [a.job_id for a in result.start] == ["2"]


def test_dependency_started_in_same_pass_still_gates() -> None:
    jobs = [Job("1", Request()), Job("2", Request(), after=("1",))]
    result = dispatch(jobs, [cpu_node("c1")], [], {}, 0.0)
    assert [a.job_id for a in result.start] == ["1"]
    assert result.blocked[0].reason == "waiting for job 1 (STARTING)"


def test_job_doomed_when_dependency_failed() -> None:
    jobs = [Job("2", Request(), after=("1",)), Job("3", Request(), after=("2",))]
    result = dispatch(jobs, [cpu_node("c1")], [], {"1": "FAILED"}, 0.0)
    assert result.start == ()
    reasons = {b.job_id: b.reason for b in result.doomed}
    assert reasons == {"2": "dependency job 1 ended FAILED", "3": "dependency job 2 can never run"}


def test_job_doomed_when_dependency_missing() -> None:
    result = dispatch([Job("2", Request(), after=("ghost",))], [cpu_node("c1")], [], {}, 0.0)
    assert "dependency job ghost is unknown" in result.doomed[0].reason


def test_dependency_cycle_is_doomed() -> None:
    jobs = [Job("a", Request(), after=("b",)), Job("b", Request(), after=("a",))]
    result = dispatch(jobs, [cpu_node("c1")], [], {}, 0.0)
    assert {b.job_id for b in result.doomed} == {"a", "b"}
    assert all("cycle" in b.reason for b in result.doomed)


def test_impossible_request_is_doomed_with_reason() -> None:
    nodes = [gpu_node("g1", ("H100", 80)), gpu_node("g2", ("A100", 40), ("A100", 40))]
    result = dispatch([job("1", gpus=2, gpu_type="h100")], nodes, [], {}, 0.0)
    assert result.doomed[0].reason == (
        "can never run: needs 2 GPUs matching 'h100'; best host g1 has 1"
    )


def test_blocked_reason_names_gpu_shortfall_with_type_and_memory() -> None:
    node = gpu_node("gpu01", ("H100", 80), ("H100", 80))
    held = running("r", "gpu01", gpus=(0,))
    request = job("1", gpus=2, gpu_type="h100", gpu_memory_bytes=40 * GiB)
    result = dispatch([request], [node], [held], {}, 0.0)
    assert result.blocked[0].reason == (
        "needs 2 GPUs matching 'h100' with >= 40 GiB; best host gpu01 has 1 free"
    )


def test_estimates_choose_the_node_with_earliest_completion() -> None:
    nodes = [cpu_node("slow", cpus=8), cpu_node("fast", cpus=64)]
    timed = Job("1", Request(cpus=4), estimates={"slow": 100.0, "fast": 10.0})
    assert dispatch([timed], nodes, [], {}, 0.0).start[0].host == "fast"


# --- EASY backfill -------------------------------------------------------------------------


def _backfill_setup(small: Job) -> list[Allocation]:
    # g1 has two GPUs; one is held until t=100. The top job needs both; `small` wants one.
    node = gpu_node("g1", ("H100", 80), ("H100", 80))
    held = running("r", "g1", gpus=(0,), started=0.0, walltime=100.0)
    top = Job("top", Request(gpus=2), priority=10, walltime=50)
    result = dispatch([top, small], [node], [held], {}, 0.0)
    assert result.blocked[0].job_id == "top"
    return list(result.start)


def test_backfill_allowed_when_it_ends_before_the_reservation() -> None:
    small = Job("small", Request(gpus=1), walltime=60)
    assert [a.job_id for a in _backfill_setup(small)] == ["small"]


def test_backfill_refused_when_it_would_delay_the_reservation() -> None:
    small = Job("small", Request(gpus=1), walltime=500)
    assert _backfill_setup(small) == []


def test_backfill_refused_without_walltime() -> None:
    small = Job("small", Request(gpus=1))
    assert _backfill_setup(small) == []


def test_backfill_refusal_names_the_waiting_job() -> None:
    node = gpu_node("g1", ("H100", 80), ("H100", 80))
    held = running("r", "g1", gpus=(0,), started=0.0, walltime=100.0)
    jobs = [Job("top", Request(gpus=2), priority=10), Job("small", Request(gpus=1))]
    result = dispatch(jobs, [node], [held], {}, 0.0)
    assert result.blocked[1].reason == (
        "priority: job top (priority 10) is waiting for these resources"
    )


def test_backfill_on_resources_the_reservation_does_not_need() -> None:
    # No walltime, but it runs on another host than the one reserved.
    nodes = [gpu_node("g1", ("H100", 80), ("H100", 80)), cpu_node("c1")]
    held = running("r", "g1", gpus=(0,), started=0.0, walltime=100.0)
    jobs = [Job("top", Request(gpus=2), priority=10), Job("cpu", Request(cpus=2))]
    result = dispatch(jobs, nodes, [held], {}, 0.0)
    assert [(a.job_id, a.host) for a in result.start] == [("cpu", "c1")]


def test_no_backfill_past_a_job_whose_resources_never_free() -> None:
    node = gpu_node("g1", ("H100", 80), ("H100", 80))
    held = running("r", "g1", gpus=(0,), started=0.0, walltime=None)
    jobs = [Job("top", Request(gpus=2), priority=10), Job("small", Request(gpus=1), walltime=1)]
    assert dispatch(jobs, [node], [held], {}, 0.0).start == ()


def test_jobs_of_one_submit_start_in_numeric_id_order_not_string_order() -> None:
    """An array or batch shares one submit time: ``[10]`` comes after ``[9]``, not ``[1]``."""
    pending = [job(str(i), cpus=1) for i in (10, 9, 1, 11, 2, 0)]
    result = dispatch(pending, [cpu_node("c1", cpus=3)], [], {}, 0.0)
    assert [a.job_id for a in result.start] == ["0", "1", "2"]
    assert [j.id for j in queue_order(pending)] == ["0", "1", "2", "9", "10", "11"]


def test_a_job_with_no_usable_host_says_what_is_wrong_with_or_without_limit() -> None:
    (doomed,) = dispatch([job("1")], [], [], {}, 0.0).doomed
    assert "--limit" not in doomed.reason and "leptonctl status" in doomed.reason
    limited = Job("2", Request(), hosts=frozenset({"b"}))
    (doomed,) = dispatch([limited], [cpu_node("a")], [], {}, 0.0).doomed
    assert "--limit" in doomed.reason and "leptonctl status" in doomed.reason
