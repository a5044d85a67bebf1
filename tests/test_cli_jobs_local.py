"""Job commands on the embedded default (this machine, `connection: local`): no root needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from leptonctl.errors import ExitCode


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def submit_json(capsys: pytest.CaptureFixture[str], *args: str, expect: int = 0) -> int:
    code, out, err = cli(capsys, "submit", "--json", *args)
    assert code == expect, err
    return int(json.loads(out.splitlines()[0])["id"])


def job(capsys: pytest.CaptureFixture[str], job_id: int) -> dict:
    code, out, _ = cli(capsys, "show", str(job_id), "--json")
    assert code == 0
    return json.loads(out)


def test_wait_returns_the_jobs_exit_code_and_logs_hold_its_output(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = cli(capsys, "submit", "--wait", "--", "echo to-log; exit 7")
    assert code == 7
    job_id = int(out.split()[1])
    doc = job(capsys, job_id)
    assert (doc["state"], doc["exit_code"], doc["host"]) == ("FAILED", 7, "localhost")
    code, out, _ = cli(capsys, "logs", str(job_id))
    assert code == 0 and out == "to-log\n"


def test_jobs_json_lists_history_with_the_documented_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    job_id = submit_json(capsys, "--wait", "--name", "hello", "--", "true")
    code, out, _ = cli(capsys, "jobs", "--all", "--json")
    assert code == 0
    (entry,) = json.loads(out)["jobs"]
    for key in ("id", "name", "state", "host", "exit_code", "submitted", "started", "ended"):
        assert key in entry
    assert (entry["id"], entry["name"], entry["state"]) == (job_id, "hello", "COMPLETED")
    code, out, _ = cli(capsys, "jobs", "--json")  # the queue only: nothing pending or running
    assert json.loads(out)["jobs"] == []


def test_devices_and_identity_are_exported_to_the_job(capsys: pytest.CaptureFixture[str]) -> None:
    command = 'echo "$LEPTON_JOB_ID|$LEPTON_HOST|$CUDA_VISIBLE_DEVICES|$LEPTON_ARRAY_INDEX|$X"'
    code, out, _ = cli(capsys, "submit", "--wait", "--array", "4", "--env", "X=y", "--", command)
    assert code == 0
    job_id = int(out.split()[1])
    _, log, _ = cli(capsys, "logs", str(job_id))
    assert log.strip() == f"{job_id}|localhost||4|y"  # no GPUs asked: none visible


def test_a_failed_dependency_fails_its_dependant(capsys: pytest.CaptureFixture[str]) -> None:
    first = submit_json(capsys, "--wait", "--", "exit 1", expect=1)
    # rejected at submit (as sbatch refuses a dependency that can never be met)
    second = submit_json(capsys, "--after", str(first), "--", "echo never", expect=ExitCode.FAILED)
    doc = job(capsys, second)
    assert doc["state"] == "FAILED" and str(first) in (doc["reason"] or "")


def test_a_dependency_holds_the_dependant_until_it_completes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    flag = tmp_path / "first-done"
    first = submit_json(capsys, "--", f"sleep 1; touch {flag}")
    second = submit_json(capsys, "--after", str(first), "--wait", "--", f"test -e {flag}")
    assert job(capsys, second)["state"] == "COMPLETED"


def test_cancel_a_pending_job_and_a_running_job(capsys: pytest.CaptureFixture[str]) -> None:
    running = submit_json(capsys, "--cpus", "1", "--", "sleep 300")
    waiting = submit_json(capsys, "--after", str(running), "--", "true")
    assert job(capsys, running)["state"] == "RUNNING"
    code, out, _ = cli(capsys, "cancel", str(waiting), str(running))
    assert code == 0 and f"job {waiting}: CANCELLED" in out
    assert job(capsys, running)["state"] == "CANCELLED"


def test_a_request_no_host_can_ever_fit_fails_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    job_id = submit_json(capsys, "--gpus", "1", "--", "nvidia-smi", expect=ExitCode.FAILED)
    doc = job(capsys, job_id)
    assert doc["state"] == "FAILED" and "gpu" in (doc["reason"] or "").lower()


def test_batch_file_with_a_bad_entry_is_rejected_before_anything_is_queued(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    batch = tmp_path / "jobs.yaml"
    batch.write_text(
        "jobs:\n  - {name: ok, command: 'true'}\n  - {name: bad, command: x, gpus: -2}\n"
    )
    code, _, err = cli(capsys, "submit", "--file", str(batch))
    assert code == ExitCode.USAGE and "entry 1 (gpus)" in " ".join(err.split())  # wrapped
    _, out, _ = cli(capsys, "jobs", "--all", "--json")
    assert json.loads(out)["jobs"] == []


def test_dry_run_prints_a_plan_and_queues_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    batch = tmp_path / "jobs.yaml"
    batch.write_text(
        "jobs:\n"
        "  - {name: a, command: 'true', est: {cpu: 30}}\n"
        "  - {name: b, command: 'true', est: {cpu: 60}, after: a}\n"
    )
    assert cli(capsys, "status")[0] == 0  # one stored probe to plan on
    code, out, _ = cli(capsys, "submit", "--file", str(batch), "--dry-run", "--json")
    assert code == 0
    doc = json.loads(out)
    placed = {p["job"]: p for p in doc["placements"]}
    assert placed["b"]["start"] >= placed["a"]["end"] == pytest.approx(30)
    assert doc["makespan"] == pytest.approx(90)
    _, out, _ = cli(capsys, "jobs", "--all", "--json")
    assert json.loads(out)["jobs"] == []


def test_unknown_job_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "show", "999")
    assert code == ExitCode.USAGE and "no job 999" in err


def test_logs_follow_streams_until_the_job_ends(capsys: pytest.CaptureFixture[str]) -> None:
    job_id = submit_json(capsys, "--", "for i in 1 2 3; do echo line-$i; sleep 0.4; done")
    code, out, _ = cli(capsys, "logs", "-f", str(job_id))
    assert code == 0 and out == "line-1\nline-2\nline-3\n"


def test_logs_of_a_pending_job_say_so_unless_following(capsys: pytest.CaptureFixture[str]) -> None:
    first = submit_json(capsys, "--", "sleep 1")
    second = submit_json(capsys, "--after", str(first), "--", "echo after-first")
    code, _, err = cli(capsys, "logs", str(second))
    assert code == ExitCode.USAGE and "no output yet (PENDING)" in err
    code, out, _ = cli(capsys, "logs", "-f", str(second))  # waits for it to start, then follows
    assert code == 0 and out == "after-first\n"


def test_a_job_cancelled_between_decision_and_start_is_never_started(
    capsys: pytest.CaptureFixture[str], operator_home: Path, tmp_path: Path
) -> None:
    # What an operator killed right after the scheduling transaction leaves behind: a
    # STARTING job with its devices reserved.  Cancelling it must not start it later.
    from leptonctl.store.sqlite import SqliteStore

    marker = tmp_path / "ran"
    state = operator_home / ".local" / "share" / "leptonctl" / "state.db"
    with SqliteStore(state) as store:
        spec = {"uid": "c0ffee", "command": f"touch {marker}", "env": {}, "request": {"cpus": 1}}
        (job_id,) = store.jobs.add([("late", spec, 0, 0)], 0.0)
        allocation = {"cpus": 1, "memory_bytes": 0, "gpus": [], "fpgas": []}
        store.jobs.update(job_id, state="STARTING", host="localhost", allocation=allocation)
    code, _, _ = cli(capsys, "cancel", str(job_id))
    assert code == 0
    assert job(capsys, job_id)["state"] == "CANCELLED"
    assert not marker.exists()


def test_a_batch_with_a_bad_reference_queues_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    batch = tmp_path / "jobs.yaml"
    batch.write_text(
        f"jobs:\n  - {{name: a, command: 'touch {tmp_path}/a-ran'}}\n"
        "  - {name: b, command: 'true', after: nosuchjob}\n"
    )
    code, _, err = cli(capsys, "submit", "--file", str(batch))
    assert code == ExitCode.USAGE and "nosuchjob" in err
    _, out, _ = cli(capsys, "jobs", "--all", "--json")
    assert json.loads(out)["jobs"] == [] and not (tmp_path / "a-ran").exists()


def test_jobs_on_hosts_of_another_inventory_are_left_alone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    other = tmp_path / "other.ini"
    other.write_text("me ansible_connection=local\n")
    _, out, _ = cli(capsys, "-i", str(other), "submit", "--json", "--", "sleep 20")
    job_id = json.loads(out)["id"]
    for _ in range(2):  # the default inventory has no host "me": nothing to judge there
        assert cli(capsys, "schedule", "--node-fail-after", "0")[0] == 0
    _, out, _ = cli(capsys, "-i", str(other), "show", str(job_id), "--json")
    assert json.loads(out)["state"] == "RUNNING"
    cli(capsys, "-i", str(other), "cancel", str(job_id))


def test_a_queued_job_whose_limit_vanished_fails_alone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[gpu]\nme ansible_connection=local\n")
    first = json.loads(cli(capsys, "-i", str(inventory), "submit", "--json", "--cpus", "2",
                           "--", "sleep 20")[1])["id"]  # fmt: skip
    queued = json.loads(cli(capsys, "-i", str(inventory), "submit", "--json", "--limit", "gpu",
                            "--cpus", "2", "--", "true")[1])["id"]  # fmt: skip
    inventory.write_text("[cpu]\nme ansible_connection=local\n")  # the group is gone
    code, out, _ = cli(capsys, "-i", str(inventory), "jobs", "--all", "--json")
    assert code == 0  # the other jobs are still reconciled and listed
    states = {j["id"]: j for j in json.loads(out)["jobs"]}
    assert states[first]["state"] == "RUNNING"
    assert states[queued]["state"] in ("FAILED", "PENDING") and states[queued]["reason"]
    cli(capsys, "-i", str(inventory), "cancel", str(first), str(queued))


def test_a_job_stopped_on_its_host_is_retried_not_taken_for_a_cancel(
    capsys: pytest.CaptureFixture[str], operator_home: Path
) -> None:
    import os
    import signal
    import time

    job_id = submit_json(capsys, "--retries", "1", "--", "sleep 30")
    jobs_dir = operator_home / ".local" / "share" / "leptonctl" / "jobs"
    (state_file,) = jobs_dir.glob(f"{job_id}.0.*/state.json")
    os.kill(json.loads(state_file.read_text())["supervisor_pid"], signal.SIGTERM)  # a shutdown
    deadline = time.monotonic() + 10
    while not (state_file.parent / "end.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    doc = job(capsys, job_id)  # reconciles: requeued and started again as attempt 2
    assert doc["attempt"] == 1 and doc["state"] == "RUNNING"
    cli(capsys, "cancel", str(job_id))
    assert job(capsys, job_id)["state"] == "CANCELLED"
