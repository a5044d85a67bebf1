"""The operator as a plain user on a cluster's login node: not root, and with the SAME home as
every host (one NFS export mounted everywhere).  The operator's state, the hosts' default data
dirs and the agent cache then all live in one directory tree; everything still works and stays
private to the user."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import USER_UID, Lab, _keygen

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def login_node(cluster_lab: Lab) -> Iterator[Path]:
    """The user's home as the login node sees it: the hosts' shared /home/USER, with a key
    of the user's own in it (authorized through that same home, and in the central file of
    the hosts that read only that) and the lab's host keys in ~/.ssh/known_hosts."""
    lab = cluster_lab
    home = lab.path_on("h1", lab.home)
    ssh = home / ".ssh"
    pub = _keygen(ssh / "id_ed25519", "lepu@login")
    (ssh / "known_hosts").write_text(lab.known_hosts.read_text())
    for host in lab.hosts:
        lab.authorize(host.name, pub, user=lab.user)
    made = [ssh / "id_ed25519", ssh / "id_ed25519.pub", ssh / "known_hosts"]
    for path in made:
        os.chown(path, USER_UID, USER_UID)
    try:
        yield home
    finally:
        for path in made:
            path.unlink(missing_ok=True)
        shutil.rmtree(home / ".local", ignore_errors=True)


def user_python() -> tuple[str, str]:
    """A python of this test run's version that the lab user may execute (the test venv's
    may sit under root's 0700 home), and the venv's site-packages for leptonctl's deps."""
    real = Path(sys.executable).resolve()
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (real, Path("/usr/bin") / version, Path("/usr/local/bin") / version):
        parents_open = all(p.stat().st_mode & 0o001 for p in candidate.parents)
        if candidate.is_file() and parents_open and candidate.stat().st_mode & 0o001:
            site = [p for p in sys.path if p.endswith("site-packages")]
            return str(candidate), os.pathsep.join([str(ROOT), *site])
    pytest.skip(f"no {version} that a non-root user may run (the venv's is {real})")


def as_user(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`leptonctl ARGS` run by the lab user (uid 2901) with a clean login environment."""
    python, path = user_python()
    env = {
        "HOME": str(home),
        "USER": "lepu",
        "LOGNAME": "lepu",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": path,
        "LANG": "C.UTF-8",
    }
    argv = ["setpriv", f"--reuid={USER_UID}", f"--regid={USER_UID}", "--clear-groups"]
    argv += [python, "-m", "leptonctl", *args]
    return subprocess.run(
        argv, env=env, cwd=home, capture_output=True, text=True, timeout=120, check=False
    )


def test_a_plain_user_on_the_shared_home_runs_status_jobs_and_data(
    cluster_lab: Lab, login_node: Path
) -> None:
    lab, home = cluster_lab, login_node
    inventory = home / "hosts.yaml"
    lines = ["all:", "  vars:", f"    ansible_user: {lab.user}", "  hosts:"]
    for host in lab.hosts:  # default data dirs: ~/.local/share/leptonctl, shared by all
        lines += [f"    {host.name}:", f"      ansible_host: {host.ip}"]
        if host.name in lab.profile.no_python:  # type: ignore[union-attr]
            lines.append("      ansible_python_interpreter: /usr/bin/python3.11")
    inventory.write_text("\n".join(lines) + "\n")
    os.chown(inventory, USER_UID, USER_UID)
    inv = ("-i", str(inventory))

    done = as_user(home, *inv, "status", "--json")
    assert done.returncode == 0, done.stderr
    states = {h["host"]: h["state"] for h in json.loads(done.stdout)["hosts"]}
    assert states == {h.name: "up" for h in lab.hosts}

    for host in lab.hosts:
        done = as_user(home, *inv, "submit", "--limit", host.name, "--wait", "--json", "--",
                       "id -u; hostname")  # fmt: skip
        assert done.returncode == 0, done.stderr
        job = json.loads(done.stdout.splitlines()[0])["id"]
        log = as_user(home, *inv, "logs", str(job))
        assert log.stdout.split() == [str(USER_UID), host.name], log.stderr

    src = home / "weights.bin"
    src.write_bytes(os.urandom(200_000))
    os.chown(src, USER_UID, USER_UID)
    done = as_user(home, *inv, "data", "put", str(src), "weights", "-k", "1", "--json")
    assert done.returncode == 0, done.stderr
    done = as_user(home, *inv, "data", "get", "weights", str(home / "back.bin"))
    assert done.returncode == 0, done.stderr
    assert (home / "back.bin").read_bytes() == src.read_bytes()

    state = home / ".local" / "share" / "leptonctl"
    for path in (state, *state.rglob("*")):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode) or "inputs" in path.relative_to(state).parts[:1]:
            continue
        assert st.st_uid == USER_UID and not st.st_mode & 0o077, (oct(st.st_mode), path)
