"""``leptonctl maintain`` on real sshd hosts: a healthy lab, overlapping runs, a host whose
sshd is stopped, health drains and resumes, --check touching nothing, job gc, hardware
events, and the metrics file read back by prometheus_client's parser.  Every test runs on the
root lab and again on the cluster profile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from leptonctl.errors import ExitCode
from leptonctl.store.sqlite import SqliteStore
from tests.conftest import write_inventory
from tests.lab import Lab

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def lab(any_lab: Lab) -> Lab:
    return any_lab


def jobs_dir(lab: Lab) -> str:
    return f"{lab.data_dir}/jobs"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = run(list(args))
    return code, capsys.readouterr().out


def maintain(
    capsys: pytest.CaptureFixture[str], inv: Path, *args: str
) -> tuple[int, list[dict], dict]:
    """Run maintain with JSON lines: (exit code, step events, the closing run event)."""
    code, out = cli(capsys, "-i", str(inv), "--connect-timeout", "3", "maintain", "--json", *args)
    events = [json.loads(line) for line in out.splitlines()]
    return code, events[:-1], events[-1]


def playbook(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return str(path)


def state_path() -> Path:
    return Path(os.environ["XDG_DATA_HOME"]) / "leptonctl" / "state.db"


def test_maintain_on_a_healthy_lab_exits_0_and_writes_metrics_prometheus_reads(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    inv = write_inventory(tmp_path / "hosts.yaml", lab, ["h1", "h2"])
    metrics = tmp_path / "textfile"
    code, steps, done = maintain(capsys, inv, "--metrics-dir", str(metrics))
    assert code == 0, done
    assert [(s["playbook"], s["status"]) for s in steps] == [("health", "ok"), ("dispatch", "ok")]
    assert steps[0]["summary"] == "2 healthy"
    assert done["outcome"] == "ok" and done["problems"] == {}
    families = {
        f.name: {s.labels.get("host"): s.value for s in f.samples}
        for f in parser.text_string_to_metric_families((metrics / "leptonctl.prom").read_text())
    }
    assert families["leptonctl_host_up"] == {"h1": 1.0, "h2": 1.0}
    assert families["leptonctl_host_healthy"] == {"h1": 1.0, "h2": 1.0}
    assert families["leptonctl_host_memory_bytes"]["h1"] > 0
    assert families["leptonctl_maintenance_last_run_exit_code"] == {None: 0.0}


def test_two_overlapping_runs_one_skips(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = write_inventory(tmp_path / "hosts.yaml", lab, ["h1"])
    slow = playbook(tmp_path, "slow", "steps:\n  - shell: sleep 4.5\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(
        [sys.executable, "-m", "leptonctl", "-i", str(inv), "maintain", "--json", slow],
        env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not lab.pids_matching("h1", b"sleep\x004.5") and time.monotonic() < deadline:
        time.sleep(0.1)
    code, steps, done = maintain(capsys, inv, slow)  # cron fires again meanwhile
    out, _ = first.communicate(timeout=60)
    assert code == ExitCode.SKIPPED and steps == []
    assert done["event"] == "skipped" and f"(pid {first.pid})" in done["skipped"]
    assert first.returncode == 0 and json.loads(out.splitlines()[-1])["outcome"] == "ok"
    with SqliteStore(state_path()) as store:
        outcomes = sorted(str(r.outcome) for r in store.maintenance.recent())
    assert outcomes == ["ok", "skipped"]  # never two at once, both recorded


def test_a_host_with_sshd_stopped_gives_the_unhealthy_code_and_is_named(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = write_inventory(tmp_path / "hosts.yaml", lab, ["h1", "h2"])
    lab.stop_sshd("h2")
    try:
        code, steps, done = maintain(capsys, inv)
        _, terminal = cli(capsys, "-i", str(inv), "--connect-timeout", "3", "maintain")
    finally:
        lab.start_sshd("h2")
    assert code == ExitCode.HOSTS_UNREACHABLE == 3
    assert done["outcome"] == "unhealthy" and list(done["problems"]) == ["h2"]
    assert done["problems"]["h2"][0].startswith("down: ")
    assert steps[0]["hosts"]["h1"]["status"] == "ok"
    assert steps[0]["hosts"]["h2"]["status"] == "down"
    assert "h2" in terminal.splitlines()[-1] or any("h2: down" in x for x in terminal.splitlines())
    with SqliteStore(state_path()) as store:
        assert "h2" not in store.drained()  # unreachable is reported, not drained


def test_failing_health_drains_a_host_that_then_gets_no_jobs_and_passing_resumes_it(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = write_inventory(tmp_path / "hosts.yaml", lab, ["h3", "h4"])
    strict = playbook(
        tmp_path, "strict", "steps:\n  - health: {min_disk_free: 4096TiB, drain_unhealthy: true}\n"
    )
    relaxed = playbook(tmp_path, "relaxed", "steps:\n  - health: {drain_unhealthy: true}\n")
    cli(capsys, "-i", str(inv), "node", "drain", "h4", "--reason", "fan swap")
    code, steps, done = maintain(capsys, inv, strict, "-l", "h3,h4")
    assert code == ExitCode.HOSTS_UNREACHABLE and set(done["problems"]) == {"h3", "h4"}
    assert steps[0]["hosts"]["h3"]["message"].startswith("data disk ")
    assert list(steps[0]["details"]["drained"]) == ["h3"]  # h4 keeps its operator's reason
    nodes = {n["host"]: n for n in json.loads(cli(capsys, "-i", str(inv), "node", "list",
                                                   "--json")[1])["nodes"]}  # fmt: skip
    assert nodes["h3"]["state"] == "drained" and nodes["h3"]["reason"].startswith("health: ")
    assert nodes["h4"]["reason"] == "fan swap"

    _, out = cli(capsys, "-i", str(inv), "submit", "--json", "--", "sleep 1")
    job_id = json.loads(out)["id"]
    maintain(capsys, inv, "dispatch")
    with SqliteStore(state_path()) as store:
        record = store.jobs.get(job_id)
    assert record is not None and record.state == "PENDING"  # both hosts are drained

    code, steps, _ = maintain(capsys, inv, relaxed)
    assert code == 0 and steps[0]["details"]["resumed"] == ["h3"]
    with SqliteStore(state_path()) as store:
        assert list(store.drained()) == ["h4"]  # the operator's drain stays
    maintain(capsys, inv, "dispatch")
    with SqliteStore(state_path()) as store:
        record = store.jobs.get(job_id)
    assert record is not None and record.host == "h3" and record.state != "PENDING"
    cli(capsys, "-i", str(inv), "node", "resume", "h4")


def test_check_touches_nothing_on_the_hosts_or_in_the_queue(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = write_inventory(tmp_path / "hosts.yaml", lab, ["h3"])
    cli(capsys, "-i", str(inv), "status")  # facts for planning
    marker = lab.path_on("h3", "/tmp/checked")
    marker.unlink(missing_ok=True)
    lab.stop_sshd("h3")
    try:
        _, out = cli(capsys, "-i", str(inv), "--connect-timeout", "2", "submit", "--json",
                     "--", "true")  # fmt: skip
    finally:
        lab.start_sshd("h3")
    job_id = json.loads(out)["id"]
    everything = playbook(
        tmp_path,
        "everything",
        "steps:\n  - probe:\n  - dispatch:\n  - shell: {command: touch /tmp/checked}\n"
        "  - drain: {reason: check}\n  - gc: {days: 0}\n",
    )
    with SqliteStore(state_path()) as store:
        facts_before = store.load_facts()["h3"].probed_at
    code, steps, done = maintain(capsys, inv, everything, "--check")
    assert code == 0 and done["outcome"] == "check"
    assert {s["status"] for s in steps} == {"check"}
    assert steps[1]["details"]["would_start"] == {str(job_id): "h3"}
    assert steps[3]["details"]["would_drain"] == ["h3"]
    assert not marker.exists()
    with SqliteStore(state_path()) as store:
        record = store.jobs.get(job_id)
        assert record is not None and record.state == "PENDING"  # no job started
        assert store.drained() == {}  # no drain recorded
        assert store.load_facts()["h3"].probed_at == facts_before  # no probe
    assert not lab.path_on("h3", f"{jobs_dir(lab)}/{record.agent_id}").exists()  # nothing ran there

    code, steps, _ = maintain(capsys, inv, everything)  # and for real
    assert code == 0 and steps[1]["details"]["started"] == [job_id]
    assert marker.exists()
    with SqliteStore(state_path()) as store:
        assert list(store.drained()) == ["h3"]
    cli(capsys, "-i", str(inv), "node", "resume", "h3")


def test_gc_removes_job_directories_only_once_they_are_old_enough(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = write_inventory(tmp_path / "hosts.yaml", lab, ["h4"])
    code, out = cli(capsys, "-i", str(inv), "submit", "--json", "--wait", "--", "echo done")
    assert code == 0
    with SqliteStore(state_path()) as store:
        record = store.jobs.get(json.loads(out.splitlines()[0])["id"])
    assert record is not None and record.state == "COMPLETED"
    job_dir = lab.path_on("h4", f"{jobs_dir(lab)}/{record.agent_id}")
    assert (job_dir / "log").read_text() == "done\n"
    keep = playbook(tmp_path, "keep", "steps:\n  - gc: {days: 1}\n")
    code, steps, _ = maintain(capsys, inv, keep)
    assert code == 0 and steps[0]["status"] == "ok" and job_dir.exists()
    sweep = playbook(tmp_path, "sweep", "steps:\n  - gc: {days: 0}\n")
    code, steps, _ = maintain(capsys, inv, sweep)
    assert code == 0 and steps[0]["summary"] == "removed 1 job directory"
    assert not job_dir.exists()


def test_probe_records_a_vanished_gpu_as_an_event_once(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = write_inventory(tmp_path / "hosts.yaml", lab, ["h2"])
    cli(capsys, "-i", str(inv), "status")
    with SqliteStore(state_path()) as store:  # the last probe remembers a GPU h2 lacks now
        stored = store.load_facts()["h2"]
        document = dict(stored.document)
        document["gpus"] = [{"index": 0, "uuid": "GPU-gone", "name": "NVIDIA H100 80GB HBM3"}]
        store.save_facts(stored.probed_at, {"h2": document})
    probe = playbook(tmp_path, "probe", "steps:\n  - probe:\n")
    code, steps, _ = maintain(capsys, inv, probe)
    assert code == 0 and steps[0]["hosts"]["h2"]["status"] == "changed"
    assert steps[0]["hosts"]["h2"]["message"].startswith("GPU 0 (NVIDIA H100 80GB HBM3) is gone")
    maintain(capsys, inv, probe)  # the new baseline: nothing changed since
    with SqliteStore(state_path()) as store:
        events = store.events("hardware_changed")
    assert [(e.host, e.detail["change"], e.detail["gpu"]["uuid"]) for e in events] == [
        ("h2", "gpu_gone", "GPU-gone")
    ]
