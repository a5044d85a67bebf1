"""Benchmark: cold `leptonctl status` at 16, 64 and 256 hosts against the asyncssh floor and
Ansible, with a model that extrapolates to 1,000 and 10,000 hosts.

Run as root from the repository root (needs openssh-server and iproute2):

    python benchmarks/bench_fanout.py --sizes 16,64,256 --runs 5

It brings up one lab of max(--sizes) hosts on the wide lab network (10.214.0.0/16,
tests/lab.py ``subnet=``) and measures, for each size, on the first N hosts, interleaved (one
of each per round, rotating the order):

- `leptonctl status --json -f N` from a new process (cold: connect, run the cached agent's
  probe, store, print);
- the floor: one asyncssh connection per host running `true`, all at once (the transport
  alone), and the same running `python3 -c pass` (the least any Python agent costs);
- `ansible all -m setup -f N` with a fresh ControlPath directory (cold), --ansible-runs times
  (it is slow: one run at the largest size is usually enough).

For each run: wall time; operator CPU (user + system of the operator's process and every
process it waited for, from wait4); operator peak RSS (of its largest process); and host CPU:
what the lab's sshd listeners and everything they reaped used meanwhile (sshd, login shells,
the agent's Python), read from /proc. The lab's hosts share this machine's cores with the
operator, so wall time here is close to total CPU / cores; on real hosts only the operator's
CPU is on one machine. The model is a least-squares line per contender: wall = a + b*N,
operator CPU = c + d*N; at 1,000 and 10,000 hosts it prints the lab line and the operator-bound
floor (one asyncio thread: wall >= operator CPU). Nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_status import FLOOR, HostClock, Sample, ensure_ansible, measure  # noqa: E402

from tests.lab import WIDE_SUBNET, Lab  # noqa: E402


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares a + b*n."""
    ns = [n for n, _ in points]
    ys = [y for _, y in points]
    if len(set(ns)) < 2:
        return ys[0], 0.0
    mean_n, mean_y = statistics.fmean(ns), statistics.fmean(ys)
    slope = sum((n - mean_n) * (y - mean_y) for n, y in points) / sum((n - mean_n) ** 2 for n in ns)
    return mean_y - slope * mean_n, slope


def inventories(lab: Lab, work: Path, size: int) -> tuple[Path, Path]:
    hosts = lab.hosts[:size]
    yaml_file = work / f"hosts-{size}.yaml"
    lines = ["all:", "  vars:", "    ansible_user: root", "  hosts:"]
    for h in hosts:
        lines += [f"    {h.name}:", f"      ansible_host: {h.ip}"]
    yaml_file.write_text("\n".join(lines) + "\n")
    ini = work / f"ansible-{size}.ini"
    common = f"-F /dev/null -o UserKnownHostsFile={lab.known_hosts} -o StrictHostKeyChecking=yes"
    ini.write_text(
        "\n".join(f"{h.name} ansible_host={h.ip}" for h in hosts)
        + "\n[all:vars]\nansible_user=root\n"
        + f"ansible_ssh_private_key_file={lab.operator_key}\n"
        + f"ansible_ssh_common_args='{common}'\n"
        + "ansible_python_interpreter=/usr/bin/python3\n"
    )
    return yaml_file, ini


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="16,64,256")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ansible-runs", type=int, default=1, help="0: leave Ansible out")
    parser.add_argument("--ansible-venv", type=Path, default=Path("/var/tmp/lepton-bench-venv"))
    parser.add_argument("--prefix", default="lepfb")
    parser.add_argument("--first-ip", type=int, default=1000)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    reason = Lab.unavailable_reason()
    if reason:
        raise SystemExit(f"cannot build the lab: {reason}")
    ansible = ensure_ansible(args.ansible_venv) if args.ansible_runs else None

    results: dict[int, dict[str, list[Sample]]] = {}
    loads: dict[int, tuple[float, float]] = {}
    started = time.monotonic()
    with Lab(max(sizes), prefix=args.prefix, first_ip=args.first_ip, subnet=WIDE_SUBNET) as lab:
        print(f"lab of {max(sizes)} hosts up in {time.monotonic() - started:.1f} s", flush=True)
        env = lab.operator_env()
        env["PYTHONPATH"] = str(ROOT)
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # a user's machine caches bytecode
        work = Path(tempfile.mkdtemp(dir=lab.base))
        key, known = str(lab.operator_key), str(lab.known_hosts)
        hosts = HostClock(lab)
        for size in sizes:
            inventory, ini = inventories(lab, work, size)
            ips = [h.ip for h in lab.hosts[:size]]
            status = [sys.executable, "-m", "leptonctl", "-i", str(inventory)]
            # every host in flight at once, and asyncssh's own login timeout (the floor's): on
            # this lab the last of 256 handshakes waits for CPU longer than the default 10 s
            status += ["-f", str(size), "--connect-timeout", "120", "--timeout", "300"]
            status += ["status", "--json"]
            contenders: dict[str, Callable[[], Sample]] = {
                "leptonctl status": lambda argv=status: measure(argv, env, hosts),
                "floor: asyncssh + true": lambda ips=ips: measure(
                    [sys.executable, "-c", FLOOR, "true", key, known, *ips], env, hosts
                ),
                "floor: asyncssh + python3": lambda ips=ips: measure(
                    [sys.executable, "-c", FLOOR, "python3 -c pass", key, known, *ips], env, hosts
                ),
            }
            measure(status, env, hosts)  # pushes the agent to these hosts (not measured)
            for run in contenders.values():  # the page cache warm for every contender
                run()
            loads[size] = (os.getloadavg()[0], 0.0)
            samples: dict[str, list[Sample]] = {name: [] for name in contenders}
            names = list(contenders)
            for round_ in range(args.runs):
                for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                    samples[name].append(contenders[name]())
            if ansible is not None:
                for _ in range(args.ansible_runs):
                    control = tempfile.mkdtemp(dir=work)  # a fresh ControlPath: cold
                    ansible_env = dict(env, ANSIBLE_SSH_CONTROL_PATH_DIR=control)
                    ansible_env.update(ANSIBLE_LOCAL_TEMP=control, ANSIBLE_FORKS=str(size))
                    argv = [str(ansible), "all", "-i", str(ini), "-m", "setup", "-f", str(size)]
                    samples.setdefault("ansible -m setup", []).append(
                        measure(argv, ansible_env, hosts)
                    )
            loads[size] = (loads[size][0], os.getloadavg()[0])
            results[size] = samples
            report_size(size, samples, loads[size])
    report_model(results)


def median(samples: list[Sample], field: str) -> float:
    return statistics.median(getattr(s, field) for s in samples)


def report_size(size: int, samples: dict[str, list[Sample]], load: tuple[float, float]) -> None:
    print(f"\n{size} hosts (load average {load[0]:.1f} before, {load[1]:.1f} after), medians:\n")
    print("| contender | runs | wall s | operator CPU s | CPU ms/host | peak RSS MB | host CPU s |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in samples.items():
        cpu = median(runs, "operator_cpu")
        print(
            f"| {name} | {len(runs)} | {median(runs, 'wall'):.3f} | {cpu:.3f} "
            f"| {cpu / size * 1000:.1f} | {median(runs, 'operator_rss_mb'):.0f} "
            f"| {median(runs, 'host_cpu'):.3f} |"
        )
    floor = samples["floor: asyncssh + true"]
    lepton = samples["leptonctl status"]
    print(
        f"\nstatus / floor: wall {median(lepton, 'wall') / median(floor, 'wall'):.2f}, "
        f"operator CPU {median(lepton, 'operator_cpu') / median(floor, 'operator_cpu'):.2f}"
    )
    if "ansible -m setup" in samples:
        ansible = samples["ansible -m setup"]
        print(f"status / ansible: wall {median(lepton, 'wall') / median(ansible, 'wall'):.3f}")


def report_model(results: dict[int, dict[str, list[Sample]]]) -> None:
    names = list(next(iter(results.values())))
    print("\nModel (least squares over the sizes): wall = a + b*N, operator CPU = c + d*N\n")
    print("| contender | a s | b ms/host | c s | d ms/host | wall at 1,000 | at 10,000 "
          "| operator-bound at 1,000 | at 10,000 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        walls = [(n, median(s[name], "wall")) for n, s in results.items() if name in s]
        cpus = [(n, median(s[name], "operator_cpu")) for n, s in results.items() if name in s]
        a, b = fit(walls)
        c, d = fit(cpus)
        print(
            f"| {name} | {a:.3f} | {b * 1000:.2f} | {c:.3f} | {d * 1000:.2f} "
            f"| {a + b * 1000:.1f} | {a + b * 10000:.0f} | {c + d * 1000:.1f} "
            f"| {c + d * 10000:.0f} |"
        )
    print(
        "\n(wall: the lab's line, hosts sharing the operator's cores; operator-bound: one "
        "operator core, hosts elsewhere, wall >= operator CPU.)"
    )
    print("\n" + json.dumps({str(n): {k: [s.__dict__ for s in v] for k, v in r.items()}
                             for n, r in results.items()}))  # fmt: skip


if __name__ == "__main__":
    main()
