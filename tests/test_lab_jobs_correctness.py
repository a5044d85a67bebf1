"""Job bookkeeping that must match what really happened on the hosts (real sshd lab): a
job that ended while its host was unreachable, with and without a requeue; what
``node drain --wait`` waits for."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.lab import Lab
from tests.test_lab_jobs import cli, inventory

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def lab(any_lab: Lab) -> Lab:
    return any_lab


def job_json(capsys: pytest.CaptureFixture[str], inv: Path, job_id: int) -> dict:
    code, out = cli(capsys, "-i", str(inv), "--connect-timeout", "3", "show", "--json", str(job_id))
    assert code == 0
    return json.loads(out)


def wait_gone(lab: Lab, host: str, needle: bytes, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while lab.pids_matching(host, needle):
        assert time.monotonic() < deadline, f"{needle!r} still runs on {host}"
        time.sleep(0.2)


def lose_host_until_its_job_ends(
    lab: Lab, capsys: pytest.CaptureFixture[str], inv: Path, host: str, needle: bytes
) -> None:
    """Cut ``host`` off long enough for reconcile to give its job up, let the job end there
    meanwhile, then bring the host back."""
    lab.stop_sshd(host)
    try:
        for _ in range(2):  # first pass: lost; second: given up on
            cli(capsys, "-i", str(inv), "--connect-timeout", "2", "schedule",
                "--node-fail-after", "0")  # fmt: skip
        wait_gone(lab, host, needle)  # it ran to its end while nobody could see it
    finally:
        lab.start_sshd(host)


def test_a_job_that_completed_while_its_host_was_unreachable_is_recorded_completed(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = inventory(tmp_path / "hosts.ini", lab, ["h2"])
    _, out = cli(capsys, "-i", str(inv), "submit", "--json", "--", "sleep 4.25; echo done")
    job_id = json.loads(out)["id"]
    assert job_json(capsys, inv, job_id)["state"] == "RUNNING"
    lab.stop_sshd("h2")
    try:
        for _ in range(2):
            cli(capsys, "-i", str(inv), "--connect-timeout", "2", "schedule",
                "--node-fail-after", "0")  # fmt: skip
        assert job_json(capsys, inv, job_id)["state"] == "NODE_FAIL"
        wait_gone(lab, "h2", b"sleep\x004.25")
    finally:
        lab.start_sshd("h2")
    job = job_json(capsys, inv, job_id)  # the host is back and reports the end record
    assert (job["state"], job["exit_code"], job["attempt"]) == ("COMPLETED", 0, 0)
    assert "considered lost" in job["reason"] and "NODE_FAIL" in job["reason"]
    _, out = cli(capsys, "-i", str(inv), "show", str(job_id))
    assert "considered lost" in " ".join(out.split())  # the table may wrap the reason
    _, out = cli(capsys, "-i", str(inv), "logs", str(job_id))
    assert out == "done\n"


def test_a_requeued_job_whose_old_run_completed_is_not_run_twice(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = inventory(tmp_path / "hosts.ini", lab, ["h3"])
    _, out = cli(
        capsys, "-i", str(inv), "submit", "--json", "--retries", "1", "--",
        "sleep 4.5; echo once >> /tmp/runs",
    )  # fmt: skip
    job_id = json.loads(out)["id"]
    lose_host_until_its_job_ends(lab, capsys, inv, "h3", b"sleep\x004.5")
    job = job_json(capsys, inv, job_id)
    assert (job["state"], job["exit_code"], job["attempt"]) == ("COMPLETED", 0, 0)
    assert "requeue withdrawn" in job["reason"]
    cli(capsys, "-i", str(inv), "schedule")  # nothing left to start
    assert job_json(capsys, inv, job_id)["state"] == "COMPLETED"
    assert lab.path_on("h3", "/tmp/runs").read_text() == "once\n"


def test_drain_wait_names_the_jobs_it_waits_for_and_their_unreachable_host(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = inventory(tmp_path / "hosts.ini", lab, ["h4"])
    _, out = cli(capsys, "-i", str(inv), "submit", "--json", "--name", "long", "--", "sleep 61.5")
    job_id = json.loads(out)["id"]
    lab.stop_sshd("h4")
    lines: list[str] = []
    proc = subprocess.Popen(
        [sys.executable, "-m", "leptonctl", "-i", str(inv), "--connect-timeout", "2",
         "node", "drain", "h4", "--wait"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not any("unreachable" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        lab.start_sshd("h4")
    said = "".join(lines)
    assert f"job {job_id} (long) on h4 unreachable" in said, said
    assert "RUNNING" in said
    cli(capsys, "-i", str(inv), "cancel", str(job_id))
    cli(capsys, "-i", str(inv), "node", "resume", "h4")


def test_staging_an_input_over_a_slow_link_holds_up_no_other_command_and_runs_once(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = inventory(tmp_path / "holder.ini", lab, ["h1"], cpus=2)
    src = tmp_path / "blob.bin"
    src.write_bytes(os.urandom(4 << 20))
    code, out = cli(capsys, "-i", str(holder), "data", "put", str(src), "slowin", "-k", "1")
    assert code == 0, out
    inv = inventory(tmp_path / "hosts.ini", lab, ["h1", "h2"], cpus=2)
    lab.shape("h1", "h2", 4)  # 0.5 MB/s: copying the input to h2 takes about 8 s
    try:
        submit = subprocess.Popen(
            [sys.executable, "-m", "leptonctl", "-i", str(inv), "submit", "--json",
             "--limit", "h2", "--input", "slowin:/tmp/slowin", "--", "wc -c < /tmp/slowin"],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:  # `jobs` answers from the store while the submit copies the input
            code, out = cli(capsys, "-i", str(inv), "jobs", "--json")
            assert code == 0
            (job,) = json.loads(out)["jobs"] or [None]
            if job and "staging its input on h2" in (job["reason"] or ""):
                break
            assert time.monotonic() < deadline and submit.poll() is None, (job, submit.poll())
            time.sleep(0.2)
        assert job["state"] == "STARTING"
        # another staging-capable command leaves the claimed job alone: no second copy
        code, out = cli(capsys, "-i", str(inv), "schedule")
        assert code == 0 and "started -" in out
        code, out = cli(capsys, "-i", str(inv), "show", "--json", str(job["id"]))
        assert json.loads(out)["state"] == "STARTING"
        assert submit.poll() is None  # both answered while the copy was still going on
        out, err = submit.communicate(timeout=120)
    finally:
        lab.clear_shaping("h1")
    assert submit.returncode == 0, err
    code, out = cli(capsys, "-i", str(inv), "submit", "--wait", "--json", "--after",
                    str(job["id"]), "--", "true")  # fmt: skip
    assert code == 0, out
    code, log = cli(capsys, "-i", str(inv), "logs", str(job["id"]))
    assert log.strip() == str(4 << 20)


def test_a_job_cancelled_while_its_input_is_staged_never_runs(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = inventory(tmp_path / "holder.ini", lab, ["h1"], cpus=2)
    src = tmp_path / "blob.bin"
    src.write_bytes(os.urandom(3 << 20))
    code, out = cli(capsys, "-i", str(holder), "data", "put", str(src), "cancelin", "-k", "1")
    assert code == 0, out
    inv = inventory(tmp_path / "hosts.ini", lab, ["h1", "h3"], cpus=2)
    lab.shape("h1", "h3", 4)
    try:
        submit = subprocess.Popen(
            [sys.executable, "-m", "leptonctl", "-i", str(inv), "submit", "--json",
             "--limit", "h3", "--input", "cancelin", "--", "touch /tmp/it-ran"],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            _, out = cli(capsys, "-i", str(inv), "jobs", "--json")
            (job,) = json.loads(out)["jobs"] or [None]
            if job and "staging its input" in (job["reason"] or ""):
                break
            assert time.monotonic() < deadline and submit.poll() is None, (job, submit.poll())
            time.sleep(0.2)
        code, out = cli(capsys, "-i", str(inv), "cancel", str(job["id"]))
        assert code == 0
        submit.communicate(timeout=120)
    finally:
        lab.clear_shaping("h1")
    _, out = cli(capsys, "-i", str(inv), "show", "--json", str(job["id"]))
    assert json.loads(out)["state"] == "CANCELLED"
    assert not lab.path_on("h3", "/tmp/it-ran").exists()  # its command never started
