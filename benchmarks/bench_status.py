"""Benchmark: cold `leptonctl status` vs `ansible all -m setup` vs an asyncssh floor,
and one warm refresh of the live dashboard, on a lab of real sshd hosts.

Run as root from the repository root (needs openssh-server and iproute2):

    python benchmarks/bench_status.py --hosts 16 --runs 7

It brings up the namespace lab (tests/lab.py), installs ansible-core into its
own venv (--ansible-venv, default /var/tmp/lepton-bench-venv) unless present,
measures the contenders interleaved (one of each per round, rotating the
order), and prints medians and the ratios the project's goals are stated in.
Nothing here is a test; nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.lab import Lab  # noqa: E402

# The floor: one asyncssh connection per host, one command, in parallel.  With
# `true` it is the transport alone; with `python3 -c pass` it is the least any
# Python agent can cost (the lab's hosts share this machine's CPUs).
FLOOR = """
import asyncio, sys, asyncssh
async def one(ip, key, known, command):
    async with asyncssh.connect(ip, username="root", client_keys=[key], known_hosts=known) as c:
        await c.run(command, check=True)
async def main():
    command, key, known, *ips = sys.argv[1:]
    await asyncio.gather(*(one(ip, key, known, command) for ip in ips))
asyncio.run(main())
"""


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def ensure_ansible(venv: Path) -> Path:
    ansible = venv / "bin" / "ansible"
    if not ansible.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "ansible-core"], check=True)
    return ansible


def warm_refresh_seconds(lab: Lab, inventory: Path, refreshes: int) -> list[float]:
    """Open the dashboard's sessions once, then time individual refreshes."""
    from leptonctl.inventory import load_inventory
    from leptonctl.remote.transport import TransportOptions
    from leptonctl.services.hosts.watch import LiveCluster
    from leptonctl.store.sqlite import SqliteStore

    hosts = load_inventory(inventory).hosts

    async def measure() -> list[float]:
        times = []
        with SqliteStore(lab.base / "bench-state.db") as store:
            async with LiveCluster(hosts, TransportOptions(), store) as live:
                rows = await live.refresh(wait=60)
                assert all(r.state == "up" for r in rows), [r.error for r in rows]
                for _ in range(refreshes):
                    started = time.perf_counter()
                    rows = await live.refresh(wait=60)
                    times.append(time.perf_counter() - started)
                    assert all(r.state == "up" for r in rows)
                    await asyncio.sleep(0.2)
        return times

    saved = dict(os.environ)
    os.environ.update(lab.operator_env())
    try:
        return asyncio.run(measure())
    finally:
        os.environ.clear()
        os.environ.update(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=16)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--ansible-venv", type=Path, default=Path("/var/tmp/lepton-bench-venv"))
    args = parser.parse_args()

    reason = Lab.unavailable_reason()
    if reason:
        raise SystemExit(f"cannot build the lab: {reason}")
    ansible = ensure_ansible(args.ansible_venv)

    with Lab(args.hosts, prefix="lepb", first_ip=100) as lab:
        env = lab.operator_env()
        env["PYTHONPATH"] = str(ROOT)
        # A user's machine caches bytecode; some CI sandboxes switch that off. Both
        # contenders run with the cache on (asyncssh's was compiled at pip install).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        work = Path(tempfile.mkdtemp(dir=lab.base))
        key, known = str(lab.operator_key), str(lab.known_hosts)

        inventory = work / "hosts.yaml"
        lines = ["all:", "  vars:", "    ansible_user: root", "  hosts:"]
        for h in lab.hosts:
            lines += [f"    {h.name}:", f"      ansible_host: {h.ip}"]
        inventory.write_text("\n".join(lines) + "\n")

        ini = work / "ansible.ini"
        common = f"-F /dev/null -o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes"
        ini.write_text(
            "\n".join(f"{h.name} ansible_host={h.ip}" for h in lab.hosts)
            + "\n[all:vars]\nansible_user=root\n"
            + f"ansible_ssh_private_key_file={key}\n"
            + f"ansible_ssh_common_args='{common}'\n"
            + "ansible_python_interpreter=/usr/bin/python3\n"
        )

        leptonctl = [sys.executable, "-m", "leptonctl", "-i", str(inventory), "status", "--json"]
        ips = [h.ip for h in lab.hosts]
        floor = [sys.executable, "-c", FLOOR, "true", key, known, *ips]
        python_floor = [sys.executable, "-c", FLOOR, "python3 -c pass", key, known, *ips]

        def ansible_run() -> float:
            control = tempfile.mkdtemp(dir=work)  # fresh ControlPath dir: a cold run each time
            ansible_env = dict(env, ANSIBLE_SSH_CONTROL_PATH_DIR=control, ANSIBLE_FORKS="16")
            ansible_env["ANSIBLE_LOCAL_TEMP"] = control
            return timed(
                [str(ansible), "all", "-i", str(ini), "-m", "setup", "-f", str(len(lab.hosts))],
                ansible_env,
            )

        contenders = {
            "leptonctl status --json (cold)": lambda: timed(leptonctl, env),
            "ansible all -m setup": ansible_run,
            "asyncssh connect + `true` (floor)": lambda: timed(floor, env),
            "asyncssh connect + `python3 -c pass`": lambda: timed(python_floor, env),
        }
        first_push = timed(leptonctl, env)  # the very first run also pushes the agent
        for fn in contenders.values():  # warm the page cache for every contender
            fn()
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        names = list(contenders)
        for round_ in range(args.runs):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                samples[name].append(contenders[name]())
        warm = warm_refresh_seconds(lab, inventory, max(5, args.runs))

    med = {name: statistics.median(values) for name, values in samples.items()}
    cold = med["leptonctl status --json (cold)"]
    warm_med = statistics.median(warm)
    print(f"\n{args.hosts} hosts, {args.runs} interleaved runs each, medians (seconds):\n")
    print("| measurement | median s | min s | max s |")
    print("|---|---|---|---|")
    for name, values in samples.items():
        print(f"| {name} | {med[name]:.3f} | {min(values):.3f} | {max(values):.3f} |")
    print(
        f"| dashboard warm refresh ({len(warm)} refreshes) | {warm_med:.4f} "
        f"| {min(warm):.4f} | {max(warm):.4f} |"
    )
    print(f"| first status ever (includes agent push) | {first_push:.3f} | | |")
    print("\n| ratio | value | goal |")
    print("|---|---|---|")
    print(f"| cold status / ansible setup | {cold / med['ansible all -m setup']:.3f} | <= 0.1 |")
    print(
        f"| cold status / asyncssh floor | "
        f"{cold / med['asyncssh connect + `true` (floor)']:.2f} | <= 1.5 |"
    )
    print(f"| warm refresh / cold status | {warm_med / cold:.3f} | <= 0.2 |")
    print(
        f"| cold status / asyncssh + python3 floor | "
        f"{cold / med['asyncssh connect + `python3 -c pass`']:.2f} | (context) |"
    )


if __name__ == "__main__":
    main()
