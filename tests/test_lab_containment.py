"""Containment on real sshd hosts, tried as a new user would (the root lab and again the
cluster profile: a non-root user, no cgroup of its own): a ``--cpus 1`` job is pinned to one
CPU, two of them on a two-CPU host get different CPUs, a ``--mem 64M`` job that tries to hold
512 MiB is killed and ``show`` says it ran out of memory, a job without ``--mem`` is not."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from tests.conftest import write_inventory
from tests.lab import Lab

pytestmark = pytest.mark.lab

HOLD_512_MIB = "dd if=/dev/zero of=/dev/null bs=512M count=12 && echo held-it"


@pytest.fixture
def lab(any_lab: Lab) -> Lab:
    return any_lab


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = run(list(args))
    return code, capsys.readouterr().out


def submit(capsys: pytest.CaptureFixture[str], inv: Path, *args: str) -> int:
    code, out = cli(capsys, "-i", str(inv), "submit", "--json", *args)
    assert code == 0, out
    return int(json.loads(out.splitlines()[0])["id"])


def show(capsys: pytest.CaptureFixture[str], inv: Path, job_id: int) -> dict:
    code, out = cli(capsys, "-i", str(inv), "show", str(job_id), "--json")
    assert code == 0, out
    found: dict = json.loads(out)
    return found


def wait_ended(capsys: pytest.CaptureFixture[str], inv: Path, job_id: int) -> dict:
    deadline = time.monotonic() + 60
    while True:
        job = show(capsys, inv, job_id)
        if job["state"] not in ("PENDING", "STARTING", "RUNNING"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.5)


def logs(capsys: pytest.CaptureFixture[str], inv: Path, job_id: int) -> str:
    code, out = cli(capsys, "-i", str(inv), "logs", str(job_id))
    assert code == 0
    return out


def one_host(tmp_path: Path, lab: Lab, name: str = "h2") -> Path:
    return write_inventory(tmp_path / "hosts.yml", lab, [name])


def test_the_lab_hosts_have_two_cpus() -> None:
    assert os.cpu_count() == 2  # the tests below assume it (lab hosts share this machine's)


REPORT = 'echo "nproc=$(nproc) cpus=$LEPTON_CPUS $(grep Cpus_allowed_list /proc/self/status)"'


def test_a_one_cpu_job_sees_one_cpu(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = one_host(tmp_path, lab)
    job_id = submit(capsys, inv, "--cpus", "1", "--", REPORT)
    job = wait_ended(capsys, inv, job_id)
    assert job["state"] == "COMPLETED", job
    out = logs(capsys, inv, job_id)
    found = re.search(r"nproc=(\d+) cpus=(\S*) Cpus_allowed_list:\s*(\S+)", out)
    assert found, out
    nproc, exported, allowed = found.groups()
    assert nproc == "1" and exported == allowed and allowed in ("0", "1")
    assert job["containment"]["cpus"] == [int(allowed)]
    assert job["devices"]["cpus"] == [int(allowed)]
    code, text = cli(capsys, "-i", str(inv), "show", str(job_id))
    assert code == 0 and f"{allowed} (pinned)" in text


def test_two_one_cpu_jobs_on_a_two_cpu_host_get_different_cpus(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = one_host(tmp_path, lab)
    ids = [submit(capsys, inv, "--cpus", "1", "--", f"{REPORT}; sleep 3") for _ in range(2)]
    running = [show(capsys, inv, i) for i in ids]
    assert [j["state"] for j in running] == ["RUNNING", "RUNNING"], running
    pinned = [j["containment"]["cpus"] for j in running]
    assert sorted(pinned) == [[0], [1]]
    for job_id, cpus in zip(ids, pinned, strict=True):
        assert wait_ended(capsys, inv, job_id)["state"] == "COMPLETED"
        assert f"nproc=1 cpus={cpus[0]} Cpus_allowed_list:\t{cpus[0]}" in logs(capsys, inv, job_id)


def test_a_job_over_its_memory_limit_is_killed_and_show_says_out_of_memory(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = one_host(tmp_path, lab)
    job_id = submit(capsys, inv, "--mem", "64MiB", "--", HOLD_512_MIB)
    job = wait_ended(capsys, inv, job_id)
    assert job["state"] == "FAILED", job
    assert job["reason"].startswith("out of memory: limit 64 MiB"), job
    # the cluster profile's user may not make a memory cgroup, so its supervisor samples the
    # job tree's RSS; root could, where /sys/fs/cgroup is mounted (the lab's `ip netns exec`
    # hosts see a fresh /sys without it: tests/test_agent_containment.py has the cgroup case)
    how = job["containment"]["memory_enforcement"]
    assert how == "sampling" if lab.user != "root" else how in ("cgroup", "sampling")
    assert job["containment"]["memory_limit_bytes"] == 64 * 2**20
    assert "held-it" not in logs(capsys, inv, job_id)
    code, text = cli(capsys, "-i", str(inv), "show", str(job_id))
    assert code == 0 and "out of memory: limit 64 MiB" in text
    assert (
        "in a memory cgroup of its own" if how == "cgroup" else "enforced by the supervisor"
    ) in text


def test_a_job_without_mem_is_unaffected_and_its_peak_is_its_own(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = one_host(tmp_path, lab)
    big = submit(capsys, inv, "--", HOLD_512_MIB)
    small = submit(capsys, inv, "--", "sleep 1")
    job = wait_ended(capsys, inv, big)
    assert job["state"] == "COMPLETED", job
    assert "held-it" in logs(capsys, inv, big)
    assert job["containment"]["memory_limit_bytes"] is None
    assert job["peak_rss_bytes"] >= 512 * 2**20  # dd, a child of the job's shell
    little = wait_ended(capsys, inv, small)
    # the job's tree, not the supervisor's fork: a sleep holds well under a MiB or two
    assert little["state"] == "COMPLETED" and little["peak_rss_bytes"] < 8 * 2**20, little
