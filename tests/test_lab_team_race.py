"""Many terminals on one queue, for real: several leptonctl processes submitting and
reconciling at once against the lab's sshd hosts.  Every job must complete, none may be
killed by another terminal's reconcile, and no host's single CPU may run two jobs at
once -- judged from the agents' own start and end records on the hosts.  And the cron
tick beside an operator: what each decides from the store stays true while it writes."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from leptonctl.core.health import HEALTH_DRAIN_PREFIX
from leptonctl.services.maintain.actions import _drain_or_resume
from leptonctl.store.interface import Store
from leptonctl.store.open import open_store
from tests.lab import Lab

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


@pytest.mark.lab
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


class _DrainBetween:
    """A store through which the health step reads the drained hosts; at that moment an
    operator in another terminal (another thread, its own connection) drains h1."""

    def __init__(self, store: Store, state: str) -> None:
        self._store, self._state = store, state
        self.operator = threading.Thread(target=self._operator_drains)

    def _operator_drains(self) -> None:
        other = open_store(self._state)
        try:
            other.drain(["h1"], "operator: new PSU", 200.0)
        finally:
            other.close()

    def drained(self) -> dict[str, tuple[str, float]]:
        found = self._store.drained()
        if not self.operator.is_alive() and self.operator.ident is None:
            self.operator.start()
            self.operator.join(timeout=1.0)  # done at once, unless our transaction holds it
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_the_health_step_never_resumes_a_drain_an_operator_made_meanwhile(
    state_backend: str,
) -> None:
    store = open_store(state_backend)
    try:
        store.drain(["h1"], HEALTH_DRAIN_PREFIX + "GPU 0: 95 °C", 100.0)
        racing = _DrainBetween(store, state_backend)
        ctx = SimpleNamespace(store=racing, check=False, clock=lambda: 300.0)
        result = SimpleNamespace(details={}, summary="", status="ok")
        _drain_or_resume(ctx, result, {"h1": []})  # type: ignore[arg-type]  # h1 is fine now
        racing.operator.join(timeout=30)
        assert store.drained()["h1"][0] == "operator: new PSU"
    finally:
        store.close()
