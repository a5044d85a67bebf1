"""``leptonctl maintain`` on this machine (the built-in local inventory): no root, no lab.

The lock, the run record, --check, step failures and on_error, playbook lookup and the
terminal summary.  Real hosts are in tests/test_lab_maintain.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from rich.console import Console

from leptonctl.cli.app import run
from leptonctl.core.jobviews import removable_job_dirs
from leptonctl.core.playbook import PlannedStep, parse_playbook
from leptonctl.core.records import JobRecord
from leptonctl.core.reports import HostResult, StepResult
from leptonctl.errors import ExitCode
from leptonctl.render.maintain import run_summary, step_lines
from leptonctl.services.maintain.actions import creates_test
from leptonctl.services.maintain.run import RunReport, run_lock
from leptonctl.store.sqlite import SqliteStore


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


def maintain(capsys: pytest.CaptureFixture[str], state: Path, *args: str) -> tuple[int, list[dict]]:
    capsys.readouterr()
    code = run(["--state", str(state), "maintain", "--json", *args])
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines()]


def book(tmp_path: Path, text: str, name: str = "b.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_the_default_tick_is_healthy_here_and_is_recorded(
    capsys: pytest.CaptureFixture[str], state: Path
) -> None:
    code, lines = maintain(capsys, state)
    assert code == 0
    assert [(e["event"], e.get("playbook")) for e in lines] == [
        ("step", "health"), ("step", "dispatch"), ("run", None),
    ]  # fmt: skip
    assert lines[0]["hosts"] == {"localhost": {"status": "ok", "message": ""}}
    with SqliteStore(state) as store:
        (record,) = store.maintenance.recent()
    assert (record.outcome, record.exit_code, record.check) == ("ok", 0, False)
    assert record.playbooks == ("health", "dispatch") and record.ended is not None
    assert [s["action"] for s in record.steps] == ["health", "dispatch"]


def test_a_run_that_finds_the_lock_taken_skips_and_says_since_when(
    capsys: pytest.CaptureFixture[str], state: Path
) -> None:
    with SqliteStore(state) as holding, run_lock(holding, 1795370000.0) as holder:
        assert holder is None  # this test holds it, as a long-running cron run would
        code, lines = maintain(capsys, state)
    assert code == ExitCode.SKIPPED == 75
    (event,) = lines
    assert event["event"] == "skipped" and event["outcome"] == "skipped"
    assert f"(pid {os.getpid()}) by {holding.actor}" in event["skipped"]
    assert "since 20" in event["skipped"]
    with SqliteStore(state) as store:
        (record,) = store.maintenance.recent()
    assert (record.outcome, record.exit_code) == ("skipped", 75)
    assert maintain(capsys, state)[0] == 0  # the lock is free again


def test_check_touches_nothing_and_says_what_it_would_do(
    capsys: pytest.CaptureFixture[str], state: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "made-by-shell"
    path = book(
        tmp_path,
        f"steps:\n  - shell: {{command: 'touch {marker}', creates: {marker}}}\n"
        "  - drain: {reason: check}\n  - probe:\n",
    )
    code, lines = maintain(capsys, state, path, "--check")
    assert code == 0
    assert [e["status"] for e in lines[:-1]] == ["check", "check", "check"]
    assert lines[0]["summary"].startswith(f"would run `touch {marker}` on 1 host (localhost)")
    assert lines[1]["details"] == {"would_drain": ["localhost"]}
    assert not marker.exists()
    with SqliteStore(state) as store:
        assert store.drained() == {} and store.load_facts() == {}
        assert store.events("hardware_changed") == []
        (record,) = store.maintenance.recent()
    assert record.check and record.outcome == "check"


def test_a_failed_step_stops_its_playbook_unless_on_error_continue(
    capsys: pytest.CaptureFixture[str], state: Path, tmp_path: Path
) -> None:
    stop = book(tmp_path, "steps:\n  - shell: exit 7\n  - shell: echo after\n", "stop.yaml")
    go_on = book(
        tmp_path, "steps:\n  - shell: exit 7\n    on_error: continue\n  - shell: echo after\n",
        "go_on.yaml",
    )  # fmt: skip
    code, lines = maintain(capsys, state, stop, go_on)
    assert code == ExitCode.FAILED
    assert [(e["playbook"], e["status"]) for e in lines[:-1]] == [
        ("stop", "failed"), ("stop", "skipped"), ("go_on", "failed"), ("go_on", "changed"),
    ]  # fmt: skip
    assert lines[0]["hosts"]["localhost"] == {"status": "failed", "message": "exit 7: "}
    assert lines[3]["hosts"]["localhost"]["message"] == "after"
    assert lines[-1]["outcome"] == "failed" and lines[-1]["failed_steps"] == ["stop#1", "go_on#1"]


def test_data_actions_run_on_a_cluster_without_datasets(
    capsys: pytest.CaptureFixture[str], state: Path, tmp_path: Path
) -> None:
    path = book(
        tmp_path,
        "steps:\n  - scrub: {replicas_per_run: 5}\n  - repair:\n  - rebalance:\n"
        "  - gc: {days: 1, chunks: true}\n",
    )
    code, lines = maintain(capsys, state, path)
    assert code == ExitCode.OK, lines
    assert [e["status"] for e in lines[:-1]] == ["ok", "ok", "ok", "ok"]
    assert lines[0]["summary"].startswith("verified 0 replicas")


def test_a_shell_step_with_creates_runs_once(
    capsys: pytest.CaptureFixture[str], state: Path, tmp_path: Path
) -> None:
    marker, count = tmp_path / "done", tmp_path / "count"
    path = book(
        tmp_path,
        f"steps:\n  - shell: {{command: 'echo x >> {count}; touch {marker}', creates: {marker}}}\n",
    )
    assert maintain(capsys, state, path)[1][0]["status"] == "changed"
    code, lines = maintain(capsys, state, path)
    assert code == 0 and lines[0]["hosts"]["localhost"]["status"] == "skipped"
    assert count.read_text() == "x\n"


def test_playbook_mistakes_are_usage_errors_naming_file_step_and_field(
    capsys: pytest.CaptureFixture[str], state: Path, tmp_path: Path
) -> None:
    path = book(tmp_path, "steps:\n  - probe:\n  - health: {min_disk_free: plenty}\n")
    assert run(["--state", str(state), "maintain", path]) == ExitCode.USAGE
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert f"{path}:3: step 2 (health.min_disk_free)" in err
    assert run(["--state", str(state), "maintain", "nigthly"]) == ExitCode.USAGE
    assert "shipped: dispatch, health, nightly, scrub" in " ".join(capsys.readouterr().err.split())
    assert not state.exists()  # nothing was recorded for a run that never started


def test_a_run_that_died_is_marked_abandoned_by_the_next(
    capsys: pytest.CaptureFixture[str], state: Path
) -> None:
    with SqliteStore(state) as store:
        dead = store.maintenance.start(["nightly"], False, 1.0)
    maintain(capsys, state)
    with SqliteStore(state) as store:
        record = store.maintenance.get(dead)
    assert record is not None and record.outcome == "abandoned"


def test_the_terminal_summary_names_steps_and_problem_hosts(tmp_path: Path) -> None:
    playbook = parse_playbook("steps:\n  - health:\n", "health.yaml")
    planned = PlannedStep("health", "health.yaml", playbook.steps[0], ("h1", "h2"))
    step = StepResult(planned, "ok", "1 healthy, down: h2", started=10.0, ended=11.5)
    step.hosts = {"h1": HostResult("ok"), "h2": HostResult("down", "refused the connection")}
    report = RunReport(7, ("health",), False, 10.0, 12.0, [step], "unhealthy", 3,
                       {"h2": ["down: refused the connection"]})  # fmt: skip
    console = Console(record=True, width=100)
    console.print(step_lines(step))
    console.print(run_summary(report))
    text = console.export_text()
    assert "✓ health#1 health  1 healthy, down: h2  (1.5s)" in text
    assert "h2: down · refused the connection" in text
    assert "unhealthy  run 7 · health · 1 ok · 2.0s · exit 3" in text
    assert "  h2: down: refused the connection" in text


def job(job_id: int, state: str, attempt: int = 0, uid: str = "u1") -> JobRecord:
    return JobRecord(
        id=job_id, name="j", spec={"uid": uid}, state=state, priority=0, submitted=0.0,
        started=None, ended=None, host="h1", allocation=None, exit_code=None, reason=None,
        attempt=attempt, retries=1, lost_since=None, cancel_requested=False, peak_rss_bytes=None,
    )  # fmt: skip


def test_gc_picks_only_this_stores_ended_job_directories_past_the_cutoff() -> None:
    records = {1: job(1, "COMPLETED"), 2: job(2, "RUNNING", attempt=1), 3: job(3, "RUNNING")}
    entries = [
        {"id": "1.0.u1", "state": "COMPLETED", "ended": 50.0},  # old and done: goes
        {"id": "2.0.u1", "state": "LOST", "ended": None, "started": 10.0},  # an old attempt
        {"id": "2.1.u1", "state": "RUNNING", "started": 10.0},  # its current attempt runs
        {"id": "3.0.u1", "state": "COMPLETED", "ended": 10.0},  # ended, not yet reconciled
        {"id": "1.0.other", "state": "COMPLETED", "ended": 10.0},  # another store's job 1
        {"id": "9.0.u1", "state": "COMPLETED", "ended": 10.0},  # no such job here
        {"id": "scratch", "state": "COMPLETED", "ended": 10.0},
    ]
    assert removable_job_dirs(entries, records, cutoff=100.0) == ["1.0.u1", "2.0.u1"]
    assert removable_job_dirs(entries, records, cutoff=30.0) == ["2.0.u1"]


def test_the_creates_guard_quotes_the_path_and_expands_only_a_leading_tilde() -> None:
    assert creates_test("/srv/a b") == "test -e '/srv/a b'"
    assert creates_test("~/.done; rm -rf x") == "test -e \"$HOME\"/'.done; rm -rf x'"
    assert creates_test("~") == 'test -e "$HOME"'
    assert creates_test("~bob/x") == "test -e '~bob/x'"
