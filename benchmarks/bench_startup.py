"""Benchmark: how fast leptonctl's commands start, against the bare interpreter.

Run from the repository root (no root, no lab):

    python benchmarks/bench_startup.py --runs 15

Every measurement is a fresh process of the installed console script (the venv's
``leptonctl``, else ``python -m leptonctl``), timed wall-clock from spawn to exit, with
the contenders interleaved (one of each per round, rotating the order) on a private
state store under a temporary HOME.  ``jobs``, ``show`` and ``node list`` run on the
local default (this machine, no inventory) with one finished job in the store.  The
peer is the same venv's ``python -c pass``.  It prints medians and the ratios the
goals of issue 14 item 1 are stated in, with the CPU time of each (user + system: steadier
than wall time on a shared machine).  Output goes to a pipe (a table is then plain
columns, without rich), except for the "(terminal)" rows, whose output goes to a
pseudo-terminal (a rich table, as an operator sees it).  Nothing here is a test; nothing
asserts.
"""

from __future__ import annotations

import argparse
import os
import pty
import resource
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def leptonctl() -> list[str]:
    script = Path(sys.executable).with_name("leptonctl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "leptonctl"]


def timed(argv: list[str], env: dict[str, str], *, tty: bool = False) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, the process and its children); with
    ``tty``, its stdout is a pseudo-terminal (read as it comes)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    if tty:
        code, output = _on_a_terminal(argv, env)
    else:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, cwd=ROOT)
        code, output = done.returncode, done.stdout + done.stderr
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        raise SystemExit(f"{argv} failed ({code}):\n{output}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def _on_a_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    main, child = pty.openpty()
    with subprocess.Popen(argv, env=env, stdout=child, stderr=subprocess.PIPE, cwd=ROOT) as proc:
        os.close(child)
        chunks = []
        while True:
            ready, _, _ = select.select([main], [], [], 0.05)
            if ready:
                try:
                    data = os.read(main, 65536)
                except OSError:  # the terminal's other side is closed: the child is done
                    data = b""
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        err = proc.stderr.read() if proc.stderr else b""
        code = proc.wait()
    os.close(main)
    return code, (b"".join(chunks) + err).decode(errors="replace")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="lepton-startup-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEPTONCTL_")}
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / "data"),
        XDG_CONFIG_HOME=str(home / "config"),
        PYTHONPATH=str(ROOT),
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a user's machine caches bytecode
    cli = leptonctl()
    timed([*cli, "submit", "--wait", "--", "true"], env)  # one finished job: job 1

    contenders = {
        "python -c pass (peer)": [sys.executable, "-c", "pass"],
        "leptonctl --version": [*cli, "--version"],
        "leptonctl --help": [*cli, "--help"],
        "leptonctl jobs": [*cli, "jobs"],
        "leptonctl jobs --json": [*cli, "jobs", "--json"],
        "leptonctl show 1": [*cli, "show", "1"],
        "leptonctl node list": [*cli, "node", "list"],
        "leptonctl jobs (terminal)": [*cli, "jobs"],
        "leptonctl show 1 (terminal)": [*cli, "show", "1"],
        "leptonctl node list (terminal)": [*cli, "node", "list"],
    }
    terminal = {name for name in contenders if name.endswith("(terminal)")}
    for name, argv in contenders.items():  # warm the page cache and the bytecode
        timed(argv, env, tty=name in terminal)
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for round_ in range(args.runs):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            wall, used = timed(contenders[name], env, tty=name in terminal)
            samples[name].append(wall)
            cpu[name].append(used)

    med = {name: statistics.median(values) for name, values in samples.items()}
    med_cpu = {name: statistics.median(values) for name, values in cpu.items()}
    peer = med["python -c pass (peer)"]
    peer_cpu = med_cpu["python -c pass (peer)"]
    load = os.getloadavg()[0]
    print(f"\n{args.runs} interleaved runs each, medians (seconds); load average {load:.2f}:\n")
    print("| command | median s | min s | max s | / python -c pass | CPU s | CPU / peer | goal |")
    print("|---|---|---|---|---|---|---|---|")
    goals = {
        "leptonctl --version": "<= 3x",
        "leptonctl --help": "<= 3x",
        "leptonctl jobs": "<= 0.15 s",
        "leptonctl jobs --json": "<= 0.15 s",
        "leptonctl show 1": "<= 0.15 s",
        "leptonctl node list": "<= 0.15 s",
        "leptonctl jobs (terminal)": "<= 0.15 s",
        "leptonctl show 1 (terminal)": "<= 0.15 s",
        "leptonctl node list (terminal)": "<= 0.15 s",
    }
    for name, values in samples.items():
        print(
            f"| {name} | {med[name]:.3f} | {min(values):.3f} | {max(values):.3f} "
            f"| {med[name] / peer:.2f}x | {med_cpu[name]:.3f} | {med_cpu[name] / peer_cpu:.2f}x "
            f"| {goals.get(name, '')} |"
        )


if __name__ == "__main__":
    main()
