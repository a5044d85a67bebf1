"""Many terminals on one queue, for real: several leptonctl processes submitting and
reconciling at once against the lab's sshd hosts.  Every job must complete, none may be
killed by another terminal's reconcile, and no host's single CPU may run two jobs at
once -- judged from the agents' own start and end records on the hosts.  And the cron
tick beside an operator: what each decides from the store stays true while it writes."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from leptonctl.core.health import HEALTH_DRAIN_PREFIX
from leptonctl.inventory import parse_inventory
from leptonctl.remote.transport import TransportOptions
from leptonctl.services.context import ServiceContext
from leptonctl.services.jobs.reconcile import ReconcileReport, reconcile
from leptonctl.services.jobs.starts import record_start
from leptonctl.services.maintain.actions import _drain_or_resume
from leptonctl.store.interface import Store
from leptonctl.store.jobs import JobRecord
from leptonctl.store.open import open_store
from leptonctl.testing.fake_agent import FakeCluster
from leptonctl.testing.fake_host import FakeJob
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


def leptonctl(inv: Path, state: str, *args: str, check: bool = True) -> str:
    """One leptonctl command, a process of its own; its stdout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "leptonctl", "-i", str(inv), "--state", state, *args]
    done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, text=True, check=check)
    return done.stdout


def final_jobs(inv: Path, state: str) -> list[dict]:
    return list(json.loads(leptonctl(inv, state, "jobs", "--all", "--json"))["jobs"])


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
            if not (job_dir / "state.json").exists():
                continue  # cancelled before its command started
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


@pytest.mark.lab
def test_cancel_drain_wait_and_the_cron_tick_beside_terminals_keep_every_job_right(
    lab: Lab, lab_operator: Path, tmp_path: Path, state_backend: str
) -> None:
    """Two terminals submit; meanwhile a third cancels two jobs, a fourth drains h1 and
    waits, and cron runs the default maintenance tick (health, dispatch) again and again."""
    names = ["h1", "h2"]
    inv = inventory(tmp_path / "hosts.yaml", lab, names)
    token = secrets.token_hex(6)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "leptonctl", "-i", str(inv), "--state", state_backend]
    others = textwrap.dedent(
        """
        import json, subprocess, sys, time
        base = json.loads(sys.argv[1])
        def exists(job_id):
            out = subprocess.run([*base, "jobs", "--all", "--json"], capture_output=True,
                                 text=True).stdout
            return any(j["id"] == job_id for j in json.loads(out or '{"jobs": []}')["jobs"])
        deadline = time.monotonic() + 60
        while not exists(int(sys.argv[3])) and time.monotonic() < deadline:
            time.sleep(0.2)
        if sys.argv[2] == "cancel":
            subprocess.run([*base, "cancel", "2", "4"], check=True, capture_output=True)
        elif sys.argv[2] == "drain":
            subprocess.run([*base, "node", "drain", "h1", "--wait"], check=True,
                           capture_output=True)
            print(time.time())
        else:
            for _ in range(4):
                subprocess.run([*base, "maintain"], capture_output=True)
        """
    )
    helpers = [
        subprocess.Popen(
            [sys.executable, "-c", others, json.dumps(base), role, after],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role, after in (("cancel", "4"), ("drain", "3"), ("cron", "1"))
    ]
    run_terminals(inv, state_backend, token, 2, 3)
    outputs = [proc.communicate(timeout=120) for proc in helpers]
    assert [proc.returncode for proc in helpers] == [0, 0, 0], outputs
    drained_at = float(outputs[1][0].split()[-1])
    jobs = {j["id"]: j for j in final_jobs(inv, state_backend)}
    assert len(jobs) == 6
    for job_id, job in jobs.items():
        wanted = {"CANCELLED", "COMPLETED"} if job_id in (2, 4) else {"COMPLETED"}
        assert job["state"] in wanted and job["attempt"] == 0, job
    runs = agent_runs(lab, names, token)
    assert overlapping(runs) == []
    on_h1 = [r for r in runs if r[0] == "h1"]
    assert all(ended <= drained_at for _, _, _, ended in on_h1)  # the wait saw them end
    assert len({r[1] for r in runs}) == len(runs)
    completed = {i for i, j in jobs.items() if j["state"] == "COMPLETED"}
    assert {int(r[1].split(".")[0]) for r in runs} >= completed  # each ran, once
    leptonctl(inv, state_backend, "node", "resume", "h1")


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


# -- the start another terminal recorded first is the same run, not an orphan ------------


def _starting_job(store: Store) -> JobRecord:
    [job_id] = store.jobs.add([("j", {"uid": "beef", "command": "true", "request": {}}, 0, 1)], 1.0)
    store.jobs.update(job_id, state="STARTING", host="h1", allocation={"cpus": 1})
    record = store.jobs.get(job_id)
    assert record is not None
    return record


def test_a_start_another_terminal_recorded_first_is_not_killed(state_backend: str) -> None:
    store = open_store(state_backend)
    try:
        mine = _starting_job(store)  # this terminal's view as it sent job-start
        assert store.jobs.update_if(mine.id, ("STARTING", 0), state="RUNNING", started=5.0)
        record_start(store, mine, {"started": 5.0, "state": "RUNNING"}, 6.0, ReconcileReport())
        assert store.jobs.orphans() == {}  # old: the run was listed to be killed
        current = store.jobs.get(mine.id)
        assert current is not None and current.state == "RUNNING"
    finally:
        store.close()


def test_a_start_that_lost_to_a_requeue_is_still_killed(state_backend: str) -> None:
    store = open_store(state_backend)
    try:
        mine = _starting_job(store)
        store.jobs.update(mine.id, state="PENDING", attempt=1, host=None, allocation=None)
        record_start(store, mine, {"started": 5.0, "state": "RUNNING"}, 6.0, ReconcileReport())
        assert store.jobs.orphans() == {"h1": [mine.agent_id]}
    finally:
        store.close()


def test_a_job_another_terminal_is_starting_is_not_judged_from_its_host(
    tmp_path: Path,
) -> None:
    inventory = parse_inventory("h1\n", "hosts.ini", fmt="ini")
    cluster = FakeCluster(tmp_path / "hosts")
    fake = cluster.add("h1")
    store = open_store(str(tmp_path / "state.db"))
    options = TransportOptions(command_timeout=5.0)

    def one_pass() -> None:
        async def run_it() -> None:
            async with (
                cluster.pool(options) as pool,
                ServiceContext(inventory, store=store, options=options, pool=pool) as ctx,
            ):
                await reconcile(ctx)

        asyncio.run(run_it())

    try:
        record = _starting_job(store)
        with store.jobs.exclusive():  # another terminal decided it and is sending job-start
            assert store.jobs.claim_start(record.id, "other:1:ab", time.time(), 30.0) is None
        # caught mid-start, the host has its directory but no supervisor yet: "LOST"
        fake.jobs[record.agent_id] = FakeJob(
            record.agent_id, {}, state="LOST", reason="the supervisor never started"
        )
        one_pass()
        current = store.jobs.get(record.id)
        assert current is not None and (current.state, current.attempt) == ("STARTING", 0)
        assert store.jobs.orphans() == {}
        store.jobs.release_start(record.id, "other:1:ab")  # that terminal is gone: judge it
        one_pass()
        current = store.jobs.get(record.id)
        assert current is not None and current.attempt == 1  # requeued (it has a retry)
        assert store.jobs.orphans() == {"h1": [record.agent_id]}
    finally:
        store.close()
