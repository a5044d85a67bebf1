"""Self-tests of the namespace lab (tests/lab.py): real sshd hosts, isolation, faults, shaping."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.lab import Lab

REASON = Lab.unavailable_reason()
pytestmark = [pytest.mark.lab, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

# The host's /root is the lab home, so an interpreter living under the real /root (pyenv)
# is invisible inside hosts; use the system one.
HOST_PYTHON = next(
    (p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if Path(p).exists()), None
)

RECEIVER = """
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1]))); srv.listen(1)
print("listening", flush=True)
srv.settimeout(20); conn, _ = srv.accept(); total = 0
while True:
    chunk = conn.recv(1 << 20)
    if not chunk:
        break
    total += len(chunk)
conn.sendall(str(total).encode()); conn.close()
"""

SENDER = """
import socket, sys, time
ip, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
buf = b"x" * (1 << 16)
s = socket.create_connection((ip, port), timeout=20)
t0 = time.monotonic(); left = size
while left > 0:
    left -= s.send(buf[: min(left, len(buf))])
s.shutdown(socket.SHUT_WR)
ack = s.recv(64)
print(int(ack), time.monotonic() - t0)
"""


@pytest.fixture(scope="module")
def lab():
    with Lab(3, prefix="lept") as lab:
        yield lab


def ssh(lab: Lab, name: str, command: str, timeout: float = 20) -> subprocess.CompletedProcess:
    h = lab.host(name)
    argv = [
        "ssh", "-F", "/dev/null", "-o", "BatchMode=yes",
        "-o", f"UserKnownHostsFile={lab.operator_home / '.ssh' / 'known_hosts'}",
        "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=5",
        "-i", str(lab.operator_home / ".ssh" / "id_ed25519"), f"root@{h.ip}", command,
    ]  # fmt: skip
    return subprocess.run(
        argv, env=lab.operator_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def test_each_host_answers_with_its_own_hostname(lab):
    for h in lab.hosts:
        r = ssh(lab, h.name, "hostname")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == h.name
        assert lab.run_in(h.name, ["hostname"]).stdout.strip() == h.name


def test_operator_files(lab):
    ssh_dir = lab.operator_home / ".ssh"
    assert (ssh_dir / "id_ed25519").stat().st_mode & 0o777 == 0o600
    assert (ssh_dir / "id_ed25519.pub").read_text().startswith("ssh-ed25519 ")
    assert (ssh_dir / "config").read_text() == ""
    known = (ssh_dir / "known_hosts").read_text().splitlines()
    assert sorted(line.split()[0] for line in known) == sorted(h.ip for h in lab.hosts)
    env = lab.operator_env()
    assert env["HOME"] == str(lab.operator_home)
    assert "SSH_AUTH_SOCK" not in env
    assert env["XDG_CONFIG_HOME"].startswith(str(lab.operator_home))


def test_hosts_have_private_tmp_and_root(lab):
    name = f"lab-{uuid.uuid4().hex[:8]}"
    r = ssh(lab, "h1", f"echo hello > /tmp/{name} && echo home > /root/{name}")
    assert r.returncode == 0, r.stderr
    assert lab.path_on("h1", f"/tmp/{name}").read_text() == "hello\n"
    assert lab.path_on("h1", f"/root/{name}").read_text() == "home\n"
    assert not Path("/tmp", name).exists()
    assert not Path("/root", name).exists()
    r = ssh(lab, "h2", f"test -e /tmp/{name} || test -e /root/{name} || echo absent")
    assert r.stdout.strip() == "absent", r.stderr
    assert lab.run_in("h1", ["cat", f"/tmp/{name}"]).stdout == "hello\n"
    assert lab.run_in("h2", ["cat", f"/tmp/{name}"]).returncode != 0
    assert lab.path_on("h2", "/root/.cache") == lab.host("h2").root / "home" / ".cache"
    with pytest.raises(ValueError):
        lab.path_on("h1", "/etc/passwd")


def test_stop_and_start_sshd(lab):
    try:
        lab.stop_sshd("h3")
        r = ssh(lab, "h3", "true")
        assert r.returncode == 255
        assert "Connection refused" in r.stderr
        # the host itself (namespaces, files) survives without its sshd
        assert lab.run_in("h3", ["hostname"]).stdout.strip() == "h3"
    finally:
        lab.start_sshd("h3")
    r = ssh(lab, "h3", "hostname")
    assert (r.returncode, r.stdout.strip()) == (0, "h3"), r.stderr


def test_regenerated_host_key_is_rejected_by_strict_ssh(lab):
    old = lab.host("h2").host_key_pub
    try:
        new = lab.regenerate_host_key("h2")
        assert new != old and new.startswith("ssh-ed25519 ")
        r = ssh(lab, "h2", "true")
        assert r.returncode == 255
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in r.stderr
    finally:
        lab.refresh_known_hosts()
    assert ssh(lab, "h2", "true").returncode == 0


def test_deauthorized_operator_is_denied(lab):
    try:
        lab.deauthorize_operator("h1")
        r = ssh(lab, "h1", "true")
        assert r.returncode == 255
        assert "Permission denied" in r.stderr
    finally:
        lab.authorize("h1", lab.operator_pub)
    assert ssh(lab, "h1", "true").returncode == 0


def _throughput_mbit(lab: Lab, src: str, dst: str, size: int, port: int) -> float:
    receiver = lab.popen_in(
        dst,
        [HOST_PYTHON, "-c", RECEIVER, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stdout is not None
        assert receiver.stdout.readline().strip() == "listening", receiver.stderr
        argv = [HOST_PYTHON, "-c", SENDER, lab.host(dst).ip, str(port), str(size)]
        r = lab.run_in(src, argv, timeout=30)
        assert r.returncode == 0, r.stderr
        received, seconds = r.stdout.split()
        assert int(received) == size
        return size * 8 / float(seconds) / 1e6
    finally:
        receiver.kill()
        receiver.wait()


@pytest.mark.skipif(HOST_PYTHON is None, reason="no system python3 visible inside lab hosts")
def test_shaping_limits_only_the_shaped_pair(lab):
    try:
        lab.shape("h1", "h2", 20)
        t0 = time.monotonic()
        shaped = _throughput_mbit(lab, "h1", "h2", 3_000_000, 5201)
        unshaped = _throughput_mbit(lab, "h1", "h3", 30_000_000, 5202)
        reverse = _throughput_mbit(lab, "h2", "h1", 30_000_000, 5203)
        print(
            f"h1->h2 {shaped:.1f} Mbit/s (20 shaped), h1->h3 {unshaped:.0f}, h2->h1 {reverse:.0f}"
        )
        print(f"measured in {time.monotonic() - t0:.1f} s")
        assert 5 < shaped < 40
        assert unshaped > 100
        assert reverse > 100
    finally:
        lab.clear_shaping()
    cleared = _throughput_mbit(lab, "h1", "h2", 30_000_000, 5204)
    assert cleared > 100


def _leftovers(prefix: str) -> list[str]:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    found = [ln.split()[0] for ln in netns.splitlines() if ln.startswith(f"{prefix}-")]
    found += [
        ln.split(":")[1].strip().split("@")[0]
        for ln in links.splitlines()
        if ln.split(":")[1].strip().startswith(prefix)
    ]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_down_removes_everything_and_tolerates_a_crashed_run(lab):
    prefix = "leptdn"
    crashed = Lab(2, prefix=prefix, first_ip=100).up()  # never downed: "crashed"
    stale_pids = [h.sshd_pid for h in crashed.hosts]
    second = Lab(2, prefix=prefix, first_ip=100)
    try:
        second.up()  # must purge the stale netns/bridge of the same prefix
        for h in second.hosts:
            r = ssh(second, h.name, "hostname")
            assert (r.returncode, r.stdout.strip()) == (0, h.name), r.stderr
        assert sorted(_leftovers(prefix)) == sorted(
            [f"{prefix}-h1", f"{prefix}-h2", f"{prefix}br0", f"{prefix}v1", f"{prefix}v2"]
        )
    finally:
        second.down()
    assert _leftovers(prefix) == []
    assert not second.base.exists()
    assert not any(_alive(pid) for pid in stale_pids if pid)
    second.down()  # idempotent
    crashed.down()  # harmless after someone else purged its network
    assert not crashed.base.exists()
    assert _leftovers(prefix) == []
    # the module lab (same subnet, other prefix) is unaffected
    assert ssh(lab, "h1", "hostname").stdout.strip() == "h1"
