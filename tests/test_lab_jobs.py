"""Jobs end to end on real sshd hosts: placement, queueing, logs, exits, cancel, walltime,
node failure, a killed operator, and two terminals submitting at once.  Every test runs on
the root lab and again on the cluster profile (a non-root user on a shared home, a central-keys
host, no python3 on h4's PATH)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from leptonctl.cli.app import run
from leptonctl.inventory import load_inventory
from leptonctl.remote.transport import TransportOptions
from leptonctl.services.context import ServiceContext
from leptonctl.services.jobs.reconcile import reconcile
from leptonctl.store.sqlite import SqliteStore
from tests.lab import Lab

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


@pytest.fixture
def lab(any_lab: Lab) -> Lab:
    return any_lab


def inventory(path: Path, lab: Lab, names: list[str], cpus: int = 1) -> Path:
    lines = ["[workers]"]
    for name in names:
        extra = "".join(f" {k}={v}" for k, v in lab.inventory_vars(name).items())
        lines.append(
            f"{name} ansible_host={lab.host(name).ip} capacity='{{\"cpus\": {cpus}}}'{extra}"
        )
    lines += ["[all:vars]", f"ansible_user={lab.user}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = run(list(args))
    return code, capsys.readouterr().out


def jobs_json(capsys: pytest.CaptureFixture[str], inv: Path) -> dict[int, dict]:
    code, out = cli(capsys, "-i", str(inv), "jobs", "--all", "--json")
    assert code == 0
    return {j["id"]: j for j in json.loads(out)["jobs"]}


def wait_for(capsys, inv: Path, job_id: int, states: set[str], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = jobs_json(capsys, inv)[job_id]
        if job["state"] in states or time.monotonic() > deadline:
            return job
        time.sleep(0.5)


def processes_in(lab: Lab, name: str, needle: bytes) -> list[int]:
    return lab.pids_matching(name, needle)


def remaining_after(lab: Lab, name: str, needle: bytes, timeout: float = 15) -> list[int]:
    """The matching processes still there once they have had ``timeout`` seconds to go."""
    deadline = time.monotonic() + timeout
    while processes_in(lab, name, needle) and time.monotonic() < deadline:
        time.sleep(0.2)
    return processes_in(lab, name, needle)


def test_jobs_spread_over_hosts_queue_when_full_and_start_later(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = inventory(tmp_path / "hosts.ini", lab, ["h1", "h2"])
    ids = []
    for _ in range(3):
        code, out = cli(capsys, "-i", str(inv), "submit", "--json", "--", "sleep 2")
        assert code == 0
        ids.append(json.loads(out)["id"])
    jobs = jobs_json(capsys, inv)
    running = [jobs[i] for i in ids if jobs[i]["state"] == "RUNNING"]
    assert sorted(j["host"] for j in running) == ["h1", "h2"]  # one per host: cpus 1 each
    (queued,) = [jobs[i] for i in ids if jobs[i]["state"] == "PENDING"]
    assert "cpu" in (queued["reason"] or "").lower()
    assert wait_for(capsys, inv, queued["id"], {"COMPLETED"})["state"] == "COMPLETED"


def test_logs_exit_codes_and_wait(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = inventory(tmp_path / "hosts.ini", lab, ["h3"])
    code, out = cli(
        capsys, "-i", str(inv), "submit", "--json", "--wait", "--",
        "echo out-$LEPTON_JOB_ID-$LEPTON_HOST; echo err >&2; exit 3",
    )  # fmt: skip
    assert code == 3  # --wait exits with the job's exit code
    job_id = json.loads(out.splitlines()[0])["id"]
    job = jobs_json(capsys, inv)[job_id]
    assert (job["state"], job["exit_code"], job["host"]) == ("FAILED", 3, "h3")
    code, out = cli(capsys, "-i", str(inv), "logs", str(job_id))
    assert code == 0 and f"out-{job_id}-h3" in out and "err" in out


def test_cancel_kills_the_whole_tree_on_the_host(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = inventory(tmp_path / "hosts.ini", lab, ["h4"])
    code, out = cli(capsys, "-i", str(inv), "submit", "--json", "--", "sleep 311 & sleep 312; wait")
    job_id = json.loads(out)["id"]
    assert processes_in(lab, "h4", b"sleep\x00311") and processes_in(lab, "h4", b"sleep\x00312")
    code, _ = cli(capsys, "-i", str(inv), "cancel", str(job_id))
    assert code == 0
    assert wait_for(capsys, inv, job_id, {"CANCELLED"})["state"] == "CANCELLED"
    assert processes_in(lab, "h4", b"sleep\x00311") == []
    assert processes_in(lab, "h4", b"sleep\x00312") == []


def test_walltime_is_enforced(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = inventory(tmp_path / "hosts.ini", lab, ["h1"])
    _, out = cli(capsys, "-i", str(inv), "submit", "--json", "--time", "1", "--", "sleep 313")
    job_id = json.loads(out)["id"]
    assert wait_for(capsys, inv, job_id, {"TIMEOUT"})["state"] == "TIMEOUT"
    assert processes_in(lab, "h1", b"sleep\x00313") == []


def test_job_survives_the_operator_being_killed_mid_submit(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = inventory(tmp_path / "hosts.ini", lab, ["h2"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    marker = lab.path_on("h2", "/tmp/survivor")
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "leptonctl", "-i", str(inv), "submit", "--wait", "--",
         "sleep 2; echo alive > /tmp/survivor"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not processes_in(lab, "h2", b"/tmp/survivor") and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # the operator's terminal dies while the job runs
    proc.wait()
    time.sleep(3)
    assert marker.read_text().strip() == "alive"
    jobs = jobs_json(capsys, inv)  # the next command reconciles and finds it finished
    assert [j["state"] for j in jobs.values()] == ["COMPLETED"]


def test_unreachable_host_fails_its_job_over_to_another_host(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = inventory(tmp_path / "hosts.ini", lab, ["h3", "h4"])
    _, out = cli(capsys, "-i", str(inv), "submit", "--json", "--retries", "1", "--", "sleep 30")
    job_id = json.loads(out)["id"]
    first = jobs_json(capsys, inv)[job_id]
    assert first["state"] == "RUNNING"
    lab.stop_sshd(first["host"])
    try:
        hosts = load_inventory(inv)
        state = Path(os.environ["XDG_DATA_HOME"]) / "leptonctl" / "state.db"
        options = TransportOptions(connect_timeout=3, command_timeout=10)
        with SqliteStore(state) as store:

            async def one_pass() -> None:
                async with ServiceContext(hosts, store=store, options=options) as ctx:
                    await reconcile(ctx, node_fail_after=0.0)

            asyncio_run(one_pass())  # marks it lost
            asyncio_run(one_pass())  # requeues, restarts
            record = store.jobs.get(job_id)
    finally:
        lab.start_sshd(first["host"])
    assert record is not None and record.attempt == 1
    assert record.state == "RUNNING" and record.host != first["host"]
    cli(capsys, "-i", str(inv), "jobs")  # the first host is back: its stale attempt is killed
    assert remaining_after(lab, first["host"], b"sleep\x0030") == []  # never two runs at once
    cli(capsys, "-i", str(inv), "cancel", str(job_id))


def test_lost_host_without_retries_ends_node_fail(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = inventory(tmp_path / "hosts.ini", lab, ["h2"])
    _, out = cli(capsys, "-i", str(inv), "submit", "--json", "--", "sleep 30")
    job_id = json.loads(out)["id"]
    lab.stop_sshd("h2")
    try:
        code, out = cli(capsys, "-i", str(inv), "schedule", "--node-fail-after", "0")
        assert code == 3 and "unreachable ['h2']" in out  # first pass: marked lost
        cli(capsys, "-i", str(inv), "schedule", "--node-fail-after", "0")
        state = Path(os.environ["XDG_DATA_HOME"]) / "leptonctl" / "state.db"
        with SqliteStore(state) as store:
            record = store.jobs.get(job_id)
    finally:
        lab.start_sshd("h2")
    assert record is not None and record.state == "NODE_FAIL"
    assert "unreachable" in (record.reason or "")
    assert processes_in(lab, "h2", b"sleep\x0030")  # it kept running while cut off
    cli(capsys, "-i", str(inv), "schedule")  # the host is back: the abandoned run is stopped
    assert remaining_after(lab, "h2", b"sleep\x0030") == []


def test_two_terminals_submitting_at_once_never_overbook(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = inventory(tmp_path / "hosts.ini", lab, ["h1", "h2"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "leptonctl", "-i", str(inv), "submit", "--array", "0-2", "--",
            "sleep 4"]  # fmt: skip
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        proc.wait(timeout=60)
        assert proc.returncode == 0
    jobs = jobs_json(capsys, inv)
    running = [j for j in jobs.values() if j["state"] == "RUNNING"]
    assert len(jobs) == 6
    assert len(running) <= 2 and len({j["host"] for j in running}) == len(running)
    for job_id in jobs:
        cli(capsys, "-i", str(inv), "cancel", str(job_id))


def test_dry_run_plans_on_declared_capacity_without_touching_anything(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = inventory(tmp_path / "hosts.ini", lab, ["h1", "h2"], cpus=2)
    code, out = cli(
        capsys, "-i", str(inv), "submit", "--dry-run", "--json", "--array", "0-5", "--cpus", "2",
        "--est", "cpu=100", "--", "true",
    )  # fmt: skip
    assert code == 0
    doc = json.loads(out)
    assert len(doc["placements"]) == 6 and doc["makespan"] == pytest.approx(300)
    assert {p["host"] for p in doc["placements"]} == {"h1", "h2"}
    assert jobs_json(capsys, inv) == {}  # the queue is untouched


def asyncio_run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def test_a_batch_with_estimates_runs_where_the_makespan_plan_puts_it(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Greedy "earliest completion now" would put `first` on h1 and `second` on h2 (100 s);
    # the plan puts `first` on h2 and `second` on h1, for a makespan of 12 s.
    inv = inventory(tmp_path / "hosts.ini", lab, ["h1", "h2"])
    batch = tmp_path / "jobs.yaml"
    batch.write_text(
        "jobs:\n"
        "  - {name: first, command: 'sleep 1', est: {h1: 10, h2: 12}}\n"
        "  - {name: second, command: 'sleep 1', est: {h1: 10, h2: 100}}\n"
    )
    code, out = cli(capsys, "-i", str(inv), "submit", "--file", str(batch), "--json")
    assert code == 0, out
    jobs = {j["name"]: j for j in jobs_json(capsys, inv).values()}
    assert (jobs["first"]["host"], jobs["second"]["host"]) == ("h2", "h1")
