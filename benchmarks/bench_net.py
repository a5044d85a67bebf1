"""Benchmark: routed copies around a slow link, the unshaped copy, and the probe's cost.

Run as root from the repository root:

    python benchmarks/bench_net.py --size-mib 256 --hosts 8

Brings up the namespace lab, shapes h1 -> h2 to 40 Mbit/s (every other pair is free), and
measures, in one run:
  1. `leptonctl net probe` over all hosts (wall time: the probe's cost);
  2. `leptonctl cp h1:F h2:G` (routed around the slow link through a relay) vs `scp` h1 -> h2
     on the shaped link (goal: >= 3x faster);
  3. on the unshaped pair h3 -> h4: `leptonctl cp` vs `scp` (goal: >= 0.9x scp's
     throughput).
Every number is wall time.  A script, not a test.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from transfer_common import (
    Lab,
    inventory,
    leptonctl,
    mbps,
    random_file,
    scp,
    trust_operator_key,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--slow-mbit", type=float, default=40)
    args = parser.parse_args()
    size = args.size_mib << 20
    reason = Lab.unavailable_reason()
    if reason:
        raise SystemExit(f"cannot build the lab: {reason}")
    with Lab(args.hosts, prefix="lepn", first_ip=180) as lab:
        inv = inventory(lab, Path(tempfile.mkdtemp(dir=lab.base)) / "hosts.ini")
        for name in ("h1", "h3"):
            trust_operator_key(lab, name)
        random_file(lab, "h1", "/tmp/payload", size)
        random_file(lab, "h3", "/tmp/payload", size)
        lab.shape("h1", "h2", args.slow_mbit)
        leptonctl(lab, inv, "status")

        probe_s, probe = leptonctl(lab, inv, "net", "probe", "--seconds", "0.5")
        routed_s, routed = leptonctl(lab, inv, "cp", "h1:/tmp/payload", "h2:/tmp/routed")
        slow_scp_s = scp(lab, "h1", "h2", "/tmp/payload", "/tmp/scp-slow")
        free_s, _ = leptonctl(lab, inv, "cp", "--direct", "h3:/tmp/payload", "h4:/tmp/cp")
        free_scp_s = scp(lab, "h3", "h4", "/tmp/payload", "/tmp/scp-free")

    pairs = len(probe.get("measured", []))
    print(f"\n{args.size_mib} MiB, {args.hosts} lab hosts, h1->h2 shaped to "
          f"{args.slow_mbit:g} Mbit/s\n")  # fmt: skip
    print("| what | leptonctl | scp | ratio | goal |")
    print("|---|---|---|---|---|")
    print(f"| h1->h2 routed {' -> '.join(routed['route'])} (s) | {routed_s:.1f} | "
          f"{slow_scp_s:.1f} | {slow_scp_s / routed_s:.1f}x faster | >= 3x |")  # fmt: skip
    print(f"| h3->h4 unshaped (MB/s) | {mbps(size, free_s):.0f} | {mbps(size, free_scp_s):.0f} | "
          f"{free_scp_s / free_s:.2f}x throughput | >= 0.9x |")  # fmt: skip
    print(f"| net probe, {args.hosts} hosts, {pairs} pairs (s) | {probe_s:.1f} | - | - | - |")
    print(f"\ncommand: python benchmarks/bench_net.py --size-mib {args.size_mib} "
          f"--hosts {args.hosts}")  # fmt: skip


if __name__ == "__main__":
    main()
