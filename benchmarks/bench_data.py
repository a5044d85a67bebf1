"""Benchmark: host-to-host data movement and verification against OpenSSH and sha256sum.

Run as root from the repository root:

    python benchmarks/bench_data.py --size-mib 1024

Brings up a 4-host namespace lab and measures, in one run, on the same bytes:
  1. one copy h1 -> h2: `leptonctl cp --direct h1:F h2:G` vs `scp -o Ciphers=aes128-gcm` run
     on h1 (goal: leptonctl >= 0.9x scp's throughput);
  2. three replicas: `leptonctl data put h1:F NAME -k 3 --limit h2,h3,h4` (one pipeline
     h1 -> h2 -> h3 -> h4) vs one replica (`-k 1 --limit h2`) (goal <= 1.3x) and vs three
     sequential scp's h1 -> h2, h3, h4 (goal <= 0.5x);
  3. `leptonctl data verify NAME` (re-hash every replica where it lies, all hosts in
     parallel) vs `sha256sum` of the same chunk files on one host (goal: >= 0.8x per-host
     throughput).
Files live on the lab hosts' disks; every number is wall time.  A script, not a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
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
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    size = args.size_mib << 20
    reason = Lab.unavailable_reason()
    if reason:
        raise SystemExit(f"cannot build the lab: {reason}")
    with Lab(4, prefix="lepb", first_ip=60) as lab:
        inv = inventory(lab, Path(tempfile.mkdtemp(dir=lab.base)) / "hosts.ini")
        trust_operator_key(lab, "h1")
        random_file(lab, "h1", "/tmp/payload", size)
        leptonctl(lab, inv, "status")  # push the agent everywhere first

        cp_s, _ = leptonctl(lab, inv, "cp", "--direct", "h1:/tmp/payload", "h2:/tmp/cp-copy")
        scp_s = scp(lab, "h1", "h2", "/tmp/payload", "/tmp/scp-copy")

        one_s, _ = leptonctl(lab, inv, "data", "put", "h1:/tmp/payload", "one", "-k", "1",
                             "--limit", "h2")  # fmt: skip
        three_s, _ = leptonctl(lab, inv, "data", "put", "h1:/tmp/payload", "three", "-k",
                               "3", "--limit", "h2,h3,h4")  # fmt: skip
        scp3_s = sum(scp(lab, "h1", dst, "/tmp/payload", "/tmp/scp3") for dst in ("h2", "h3", "h4"))

        chunk_dir = "/root/.local/share/leptonctl/chunks"
        lab.run_in("h2", ["sh", "-c", f"cat {chunk_dir}/*/* > /dev/null"])  # both see a warm cache
        started = time.perf_counter()
        lab.run_in("h2", ["sh", "-c", f"sha256sum {chunk_dir}/*/* > /dev/null"], check=True)
        sha_s = time.perf_counter() - started
        verify_s, report = leptonctl(lab, inv, "data", "verify", "three", "--limit", "h2")
        verified = report["bytes_hashed"]

    print(f"\n{args.size_mib} MiB on a 4-host lab (2 shared CPUs; disks are the host's)\n")
    print("| what | leptonctl | peer | ratio | goal |")
    print("|---|---|---|---|---|")
    print(f"| 1 copy h1->h2 (MB/s) | {mbps(size, cp_s):.0f} | scp {mbps(size, scp_s):.0f} | "
          f"{scp_s / cp_s:.2f}x throughput | >= 0.9x |")  # fmt: skip
    print(f"| 3 replicas vs 1 (s) | {three_s:.1f} | k=1 {one_s:.1f} | {three_s / one_s:.2f}x time "
          f"| <= 1.3x |")  # fmt: skip
    print(f"| 3 replicas vs 3 scp (s) | {three_s:.1f} | 3x scp {scp3_s:.1f} | "
          f"{three_s / scp3_s:.2f}x time | <= 0.5x |")  # fmt: skip
    print(f"| verify (MB/s, one host) | {mbps(verified, verify_s):.0f} | sha256sum "
          f"{mbps(verified, sha_s):.0f} | {sha_s / verify_s:.2f}x throughput "
          "| >= 0.8x |")  # fmt: skip
    print(f"\ncommand: python benchmarks/bench_data.py --size-mib {args.size_mib}")


if __name__ == "__main__":
    main()
