"""Benchmark: host-to-host data movement and verification against OpenSSH and sha256sum.

Run as root from the repository root:

    python benchmarks/bench_data.py --size-mib 1024 [--storage tmpfs|disk] [--link-mbit N]

Brings up a 4-host namespace lab and measures, in one run, on the same bytes:
  1. one copy h1 -> h2: `leptonctl cp --direct h1:F h2:G` vs `scp -o Ciphers=aes128-gcm` run
     on h1 (goal: leptonctl >= 0.9x scp's throughput);
  2. three replicas: `leptonctl data put h1:F NAME -k 3 --limit h2,h3,h4` (one pipeline
     h1 -> h2 -> h3 -> h4) vs one replica (`-k 1 --limit h2`) (goal <= 1.3x) and vs three
     sequential scp's h1 -> h2, h3, h4 (goal <= 0.5x);
  3. `leptonctl data verify NAME --limit h2` (re-hash every replica on h2) vs `sha256sum` of
     the same chunk files on h2 (goal: >= 0.8x throughput).
Every number is wall time; `sync` runs (untimed) before each step.  leptonctl syncs what
it stores before it reports it stored; scp does not, so with `--storage disk` scp is also
timed up to the end of a `sync` ("durable").  The lab's hosts share the machine's one disk
and its 2 CPUs, which a real cluster does not: `--storage tmpfs` (the default) puts /tmp
and the agents' data dirs in RAM, and `--link-mbit N` shapes every pair to N Mbit/s: the
network-bound regime of a real cluster, where each host has its own CPUs (what the
pipeline is for).  A script, not a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from transfer_common import (
    DATA_DIR,
    Lab,
    in_ram,
    inventory,
    leptonctl,
    mbps,
    scp,
    shape_every_pair,
    trust_operator_key,
)


def timed(action) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--storage", choices=("tmpfs", "disk"), default="tmpfs")
    parser.add_argument(
        "--link-mbit", type=float, default=None, help="shape every pair to this rate (tc htb)"
    )
    args = parser.parse_args()
    size = args.size_mib << 20
    reason = Lab.unavailable_reason()
    if reason:
        raise SystemExit(f"cannot build the lab: {reason}")
    with Lab(4, prefix="lepb", first_ip=60) as lab:

        def sh(host: str, script: str) -> None:
            lab.run_in(host, ["sh", "-c", script], check=True)

        def sync() -> None:
            sh("h1", "sync")

        if args.storage == "tmpfs":
            in_ram(lab)
        if args.link_mbit:
            shape_every_pair(lab, args.link_mbit)
        inv = inventory(lab, Path(tempfile.mkdtemp(dir=lab.base)) / "hosts.ini")
        trust_operator_key(lab, "h1")
        sh("h1", f"head -c {size} /dev/urandom > /tmp/payload")
        leptonctl(lab, inv, "status")  # push the agent everywhere first

        sync()
        cp_s, _ = leptonctl(lab, inv, "cp", "--direct", "h1:/tmp/payload", "h2:/tmp/cp-copy")
        sh("h2", "rm -f /tmp/cp-copy")
        sync()
        scp_s = scp(lab, "h1", "h2", "/tmp/payload", "/tmp/scp-copy")
        scp_durable_s = scp_s + timed(sync)
        sh("h2", "rm -f /tmp/scp-copy")

        sync()
        one_s, _ = leptonctl(lab, inv, "data", "put", "h1:/tmp/payload", "one", "-k", "1",
                             "--limit", "h2")  # fmt: skip
        leptonctl(lab, inv, "data", "rm", "one")  # or h2 would already hold the chunks
        sync()
        three_s, _ = leptonctl(lab, inv, "data", "put", "h1:/tmp/payload", "three", "-k",
                               "3", "--limit", "h2,h3,h4")  # fmt: skip
        sync()
        scp3_s = 0.0
        for dst in ("h2", "h3", "h4"):
            scp3_s += scp(lab, "h1", dst, "/tmp/payload", "/tmp/scp3")
            sh(dst, "rm -f /tmp/scp3")
        scp3_durable_s = scp3_s + timed(sync)

        sh("h2", f"cat {DATA_DIR}/chunks/*/* > /dev/null")  # both read a warm cache
        sha_s = timed(lambda: sh("h2", f"sha256sum {DATA_DIR}/chunks/*/* > /dev/null"))
        verify_s, report = leptonctl(lab, inv, "data", "verify", "three", "--limit", "h2")
        verified = report["bytes_hashed"]

    where = "in RAM (tmpfs)" if args.storage == "tmpfs" else "on the machine's one disk"
    links = f", every link shaped to {args.link_mbit:g} Mbit/s" if args.link_mbit else ""
    print(f"\n{args.size_mib} MiB, 4 lab hosts sharing 2 CPUs, data {where}{links}\n")
    print("| what | leptonctl | peer | ratio | goal |")
    print("|---|---|---|---|---|")
    peer = f"scp {mbps(size, scp_s):.0f}"
    ratio = f"{scp_s / cp_s:.2f}x"
    if args.storage == "disk":
        peer += f" (durable {mbps(size, scp_durable_s):.0f})"
        ratio += f" ({scp_durable_s / cp_s:.2f}x)"
    print(f"| 1 copy h1->h2 (MB/s) | {mbps(size, cp_s):.0f} | {peer} | {ratio} throughput "
          "| >= 0.9x |")  # fmt: skip
    print(f"| 3 replicas vs 1 (s) | {three_s:.1f} | k=1 {one_s:.1f} | {three_s / one_s:.2f}x time "
          "| <= 1.3x |")  # fmt: skip
    peer3, ratio3 = f"3x scp {scp3_s:.1f}", f"{three_s / scp3_s:.2f}x"
    if args.storage == "disk":
        peer3 += f" (durable {scp3_durable_s:.1f})"
        ratio3 += f" ({three_s / scp3_durable_s:.2f}x)"
    print(f"| 3 replicas vs 3 scp (s) | {three_s:.1f} | {peer3} | {ratio3} time | <= 0.5x |")
    print(f"| verify on one host (MB/s) | {mbps(verified, verify_s):.0f} | sha256sum "
          f"{mbps(verified, sha_s):.0f} | {sha_s / verify_s:.2f}x throughput "
          "| >= 0.8x |")  # fmt: skip
    shaped = f" --link-mbit {args.link_mbit:g}" if args.link_mbit else ""
    print(f"\ncommand: python benchmarks/bench_data.py --size-mib {args.size_mib} "
          f"--storage {args.storage}{shaped}")  # fmt: skip


if __name__ == "__main__":
    main()
