"""Benchmark: CPU seconds per GiB moved, and one big file over several streams, against scp.

Run as root from the repository root:

    python benchmarks/bench_cpu_per_byte.py --size-mib 1024 [--link-mbit N] [--streams 1,2,4]

Brings up a 4-host namespace lab with every host's /tmp and data dir in RAM, and measures, in
one run, on the same bytes, for each of:
  1. `scp -o Ciphers=aes128-gcm@openssh.com` h1 -> h2 (the peer), and three sequential scp's
     h1 -> h2, h3, h4 (the peer of three replicas);
  2. `leptonctl cp --direct h1:F h2:G --streams N` for each N (issue 14 item 6);
  3. `leptonctl data put h1:F NAME -k 1 --limit h2` and `-k 3 --limit h2,h3,h4`;
the wall time, the throughput and the CPU seconds spent by EVERY process involved (both
hosts' sshd and their children, the agents, ssh clients, the operator), per GiB and per hop.

The CPU is read from a cpuacct cgroup (v1) that the lab's sshd daemons and this script are
moved into before the first step, so the other processes of the machine do not count; where
no cpuacct controller is writable the script says so and falls back to the whole machine's
/proc/stat (noisy unless the machine is otherwise idle).  `sync` and the removal of the
previous copy run before each step, outside the measurement.  A script, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from transfer_common import (
    Lab,
    in_ram,
    inventory,
    leptonctl,
    scp,
    shape_every_pair,
    trust_operator_key,
)

CGROUP = Path("/sys/fs/cgroup/cpuacct/leptonctl-bench")
GIB = 1 << 30


class CpuMeter:
    """CPU nanoseconds used by the processes of one cgroup (or of the whole machine)."""

    def __init__(self, pids: list[int]) -> None:
        self.source = "cpuacct cgroup"
        try:
            CGROUP.mkdir(exist_ok=True)
            for pid in [*pids, os.getpid()]:
                (CGROUP / "cgroup.procs").write_text(f"{pid}\n")
        except OSError as exc:
            self.source = f"/proc/stat of the whole machine (no cpuacct cgroup: {exc})"

    def now_ns(self) -> int:
        if self.source == "cpuacct cgroup":
            return int((CGROUP / "cpuacct.usage").read_text())
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        busy = sum(int(v) for i, v in enumerate(fields[:8]) if i not in (3, 4))  # not idle/iowait
        return busy * 10**9 // os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        if self.source != "cpuacct cgroup":
            return
        parent = CGROUP.parent / "cgroup.procs"
        for pid in (CGROUP / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # it exited meanwhile
                parent.write_text(f"{pid}\n")
        with contextlib.suppress(OSError):
            CGROUP.rmdir()


def measured(meter: CpuMeter, action: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one action."""
    cpu, started = meter.now_ns(), time.perf_counter()
    action()
    return time.perf_counter() - started, (meter.now_ns() - cpu) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--link-mbit", type=float, default=None, help="shape every pair (tc htb)")
    parser.add_argument("--streams", default="1,2,4", help="cp --streams values to measure")
    args = parser.parse_args()
    size, streams = args.size_mib << 20, [int(n) for n in args.streams.split(",")]
    reason = Lab.unavailable_reason()
    if reason:
        raise SystemExit(f"cannot build the lab: {reason}")
    rows: list[tuple[str, float, float, int]] = []  # what, wall, cpu, hops
    with Lab(4, prefix="lepw", first_ip=200) as lab:

        def sh(host: str, script: str) -> None:
            lab.run_in(host, ["sh", "-c", script], check=True)

        in_ram(lab)
        if args.link_mbit:
            shape_every_pair(lab, args.link_mbit)
        inv = inventory(lab, Path(tempfile.mkdtemp(dir=lab.base)) / "hosts.ini")
        trust_operator_key(lab, "h1")
        sh("h1", f"head -c {size} /dev/urandom > /tmp/payload")
        leptonctl(lab, inv, "status")  # push the agent everywhere first
        meter = CpuMeter([h.sshd_pid for h in lab.hosts if h.sshd_pid is not None])
        try:

            def step(what: str, hops: int, action: Callable[[], object]) -> None:
                sh("h1", "sync")
                wall, cpu = measured(meter, action)
                rows.append((what, wall, cpu, hops))
                print(f"  {what}: {wall:.2f} s, {cpu:.2f} CPU s", flush=True)

            step("scp h1->h2", 1, lambda: scp(lab, "h1", "h2", "/tmp/payload", "/tmp/scp"))
            sh("h2", "rm -f /tmp/scp")
            for n in streams:
                step(f"cp --streams {n}", 1, lambda n=n: leptonctl(
                    lab, inv, "cp", "--direct", "--streams", str(n), "h1:/tmp/payload",
                    "h2:/tmp/cp"))  # fmt: skip
                sh("h2", "rm -f /tmp/cp")

            def three_scp() -> None:
                for dst in ("h2", "h3", "h4"):
                    scp(lab, "h1", dst, "/tmp/payload", "/tmp/scp3")

            step("3x scp h1->h2,h3,h4", 3, three_scp)
            step(
                "data put -k 1",
                1,
                lambda: leptonctl(
                    lab, inv, "data", "put", "h1:/tmp/payload", "one", "-k", "1", "--limit", "h2"
                ),
            )
            leptonctl(lab, inv, "data", "rm", "one")
            step("data put -k 3", 3, lambda: leptonctl(
                lab, inv, "data", "put", "h1:/tmp/payload", "three", "-k", "3",
                "--limit", "h2,h3,h4"))  # fmt: skip
        finally:
            meter.close()

    gib = size / GIB
    by = {what: (wall, cpu, hops) for what, wall, cpu, hops in rows}
    link = f", every pair shaped to {args.link_mbit:g} Mbit/s" if args.link_mbit else ", unshaped"
    print(f"\n{args.size_mib} MiB, 4 lab hosts sharing this machine's CPUs, data in RAM{link}")
    print(f"CPU from: {meter.source}\n")
    print("| what | s | MB/s | CPU s per GiB per hop | CPU vs scp | throughput vs scp |")
    print("|---|---|---|---|---|---|")
    for what, wall, cpu, hops in rows:
        peer = "3x scp h1->h2,h3,h4" if hops == 3 else "scp h1->h2"
        peer_wall, peer_cpu, _ = by[peer]
        per_hop = cpu / gib / hops
        peer_per_hop = peer_cpu / gib / hops
        print(f"| {what} | {wall:.2f} | {size / wall / 1e6:.0f} | {per_hop:.2f} "
              f"| {per_hop / peer_per_hop:.2f}x | {peer_wall / wall:.2f}x |")  # fmt: skip
    shaped = f" --link-mbit {args.link_mbit:g}" if args.link_mbit else ""
    print(f"\ncommand: python benchmarks/bench_cpu_per_byte.py --size-mib {args.size_mib}"
          f"{shaped} --streams {args.streams}")  # fmt: skip


if __name__ == "__main__":
    main()
