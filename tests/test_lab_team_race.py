"""Many terminals on one queue, for real: several leptonctl processes submitting and
reconciling at once against the lab's sshd hosts.  Every job must complete, none may be
killed by another terminal's reconcile, and no host's single CPU may run two jobs at
once -- judged from the agents' own start and end records on the hosts."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.lab import Lab

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[1]

# One terminal: M submits of one-CPU jobs, each followed by a reading or reconciling
# command, then reconciling until the queue is empty.  Each command is its own process.
TERMINAL = textwrap.dedent(
    """
    import json, subprocess, sys, time
    inv, state, token = sys.argv[1], sys.argv[2], sys.argv[3]
    terminal, count = int(sys.argv[4]), int(sys.argv[5])
    base = [sys.executable, "-m", "leptonctl", "-i", inv, "--state", state]
    between = (["jobs"], ["schedule"], ["status"], ["jobs", "--all"])
    for i in range(count):
        done = subprocess.run(
            [*base, "submit", "--name", f"t{terminal}.{i}", "--env", f"RACE={token}",
             "--", "sh", "-c", "sleep 1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        if done.returncode != 0:
            sys.exit(f"submit failed ({done.returncode}): {done.stdout} {done.stderr}")
        subprocess.run([*base, *between[(terminal + i) % len(between)]],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = subprocess.run([*base, "jobs", "--json"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True).stdout
        if not json.loads(out or '{"jobs": [1]}')["jobs"]:
            sys.exit(0)
        subprocess.run([*base, "schedule"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sys.exit("the queue never emptied")
    """
)


def inventory(path: Path, lab: Lab, names: list[str]) -> Path:
    """Hosts of one CPU each: a second job on a host would be a double booking."""
    lines = ["all:", "  vars:", f"    ansible_user: {lab.user}", "  hosts:"]
    for name in names:
        lines += [f"    {name}:", f"      ansible_host: {lab.host(name).ip}"]
        lines += [f"      {k}: {v}" for k, v in lab.inventory_vars(name).items()]
        lines += ["      capacity: {cpus: 1}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_terminals(inv: Path, state: str, token: str, terminals: int, each: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TERMINAL, str(inv), state, token, str(k), str(each)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(terminals)
    ]
    failures = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        if proc.returncode != 0:
            failures.append(f"rc {proc.returncode}: {out[-2000:]} {err[-2000:]}")
    assert not failures, failures


def final_jobs(inv: Path, state: str) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "leptonctl",
            "-i",
            str(inv),
            "--state",
            state,
            "jobs",
            "--all",
            "--json",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    ).stdout
    return list(json.loads(out)["jobs"])


def agent_runs(lab: Lab, names: list[str], token: str) -> list[tuple[str, str, float, float]]:
    """(host, agent id, started, ended) of every run of this test's jobs, read from the
    agents' own records (state.json, end.json) in each host's data directory."""
    runs = []
    for name in names:
        jobs_dir = lab.path_on(name, f"{lab.data_dir}/jobs")
        for job_dir in sorted(jobs_dir.iterdir()) if jobs_dir.is_dir() else []:
            spec = json.loads((job_dir / "spec.json").read_text())
            if spec.get("env", {}).get("RACE") != token:
                continue
            assert spec["env"]["LEPTON_HOST"] == name
            state = json.loads((job_dir / "state.json").read_text())
            end = json.loads((job_dir / "end.json").read_text())
            runs.append((name, job_dir.name, float(state["started"]), float(end["ended"])))
    return runs


def overlapping(runs: list[tuple[str, str, float, float]]) -> list[tuple[str, str]]:
    """Pairs of runs on one host whose [started, ended] intervals overlap."""
    clashes = []
    ordered = sorted(runs, key=lambda r: (r[0], r[2]))
    for before, after in itertools.pairwise(ordered):
        if before[0] == after[0] and after[2] < before[3]:
            clashes.append((before[1], after[1]))
    return clashes


@pytest.mark.parametrize(("terminals", "each"), [(2, 4), (4, 2)])
def test_concurrent_terminals_lose_no_job_kill_none_and_double_book_nothing(
    lab: Lab, lab_operator: Path, tmp_path: Path, state_backend: str, terminals: int, each: int
) -> None:
    names = ["h1", "h2"]
    inv = inventory(tmp_path / "hosts.yaml", lab, names)
    token = secrets.token_hex(6)
    run_terminals(inv, state_backend, token, terminals, each)
    jobs = final_jobs(inv, state_backend)
    assert len(jobs) == terminals * each
    not_completed = {j["id"]: (j["state"], j["reason"]) for j in jobs if j["state"] != "COMPLETED"}
    assert not_completed == {}
    assert all(j["attempt"] == 0 for j in jobs)  # none was requeued either
    runs = agent_runs(lab, names, token)
    assert len(runs) == len(jobs)  # one run per job: nothing ran twice
    assert overlapping(runs) == []
