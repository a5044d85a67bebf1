"""Shared by the transfer benchmarks: run leptonctl and OpenSSH's scp inside the lab."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.lab import Lab  # noqa: E402

SCP_CIPHER = "aes128-gcm@openssh.com"
DATA_DIR = "/root/.local/share/leptonctl"  # the lab's root user's data dir


def inventory(lab: Lab, path: Path) -> Path:
    path.write_text(
        "\n".join(f"{h.name} ansible_host={h.ip}" for h in lab.hosts)
        + "\n[all:vars]\nansible_user=root\n"
    )
    return path


def leptonctl(lab: Lab, inv: Path, *args: str) -> tuple[float, dict]:
    """Wall time and the --json document of one leptonctl command."""
    env = lab.operator_env()
    env["PYTHONPATH"] = str(ROOT)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "leptonctl", "-i", str(inv), *args, "--json"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"leptonctl {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return seconds, json.loads(proc.stdout)


def trust_operator_key(lab: Lab, name: str) -> None:
    """Let host `name` ssh to the other lab hosts as the operator does (for scp)."""
    ssh = lab.path_on(name, "/root/.ssh")
    ssh.mkdir(mode=0o700, exist_ok=True)
    for file in ("id_ed25519", "known_hosts"):
        (ssh / file).write_bytes((lab.operator_home / ".ssh" / file).read_bytes())
        (ssh / file).chmod(0o600)


def scp(lab: Lab, src: str, dst: str, path: str, target: str) -> float:
    """Wall time of scp (aes128-gcm) run on host src, copying path to dst:target."""
    started = time.perf_counter()
    lab.run_in(
        src,
        ["scp", "-q", "-o", f"Ciphers={SCP_CIPHER}", "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=yes", "-i", "/root/.ssh/id_ed25519", path,
         f"root@{lab.host(dst).ip}:{target}"],
        check=True,
    )  # fmt: skip
    return time.perf_counter() - started


def in_ram(lab: Lab) -> None:
    """Every host's /tmp and data dir on a tmpfs of its own."""
    for h in lab.hosts:
        lab.run_in(
            h.name,
            ["sh", "-c", f"mount -t tmpfs -o size=8g tmpfs /tmp && mkdir -p {DATA_DIR} && "
                         f"mount -t tmpfs -o size=8g tmpfs {DATA_DIR}"],
            check=True,
        )  # fmt: skip


def shape_every_pair(lab: Lab, rate_mbit: float) -> None:
    for src in lab.hosts:
        for dst in lab.hosts:
            if src is not dst:
                lab.shape(src.name, dst.name, rate_mbit)


def random_file(lab: Lab, host: str, path: str, size: int) -> None:
    block = 1 << 20
    with lab.path_on(host, path).open("wb") as fh:
        left = size
        while left:
            n = min(block, left)
            fh.write(__import__("os").urandom(n))
            left -= n


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6
