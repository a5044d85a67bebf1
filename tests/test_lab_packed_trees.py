"""Datasets of many small files on real sshd hosts (issue 17, items 2-3): a 10,000-file tree
is stored in about (bytes / chunk size) packed chunks, not a chunk per file, from this
machine and from a host; it comes back byte-identical (empty files, empty directories, deep
paths, long and non-ASCII names, symlinks); changing one file re-sends about one chunk; a
lost packed chunk is found by verify and restored by repair; a job's --input sees the
files; rm frees the chunks.  And one 100,000-file tree through put, ls, get, verify, repair,
a job's --input, cp from this machine and host to host (and a no-op cp), and rm.
The put from a host runs on both lab profiles, the rest on the root lab.

Cost on the 2-core CI machine (idle): about 25 s per 10,000-file test (the tree is made
once), and about 2 minutes for the 100,000-file test (making and comparing the trees included);
more when the machine is shared."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

from tests.conftest import write_inventory
from tests.helpers import cli, tree_listing
from tests.lab import Lab

pytestmark = pytest.mark.lab

DIRS, FILES, SIZE = 100, 100, 4096
CHUNK = 4 << 20  # packs of about 2 MiB: 40 MiB makes 10 to 40 chunks
ODD = {  # what a tree of real data has besides plain files: each keeps its meaning
    "empty.txt": b"",
    "deep/" + "/".join(f"level{i}" for i in range(30)) + "/leaf.txt": b"deep\n",
    "names/" + "n" * 200 + ".bin": b"long name\n",
    "names/naïve café ✓.txt": b"non-ASCII\n",
}


def make_tree(root: Path, dirs: int = DIRS, files: int = FILES, size: int = SIZE) -> Path:
    """The same bytes every run (seeded): where packs end is the same too."""
    rng = random.Random(f"{dirs}x{files}x{size}")
    for d in range(dirs):
        sub = root / f"d{d:03}"
        sub.mkdir(parents=True)
        for f in range(files):
            (sub / f"f{f:03}.bin").write_bytes(rng.randbytes(size))
    for rel, data in ODD.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "empty-dir").mkdir()
    (root / "d000" / "to-sibling").symlink_to("../d001/f000.bin")
    (root / "dangling").symlink_to("/nonexistent/target")
    (root / "d001" / "f001.bin").chmod(0o600)
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[str, int, str]]]:
    root = make_tree(tmp_path_factory.mktemp("packed") / "tree")
    return root, tree_listing(root)


@pytest.fixture
def lab(any_lab: Lab) -> Lab:
    return any_lab


def on_the_root_lab_only(lab: Lab) -> None:
    """The big trees from this machine run once: what differs on the cluster profile (a
    user's hosts, a shared home, central keys) is the host side, which the put from a host
    covers there."""
    if lab.profile is not None:
        pytest.skip("the root lab runs this one")


@pytest.fixture
def inv(lab: Lab, lab_operator: Path, tmp_path: Path) -> Path:
    return write_inventory(tmp_path / "inventory.yaml", lab)


def ok(capsys: pytest.CaptureFixture[str], inv: Path, *args: str) -> dict:
    code, out, err = cli(capsys, "-i", str(inv), *args, "--json")
    assert code == 0, out + err
    return json.loads(out)


def chunks_of(capsys: pytest.CaptureFixture[str], inv: Path, ref: str) -> dict[str, list[str]]:
    return {c["hash"]: c["replicas"] for c in ok(capsys, inv, "data", "ls", ref)["chunks"]}


def chunk_on(lab: Lab, host: str, digest: str) -> Path:
    return lab.path_on(host, f"{lab.data_dir}/chunks/{digest[:2]}/{digest}")


def test_a_tree_from_this_machine_is_packed_comes_back_identical_and_one_change_sends_one_chunk(
    lab: Lab, inv: Path, tree: tuple[Path, dict[str, tuple[str, int, str]]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    on_the_root_lab_only(lab)
    src = tmp_path / "src"
    shutil.copytree(tree[0], src, symlinks=True)
    put = ok(capsys, inv, "data", "put", str(src), "packed", "-k", "2", "--chunk-size", "4MiB")
    total = sum(os.path.getsize(p) for p in src.rglob("*") if p.is_file() and not p.is_symlink())
    assert total // CHUNK <= put["chunks"] <= 4 * total // CHUNK, put  # not 10,000
    first = chunks_of(capsys, inv, "packed")
    assert all(len(hosts) == 2 for hosts in first.values())
    dest = tmp_path / "out"
    ok(capsys, inv, "data", "get", "packed", str(dest))
    assert tree_listing(dest) == tree[1]

    (src / "d050" / "f050.bin").write_bytes(os.urandom(SIZE))  # one file of 10,000 changed
    again = ok(capsys, inv, "data", "put", str(src), "packed", "-k", "2", "--chunk-size", "4MiB")
    second = chunks_of(capsys, inv, "packed")
    assert again["version"] == 2 and 1 <= len(set(second) - set(first)) <= 3
    assert again["sent_bytes"] <= 2 * 3 * CHUNK  # K copies of at most 3 chunks, not 40 MiB
    assert again["reused_chunks"] >= again["chunks"] - 3

    # rm of both versions frees every chunk on every host
    ok(capsys, inv, "data", "rm", "packed")
    for digest, hosts in {**first, **second}.items():
        assert not any(chunk_on(lab, h, digest).exists() for h in hosts)


def test_a_tree_put_from_a_host_verify_repair_and_a_job_input_see_the_packed_files(
    lab: Lab, inv: Path, tree: tuple[Path, dict[str, tuple[str, int, str]]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    h1 = lab.hosts[0].name
    on_h1 = lab.path_on(h1, "/tmp/packedtree")
    shutil.rmtree(on_h1, ignore_errors=True)
    shutil.copytree(tree[0], on_h1, symlinks=True)
    lab.give(on_h1)
    put = ok(capsys, inv, "data", "put", f"{h1}:/tmp/packedtree", "hosted", "-k", "2",
             "--chunk-size", "4MiB")  # fmt: skip
    assert put["chunks"] <= 60, put
    held = chunks_of(capsys, inv, "hosted")
    dest = tmp_path / "out"
    ok(capsys, inv, "data", "get", "hosted", str(dest))
    assert tree_listing(dest) == tree[1]

    digest, hosts = next(iter(held.items()))  # a packed chunk lost on one host
    victim = chunk_on(lab, hosts[0], digest)
    victim.chmod(0o600)
    victim.unlink()
    code, out, err = cli(capsys, "-i", str(inv), "data", "verify", "hosted", "--json")
    assert code != 0 and digest in out, out + err
    ok(capsys, inv, "data", "repair", "hosted")
    assert ok(capsys, inv, "data", "verify", "hosted")["healthy"]
    assert all(len(h) == 2 for h in chunks_of(capsys, inv, "hosted").values())

    code, out, err = cli(
        capsys, "-i", str(inv), "submit", "--input", "hosted", "--wait", "--json", "--",
        "sh", "-c", 'cd "$LEPTON_INPUT_HOSTED" && find . -type f | wc -l && '
        'cat "names/naïve café ✓.txt" && readlink d000/to-sibling',
    )  # fmt: skip
    assert code == 0, out + err
    job_id = json.loads(out.splitlines()[0])["id"]
    code, log, _ = cli(capsys, "-i", str(inv), "logs", str(job_id))
    files = sum(1 for kind, _, _ in tree[1].values() if kind == "file")
    assert log.split() == [str(files), "non-ASCII", "../d001/f000.bin"], log


def test_a_tree_of_100000_files_put_ls_get_verify_repair_input_cp_rm(
    lab: Lab, inv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    on_the_root_lab_only(lab)
    src = make_tree(tmp_path / "big", dirs=400, files=250, size=512)
    want = tree_listing(src)
    put = ok(capsys, inv, "data", "put", str(src), "huge", "-k", "2", "--chunk-size", "16MiB")
    assert put["chunks"] <= 4 * put["size"] // (16 << 20), put  # 50 MiB: a few packs
    row = next(d for d in ok(capsys, inv, "data", "ls")["datasets"] if d["name"] == "huge")
    assert row["files"] == 100_000 + len(ODD)
    dest = tmp_path / "out"
    ok(capsys, inv, "data", "get", "huge", str(dest))
    assert tree_listing(dest) == want
    assert ok(capsys, inv, "data", "verify", "huge")["healthy"]
    held = chunks_of(capsys, inv, "huge")

    digest, hosts = next(iter(held.items()))  # a pack of ~thousands of files lost on a host
    victim = chunk_on(lab, hosts[0], digest)
    victim.chmod(0o600)
    victim.unlink()
    ok(capsys, inv, "data", "repair", "huge")
    assert victim.exists() or all(len(h) == 2 for h in chunks_of(capsys, inv, "huge").values())
    assert ok(capsys, inv, "data", "verify", "huge")["healthy"]

    code, out, err = cli(
        capsys, "-i", str(inv), "submit", "--input", "huge", "--wait", "--json", "--",
        "sh", "-c", 'cd "$LEPTON_INPUT_HUGE" && find . -type f | wc -l',
    )  # fmt: skip
    assert code == 0, out + err
    job_id = json.loads(out.splitlines()[0])["id"]
    code, log, _ = cli(capsys, "-i", str(inv), "logs", str(job_id))
    assert log.split() == [str(sum(1 for kind, _, _ in want.values() if kind == "file"))]

    # cp of the same tree: this machine -> h1, then h1 -> h2 host to host, then a no-op
    h1, h2 = lab.hosts[0].name, lab.hosts[1].name
    ok(capsys, inv, "cp", str(src), f"{h1}:/tmp/bigtree")
    ok(capsys, inv, "cp", f"{h1}:/tmp/bigtree", f"{h2}:/tmp/bigtree")
    assert tree_listing(lab.path_on(h2, "/tmp/bigtree")) == want
    again = ok(capsys, inv, "cp", f"{h1}:/tmp/bigtree", f"{h2}:/tmp/bigtree")
    assert again["files_sent"] == 0 and again["files_up_to_date"] >= 100_000, again
    for host in (h1, h2):
        shutil.rmtree(lab.path_on(host, "/tmp/bigtree"))
    ok(capsys, inv, "data", "rm", "huge")
    for digest, hosts in held.items():
        assert not any(chunk_on(lab, h, digest).exists() for h in hosts)
