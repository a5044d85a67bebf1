"""Tests of the detached jobs of the agent (agent/lepton_agent/), run as a subprocess as on a host.

Every job runs for real (sh, sleep, python) under a tmp data dir. Process trees are checked
by scanning /proc for the job's process group / session. ``LEPTON_TEST_AGENT_PYTHON`` picks
the interpreter that runs the agent (default: this one), so the whole file can be run again
under /usr/bin/python3 or an old python3.8.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[1] / "agent"  # the payload: `python agent COMMAND`
AGENT_PYTHON = os.environ.get("LEPTON_TEST_AGENT_PYTHON", sys.executable)
SYSTEM_PYTHON = "/usr/bin/python3"
ENDED = ("COMPLETED", "FAILED", "TIMEOUT", "CANCELLED")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")


def agent(
    data_dir: Path, *args: str, spec: dict | None = None, python: str = AGENT_PYTHON
) -> tuple[int, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEPTON_AGENT_", "FAKE_"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    proc = subprocess.run(
        [python, str(AGENT), *args, "--data-dir", str(data_dir)],
        input=None if spec is None else json.dumps(spec),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.stdout.count("\n") == 1, (proc.stdout, proc.stderr)
    return proc.returncode, json.loads(proc.stdout)


def start(data_dir: Path, **spec) -> dict:
    code, reply = agent(data_dir, "job-start", spec=spec)
    assert code == 0, reply
    return reply


def status(data_dir: Path, job_id: str) -> dict:
    code, reply = agent(data_dir, "job-status", job_id)
    assert code == 0
    [entry] = reply["jobs"]
    return entry


def wait_ended(data_dir: Path, job_id: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        entry = status(data_dir, job_id)
        if entry["state"] in ENDED or time.monotonic() > deadline:
            return entry
        time.sleep(0.1)


def log_text(data_dir: Path, job_id: str) -> str:
    return (data_dir / "jobs" / job_id / "log").read_text()


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group or session is pgid."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            text = Path("/proc", name, "stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp, session = text.rsplit(")", 1)[1].split()[:4]
        if state != "Z" and pgid in (int(pgrp), int(session)):
            members.append(int(name))
    return members


def wait_group_gone(pgid: int, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return group_members(pgid)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_start_answers_running_with_pids_and_output_lands_in_the_log(data_dir):
    reply = start(data_dir, id="1", command="echo hello; sleep 0.5; echo world", grace=1)
    assert reply["schema"] == 1 and reply["created"] is True
    assert (reply["id"], reply["state"]) == ("1", "RUNNING")
    assert reply["pid"] == reply["pgid"] and reply["pid"] > 0
    assert reply["started"] <= time.time()
    entry = wait_ended(data_dir, "1")
    assert (entry["state"], entry["exit_code"], entry["signal"]) == ("COMPLETED", 0, None)
    assert entry["reason"] is None and entry["ended"] >= entry["started"]
    assert log_text(data_dir, "1") == "hello\nworld\n"
    assert entry["log_bytes"] == len("hello\nworld\n")


def test_exit_codes_give_completed_or_failed_with_the_exit_code_and_stderr_is_logged(data_dir):
    start(data_dir, id="ok", command=["true"])
    start(data_dir, id="bad", command="echo oops >&2; exit 3")
    start(data_dir, id="nocmd", command=["no-such-command-xyz"])
    assert wait_ended(data_dir, "ok")["state"] == "COMPLETED"
    bad = wait_ended(data_dir, "bad")
    assert (bad["state"], bad["exit_code"], bad["reason"]) == ("FAILED", 3, "exit code 3")
    assert log_text(data_dir, "bad") == "oops\n"
    nocmd = wait_ended(data_dir, "nocmd")
    assert (nocmd["state"], nocmd["exit_code"]) == ("FAILED", 127)
    assert "no-such-command-xyz" in nocmd["reason"]


def test_env_workdir_and_home_default_are_applied(data_dir, tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {"FOO": "bar baz", "LEPTON_JOB_ID": "e1"}
    start(
        data_dir, id="e1", command='echo "$FOO|$LEPTON_JOB_ID"; pwd', env=env, workdir=str(workdir)
    )
    start(data_dir, id="e2", command="pwd")
    assert wait_ended(data_dir, "e1")["state"] == "COMPLETED"
    assert log_text(data_dir, "e1") == f"bar baz|e1\n{os.path.realpath(workdir)}\n"
    assert wait_ended(data_dir, "e2")["state"] == "COMPLETED"
    assert log_text(data_dir, "e2").strip() == os.path.realpath(os.path.expanduser("~"))


def test_missing_workdir_ends_failed_127_with_a_reason(data_dir, tmp_path):
    reply = start(data_dir, id="w", command=["true"], workdir=str(tmp_path / "nowhere"))
    assert (reply["state"], reply["exit_code"]) == ("FAILED", 127)
    assert reply["reason"] == "workdir %s does not exist" % (tmp_path / "nowhere")


def test_argv_with_spaces_and_quotes_is_not_resplit_but_a_string_goes_to_sh(data_dir):
    argv = ["printf", "<%s>", "a b", "it's", '"q"', "$HOME", "*"]
    start(data_dir, id="argv", command=argv)
    start(data_dir, id="sh", command="printf '<%s>' a\\ b $((1 + 2)) | tr '<' '['")
    assert wait_ended(data_dir, "argv")["state"] == "COMPLETED"
    assert log_text(data_dir, "argv") == '<a b><it\'s><"q"><$HOME><*>'
    assert wait_ended(data_dir, "sh")["state"] == "COMPLETED"
    assert log_text(data_dir, "sh") == "[a b>[3>"


def test_job_survives_the_agent_and_its_whole_process_group_being_killed(data_dir):
    # the "SSH session": a shell in its own group that runs job-start, then lingers
    script = f"{AGENT_PYTHON} {AGENT} job-start --data-dir {data_dir}; sleep 30"
    spec = json.dumps({"id": "s", "command": "sleep 3; echo done"})
    session = subprocess.Popen(
        ["sh", "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    session.stdin.write(spec)
    session.stdin.close()
    reply = json.loads(session.stdout.readline())
    os.killpg(session.pid, signal.SIGKILL)
    session.wait()
    assert reply["state"] == "RUNNING"
    assert group_members(reply["pgid"])  # still running after the session died
    entry = wait_ended(data_dir, "s")
    assert (entry["state"], log_text(data_dir, "s")) == ("COMPLETED", "done\n")


def test_kill_cancels_and_kills_the_whole_tree(data_dir):
    reply = start(data_dir, id="k", command="sleep 300 & sleep 300", grace=5)
    time.sleep(0.3)  # let sh start its background child
    assert len(group_members(reply["pgid"])) >= 2
    code, killed = agent(data_dir, "job-kill", "k")
    assert code == 0 and killed["cancel_requested"] is True
    entry = wait_ended(data_dir, "k")
    assert (entry["state"], entry["reason"]) == ("CANCELLED", "cancelled by job-kill")
    assert wait_group_gone(reply["pgid"]) == []
    # killing an ended job is a no-op answering its end state
    code, again = agent(data_dir, "job-kill", "k")
    assert (code, again["state"], again["cancel_requested"]) == (0, "CANCELLED", False)


def test_processes_that_left_the_group_with_setsid_die_with_the_job(data_dir):
    reply = start(data_dir, id="esc", command="setsid sleep 317 & sleep 316", grace=1)
    time.sleep(0.3)
    escaped = [p for p in _pids_with(b"sleep\x00317")]
    assert escaped and all(os.getpgid(p) != reply["pgid"] for p in escaped)  # really escaped
    code, _ = agent(data_dir, "job-kill", "esc")
    assert code == 0
    assert wait_ended(data_dir, "esc")["state"] == "CANCELLED"
    deadline = time.monotonic() + 5
    while _pids_with(b"sleep\x00317") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _pids_with(b"sleep\x00317") == []


def _pids_with(needle: bytes) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
                state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[-1].split()[0]
            except OSError:
                continue
            if needle in cmdline and state != "Z":
                found.append(int(name))
    return found


def test_walltime_ends_timeout_and_the_tree_is_gone(data_dir):
    reply = start(data_dir, id="t", command="sleep 300 & sleep 300", walltime=1, grace=1)
    entry = wait_ended(data_dir, "t")
    assert entry["state"] == "TIMEOUT"
    assert entry["reason"] == "walltime of 1 s exceeded"
    assert entry["ended"] - entry["started"] < 3
    assert wait_group_gone(reply["pgid"]) == []


def test_job_ignoring_sigterm_is_killed_after_the_grace(data_dir):
    reply = start(data_dir, id="i", command="trap '' TERM; sleep 300 & sleep 300", grace=1)
    time.sleep(0.3)
    started = time.monotonic()
    agent(data_dir, "job-kill", "i")
    entry = wait_ended(data_dir, "i")
    assert entry["state"] == "CANCELLED" and entry["signal"] == signal.SIGKILL
    assert entry["reason"] == "cancelled by job-kill; SIGKILL after 1 s grace"
    assert 0.9 <= time.monotonic() - started < 5
    assert wait_group_gone(reply["pgid"]) == []


def test_kill_grace_option_overrides_the_spec_grace(data_dir):
    start(data_dir, id="g", command="trap '' TERM; sleep 300", grace=60)
    time.sleep(0.2)
    agent(data_dir, "job-kill", "g", "--grace", "0.5")
    entry = wait_ended(data_dir, "g", timeout=5)
    assert entry["state"] == "CANCELLED" and "0.5 s grace" in entry["reason"]


def test_second_start_of_the_same_id_does_not_run_the_command_twice(data_dir):
    spec = {"id": "once", "command": "echo ran; sleep 0.5"}
    first = start(data_dir, **spec)
    second = start(data_dir, **spec)
    assert (first["created"], second["created"]) == (True, False)
    assert second["pid"] == first["pid"] and second["state"] == "RUNNING"
    wait_ended(data_dir, "once")
    third = start(data_dir, **spec)  # after the end: still its end record, not a new run
    assert (third["created"], third["state"]) == (False, "COMPLETED")
    time.sleep(0.3)
    assert log_text(data_dir, "once").splitlines() == ["ran"]


def test_supervisor_sigkilled_is_lost_and_kill_then_kills_the_group_itself(data_dir):
    reply = start(data_dir, id="l", command="sleep 300", grace=1)
    state = json.loads((data_dir / "jobs" / "l" / "state.json").read_text())
    os.kill(state["supervisor_pid"], signal.SIGKILL)
    time.sleep(0.2)
    entry = status(data_dir, "l")
    assert entry["state"] == "LOST" and "gone without an end record" in entry["reason"]
    code, refused = agent(data_dir, "job-rm", "l")  # its processes still run
    assert code == 0 and refused["removed"] is False and "job-kill" in refused["error"]
    code, killed = agent(data_dir, "job-kill", "l")
    assert (code, killed["state"], killed["cancel_requested"]) == (0, "CANCELLED", True)
    assert wait_group_gone(reply["pgid"]) == []


def test_kill_after_a_reboot_never_signals_a_recycled_process_group(data_dir):
    # A job recorded under another boot: its pgid now names some stranger's group (here:
    # this very job, standing in for the stranger), which job-kill must leave alone.
    reply = start(data_dir, id="b", command="sleep 300", grace=1)
    state_file = data_dir / "jobs" / "b" / "state.json"
    state = json.loads(state_file.read_text())
    os.kill(state["supervisor_pid"], signal.SIGKILL)
    state_file.write_text(json.dumps({**state, "boot_id": "a-previous-boot"}))
    time.sleep(0.2)
    code, _ = agent(data_dir, "job-kill", "b")
    assert code == 0
    assert group_members(reply["pgid"])  # still alive: not ours to kill after a reboot
    os.killpg(reply["pgid"], signal.SIGKILL)
    assert wait_group_gone(reply["pgid"]) == []


def test_log_offsets_limits_and_eof(data_dir):
    text = "héllo wörld\n" * 3
    start(data_dir, id="log", command=["printf", "%s", text])
    wait_ended(data_dir, "log")
    code, whole = agent(data_dir, "job-log", "log")
    assert code == 0
    assert (whole["data"], whole["offset"], whole["eof"]) == (text, 0, True)
    assert whole["next_offset"] == len(text.encode()) and whole["state"] == "COMPLETED"
    pieces, offset, eof = [], 0, False
    while not eof:
        code, part = agent(data_dir, "job-log", "log", "--offset", str(offset), "--limit", "5")
        assert part["offset"] == offset and part["next_offset"] > offset
        pieces.append(part["data"])
        offset, eof = part["next_offset"], part["eof"]
    assert "".join(pieces) == text  # a multi-byte char is never split between reads
    code, past = agent(data_dir, "job-log", "log", "--offset", "1000")
    assert (past["data"], past["next_offset"], past["eof"]) == ("", 1000, True)


def test_log_of_a_running_job_is_not_at_eof(data_dir):
    start(data_dir, id="r", command="echo early; sleep 2", grace=1)
    time.sleep(0.3)
    _, part = agent(data_dir, "job-log", "r")
    assert (part["data"], part["eof"], part["state"]) == ("early\n", False, "RUNNING")
    agent(data_dir, "job-kill", "r")


def test_peak_rss_is_reported_for_a_job_that_allocates_50_mb(data_dir):
    start(data_dir, id="m", command=[sys.executable, "-c", "b = b'x' * 50_000_000"])
    entry = wait_ended(data_dir, "m")
    assert entry["state"] == "COMPLETED"
    assert entry["peak_rss_bytes"] >= 50_000_000


def test_job_files_are_private_but_the_job_keeps_the_callers_umask(data_dir):
    start(data_dir, id="p", command="umask")
    wait_ended(data_dir, "p")
    for path in [data_dir, data_dir / "jobs", *data_dir.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path
    umask = os.umask(0o022)
    os.umask(umask)
    assert int(log_text(data_dir, "p"), 8) == umask


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"id": "../x", "command": "true"}, "job id must match"),
        ({"id": "..", "command": "true"}, "job id must not be '..'"),
        ({"id": "a" * 65, "command": "true"}, "job id must match"),
        ({"id": "ok\n", "command": "true"}, "job id must match"),
        ({"id": "ok"}, "command must be"),
        ({"id": "ok", "command": []}, "command must be"),
        ({"id": "ok", "command": ["echo", 1]}, "command must be"),
        ({"id": "ok", "command": "true", "env": {"A": 1}}, "env must be"),
        ({"id": "ok", "command": "true", "walltime": -1}, "walltime must be"),
        ({"id": "ok", "command": "true", "grace": "soon"}, "grace must be"),
        ([1, 2], "job spec must be a JSON object"),
    ],
)
def test_bad_spec_is_an_error_with_exit_2_and_nothing_is_created(data_dir, spec, error):
    code, reply = agent(data_dir, "job-start", spec=spec)
    assert code == 2 and set(reply) == {"schema", "error"}
    assert reply["error"].startswith(error), reply["error"]
    assert list((data_dir / "jobs").glob("*")) == [] if (data_dir / "jobs").exists() else True


def test_bad_command_lines_are_json_errors_with_exit_2(data_dir):
    assert agent(data_dir, "job-status", "a/b")[0] == 2
    assert agent(data_dir, "job-log", "x", "--offset", "-1")[0] == 2
    code, reply = agent(data_dir, "job-kill")  # no ID
    assert code == 2 and "required" in reply["error"]


def test_unknown_ids_and_rm_of_an_ended_job(data_dir):
    entry = status(data_dir, "nope")
    assert (entry["state"], entry["reason"]) == ("UNKNOWN", "no such job")
    code, reply = agent(data_dir, "job-status")
    assert (code, reply) == (0, {"schema": 1, "jobs": []})
    start(data_dir, id="gone", command=["true"])
    wait_ended(data_dir, "gone")
    code, removed = agent(data_dir, "job-rm", "gone")
    assert (code, removed["removed"], removed["state"]) == (0, True, "COMPLETED")
    assert not (data_dir / "jobs" / "gone").exists()
    assert agent(data_dir, "job-status")[1]["jobs"] == []


def test_rm_refuses_a_running_job(data_dir):
    start(data_dir, id="busy", command="sleep 30", grace=1)
    code, reply = agent(data_dir, "job-rm", "busy")
    assert (code, reply["removed"], reply["state"]) == (0, False, "RUNNING")
    assert reply["error"] == "job busy is RUNNING: job-kill it first"
    agent(data_dir, "job-kill", "busy")
    assert (data_dir / "jobs" / "busy" / "spec.json").exists()


def test_serve_ops_start_status_log_kill_and_rm(data_dir):
    requests = [
        {"op": "job-start", "spec": {"id": "v", "command": "echo served; sleep 0.5"}},
        {"op": "job-start", "spec": {"id": "v2", "command": "sleep 30", "grace": 1}, "id": 9},
        {"op": "job-status", "ids": None},
        {"op": "job-kill", "id": "v2", "grace": 1},
        {"op": "job-start", "spec": {"id": "bad id"}},
        {"op": "job-status", "ids": ["v", "zz"], "id": "req-1"},
        {"op": "job-log", "id": "v2", "offset": 0, "limit": 10},
        {"op": "job-rm", "id": "v2"},
        {"op": "job-rm", "id": "zz"},
    ]
    stdin = "".join(json.dumps(r) + "\n" for r in requests)
    proc = subprocess.run(
        [AGENT_PYTHON, str(AGENT), "serve", "--data-dir", str(data_dir)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    replies = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(replies) == len(requests)
    assert (replies[0]["id"], replies[0]["state"]) == ("v", "RUNNING")
    assert replies[1]["id"] == "v2"  # a job reply's id is the job id
    assert [job["id"] for job in replies[2]["jobs"]] == ["v", "v2"]
    assert replies[3]["cancel_requested"] is True
    assert replies[4]["error"].startswith("job id must match")
    assert replies[5]["id"] == "req-1"
    assert [job["state"] for job in replies[5]["jobs"]][1] == "UNKNOWN"
    assert (replies[6]["data"], replies[6]["eof"], replies[6]["state"]) == ("", True, "CANCELLED")
    assert (replies[7]["removed"], replies[8]["removed"]) == (True, False)
    assert not (data_dir / "jobs" / "v2").exists()
    assert wait_ended(data_dir, "v")["state"] == "COMPLETED"
    assert log_text(data_dir, "v") == "served\n"


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="no /usr/bin/python3")
def test_system_python3_without_psutil_runs_and_cancels_jobs(data_dir):
    reply = start_with(data_dir, SYSTEM_PYTHON, id="sys", command="sleep 300 & sleep 300", grace=1)
    assert reply["state"] == "RUNNING"
    time.sleep(0.2)
    code, _ = agent(data_dir, "job-kill", "sys", python=SYSTEM_PYTHON)
    assert code == 0
    assert wait_ended(data_dir, "sys")["state"] == "CANCELLED"
    assert wait_group_gone(reply["pgid"]) == []


def start_with(data_dir: Path, python: str, **spec) -> dict:
    code, reply = agent(data_dir, "job-start", spec=spec, python=python)
    assert code == 0, reply
    return reply
