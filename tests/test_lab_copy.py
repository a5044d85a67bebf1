"""`cp` and `data get` with real sshd hosts where they used to go wrong: a copy within one
host, a file into an existing directory, trees of empty things, and a destination that is
too small (refused before sending) or fills up on the way (what was written is removed
again), on a host and on this machine.  Every test runs on the root lab and again on the
cluster profile (a non-root user on a shared home, a central-keys host, no python3 on h4)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from tests.conftest import write_inventory
from tests.lab import Lab

pytestmark = pytest.mark.lab


@pytest.fixture
def lab(any_lab: Lab) -> Lab:
    return any_lab


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())  # rich wraps long messages


@pytest.fixture
def inv(lab: Lab, lab_operator: Path, tmp_path: Path) -> Path:
    return write_inventory(tmp_path / "inventory.yaml", lab)


def test_a_copy_within_one_host_happens_on_that_host(
    lab: Lab, inv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h1 = lab.hosts[0].name
    # With a measured network, a route from h1 to h1 is no question to ask the graph.
    h2 = lab.hosts[1].name
    code, _, err = cli(
        capsys, "-i", str(inv), "net", "probe", "-l", f"{h1},{h2}", "--seconds", "0.2"
    )
    assert code == 0, err
    payload = os.urandom(2 << 20)
    lab.path_on(h1, "/tmp/same.src").write_bytes(payload)
    tree = lab.path_on(h1, "/tmp/same-tree")
    (tree / "d").mkdir(parents=True, exist_ok=True)
    (tree / "d" / "f").write_bytes(b"inside")
    (tree / "e").write_bytes(b"")
    code, _, err = cli(capsys, "-i", str(inv), "cp", f"{h1}:/tmp/same.src", f"{h1}:/tmp/same.dst")
    assert code == 0, err
    assert lab.path_on(h1, "/tmp/same.dst").read_bytes() == payload
    code, _, err = cli(capsys, "-i", str(inv), "cp", f"{h1}:/tmp/same-tree", f"{h1}:/tmp/same-2")
    assert code == 0, err
    assert lab.path_on(h1, "/tmp/same-2/d/f").read_bytes() == b"inside"
    assert lab.path_on(h1, "/tmp/same-2/e").read_bytes() == b""


def test_host_to_host_into_a_directory_and_trees_of_empty_things(
    lab: Lab, inv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h1, h2 = lab.hosts[0].name, lab.hosts[1].name
    payload = os.urandom(1 << 20)
    lab.path_on(h1, "/tmp/into.bin").write_bytes(payload)
    lab.path_on(h2, "/tmp/into-dir").mkdir(exist_ok=True)
    lab.give(lab.path_on(h2, "/tmp/into-dir"))
    for _ in range(2):
        code, _, err = cli(
            capsys, "-i", str(inv), "cp", f"{h1}:/tmp/into.bin", f"{h2}:/tmp/into-dir"
        )
        assert code == 0, err
        assert lab.path_on(h2, "/tmp/into-dir/into.bin").read_bytes() == payload
    assert not list(lab.path_on(h2, "/tmp").glob("into-dir*.lepton-part*"))
    empties = lab.path_on(h1, "/tmp/empties")
    (empties / "a" / "b").mkdir(parents=True, exist_ok=True)
    (empties / "a" / "b" / "zero").write_bytes(b"")
    (empties / "zero").write_bytes(b"")
    code, _, err = cli(capsys, "-i", str(inv), "cp", f"{h1}:/tmp/empties", f"{h2}:/tmp/empties2")
    assert code == 0, err
    copied = lab.path_on(h2, "/tmp/empties2")
    assert sorted(str(p.relative_to(copied)) for p in copied.rglob("*")) == [
        "a", "a/b", "a/b/zero", "zero",
    ]  # fmt: skip


@pytest.fixture
def small_disk(lab: Lab) -> Iterator[tuple[str, str]]:
    """A tmpfs of 1 MiB and 8 inodes on the second host, writable by the login user (in the
    host's own mount namespace: seen through run_in only)."""
    host, mount = lab.hosts[1].name, f"{lab.writable_dir}/small"
    lab.run_in(host, ["mkdir", "-p", mount], check=True)
    options = "size=1m,nr_inodes=8,mode=1777"
    lab.run_in(host, ["mount", "-t", "tmpfs", "-o", options, "tmpfs", mount], check=True)
    try:
        yield host, mount
    finally:
        lab.run_in(host, ["umount", mount])


def listing(lab: Lab, host: str, path: str) -> list[str]:
    found = lab.run_in(host, ["find", path, "-mindepth", "1"], check=True).stdout
    return sorted(found.split())


def test_a_copy_too_big_for_the_destination_is_refused_before_sending(
    lab: Lab, inv: Path, small_disk: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    host, mount = small_disk
    h1 = lab.hosts[0].name
    lab.path_on(h1, "/tmp/big.bin").write_bytes(os.urandom(3 << 20))
    code, _, err = cli(capsys, "-i", str(inv), "cp", f"{h1}:/tmp/big.bin", f"{host}:{mount}/big")
    assert code == 1
    assert "not enough space" in err and "nothing was sent" in err
    assert "run the same cp again" not in err
    assert listing(lab, host, mount) == []


def test_a_destination_that_fills_up_removes_what_was_written_and_says_so(
    lab: Lab, inv: Path, small_disk: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    host, mount = small_disk
    h1 = lab.hosts[0].name
    tree = lab.path_on(h1, "/tmp/many")
    tree.mkdir(exist_ok=True)
    for i in range(12):  # few bytes, but more files than the destination has inodes
        (tree / f"f{i:02}").write_bytes(os.urandom(1000))
    code, _, err = cli(capsys, "-i", str(inv), "cp", f"{h1}:/tmp/many", f"{host}:{mount}/many")
    assert code == 1
    assert "ran out of space" in err and "partial files were removed" in err
    left = listing(lab, host, mount)
    assert not [p for p in left if ".lepton-part" in p], left


@pytest.fixture
def small_local_dir(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 1 MiB and 8 inodes on this machine (the lab runs as root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    options = "size=1m,nr_inodes=8"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_data_get_checks_free_space_and_cleans_up_a_full_disk(
    inv: Path, tmp_path: Path, small_local_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "big.bin").write_bytes(os.urandom(3 << 20))
    many = tmp_path / "many"
    many.mkdir()
    for i in range(12):
        (many / f"f{i:02}").write_bytes(os.urandom(1000))
    for src, name in ((tmp_path / "big.bin", "big"), (many, "many")):
        code, _, err = cli(capsys, "-i", str(inv), "data", "put", str(src), name, "-k", "1")
        assert code == 0, err
    code, _, err = cli(capsys, "-i", str(inv), "data", "get", "big", str(small_local_dir / "b"))
    assert code == 1
    assert "not enough space" in err and "nothing was fetched" in err
    assert list(small_local_dir.iterdir()) == []
    code, _, err = cli(capsys, "-i", str(inv), "data", "get", "many", str(small_local_dir / "m"))
    assert code == 1
    assert "ran out of space" in err and "partial files were removed" in err
    assert not list(small_local_dir.rglob("*.lepton-part*"))
