"""`cp` of trees on real sshd hosts (issue 17, item 4): host to host, host to this machine and
back, byte-identical with empty files, empty directories, deep paths, long and non-ASCII names
and symlinks; a second copy sends nothing (rsync's quick check: size and mtime), touching one
file re-sends that file only, and --checksum finds a change that kept size and mtime. Runs on
the root lab and on the cluster profile (a tree of ~200 files: a few seconds per route); one
10,000-file tree on the root lab (about 10 s)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from tests.conftest import _operator_for, write_inventory
from tests.helpers import cli
from tests.lab import Lab

pytestmark = pytest.mark.lab

LONG = "l" * 200 + ".bin"
ODD = "ünïcødé 名前 'quoted' $x.txt"
DEEP = "/".join(f"level{i}" for i in range(12))


@pytest.fixture
def lab(any_lab: Lab) -> Lab:
    return any_lab


@pytest.fixture
def inv(lab: Lab, lab_operator: Path, tmp_path: Path) -> Path:
    return write_inventory(tmp_path / "inventory.yaml", lab)


def cp_json(capsys: pytest.CaptureFixture[str], inv: Path, *args: str) -> dict[str, object]:
    code, out, err = cli(capsys, "-i", str(inv), "cp", *args, "--json")
    assert code == 0, out + err
    report: dict[str, object] = json.loads(out)
    return report


def make_tree(root: Path) -> int:
    """The tree every test copies; the number of regular files in it."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "small").mkdir(parents=True)
    for i in range(150):
        (root / "small" / f"f{i:03}").write_bytes(os.urandom(i * 37))  # f000 is empty
    (root / "empty-dir" / "inner-empty").mkdir(parents=True)
    (root / DEEP).mkdir(parents=True)
    (root / DEEP / "bottom.txt").write_bytes(b"deep down\n")
    (root / LONG).write_bytes(os.urandom(5000))
    (root / ODD).write_bytes("non-ASCII bytes: é\n".encode())
    (root / "big.bin").write_bytes(os.urandom(3 << 20))  # not packed: a frame of its own
    (root / "run.sh").write_bytes(b"#!/bin/sh\n")
    (root / "run.sh").chmod(0o750)
    (root / "link").symlink_to("small/f001")
    (root / "dangling").symlink_to("no/such/file")
    return 150 + 5


def listing(root: Path) -> dict[str, tuple[object, ...]]:
    """rel path -> (kind, mode, sha256 and mtime of a file, or a link's target)."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel, st = str(path.relative_to(root)), os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                out[rel] = ("file", stat.S_IMODE(st.st_mode), digest, st.st_mtime_ns)
    return out


ROUTES = [("h1", "h2"), ("h1", "local"), ("local", "h1")]


@pytest.mark.parametrize("route", ROUTES, ids=["h1-h2", "h1-operator", "operator-h1"])
def test_a_tree_copies_identically_then_only_what_changed_is_sent(
    lab: Lab,
    inv: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    route: tuple[str, str],
) -> None:
    ends = []
    for end, name in zip(route, ("tc-src", "tc-dst"), strict=True):
        if end == "local":
            ends.append((str(tmp_path / name), tmp_path / name))
        else:
            path = f"{lab.writable_dir}/{name}"
            shutil.rmtree(lab.path_on(end, path), ignore_errors=True)
            ends.append((f"{end}:{path}", lab.path_on(end, path)))
    (src, src_real), (dst, dst_real) = ends
    files = make_tree(src_real)
    lab.give(src_real)
    want = listing(src_real)

    first = cp_json(capsys, inv, src, dst)
    assert listing(dst_real) == want
    assert (first["files"], first["files_sent"], first["files_up_to_date"]) == (files, files, 0)
    assert not list(dst_real.rglob("*.lepton-part*"))

    code, out, err = cli(capsys, "-i", str(inv), "cp", src, dst)  # nothing changed
    assert code == 0, err
    assert f": 0 bytes sent, {files} files up to date" in out
    again = cp_json(capsys, inv, src, dst)
    assert (again["bytes"], again["files_sent"], again["files_up_to_date"]) == (0, 0, files)
    (dst_real / "empty-dir" / "inner-empty").rmdir()  # nothing to send, something to make
    (dst_real / "link").unlink()
    (dst_real / "link").symlink_to("elsewhere")
    remade = cp_json(capsys, inv, src, dst)
    assert (remade["bytes"], remade["files_up_to_date"]) == (0, files)
    assert listing(dst_real) == want

    touched = src_real / "small" / "f100"
    touched.write_bytes(os.urandom(3700))  # new bytes and a new mtime
    one = cp_json(capsys, inv, src, dst)
    assert (one["bytes"], one["files_sent"], one["files_up_to_date"]) == (3700, 1, files - 1)
    assert listing(dst_real) == listing(src_real)

    sneaky = src_real / "small" / "f050"  # same size, same mtime, other bytes
    st = os.stat(sneaky)
    sneaky.write_bytes(os.urandom(st.st_size))
    os.utime(sneaky, ns=(st.st_atime_ns, st.st_mtime_ns))
    quick = cp_json(capsys, inv, src, dst)
    assert (quick["bytes"], quick["files_sent"]) == (0, 0)  # rsync's quick check trusts it
    assert (dst_real / "small" / "f050").read_bytes() != sneaky.read_bytes()
    full = cp_json(capsys, inv, src, dst, "--checksum")
    assert (full["bytes"], full["files_sent"]) == (st.st_size, 1)
    assert listing(dst_real) == listing(src_real)


@pytest.fixture
def root_operator(root_lab: Lab, operator_home: Path) -> Path:
    return _operator_for(root_lab, operator_home)


def test_ten_thousand_files_host_to_host_then_a_no_op(
    root_lab: Lab, root_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = root_lab
    inv = write_inventory(tmp_path / "inventory.yaml", lab)
    src_real, dst_real = lab.path_on("h1", "/tmp/tc-10k"), lab.path_on("h2", "/tmp/tc-10k")
    for real in (src_real, dst_real):
        shutil.rmtree(real, ignore_errors=True)
    for d in range(100):
        (src_real / f"d{d:03}").mkdir(parents=True)
        for f in range(100):
            (src_real / f"d{d:03}" / f"f{f:03}").write_bytes(os.urandom(4096))
    first = cp_json(capsys, inv, "h1:/tmp/tc-10k", "h2:/tmp/tc-10k")
    assert (first["bytes"], first["files_sent"]) == (10_000 * 4096, 10_000)
    assert listing(dst_real) == listing(src_real)
    again = cp_json(capsys, inv, "h1:/tmp/tc-10k", "h2:/tmp/tc-10k")
    assert (again["bytes"], again["files_up_to_date"]) == (0, 10_000)
