"""Shared fixtures: an operator home for every test, and the session-wide sshd lab."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from leptonctl.store.interface import Store
from leptonctl.store.open import open_store
from tests.fixtures.agent.fake_nvml.model import FakeNvml, build_fake_nvml
from tests.lab import ClusterProfile, Lab
from tests.pg import PgServer, PgUnavailable

LAB_HOSTS = 4


@pytest.fixture(autouse=True)
def operator_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs as an operator with an empty home: no stray ssh config, key or state."""
    home = tmp_path / "operator"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    for var in (
        "SSH_AUTH_SOCK", "SSH_AGENT_PID", "LEPTONCTL_INVENTORY", "LEPTONCTL_STATE",
        "LEPTONCTL_USER",
    ):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(autouse=True)
def same_umask(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that changes the process umask (the agent's main sets 077 for the commands it
    runs) would make later tests write files the lab's non-root user cannot read: restore it,
    and fail the test that leaked it."""
    before = os.umask(0o022)
    os.umask(before)
    yield
    after = os.umask(before)
    assert after == before, f"{request.node.nodeid} left the process umask at {after:04o}"


@pytest.fixture(scope="session")
def fake_nvml(tmp_path_factory: pytest.TempPathFactory) -> FakeNvml:
    """A fake libnvidia-ml.so.1 (tests/fixtures/agent/fake_nvml/fake_nvml.c), compiled once per
    session; ``fake_nvml.env(config)`` is the environment an agent process loads it with.
    Fails (does not skip) without a C compiler."""
    return build_fake_nvml(tmp_path_factory.mktemp("fake-nvml"))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A private PostgreSQL server for the whole run (tests/pg.py); tests that need it
    skip, saying why, where it cannot be started."""
    try:
        server = PgServer.start()
    except PgUnavailable as exc:
        pytest.skip(f"PostgreSQL cannot be started here: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def state_backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A --state value for a new, empty store on each backend: a SQLite file, or a fresh
    database on the private PostgreSQL server (postgresql://...)."""
    if request.param == "sqlite":
        return str(tmp_path / "state" / "state.db")
    server: PgServer = request.getfixturevalue("pg_server")
    return server.new_database()


@pytest.fixture
def any_store(state_backend: str) -> Iterator[Store]:
    """An open store on each backend (closed after the test)."""
    store = open_store(state_backend)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(scope="session")
def root_lab() -> Iterator[Lab]:
    """Hosts where root logs in, each with a private home: the lab of most tests."""
    reason = Lab.unavailable_reason()
    if reason is not None:
        pytest.skip(f"the sshd lab is unavailable: {reason}")
    # Two test runs at once (two worktrees, two developers on one machine) need two labs:
    # LEPTONCTL_TEST_LAB=PREFIX:FIRST_IP gives this run its own namespaces and addresses.
    prefix, first_ip = _lab_address()
    with Lab(LAB_HOSTS, prefix=prefix, first_ip=first_ip) as running:
        yield running


@pytest.fixture(scope="session")
def lab(root_lab: Lab) -> Lab:
    """The root lab; a module that should run on every profile overrides this name with
    ``any_lab`` (``@pytest.fixture def lab(any_lab): return any_lab``)."""
    return root_lab


def _lab_address() -> tuple[str, int]:
    prefix, _, first_ip = os.environ.get("LEPTONCTL_TEST_LAB", "lepi:40").partition(":")
    return prefix, int(first_ip or 40)


# The cluster profile every parametrised lab test also runs on: a non-root user with a chatty
# bash, /home shared by all hosts, h3 taking keys only from a central file, h4 without python3
# on the PATH (inventories name /usr/bin/python3.11 for it: Lab.inventory_vars).
CLUSTER = ClusterProfile(central_keys=frozenset({"h3"}), no_python=frozenset({"h4"}))


@pytest.fixture(scope="session")
def cluster_lab() -> Iterator[Lab]:
    """A second lab that looks like a real cluster (tests/lab.py ClusterProfile)."""
    reason = Lab.unavailable_reason()
    if reason is not None:
        pytest.skip(f"the sshd lab is unavailable: {reason}")
    prefix, first_ip = _lab_address()  # its own namespaces and addresses, next to `lab`'s
    with Lab(LAB_HOSTS, prefix=f"{prefix[:7]}c", first_ip=first_ip + LAB_HOSTS + 1,
             profile=CLUSTER) as running:  # fmt: skip
        yield running


@pytest.fixture(scope="session", params=["root", "cluster"])
def any_lab(request: pytest.FixtureRequest) -> Lab:
    """Each lab profile in turn: a module that overrides ``lab`` with this fixture runs its
    tests on the root lab and again on the cluster profile."""
    fixture = "root_lab" if request.param == "root" else "cluster_lab"
    found: Lab = request.getfixturevalue(fixture)
    return found


@pytest.fixture
def cluster_operator(cluster_lab: Lab, operator_home: Path) -> Path:
    return _operator_for(cluster_lab, operator_home)


@pytest.fixture
def lab_operator(lab: Lab, operator_home: Path) -> Path:
    """The test's operator home, holding the lab's key and known_hosts, all sshd hosts up."""
    return _operator_for(lab, operator_home)


def _operator_for(lab: Lab, operator_home: Path) -> Path:
    lab.unblock_all()
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
    path: Path,
    lab: Lab,
    names: list[str] | None = None,
    local: bool = False,
    host_vars: dict[str, dict[str, str]] | None = None,
) -> Path:
    """A working YAML inventory of lab hosts (and optionally this machine): on a cluster
    profile it logs in as the lab's user, with node-local data dirs and the python that the
    no-python hosts have."""
    lines = ["all:", "  vars:", f"    ansible_user: {lab.user}", "  hosts:"]
    for host in lab.hosts:
        if names is None or host.name in names:
            lines += [f"    {host.name}:", f"      ansible_host: {host.ip}"]
            found = {**lab.inventory_vars(host.name), **(host_vars or {}).get(host.name, {})}
            lines += [f"      {k}: {v}" for k, v in found.items()]
    if local:
        lines += ["    local:", "      ansible_connection: local"]
    path.write_text("\n".join(lines) + "\n")
    return path
