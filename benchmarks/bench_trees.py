"""Benchmark: trees of small files, leptonctl cp / data put / data get against rsync and tar.

Run as root from the repository root:

    python benchmarks/bench_trees.py [--sizes 10000,100000] [--million] [--storage tmpfs|disk]
                                     [--prefix P --first-ip N]

Brings up a 4-host namespace lab (this machine's CPUs; every host's /tmp and data dir in RAM
with --storage tmpfs, the default, else on the machine's disk) and, for each size, makes a
tree of SIZE files of 4 KiB (directories of 100 files) on h1, then measures in one run:
  1. first copy h1 -> h2: `rsync -a` run on h1 over ssh (aes128-gcm, the same user), `tar c |
     ssh tar x` run on h1, and `leptonctl cp h1:TREE h2:DIR`;
  2. the same again with nothing changed (rsync and cp: the quick check, size and mtime);
  3. again after touching 1% of the files (a new mtime, the same bytes);
  4. `leptonctl data put h1:TREE -k 1` and `-k 3`, then `data get` to this machine against
     `rsync -a` h1 -> this machine.
Each copy row is the best of --repeat runs (3) of both sides: this machine is shared. The
peers run on h1 through nsenter (no ssh from the operator to h1 first); leptonctl's times
include its start-up and its connections to both hosts. `sync` runs before each step.
Prints seconds and leptonctl / peer ratios. A script, not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from transfer_common import Lab, in_ram, inventory, leptonctl, trust_operator_key

MAKE_TREE = """
import os, sys
root, files, size, per_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
block = os.urandom(size + files)
for i in range(files):
    sub = "%s/d%05d" % (root, i // per_dir)
    if i % per_dir == 0:
        os.makedirs(sub)
    with open("%s/f%03d.bin" % (sub, i % per_dir), "wb") as fh:
        fh.write(block[i : i + size])
"""
TOUCH = """
import os, sys, time
root, files, per_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
later = time.time() + 5
for i in range(0, files, 100):
    os.utime("%s/d%05d/f%03d.bin" % (root, i // per_dir, i % per_dir), (later, later))
"""

CIPHER = "aes128-gcm@openssh.com"
FILE_BYTES = 4096
PER_DIR = 100


def ssh_cmd() -> str:
    return (
        f"ssh -c {CIPHER} -o BatchMode=yes -o StrictHostKeyChecking=yes "
        "-i /root/.ssh/id_ed25519 -o Compression=no"
    )


def sh(lab: Lab, host: str, *argv: str, check: bool = True) -> None:
    lab.run_in(host, list(argv), check=check)


def timed(argv: list[str], lab: Lab | None = None, host: str | None = None) -> float:
    subprocess.run(["sync"], check=True)
    started = time.perf_counter()
    if lab is not None and host is not None:
        proc = lab.run_in(host, argv)
    else:
        proc = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed: {proc.stderr[-2000:]}")
    return seconds


def lep(lab: Lab, inv: Path, *args: str) -> float:
    subprocess.run(["sync"], check=True)
    seconds, _ = leptonctl(lab, inv, *args)
    return seconds


def row(
    rows: list[tuple[str, float, str, float]], what: str, ours: float, peer: str, theirs: float
) -> None:
    rows.append((what, ours, peer, theirs))
    print(f"  {what:<34} leptonctl {ours:7.2f} s   {peer:<12} {theirs:7.2f} s   "
          f"ratio {ours / theirs:5.2f}x", flush=True)  # fmt: skip


def bench_size(
    lab: Lab, inv: Path, files: int, scratch: Path, repeat: int
) -> list[tuple[str, float, str, float]]:
    h1, h2 = lab.hosts[0].name, lab.hosts[1].name
    h2_ip = lab.host(h2).ip
    tree = f"/tmp/tree{files}"
    print(f"tree of {files} x {FILE_BYTES} B on {h1} ...", flush=True)
    sh(lab, h1, "rm", "-rf", tree)
    sh(lab, h1, "python3", "-c", MAKE_TREE, tree, str(files), str(FILE_BYTES), str(PER_DIR))
    sh(lab, h2, "rm", "-rf", f"/tmp/rs{files}", f"/tmp/tar{files}", f"/tmp/cp{files}")
    rsync = ["rsync", "-a", "-e", ssh_cmd(), f"{tree}/", f"root@{h2_ip}:/tmp/rs{files}/"]
    tar = ["sh", "-c", f"tar cf - -C {tree} . | {ssh_cmd()} root@{h2_ip} "
           f"'mkdir -p /tmp/tar{files} && tar xf - -C /tmp/tar{files}'"]  # fmt: skip
    cp = ("cp", f"{h1}:{tree}", f"{h2}:/tmp/cp{files}")
    rows: list[tuple[str, float, str, float]] = []
    fresh = ["rm", "-rf", f"/tmp/rs{files}", f"/tmp/tar{files}", f"/tmp/cp{files}"]
    firsts: dict[str, list[float]] = {"rsync": [], "tar": [], "cp": []}
    for attempt in range(repeat):  # the best of `repeat`: this machine is shared
        if attempt:
            sh(lab, h2, *fresh)
        firsts["rsync"].append(timed(rsync, lab, h1))
        firsts["tar"].append(timed(tar, lab, h1))
        firsts["cp"].append(lep(lab, inv, *cp))
    first_rsync = min(firsts["rsync"])
    row(rows, "first copy h1->h2", min(firsts["cp"]), "rsync -a", first_rsync)
    row(rows, "first copy h1->h2", min(firsts["cp"]), "tar+ssh", min(firsts["tar"]))
    noop = [(lep(lab, inv, *cp), timed(rsync, lab, h1)) for _ in range(repeat)]
    row(rows, "no-op copy", min(n[0] for n in noop), "rsync -a", min(n[1] for n in noop))
    touched = []
    for _ in range(repeat):
        sh(lab, h1, "python3", "-c", TOUCH, tree, str(files), str(PER_DIR))
        touched.append((lep(lab, inv, *cp), timed(rsync, lab, h1)))
    ours, theirs = min(t[0] for t in touched), min(t[1] for t in touched)
    row(rows, "copy after touching 1%", ours, "rsync -a", theirs)
    k1 = lep(lab, inv, "data", "put", f"{h1}:{tree}", f"t{files}-k1", "-k", "1")
    k3 = lep(lab, inv, "data", "put", f"{h1}:{tree}", f"t{files}-k3", "-k", "3")
    row(rows, "data put -k 1", k1, "rsync -a", first_rsync)
    row(rows, "data put -k 3 (vs -k 1)", k3, "put -k 1", k1)
    out = scratch / f"get{files}"
    rs_out = scratch / f"rsget{files}"
    get = lep(lab, inv, "data", "get", f"t{files}-k1", str(out))
    env_ssh = (
        f"ssh -c {CIPHER} -o BatchMode=yes -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes "
        f"-o UserKnownHostsFile={lab.operator_home}/.ssh/known_hosts "
        f"-i {lab.operator_home}/.ssh/id_ed25519"
    )
    rs_get = timed(["rsync", "-a", "-e", env_ssh, f"root@{lab.host(h1).ip}:{tree}/", f"{rs_out}/"])
    row(rows, "data get -> this machine", get, "rsync -a", rs_get)
    for name in (f"t{files}-k1", f"t{files}-k3"):
        leptonctl(lab, inv, "data", "rm", name)
    for path in (out, rs_out):
        shutil.rmtree(path, ignore_errors=True)
    sh(lab, h2, "rm", "-rf", f"/tmp/rs{files}", f"/tmp/tar{files}", f"/tmp/cp{files}", check=False)
    sh(lab, h1, "rm", "-rf", tree, check=False)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated file counts")
    parser.add_argument("--million", action="store_true", help="also 1,000,000 files")
    parser.add_argument("--storage", choices=("tmpfs", "disk"), default="tmpfs")
    parser.add_argument("--repeat", type=int, default=3, help="copies: the best of N runs")
    parser.add_argument("--prefix", default="lepbt", help="the lab's namespace prefix")
    parser.add_argument("--first-ip", type=int, default=200)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s] + ([1_000_000] if args.million else [])
    reason = Lab.unavailable_reason()
    if reason:
        raise SystemExit(f"lab unavailable: {reason}")
    with (
        Lab(4, prefix=args.prefix, first_ip=args.first_ip) as lab,
        tempfile.TemporaryDirectory(dir="/var/tmp") as tmp,
    ):
        scratch = Path(tmp) / "scratch"  # this machine's side of `data get`
        scratch.mkdir()
        if args.storage == "tmpfs":
            in_ram(lab)
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=8g", "tmpfs", str(scratch)], check=True
            )
        trust_operator_key(lab, lab.hosts[0].name)
        inv = inventory(lab, Path(tmp) / "hosts.ini")
        leptonctl(lab, inv, "status")  # agents installed: not part of any measurement
        try:
            results = {n: bench_size(lab, inv, n, scratch, args.repeat) for n in sizes}
        finally:
            if args.storage == "tmpfs":
                subprocess.run(["umount", str(scratch)], check=False)
    print(f"\nstorage: {args.storage}; this machine: {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at the end")  # fmt: skip
    print("\n| files | what | leptonctl (s) | peer | peer (s) | ratio |")
    print("|---|---|---|---|---|---|")
    for files, rows in results.items():
        for what, ours, peer, theirs in rows:
            print(f"| {files:,} | {what} | {ours:.2f} | {peer} | {theirs:.2f} | "
                  f"{ours / theirs:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
