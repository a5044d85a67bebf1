"""A tree of 10,000 small files (100 directories of 100 files of 4 KiB) through every data
path on real sshd hosts: no reply of the agent is one line that some reader's default limit
cuts (issue 17, item 1). The tree is made once for the module; each test compares listings
(path, kind, mode, bytes) with the source."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import write_inventory
from tests.helpers import cli, tree_listing
from tests.lab import Lab

pytestmark = pytest.mark.lab

DIRS, FILES, SIZE = 100, 100, 4096


def make_tree(root: Path) -> Path:
    for d in range(DIRS):
        sub = root / f"d{d:03}"
        sub.mkdir(parents=True)
        for f in range(FILES):
            (sub / f"f{f:03}.bin").write_bytes(os.urandom(SIZE))
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[str, int, str]]]:
    root = make_tree(tmp_path_factory.mktemp("big") / "tree")
    return root, tree_listing(root)


@pytest.fixture(scope="module")
def on_h1(lab: Lab, tree: tuple[Path, dict[str, tuple[str, int, str]]]) -> str:
    """The same tree on h1, at /tmp/bigtree."""
    real = lab.path_on(lab.hosts[0].name, "/tmp/bigtree")
    shutil.rmtree(real, ignore_errors=True)
    shutil.copytree(tree[0], real)
    return "/tmp/bigtree"


@pytest.fixture
def inv(lab: Lab, lab_operator: Path, tmp_path: Path) -> Path:
    return write_inventory(tmp_path / "inventory.yaml", lab)


def test_put_from_this_machine_then_ls_verify_and_get(
    inv: Path, tree: tuple[Path, dict[str, tuple[str, int, str]]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    src, want = tree
    code, out, err = cli(capsys, "-i", str(inv), "data", "put", str(src), "big-local", "-k", "2")
    assert code == 0, out + err
    code, out, err = cli(capsys, "-i", str(inv), "data", "ls", "big-local", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["state"] == "ready" and doc["replicas"] == 2
    code, out, err = cli(capsys, "-i", str(inv), "data", "verify", "big-local", "--json")
    assert code == 0, out + err
    dest = tmp_path / "out"
    code, out, err = cli(capsys, "-i", str(inv), "data", "get", "big-local", str(dest))
    assert code == 0, out + err
    assert tree_listing(dest) == want


def test_put_from_a_host_then_get_to_this_machine(
    lab: Lab, inv: Path, on_h1: str, tree: tuple[Path, dict[str, tuple[str, int, str]]],
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    h1 = lab.hosts[0].name
    code, out, err = cli(
        capsys, "-i", str(inv), "data", "put", f"{h1}:{on_h1}", "big-host", "-k", "2"
    )
    assert code == 0, out + err
    dest = tmp_path / "out"
    code, out, err = cli(capsys, "-i", str(inv), "data", "get", "big-host", str(dest))
    assert code == 0, out + err
    assert tree_listing(dest) == tree[1]


def test_cp_host_to_host_and_host_to_this_machine(
    lab: Lab, inv: Path, on_h1: str, tree: tuple[Path, dict[str, tuple[str, int, str]]],
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    h1, h2 = lab.hosts[0].name, lab.hosts[1].name
    shutil.rmtree(lab.path_on(h2, "/tmp/bigcopy"), ignore_errors=True)
    lab.path_on(h2, "/tmp/bigcopy").mkdir()
    code, out, err = cli(capsys, "-i", str(inv), "cp", f"{h1}:{on_h1}", f"{h2}:/tmp/bigcopy/")
    assert code == 0, out + err
    assert tree_listing(lab.path_on(h2, "/tmp/bigcopy/bigtree")) == tree[1]
    dest = tmp_path / "here"  # not there yet: the tree goes to the path itself
    code, out, err = cli(capsys, "-i", str(inv), "cp", f"{h1}:{on_h1}", str(dest))
    assert code == 0, out + err
    assert tree_listing(dest) == tree[1]
