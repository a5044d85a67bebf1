"""Shared fixtures: an operator home for every test, and the session-wide sshd lab."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import Lab

LAB_HOSTS = 4


@pytest.fixture(autouse=True)
def operator_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs as an operator with an empty home: no stray ssh config, key or state."""
    home = tmp_path / "operator"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    for var in ("SSH_AUTH_SOCK", "SSH_AGENT_PID", "LEPTONCTL_INVENTORY", "LEPTONCTL_STATE"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    reason = Lab.unavailable_reason()
    if reason is not None:
        pytest.skip(f"the sshd lab is unavailable: {reason}")
    # Two test runs at once (two worktrees, two developers on one machine) need two labs:
    # LEPTONCTL_TEST_LAB=PREFIX:FIRST_IP gives this run its own namespaces and addresses.
    prefix, _, first_ip = os.environ.get("LEPTONCTL_TEST_LAB", "lepi:40").partition(":")
    with Lab(LAB_HOSTS, prefix=prefix, first_ip=int(first_ip or 40)) as running:
        yield running


@pytest.fixture
def lab_operator(lab: Lab, operator_home: Path) -> Path:
    """The test's operator home, holding the lab's key and known_hosts, all sshd hosts up."""
    for host in lab.hosts:
        if host.sshd_pid is None:
            lab.start_sshd(host.name)
    lab.refresh_known_hosts()
    ssh = operator_home / ".ssh"
    for name in ("id_ed25519", "id_ed25519.pub", "known_hosts"):
        target = ssh / name
        target.write_bytes((lab.operator_home / ".ssh" / name).read_bytes())
        os.chmod(target, 0o600)
    return operator_home


def write_inventory(
    path: Path, lab: Lab, names: list[str] | None = None, local: bool = False
) -> Path:
    """A YAML inventory of lab hosts (and optionally this machine)."""
    lines = ["all:", "  vars:", "    ansible_user: root", "  hosts:"]
    for host in lab.hosts:
        if names is None or host.name in names:
            lines += [f"    {host.name}:", f"      ansible_host: {host.ip}"]
    if local:
        lines += ["    local:", "      ansible_connection: local"]
    path.write_text("\n".join(lines) + "\n")
    return path
