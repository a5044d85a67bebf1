"""CPU pinning, the controller's half: the scheduler allocates CPUs by id (NUMA-aware, never
one CPU to two jobs), the store holds them like GPUs, the agent is told which to pin to, and
``show`` says when a job is not pinned."""

from __future__ import annotations

import copy
import json

import pytest

from leptonctl.core.capacity import effective_capacity
from leptonctl.core.facts import parse_facts
from leptonctl.core.jobviews import agent_spec, containment, nodes_from, running_view
from leptonctl.core.records import JobRecord
from leptonctl.core.scheduler import Core, Gpu, Job, Node, Request, Running, dispatch
from leptonctl.core.scheduler.allocate import Usage, allocate, pick_cores
from leptonctl.inventory.model import DeclaredCapacity
from leptonctl.render.documents import job_document
from leptonctl.render.jobs import cpu_list, cpus_text, devices, memory_text
from leptonctl.store.db import DeviceTaken
from leptonctl.store.jobs import held_devices
from leptonctl.store.open import open_store
from tests.helpers import FIXTURES, make_host

GiB = 2**30


def two_socket(gpu_numa: tuple[int | None, ...] = ()) -> Node:
    """CPUs 0-3 on NUMA node 0, 4-7 on node 1; GPU i on NUMA node gpu_numa[i]."""
    cores = tuple(Core(i, 0 if i < 4 else 1) for i in range(8))
    gpus = tuple(Gpu(i, "H100", 80 * GiB, numa) for i, numa in enumerate(gpu_numa))
    return Node("n1", cpus=8, memory_bytes=64 * GiB, gpus=gpus, cores=cores)


def test_a_job_gets_as_many_cpu_ids_as_it_asks_and_never_a_held_one() -> None:
    node = two_socket()
    first = allocate("a", node, Request(cpus=1), Usage())
    assert first is not None and first.cores == (0,)
    second = allocate("b", node, Request(cpus=1), Usage().plus(first))
    assert second is not None and second.cores == (1,)
    assert allocate("c", node, Request(cpus=3), Usage(cores=frozenset(range(6)))) is None


def test_cpus_near_the_jobs_gpus_come_first() -> None:
    node = two_socket(gpu_numa=(0, 1))
    alloc = allocate(
        "a", node, Request(cpus=2, gpus=1, gpu_type="h100"), Usage(gpus=frozenset({"0"}))
    )
    assert alloc is not None and alloc.gpus == (1,) and alloc.cores == (4, 5)


def test_a_job_stays_on_one_numa_node_where_it_fits() -> None:
    # node 0 has 2 free CPUs (1, 3), node 1 all four: a 3-CPU job goes to node 1 whole, and
    # a 2-CPU job takes the tighter node 0 (best fit), not CPUs 1 and 3 by luck of index
    usage = Usage(cores=frozenset({0, 2}))
    assert pick_cores(two_socket(), 3, usage) == (4, 5, 6)
    assert pick_cores(two_socket(), 2, usage) == (1, 3)
    # too big for any one node: it spreads, largest free node first
    assert pick_cores(two_socket(), 6, usage) == (1, 3, 4, 5, 6, 7)


def test_two_one_cpu_jobs_on_a_two_cpu_host_get_different_cpus() -> None:
    node = Node("h1", cpus=2, memory_bytes=GiB, cores=(Core(0), Core(1)))
    jobs = [Job("1", Request(cpus=1), submitted=1.0), Job("2", Request(cpus=1), submitted=2.0)]
    decision = dispatch(jobs, [node], [], {}, 10.0)
    assert sorted(a.cores for a in decision.start) == [(0,), (1,)]
    # and with one already running on CPU 1, the next goes to CPU 0
    held = Running(allocation=running_view(record({"cpus": 1, "cores": [1]})).allocation,
                   started=0.0)  # fmt: skip
    later = dispatch([Job("3", Request(cpus=1))], [node], [held], {}, 10.0)
    assert [a.cores for a in later.start] == [(0,)]


def test_a_host_whose_cpus_are_unknown_runs_jobs_unpinned() -> None:
    node = Node("h1", cpus=4, memory_bytes=GiB)  # declared capacity only: no CPU ids
    alloc = allocate("a", node, Request(cpus=2), Usage())
    assert alloc is not None and alloc.cores == ()


def probe_doc() -> dict:
    doc = json.loads((FIXTURES / "probe_h100_synthetic.json").read_text())
    doc = copy.deepcopy(doc)
    doc["cpu"].update(
        usable_threads=4, ids=[0, 1, 2, 3], numa_nodes={"0": 0, "1": 0, "2": 1, "3": 1}
    )
    doc["gpus"][0]["numa_node"] = 1
    return doc


def test_probed_cpu_ids_and_numa_nodes_reach_the_scheduler_and_declared_cpus_limit_them() -> None:
    facts = parse_facts(probe_doc())
    assert facts.cpu.ids == (0, 1, 2, 3) and facts.gpus[0].numa_node == 1
    cap = effective_capacity(facts, None)
    assert cap.cores == ((0, 0), (1, 0), (2, 1), (3, 1))
    (node,) = nodes_from([make_host("h1")], {"h1": facts}, {"h1"})
    assert node.cores[2] == Core(2, 1) and node.gpus[0].numa_node == 1
    reserved = effective_capacity(facts, DeclaredCapacity(cpus=2))
    assert [c for c, _ in reserved.cores] == [0, 1]
    assert effective_capacity(None, DeclaredCapacity(cpus=2)).cores == ()


@pytest.mark.parametrize(
    "bad", [None, "0-3", [0, "1"], [True, 1], [-1, 2], {"0": 1}, [0, 1 << 20]]
)  # fmt: skip
def test_cpu_ids_from_a_host_are_checked(bad: object) -> None:
    doc = probe_doc()
    doc["cpu"]["ids"] = bad
    assert parse_facts(doc).cpu.ids == ()


def record(allocation: dict | None, state: str = "RUNNING") -> JobRecord:
    return JobRecord(
        id=7, name="j", state=state, priority=0, submitted=0.0, started=1.0, ended=None,
        host="h1", allocation=allocation, exit_code=None, reason=None, attempt=0, retries=0,
        lost_since=None, cancel_requested=False, peak_rss_bytes=None,
        spec={"uid": "u", "command": "true", "env": {}, "request": {"cpus": 1}},
    )  # fmt: skip


def test_the_agent_is_told_the_cpus_to_pin_to_and_the_memory_limit() -> None:
    spec = agent_spec(record({"cpus": 2, "memory_bytes": 64 << 20, "cores": [4, 5]}))
    assert (spec["cpus"], spec["memory_bytes"]) == ([4, 5], 64 << 20)
    plain = agent_spec(record({"cpus": 2, "memory_bytes": 0, "gpus": [], "fpgas": []}))
    assert (plain["cpus"], plain["memory_bytes"]) == (None, None)


def test_show_says_where_a_job_is_pinned_and_when_it_is_not() -> None:
    pinned = record(
        {"cpus": 1, "memory_bytes": 64 << 20, "cores": [1],
         "containment": {"cpus": [1], "cpus_note": None, "memory": "sampling"}}
    )  # fmt: skip
    assert cpus_text(pinned) == "1 (pinned)"
    assert memory_text(pinned).startswith("64 MiB, enforced by the supervisor")
    assert job_document(pinned)["containment"] == {
        "cpus": [1], "cpus_note": None, "memory_limit_bytes": 64 << 20,
        "memory_enforcement": "sampling",
    }  # fmt: skip
    assert job_document(pinned)["devices"]["cpus"] == [1]
    unprobed = record({"cpus": 2, "memory_bytes": 0, "gpus": [], "fpgas": []})
    assert "not pinned" in cpus_text(unprobed) and "never probed" in cpus_text(unprobed)
    assert memory_text(unprobed) == "none"
    assert containment(unprobed)["cpus"] is None


def test_cpu_lists_are_shown_as_ranges() -> None:
    assert cpu_list([3, 0, 1, 2, 8, 10, 11]) == "0-3,8,10-11"
    wide = record({"cpus": 5, "cores": [4, 5, 6, 7, 9], "gpus": [1]})
    assert devices(wide) == "gpu1,cpu4-7,9"


def test_pinned_cpus_are_held_devices() -> None:
    assert held_devices({"gpus": [0], "cores": [2, 3]}) == ["gpu:0", "cpu:2", "cpu:3"]


def test_the_database_refuses_one_cpu_to_two_active_jobs(state_backend: str) -> None:
    with open_store(state_backend) as store:
        first, second = store.jobs.add([(f"j{i}", {"request": {}}, 0, 0) for i in range(2)], 1.0)
        one = {"cpus": 1, "memory_bytes": 0, "gpus": [], "fpgas": [], "cores": [1]}
        store.jobs.update(first, state="STARTING", host="h1", allocation=one)
        with pytest.raises(DeviceTaken, match="job_devices"):
            store.jobs.update(second, state="STARTING", host="h1", allocation=one)
        store.jobs.update(second, state="STARTING", host="h1", allocation={**one, "cores": [0]})
        assert store.jobs.device_holders() == {("h1", "cpu:1"): first, ("h1", "cpu:0"): second}
