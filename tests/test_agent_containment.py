"""The agent's half of containment, on this machine without the lab: the probe's CPU ids and
NUMA map, the spec's checks, and the supervisor pinning a job and killing it over its memory
limit (FAILED, "out of memory")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent.lepton_agent.containment import TreeMemory, descendants, descendants_by_scan
from agent.lepton_agent.probe import parse_cpu_list, read_cpu, read_cpu_nodes
from agent.lepton_agent.sysinfo import Host
from tests.test_agent_jobs import agent, start, wait_ended


def test_kernel_cpu_lists_are_parsed_and_garbage_is_none() -> None:
    assert parse_cpu_list("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpu_list("") == []
    assert parse_cpu_list("0-x") is None and parse_cpu_list("a") is None


def test_numa_nodes_come_from_sysfs_for_the_usable_cpus(tmp_path: Path) -> None:
    base = tmp_path / "sys/devices/system/node"
    for node, cpus in (("node0", "0-1\n"), ("node1", "2-3\n"), ("power", "")):
        (base / node).mkdir(parents=True)
        if cpus:
            (base / node / "cpulist").write_text(cpus)
    host = Host(str(tmp_path), None)
    assert read_cpu_nodes(host, [0, 1, 3]) == {"0": 0, "1": 0, "3": 1}
    assert read_cpu_nodes(Host(str(tmp_path / "none"), None), None) is None


def test_the_probe_reports_the_usable_cpu_ids_on_a_real_root() -> None:
    cpu = read_cpu(Host("/", None))["cpu"]
    assert cpu["ids"] == sorted(os.sched_getaffinity(0))
    assert cpu["usable_threads"] == len(cpu["ids"])


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"cpus": []}, "cpus must be"),
        ({"cpus": [0, "1"]}, "cpus must be"),
        ({"cpus": [True]}, "cpus must be"),
        ({"memory_bytes": -1}, "memory_bytes must be"),
        ({"memory_bytes": "64M"}, "memory_bytes must be"),
    ],
)
def test_bad_cpus_or_memory_in_a_spec_are_refused(tmp_path: Path, spec: dict, error: str) -> None:
    code, reply = agent(tmp_path, "job-start", spec={"id": "x", "command": "true", **spec})
    assert code == 2 and error in reply["error"]


def test_a_pinned_job_runs_on_its_cpu_and_is_told_which(tmp_path: Path) -> None:
    cpu = max(os.sched_getaffinity(0))
    start(tmp_path, id="p", command="grep Cpus_allowed_list /proc/self/status; echo $LEPTON_CPUS",
          cpus=[cpu])  # fmt: skip
    entry = wait_ended(tmp_path, "p")
    assert entry["state"] == "COMPLETED"
    assert entry["containment"]["cpus"] == [cpu]
    log = (tmp_path / "jobs/p/log").read_text().split()
    assert log == ["Cpus_allowed_list:", str(cpu), str(cpu)]


def test_a_cpu_that_is_not_there_leaves_the_job_unpinned_with_a_note(tmp_path: Path) -> None:
    start(tmp_path, id="n", command="true", cpus=[4095])
    entry = wait_ended(tmp_path, "n")
    assert entry["state"] == "COMPLETED" and entry["containment"]["cpus"] is None
    assert entry["containment"]["cpus_note"].startswith("not pinned: cannot pin to CPUs 4095")


def test_a_job_tree_over_its_memory_limit_is_killed_out_of_memory(tmp_path: Path) -> None:
    # the memory is held by a grandchild of the job's shell: the whole tree counts
    hold = "x = b'x' * (256 << 20); import time; time.sleep(30)"
    start(tmp_path, id="m", command=f"{sys.executable} -c \"{hold}\"; echo survived",
          memory_bytes=64 << 20)  # fmt: skip
    entry = wait_ended(tmp_path, "m")
    assert entry["state"] == "FAILED"
    assert entry["reason"].startswith("out of memory: limit 64 MiB"), entry
    # root here may make a memory cgroup (the kernel kills); elsewhere the supervisor samples
    assert entry["containment"]["memory"] == ("cgroup" if os.geteuid() == 0 else "sampling")
    assert entry["peak_rss_bytes"] >= 60 << 20  # it got to its limit (or past it)
    assert "survived" not in (tmp_path / "jobs/m/log").read_text()


def test_sampling_sums_the_rss_of_the_whole_tree_below_the_sampler() -> None:
    hold = "import os, time; x = b'x' * (96 << 20); os.write(1, b'ok'); time.sleep(30)"
    shell = subprocess.Popen(  # a shell whose child holds the memory: a tree, not one process
        ["/bin/sh", "-c", f'{sys.executable} -c "{hold}"; true'],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert shell.stdout is not None and shell.stdout.read(2) == b"ok"
        sampler = TreeMemory(64 << 20, sampling=True)
        used, tree = sampler.sample()
        assert used is not None and used >= 96 << 20 and shell.pid in tree and len(tree) >= 2
        assert sampler.peak == used and used > 64 << 20
    finally:
        os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()


def test_the_tree_walk_finds_what_a_scan_of_every_process_finds() -> None:
    shell = subprocess.Popen(  # sh -> (sleep, sleep): grandchildren included
        ["/bin/sh", "-c", "sleep 30 & sleep 30 & echo ok; wait"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert shell.stdout is not None and shell.stdout.read(2) == b"ok"
        walked = sorted(descendants(os.getpid()))
        assert walked == sorted(descendants_by_scan(os.getpid()))
        assert shell.pid in walked and len(descendants(shell.pid)) == 2
    finally:
        os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()
