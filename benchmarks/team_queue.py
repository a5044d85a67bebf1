"""Benchmark: N terminals on one job queue, on the SQLite and the PostgreSQL state store.

Run as root from the repository root:

    python benchmarks/team_queue.py --terminals 1,4,16 --submits 4 --start-postgresql

Brings up the namespace lab (``--hosts`` hosts, each declared ``capacity: {cpus: 1}`` so
that jobs contend for every CPU), then for each backend and each N: a fresh store, N
terminal processes started at once, each running ``leptonctl submit -- sleep 0.2`` M
times, each submit followed by another command that reconciles (``jobs``, ``schedule``,
``status`` or ``jobs --all``), then ``schedule`` until the queue is empty -- every
command its own ``python -m leptonctl`` process, as a person's shell would run it.

Measured (wall clock of this machine, which the lab's hosts share):
  * submits/s: every terminal's submits, over the time until the last one returned;
    and how long one ``submit`` command took (median, 95th percentile);
  * claim-to-start: from the moment a job is first seen STARTING in the store (a
    monitor polls the store every 25 ms: a job claimed for its start) to the moment
    its agent's supervisor started it (the agent's own ``started``);
  * ready-to-start: from the moment a job could have started (submitted, and its host's
    CPU free: the previous job there ended, by the agents' end records) to its start;
  * the checks: every job COMPLETED, none requeued or killed, exactly one run per job
    on the hosts, and no host's one CPU ever running two jobs (from the agents' start
    and end records).  A failed check is printed and the exit status is 1.

``--store-only`` leaves the lab and the CLI out and measures the store itself: N
processes at once, each M times queueing a one-GPU job, deciding under the queue's
transaction (the real scheduler pass and start claims), recording it started and
ended -- about six write transactions per job -- on 4 hosts of 2 GPUs declared, so the
device constraint and the claims are exercised; then the same checks (every job
completed once, no GPU held by two jobs at once).

``--postgresql URL`` uses a server you run (a fresh database is created for each run
if the URL's user may, else the URL's database is used as it is, and must be empty);
``--start-postgresql`` starts a private one with tests/pg.py.  A script, not a test.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from leptonctl.store.open import open_store  # noqa: E402
from tests.lab import Lab  # noqa: E402

JOB_SECONDS = 0.2
POLL_SECONDS = 0.025

# One terminal: argv = inventory, state, token, terminal number, submits.  Prints one JSON
# line: the (start, end, exit code) of each of its submits.
TERMINAL = textwrap.dedent(
    """
    import json, subprocess, sys, time
    inv, state, token, terminal, count = sys.argv[1:4] + [int(a) for a in sys.argv[4:6]]
    base = [sys.executable, "-m", "leptonctl", "-i", inv, "--state", state]
    between = (["jobs"], ["schedule"], ["status"], ["jobs", "--all"])
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    submits = []
    for i in range(count):
        began = time.time()
        done = subprocess.run(
            [*base, "submit", "--name", f"t{terminal}.{i}", "--env", f"TEAMQ={token}",
             "--", "sleep", sys.argv[6]], **quiet)
        submits.append((began, time.time(), done.returncode))
        subprocess.run([*base, *between[(terminal + i) % len(between)]], **quiet)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        out = subprocess.run([*base, "jobs", "--json"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True).stdout
        try:
            if not json.loads(out)["jobs"]:
                break
        except ValueError:
            pass
        subprocess.run([*base, "schedule"], **quiet)
    print(json.dumps({"submits": submits}))
    """
)


@dataclass
class Result:
    backend: str
    terminals: int
    submits: int
    submit_wall: float
    total_wall: float
    submit_latency: list[float]
    claim_to_start: list[float]
    ready_to_start: list[float]
    jobs: int
    problems: list[str]


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Monitor(threading.Thread):
    """Polls the store: when each job was first seen STARTING."""

    def __init__(self, state: str) -> None:
        super().__init__(daemon=True)
        self.state = state
        self.first_starting: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        store = open_store(self.state)
        try:
            while not self.stop.is_set():
                now = time.time()
                for record in store.jobs.in_states(("STARTING",)):
                    self.first_starting.setdefault(record.id, now)
                self.stop.wait(POLL_SECONDS)
        finally:
            store.close()


def agent_runs(lab: Lab, token: str) -> list[dict[str, Any]]:
    """Every run of this round's jobs, from the agents' own records on each host."""
    runs = []
    for host in lab.hosts:
        jobs_dir = lab.path_on(host.name, f"{lab.data_dir}/jobs")
        for job_dir in sorted(jobs_dir.iterdir()) if jobs_dir.is_dir() else []:
            try:
                spec = json.loads((job_dir / "spec.json").read_text())
            except (OSError, ValueError):
                continue
            if spec.get("env", {}).get("TEAMQ") != token:
                continue
            state = json.loads((job_dir / "state.json").read_text())
            end = json.loads((job_dir / "end.json").read_text())
            runs.append(
                {
                    "host": host.name,
                    "agent_id": job_dir.name,
                    "job": int(job_dir.name.split(".")[0]),
                    "started": float(state["started"]),
                    "ended": float(end["ended"]),
                }
            )
    return runs


def check_and_measure(
    lab: Lab, state: str, token: str, first_starting: dict[int, float]
) -> tuple[int, list[str], list[float], list[float]]:
    store = open_store(state)
    try:
        records = store.jobs.all()
    finally:
        store.close()
    problems = []
    for record in records:
        if record.state != "COMPLETED" or record.attempt != 0:
            problems.append(f"job {record.id}: {record.state} (attempt {record.attempt}): "
                            f"{record.reason}")  # fmt: skip
    runs = agent_runs(lab, token)
    per_job: dict[int, int] = defaultdict(int)
    for run in runs:
        per_job[run["job"]] += 1
    for record in records:
        if per_job.get(record.id, 0) != 1:
            problems.append(f"job {record.id} ran {per_job.get(record.id, 0)} times")
    by_host: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_host[run["host"]].append(run)
    submitted = {r.id: r.submitted for r in records}
    ready_to_start = []
    for host, host_runs in by_host.items():
        host_runs.sort(key=lambda r: r["started"])
        free_at = 0.0
        for before, after in zip([None, *host_runs], host_runs, strict=False):
            if before is not None and after["started"] < before["ended"]:
                problems.append(
                    f"{host}: {before['agent_id']} and {after['agent_id']} overlap (double-booked)"
                )
            free_at = before["ended"] if before is not None else 0.0
            ready = max(submitted.get(after["job"], after["started"]), free_at)
            ready_to_start.append(max(0.0, after["started"] - ready))
    started = {run["job"]: run["started"] for run in runs}
    claim_to_start = [started[job] - seen for job, seen in first_starting.items() if job in started]
    return len(records), problems, claim_to_start, ready_to_start


def run_round(
    lab: Lab, env: dict[str, str], inventory: Path, state: str, backend: str, n: int, m: int
) -> Result:
    token = secrets.token_hex(6)
    leptonctl = [sys.executable, "-m", "leptonctl", "-i", str(inventory), "--state", state]
    subprocess.run([*leptonctl, "status"], env=env, capture_output=True)  # probe, create
    monitor = Monitor(state)
    monitor.start()
    began = time.time()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                TERMINAL,
                str(inventory),
                state,
                token,
                str(k),
                str(m),
                str(JOB_SECONDS),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(n)
    ]
    submits: list[tuple[float, float, int]] = []
    problems = []
    for proc in procs:
        out, err = proc.communicate()
        try:
            submits += [tuple(s) for s in json.loads(out.splitlines()[-1])["submits"]]
        except (IndexError, ValueError):
            problems.append(f"a terminal failed ({proc.returncode}): {err[-500:]}")
    total_wall = time.time() - began
    monitor.stop.set()
    monitor.join()
    failed = [s for s in submits if s[2] != 0]
    problems += [f"a submit exited {s[2]}" for s in failed]
    jobs, found, claim_to_start, ready_to_start = check_and_measure(
        lab, state, token, monitor.first_starting
    )
    problems += found
    if jobs != n * m:
        problems.append(f"{n * m} submitted, {jobs} in the store")
    last_submit = max((s[1] for s in submits), default=began)
    return Result(
        backend, n, len(submits), last_submit - began, total_wall,
        [s[1] - s[0] for s in submits], claim_to_start, ready_to_start, jobs, problems,
    )  # fmt: skip


STORE_INVENTORY = "all:\n  hosts:\n" + "".join(
    f"    h{i}:\n      capacity: {{cpus: 64, memory: 64GiB, gpus: 2, fpgas: 0}}\n"
    for i in range(1, 5)
)


def store_worker(state: str, worker: int, count: int) -> None:
    """One process of ``--store-only``: prints when each of its jobs began and ended."""
    from leptonctl.core.jobspec import Submission
    from leptonctl.core.jobviews import nodes_from
    from leptonctl.core.scheduler import Request
    from leptonctl.inventory import parse_inventory
    from leptonctl.services.jobs.operations import enqueue
    from leptonctl.services.jobs.reconcile import _decide
    from leptonctl.services.jobs.starts import claim_starts, new_owner

    inventory = parse_inventory(STORE_INVENTORY, "bench.yaml", fmt="yaml")
    up = {h.name for h in inventory.hosts}
    store = open_store(state)
    owner = new_owner()
    took = []
    try:
        for i in range(count):
            began = time.time()
            job = Submission(name=f"w{worker}.{i}", command="true", request=Request(gpus=1))
            enqueue(store, inventory, [job], time.time())
            settle(store, inventory, up, owner, nodes_from, _decide, claim_starts)
            took.append((began, time.time()))
    finally:
        store.close()
    print(json.dumps(took))


def settle(store: Any, inventory: Any, up: set[str], owner: str, *fns: Any) -> int:
    """One scheduling pass under the queue's transaction, then each job it claimed is
    recorded RUNNING and, at once, COMPLETED (its GPU held meanwhile); returns how many."""
    nodes_from, decide, claim_starts = fns
    now = time.time()
    with store.jobs.exclusive():
        starts = decide(store, inventory, nodes_from(inventory.hosts, {}, up), now)
        plain, _ = claim_starts(store, starts, None, owner, now)
    for job_id in plain:
        record = store.jobs.get(job_id)
        expect = ("STARTING", record.attempt)
        if store.jobs.update_if(job_id, expect, state="RUNNING", started=time.time()):
            gpus = ",".join(str(g) for g in record.allocation["gpus"])
            store.jobs.update(job_id, reason=f"{record.host}:{gpus}")  # for the check
            store.jobs.update_if(
                job_id, ("RUNNING", record.attempt), state="COMPLETED", ended=time.time(),
                exit_code=0,
            )  # fmt: skip
        store.jobs.release_start(job_id, owner)
    return len(plain)


def run_store_round(state: str, backend: str, n: int, m: int) -> Result:
    from leptonctl.core.jobviews import nodes_from
    from leptonctl.inventory import parse_inventory
    from leptonctl.services.jobs.reconcile import _decide
    from leptonctl.services.jobs.starts import claim_starts, new_owner

    open_store(state).close()  # created (and migrated) before the race
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    began = time.time()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--store-worker", state, str(k), str(m)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(n)
    ]
    took: list[tuple[float, float]] = []
    problems = []
    for proc in procs:
        out, err = proc.communicate()
        try:
            took += [(a, b) for a, b in json.loads(out.splitlines()[-1])]
        except (IndexError, ValueError):
            problems.append(f"a worker failed ({proc.returncode}): {err[-800:]}")
    wall = time.time() - began
    span = max((b for _, b in took), default=began) - min((a for a, _ in took), default=began)
    inventory = parse_inventory(STORE_INVENTORY, "bench.yaml", fmt="yaml")
    up = {h.name for h in inventory.hosts}
    store = open_store(state)
    try:  # what was left pending (every GPU busy when it was queued) runs now
        while settle(store, inventory, up, new_owner(), nodes_from, _decide, claim_starts):
            pass
        records = store.jobs.all()
    finally:
        store.close()
    problems += [f"job {r.id}: {r.state}" for r in records if r.state != "COMPLETED"]
    if len(records) != n * m:
        problems.append(f"{n * m} queued, {len(records)} in the store")
    held: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in records:
        held[r.reason or "?"].append((r.started or 0.0, r.ended or 0.0))
    for device, spans in held.items():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            if start < end:
                problems.append(f"GPU {device} held by two jobs at once")
    durations = [b - a for a, b in took]
    return Result(backend, n, len(took), span, wall, durations, [], [], len(records), problems)


def store_row(r: Result) -> str:
    ms = 1000.0
    ok = "ok" if not r.problems else f"{len(r.problems)} PROBLEMS"
    return (
        f"| {r.backend} | {r.terminals} | {r.jobs} | {r.submits / r.submit_wall:.1f} | "
        f"{statistics.median(r.submit_latency) * ms:.1f} / "
        f"{quantile(r.submit_latency, 0.95) * ms:.1f} | {r.total_wall:.1f} | {ok} |"
    )


def fresh_state(backend: str, work: Path, url: str | None, server: Any, label: str) -> str:
    if backend == "sqlite":
        return str(work / f"{label}.db")
    if server is not None:
        return str(server.new_database())
    assert url is not None
    try:
        import psycopg

        name = f"leptonctl_bench_{label}_{secrets.token_hex(3)}"
        base = url.rsplit("/", 1)[0]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # a fixed-form name: safe
        return f"{base}/{name}"
    except Exception:  # the user's database as it is, then
        return url


def row(r: Result) -> str:
    ms = 1000.0
    ok = "ok" if not r.problems else f"{len(r.problems)} PROBLEMS"
    return (
        f"| {r.backend} | {r.terminals} | {r.submits} | {r.submits / r.submit_wall:.2f} | "
        f"{statistics.median(r.submit_latency):.2f} / {quantile(r.submit_latency, 0.95):.2f} | "
        f"{statistics.median(r.claim_to_start) * ms:.0f} / "
        f"{quantile(r.claim_to_start, 0.95) * ms:.0f} ({len(r.claim_to_start)}) | "
        f"{statistics.median(r.ready_to_start):.2f} / {quantile(r.ready_to_start, 0.95):.2f} | "
        f"{r.total_wall:.1f} | {ok} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--terminals", default="1,4,16", help="N values, comma separated")
    parser.add_argument("--submits", type=int, default=4, help="M: submits per terminal")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--postgresql", metavar="URL", help="a PostgreSQL server to use")
    parser.add_argument(
        "--start-postgresql", action="store_true", help="start a private one (tests/pg.py)"
    )
    parser.add_argument("--lab", default="lepq:200", help="lab PREFIX:FIRST_IP")
    parser.add_argument("--store-only", action="store_true", help="the store alone, no lab")
    parser.add_argument("--store-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.store_worker:
        state, worker, count = args.store_worker
        store_worker(state, int(worker), int(count))
        return
    backends = [b for b in args.backends.split(",") if b]
    ns = [int(n) for n in args.terminals.split(",")]
    server = None
    if "postgresql" in backends and not args.postgresql:
        if not args.start_postgresql:
            raise SystemExit("postgresql: give --postgresql URL or --start-postgresql")
        from tests.pg import PgServer

        server = PgServer.start()
    if args.store_only:
        store_only(args, backends, ns, server)
        return
    reason = Lab.unavailable_reason()
    if reason:
        raise SystemExit(f"cannot build the lab: {reason}")
    prefix, _, first_ip = args.lab.partition(":")
    results = []
    try:
        with Lab(args.hosts, prefix=prefix, first_ip=int(first_ip or 200)) as lab:
            env = lab.operator_env()
            env["PYTHONPATH"] = str(ROOT)
            work = Path(tempfile.mkdtemp(dir=lab.base))
            inventory = work / "hosts.yaml"
            lines = ["all:", "  vars:", f"    ansible_user: {lab.user}", "  hosts:"]
            for h in lab.hosts:
                lines += [f"    {h.name}:", f"      ansible_host: {h.ip}",
                          "      capacity: {cpus: 1}"]  # fmt: skip
            inventory.write_text("\n".join(lines) + "\n")
            for backend in backends:
                for n in ns:
                    state = fresh_state(backend, work, args.postgresql, server, f"n{n}")
                    result = run_round(lab, env, inventory, state, backend, n, args.submits)
                    print(row(result), flush=True)
                    for problem in result.problems[:20]:
                        print(f"    problem: {problem}", flush=True)
                    results.append(result)
    finally:
        if server is not None:
            server.stop()
    print(f"\n{args.hosts} lab hosts of 1 CPU each; each job `sleep {JOB_SECONDS}`; "
          f"{os.cpu_count()} CPUs on this machine\n")  # fmt: skip
    print(
        "| backend | N | submits | submits/s | submit s (p50 / p95) | claim-to-start ms "
        "(p50 / p95, jobs seen) | ready-to-start s (p50 / p95) | wall s | checks |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for result in results:
        print(row(result))
    command = " ".join(["python", "benchmarks/team_queue.py", *sys.argv[1:]])
    print(f"\ncommand: {command}")
    if any(r.problems for r in results):
        raise SystemExit(1)


def store_only(args: argparse.Namespace, backends: list[str], ns: list[int], server: Any) -> None:
    results = []
    work = Path(tempfile.mkdtemp(prefix="leptonctl-teamq-"))
    try:
        for backend in backends:
            for n in ns:
                state = fresh_state(backend, work, args.postgresql, server, f"s{n}")
                result = run_store_round(state, backend, n, args.submits)
                print(store_row(result), flush=True)
                for problem in result.problems[:20]:
                    print(f"    problem: {problem}", flush=True)
                results.append(result)
    finally:
        if server is not None:
            server.stop()
    print(f"\nthe store alone: 4 hosts x 2 GPUs declared, one-GPU jobs; "
          f"{os.cpu_count()} CPUs on this machine\n")  # fmt: skip
    print("| backend | N | jobs | jobs/s | one job ms (p50 / p95) | wall s | checks |")
    print("|---|---|---|---|---|---|---|")
    for result in results:
        print(store_row(result))
    print(f"\ncommand: python benchmarks/team_queue.py {' '.join(sys.argv[1:])}")
    if any(r.problems for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
