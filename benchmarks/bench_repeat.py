"""Benchmark: a repeated `leptonctl jobs` against a cold `leptonctl status`, on a lab of
real sshd hosts (issue 14 item 3).

Run as root from the repository root (needs openssh-server and iproute2):

    python benchmarks/bench_repeat.py --hosts 16 --runs 7

It brings up the namespace lab (tests/lab.py, prefix lepq2, its hosts' addresses after
--first-ip, default .10) and times, interleaved (one of each per round, rotating the
order), each a fresh process:

- cold `status --json` on every host (the peer);
- `jobs --json` right after another `jobs`, with no job at all (no host is contacted);
- the same with one RUNNING job (one host is contacted: its handshake and agent);
- the same with a RUNNING job on every host (every host is contacted, as before this
  change for any job command: the cost a connection holder across commands would cut).

It prints medians and the ratios the goal is stated in (a second `jobs` <= 0.5x a cold
status).  Nothing here is a test; nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.lab import Lab  # noqa: E402


def run(argv: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{argv[3:6]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    run(argv, env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=16)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--first-ip", type=int, default=10, help="Last octet before the lab's first host."
    )
    args = parser.parse_args()

    reason = Lab.unavailable_reason()
    if reason:
        raise SystemExit(f"cannot build the lab: {reason}")

    with Lab(args.hosts, prefix="lepq2", first_ip=args.first_ip) as lab:
        env = lab.operator_env()
        env["PYTHONPATH"] = str(ROOT)
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # a user's machine caches bytecode
        work = Path(tempfile.mkdtemp(dir=lab.base))
        inventory = work / "hosts.yaml"
        lines = ["all:", "  vars:", "    ansible_user: root", "  hosts:"]
        for h in lab.hosts:
            lines += [f"    {h.name}:", f"      ansible_host: {h.ip}"]
        inventory.write_text("\n".join(lines) + "\n")
        names = [h.name for h in lab.hosts]

        def cli(state: str) -> list[str]:
            return [sys.executable, "-m", "leptonctl", "-i", str(inventory), "--state", state]

        def queue_with(running_on: list[str]) -> str:
            """A state store whose hosts are probed, with a `sleep` RUNNING on each of
            ``running_on``."""
            state = str(work / f"state-{len(running_on)}.db")
            run([*cli(state), "status", "--json"], env)  # facts known: nothing to probe
            for name in running_on:
                out = run([*cli(state), "submit", "--json", "-l", name, "--", "sleep 3600"], env)
                assert json.loads(out)["id"]
            jobs = json.loads(run([*cli(state), "jobs", "--json"], env))["jobs"]
            assert [j["state"] for j in jobs] == ["RUNNING"] * len(running_on), jobs
            return state

        stores = {0: queue_with([]), 1: queue_with(names[:1]), len(names): queue_with(names)}

        def repeated(state: str) -> Callable[[], float]:
            def once() -> float:
                run([*cli(state), "jobs", "--json"], env)  # the command before
                return timed([*cli(state), "jobs", "--json"], env)

            return once

        cold_state = str(work / "state-cold.db")
        contenders: dict[str, Callable[[], float]] = {
            "status --json (cold)": lambda: timed([*cli(cold_state), "status", "--json"], env),
            "jobs --json again, no job": repeated(stores[0]),
            "jobs --json again, 1 running job": repeated(stores[1]),
            f"jobs --json again, a running job on all {len(names)} hosts": repeated(
                stores[len(names)]
            ),
        }
        for fn in contenders.values():  # warm the page cache and the agent caches
            fn()
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        order0 = list(contenders)
        for round_ in range(args.runs):
            order = order0[round_ % len(order0) :] + order0[: round_ % len(order0)]
            for name in order:
                samples[name].append(contenders[name]())
        for state in stores.values():
            jobs = json.loads(run([*cli(state), "jobs", "--json"], env))["jobs"]
            if jobs:
                run([*cli(state), "cancel", *[str(j["id"]) for j in jobs]], env)

    med = {name: statistics.median(values) for name, values in samples.items()}
    cold = med["status --json (cold)"]
    print(
        f"\n{args.hosts} hosts, {args.runs} interleaved runs each, medians (seconds); "
        f"load average {os.getloadavg()[0]:.2f}:\n"
    )
    print("| measurement | median s | min s | max s | / cold status | goal |")
    print("|---|---|---|---|---|---|")
    for name, values in samples.items():
        goal = "<= 0.5" if name.startswith("jobs --json again, no job") else ""
        print(
            f"| {name} | {med[name]:.3f} | {min(values):.3f} | {max(values):.3f} "
            f"| {med[name] / cold:.2f} | {goal} |"
        )
    one = med["jobs --json again, 1 running job"] - med["jobs --json again, no job"]
    print(f"\none contacted host adds {one * 1000:.0f} ms to a command (handshake + agent)")


if __name__ == "__main__":
    main()
