"""Benchmark: cold `leptonctl status` vs `ansible all -m setup` vs an asyncssh floor,
and one warm refresh of the live dashboard, on a lab of real sshd hosts.

Run as root from the repository root (needs openssh-server and iproute2):

    python benchmarks/bench_status.py --hosts 16 --runs 9
    python benchmarks/bench_status.py --hosts 16 --runs 9 --baseline /tmp/old  # + an old tree

It brings up the namespace lab (tests/lab.py), installs ansible-core into its
own venv (--ansible-venv, default /var/tmp/lepton-bench-venv) unless present,
measures the contenders interleaved (one of each per round, rotating the
order), and prints medians and the ratios the project's goals are stated in.
For each run it also takes the operator's CPU (user + system of it and what it
waited for) and the hosts' CPU (what the lab's sshd listeners and everything they
reaped used: sshd, the login shell, the agent), so the gap to the floor splits
into operator and host time. ``--baseline DIR`` adds `leptonctl status` run from
another checkout (``git worktree add DIR COMMIT``), with its own state file. Last,
the cost of one probe on a host, by parts: CPU milliseconds of the login shell
running `true`, of `python3 -c pass`, of the agent's probe through its launcher,
and of its full command line (`version`), each run locally 30 times.
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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.lab import WIDE_SUBNET, Lab  # noqa: E402

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


TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    wall: float
    operator_cpu: float  # user + system of the operator and every process it waited for
    operator_rss_mb: float  # of its largest process
    host_cpu: float  # what the lab's hosts used meanwhile


class HostClock:
    """CPU used by the lab's hosts: their sshd listeners' own time plus that of every process
    they reaped (each connection's sshd, the login shell, the agent)."""

    def __init__(self, lab: Lab) -> None:
        self.pids = [h.sshd_pid for h in lab.hosts if h.sshd_pid is not None]

    def seconds(self) -> float:
        total = 0
        for pid in self.pids:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        return total / TICK


def measure(argv: list[str], env: dict[str, str], hosts: HostClock | None = None) -> Sample:
    before = hosts.seconds() if hosts else 0.0
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    errors = proc.stderr.read() if proc.stderr else b""
    if proc.stderr:
        proc.stderr.close()
    if status != 0:
        raise SystemExit(f"{argv[:5]} failed ({status}):\n{errors.decode(errors='replace')}")
    if hosts:
        time.sleep(0.3)  # the hosts' last sessions end and are reaped
    cpu = usage.ru_utime + usage.ru_stime
    used = hosts.seconds() - before if hosts else 0.0
    return Sample(wall, cpu, usage.ru_maxrss / 1024, used)


# Runs a Python program (``-m MODULE`` or ``-c CODE``) and prints, on stderr's last line, when it
# first connected to a host and when it ended, in seconds after this hook started.
FIRST_CONNECT = """
import atexit, runpy, socket, sys, time
started, marks = time.perf_counter(), []
connect = socket.socket.connect
def hooked(sock, address, *rest):
    if isinstance(address, tuple) and not marks:
        marks.append(time.perf_counter() - started)
    return connect(sock, address, *rest)
socket.socket.connect = hooked
atexit.register(lambda: sys.stderr.write("\\n%.4f %.4f\\n" % (
    marks[0] if marks else -1, time.perf_counter() - started)))
kind, target, sys.argv = sys.argv[1], sys.argv[2], [sys.argv[2]] + sys.argv[3:]
if kind == "-m":
    runpy.run_module(target, run_name="__main__")
else:
    exec(compile(target, "<floor>", "exec"), {"__name__": "__main__"})
"""


def first_connect(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(seconds to the first host connection, seconds to the end) of ``python -m/-c ...``."""
    proc = subprocess.run(
        [sys.executable, "-c", FIRST_CONNECT, *argv[1:]], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed ({proc.returncode}):\n{proc.stderr}")
    first, end = proc.stderr.strip().splitlines()[-1].split()
    return float(first), float(end)


def timed(argv: list[str], env: dict[str, str]) -> float:
    return measure(argv, env).wall


def probe_parts(lab: Lab, runs: int = 30) -> dict[str, float]:
    """CPU ms of one probe's parts on a host (run here, with the host's files): the login
    shell with `true`, `python3 -c pass`, the agent's probe and its full command line."""
    import resource

    from leptonctl.inventory.model import Host
    from leptonctl.remote.agent import agent_command
    from leptonctl.remote.ssh import with_boundary

    host = Host("h1", None, None, None, None, "ssh", "python3", None, (), {}, None, "bench")
    marker = b"leptonctl-output-0123456789abcdef"
    lines = {
        "login shell + `true`": with_boundary(marker, "true"),
        "`python3 -c pass`": with_boundary(marker, "python3 -c pass"),
        "agent probe (launcher)": with_boundary(marker, agent_command(host, ["probe"])),
        "agent `version` (full command line)": with_boundary(
            marker, agent_command(host, ["version"])
        ),
    }
    env = {"HOME": str(lab.host("h1").root / "home"), "PATH": "/usr/bin:/bin", "LANG": "C"}
    parts = {}
    for name, line in lines.items():
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        for _ in range(runs):
            subprocess.run(["bash", "-c", line], env=env, capture_output=True, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        parts[name] = used / runs * 1000
    return parts


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
    parser.add_argument("--baseline", type=Path, help="another checkout to measure alongside")
    args = parser.parse_args()

    reason = Lab.unavailable_reason()
    if reason:
        raise SystemExit(f"cannot build the lab: {reason}")
    ansible = ensure_ansible(args.ansible_venv)

    with Lab(args.hosts, prefix="lepst", first_ip=2000, subnet=WIDE_SUBNET) as lab:
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

        def ansible_run() -> Sample:
            control = tempfile.mkdtemp(dir=work)  # fresh ControlPath dir: a cold run each time
            ansible_env = dict(env, ANSIBLE_SSH_CONTROL_PATH_DIR=control, ANSIBLE_FORKS="16")
            ansible_env["ANSIBLE_LOCAL_TEMP"] = control
            return measure(
                [str(ansible), "all", "-i", str(ini), "-m", "setup", "-f", str(len(lab.hosts))],
                ansible_env,
                hosts,
            )

        hosts = HostClock(lab)
        contenders = {
            "leptonctl status --json (cold)": lambda: measure(leptonctl, env, hosts),
            "ansible all -m setup": ansible_run,
            "asyncssh connect + `true` (floor)": lambda: measure(floor, env, hosts),
            "asyncssh connect + `python3 -c pass`": lambda: measure(python_floor, env, hosts),
        }
        if args.baseline:  # the same command from another checkout, with its own store
            old = [sys.executable, "-m", "leptonctl", "--state", str(work / "baseline.db")]
            old += ["-i", str(inventory), "status", "--json"]
            old_env = dict(env, PYTHONPATH=str(args.baseline.resolve()))
            shell = ["/bin/sh", "-c", 'cd "$0" && exec "$@"', str(args.baseline.resolve())]
            contenders["leptonctl status (baseline)"] = lambda: measure(shell + old, old_env, hosts)
            measure(shell + old, old_env)  # pushes the baseline's agent
        first_push = timed(leptonctl, env)  # the very first run also pushes the agent
        for fn in contenders.values():  # warm the page cache for every contender
            fn()
        samples: dict[str, list[Sample]] = {name: [] for name in contenders}
        names = list(contenders)
        for round_ in range(args.runs):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                samples[name].append(contenders[name]())
        warm = warm_refresh_seconds(lab, inventory, max(5, args.runs))
        timed(leptonctl, env)  # the agent of this very tree is on the hosts
        parts = probe_parts(lab)
        phases: dict[str, list[tuple[float, float]]] = {"status": [], "floor": []}
        for _ in range(args.runs):
            phases["status"].append(first_connect(leptonctl, env))
            phases["floor"].append(first_connect(floor, env))
        load = os.getloadavg()[0]

    med = {name: statistics.median(s.wall for s in values) for name, values in samples.items()}
    cold = med["leptonctl status --json (cold)"]
    warm_med = statistics.median(warm)
    print(f"\n{args.hosts} hosts, {args.runs} interleaved runs each, medians (seconds)")
    print(f"(load average {load:.1f} at the end):\n")
    print("| measurement | median s | min s | max s | operator CPU s | host CPU s |")
    print("|---|---|---|---|---|---|")
    for name, values in samples.items():
        walls = [s.wall for s in values]
        cpu = statistics.median(s.operator_cpu for s in values)
        host_cpu = statistics.median(s.host_cpu for s in values)
        print(
            f"| {name} | {med[name]:.3f} | {min(walls):.3f} | {max(walls):.3f} "
            f"| {cpu:.3f} | {host_cpu:.3f} |"
        )
    print(
        f"| dashboard warm refresh ({len(warm)} refreshes) | {warm_med:.4f} "
        f"| {min(warm):.4f} | {max(warm):.4f} |"
    )
    print(f"| first status ever (includes agent push) | {first_push:.3f} | | |")
    print(
        "\n(Ansible's host CPU is not all there: its ControlPersist connections outlive the "
        "run and are reaped later.)"
    )
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
    if "leptonctl status (baseline)" in med:
        print(f"| cold status / baseline | {cold / med['leptonctl status (baseline)']:.2f} | |")
    print("\nWhen the first host is contacted (medians, seconds after the interpreter starts):\n")
    print("| program | first connection | end | after the first connection |")
    print("|---|---|---|---|")
    for name, runs in phases.items():
        first = statistics.median(f for f, _ in runs)
        end = statistics.median(e for _, e in runs)
        print(f"| {name} | {first:.3f} | {end:.3f} | {end - first:.3f} |")
    print("\nOne probe on a host, by parts (CPU ms per run, 30 runs each):\n")
    print("| part | CPU ms |")
    print("|---|---|")
    for name, ms in parts.items():
        print(f"| {name} | {ms:.1f} |")


if __name__ == "__main__":
    main()
