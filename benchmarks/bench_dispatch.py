"""Benchmark: dispatch throughput of `leptonctl submit --array ... --wait` vs `xargs -P` + ssh.

Run as root from the repository root:

    python benchmarks/bench_dispatch.py --hosts 16 --jobs 1000

Brings up the namespace lab, then, in one run:
  * leptonctl: `submit --array 0-(N-1) --cpus 1 --wait -- true` (queue, place on the
    hosts' CPUs, start detached, collect exit codes), wall time from submit to all ended;
  * the peer: the same N `true` commands spread round-robin over the hosts with
    `xargs -P (2 x hosts)` running OpenSSH (BatchMode, strict host keys), the
    "parallel ssh" a person would script.
Prints seconds and jobs/s for both and the ratio.  A script, not a test.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.lab import Lab  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    reason = Lab.unavailable_reason()
    if reason:
        raise SystemExit(f"cannot build the lab: {reason}")
    with Lab(args.hosts, prefix="lepj", first_ip=100) as lab:
        env = lab.operator_env()
        env["PYTHONPATH"] = str(ROOT)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        work = Path(tempfile.mkdtemp(dir=lab.base))
        inventory = work / "hosts.ini"
        inventory.write_text(
            "\n".join(f"{h.name} ansible_host={h.ip}" for h in lab.hosts)
            + "\n[all:vars]\nansible_user=root\n"
        )
        leptonctl = [sys.executable, "-m", "leptonctl", "-i", str(inventory)]
        subprocess.run([*leptonctl, "status"], env=env, check=True, capture_output=True)

        started = time.perf_counter()
        proc = subprocess.run(
            [*leptonctl, "submit", "--array", f"0-{args.jobs - 1}", "--cpus", "1", "--wait",
             "--", "true"],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        ours = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"leptonctl failed ({proc.returncode}): {proc.stderr[-2000:]}")

        ssh = " ".join(lab.ssh_argv(lab.hosts[0].name)[:-1])  # without the target
        targets = "\n".join(f"root@{lab.hosts[i % len(lab.hosts)].ip}" for i in range(args.jobs))
        started = time.perf_counter()
        subprocess.run(
            ["xargs", "-P", str(2 * args.hosts), "-I{}", "sh", "-c", f"{ssh} {{}} true"],
            input=targets, text=True, env=env, check=True,
        )  # fmt: skip
        peer = time.perf_counter() - started

    print(f"\n{args.jobs} trivial jobs over {args.hosts} lab hosts (2 CPUs each)\n")
    print("| runner | seconds | jobs/s |")
    print("|---|---|---|")
    print(f"| leptonctl submit --array --wait | {ours:.1f} | {args.jobs / ours:.1f} |")
    print(f"| xargs -P {2 * args.hosts} ssh | {peer:.1f} | {args.jobs / peer:.1f} |")
    print(f"\nratio leptonctl/xargs time: {ours / peer:.2f}")
    print(f"command: python benchmarks/bench_dispatch.py --hosts {args.hosts} --jobs {args.jobs}")


if __name__ == "__main__":
    main()
