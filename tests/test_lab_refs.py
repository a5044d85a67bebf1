"""Two state stores on the same real sshd hosts: a chunk is deleted only when no store
references it.  Store A is a laptop's, store B the cron store the README recommends for
`maintain`; each test gives the hosts a fresh data dir, so it starts from empty hosts."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from leptonctl.errors import ExitCode
from tests.lab import Lab

pytestmark = pytest.mark.lab


class Operator:
    """One state store driving the lab's hosts."""

    def __init__(self, capsys: pytest.CaptureFixture[str], inv: Path, state: Path) -> None:
        self.capsys, self.inv, self.state = capsys, inv, state

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = run(["-i", str(self.inv), "--state", str(self.state), *args])
        captured = self.capsys.readouterr()
        return code, captured.out, " ".join(captured.err.split())

    def chunks(self, ref: str) -> list[dict]:
        code, out, err = self("data", "ls", ref, "--json")
        assert code == 0, err
        return list(json.loads(out)["chunks"])


@pytest.fixture
def data_dir() -> str:
    return f"/root/refs-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def inv(lab: Lab, lab_operator: Path, tmp_path: Path, data_dir: str) -> Path:
    lines = ["all:", "  vars:", "    ansible_user: root", f"    data_dir: {data_dir}", "  hosts:"]
    for host in lab.hosts:
        lines += [f"    {host.name}:", f"      ansible_host: {host.ip}"]
    path = tmp_path / "inventory.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def a(capsys: pytest.CaptureFixture[str], inv: Path, tmp_path: Path) -> Operator:
    return Operator(capsys, inv, tmp_path / "laptop" / "state.db")


@pytest.fixture
def b(capsys: pytest.CaptureFixture[str], inv: Path, tmp_path: Path) -> Operator:
    return Operator(capsys, inv, tmp_path / "cron" / "state.db")


def chunk_file(lab: Lab, host: str, data_dir: str, digest: str) -> Path:
    return lab.path_on(host, f"{data_dir}/chunks/{digest[:2]}/{digest}")


def test_a_gc_run_from_another_state_store_keeps_this_stores_datasets(
    lab: Lab, a: Operator, b: Operator, tmp_path: Path
) -> None:
    src = tmp_path / "weights.bin"
    src.write_bytes(os.urandom(600_000))
    code, _, err = a("data", "put", str(src), "weights", "-k", "2", "--chunk-size", "128KiB")
    assert code == 0, err
    other = tmp_path / "other.bin"
    other.write_bytes(os.urandom(50_000))
    assert b("data", "put", str(other), "other", "-k", "2")[0] == 0
    code, out, err = b("data", "gc", "--json")  # the nightly playbook of the cron store
    assert code == 0, err
    assert sum(json.loads(out)["removed"].values()) == 0
    code, out, _ = a("data", "verify", "--json")
    assert code == 0, out  # before refs: "0/2 replicas ok", the dataset gone
    assert a("data", "get", "weights", str(tmp_path / "back"))[0] == 0
    assert (tmp_path / "back").read_bytes() == src.read_bytes()
    assert b("data", "verify")[0] == 0


def test_rm_keeps_chunks_that_another_store_adopted(
    lab: Lab, a: Operator, b: Operator, data_dir: str, tmp_path: Path
) -> None:
    src = tmp_path / "shared.bin"
    src.write_bytes(os.urandom(300_000))
    assert a("data", "put", str(src), "shared", "-k", "2", "--chunk-size", "128KiB")[0] == 0
    code, out, err = b("data", "put", str(src), "mine", "-k", "2", "--chunk-size", "128KiB")
    assert code == 0, err
    assert "already in place" in out  # B adopted A's copies instead of sending them again
    code, out, err = a("data", "rm", "shared")
    assert code == 0, err
    assert b("data", "verify")[0] == 0
    assert b("data", "get", "mine", str(tmp_path / "back"))[0] == 0
    assert (tmp_path / "back").read_bytes() == src.read_bytes()
    assert "another state store uses them" in err
    code, out, err = b("data", "rm", "mine", "--json")  # the last user: now they go
    assert code == 0, err
    for host in lab.hosts:
        chunks = lab.path_on(host.name, f"{data_dir}/chunks")
        assert not [p for p in chunks.rglob("*") if len(p.name) == 64], host.name


def test_gc_that_cannot_reach_a_host_says_it_skipped_it_and_exits_3(
    lab: Lab, a: Operator, tmp_path: Path
) -> None:
    src = tmp_path / "x.bin"
    src.write_bytes(os.urandom(10_000))
    assert a("data", "put", str(src), "x", "-k", "2")[0] == 0
    down = lab.hosts[-1].name
    lab.stop_sshd(down)
    try:
        code, _, err = a("data", "gc")
        assert code == ExitCode.HOSTS_UNREACHABLE
        assert f"{down}: skipped, nothing deleted there" in err
    finally:
        lab.start_sshd(down)
    assert a("data", "gc")[0] == 0


def test_chunks_from_before_refs_stay_until_gc_release_legacy(
    lab: Lab, a: Operator, data_dir: str, tmp_path: Path
) -> None:
    host = lab.hosts[0].name
    old = os.urandom(5000)
    digest = hashlib.sha256(old).hexdigest()
    path = chunk_file(lab, host, data_dir, digest)  # left by an older leptonctl
    path.parent.mkdir(parents=True)
    path.write_bytes(old)
    path.chmod(0o400)
    code, out, err = a("data", "gc")
    assert code == 0, err
    assert "gc: deleted 0 unreferenced chunk(s)" in out
    assert f"{host}: 1 chunk(s) stored before refs existed are kept" in err
    assert "data gc --release-legacy" in err
    assert path.exists()
    code, out, err = a("data", "gc", "--release-legacy")
    assert code == 0, err
    assert "gc: deleted 1 unreferenced chunk(s)" in out and f"{host}: legacy pin released" in err
    assert not path.exists()


def test_repair_gives_another_store_a_good_copy_back_for_the_corrupt_one_it_deleted(
    lab: Lab, a: Operator, b: Operator, data_dir: str, tmp_path: Path
) -> None:
    src = tmp_path / "rot.bin"
    src.write_bytes(os.urandom(100_000))
    two = f"{lab.hosts[0].name},{lab.hosts[1].name}"
    ballast = tmp_path / "ballast.bin"  # so that repair prefers the two empty hosts
    ballast.write_bytes(os.urandom(400_000))
    assert a("data", "put", str(ballast), "ballast", "-k", "2", "-l", two)[0] == 0
    assert a("data", "put", str(src), "rot", "-k", "2", "-l", two)[0] == 0
    assert b("data", "put", str(src), "rot", "-k", "2", "-l", two)[0] == 0  # adopts them
    (chunk,) = a.chunks("rot")
    victim = chunk["replicas"][0]
    path = chunk_file(lab, victim, data_dir, chunk["hash"])
    path.chmod(0o600)
    path.write_bytes(b"bit rot" + path.read_bytes()[7:])
    assert a("data", "verify")[0] == 4
    code, out, err = a("data", "repair", "--json")
    assert code == 0, err
    assert json.loads(out)["corrupt_removed"] == 1
    (healed,) = a.chunks("rot")
    assert set(healed["replicas"]) - set(two.split(","))  # A's new copy went elsewhere ...
    assert hashlib.sha256(path.read_bytes()).hexdigest() == chunk["hash"]  # ... B's is back
    assert b("data", "verify")[0] == 0


def test_chunks_staged_for_a_job_input_are_pinned_until_the_version_is_removed(
    lab: Lab, a: Operator, b: Operator, data_dir: str, tmp_path: Path
) -> None:
    holder, runner = lab.hosts[0].name, lab.hosts[1].name
    assert a("data", "gc")[0] == 0  # refs set up on every host (no legacy pin of what comes)
    src = tmp_path / "input.bin"
    src.write_bytes(os.urandom(200_000))
    assert a("data", "put", str(src), "inp", "-k", "1", "-l", holder)[0] == 0
    (chunk,) = a.chunks("inp")
    code, out, err = a(
        "submit", "--input", "inp:/tmp/inp", "--limit", runner, "--wait", "--json", "--",
        "cmp", "/tmp/inp", "/tmp/inp",
    )  # fmt: skip
    assert code == 0, (out, err)
    staged = chunk_file(lab, runner, data_dir, chunk["hash"])
    assert staged.exists()  # copied to the job's host before it started
    assert b("data", "gc")[0] == 0  # another store: the staging pin keeps it
    assert staged.exists()
    assert a("data", "rm", "inp")[0] == 0  # the last user forgets it: it goes everywhere
    assert not staged.exists()
    assert not chunk_file(lab, holder, data_dir, chunk["hash"]).exists()


def test_rm_of_a_version_a_pending_job_needs_is_refused_unless_forced(
    lab: Lab, a: Operator, tmp_path: Path
) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(20_000))
    assert a("data", "put", str(src), "needed", "-k", "1")[0] == 0
    names = ",".join(h.name for h in lab.hosts)
    assert a("node", "drain", names, "--reason", "test")[0] == 0  # the job stays PENDING
    code, out, err = a("submit", "--input", "needed", "--json", "--", "true")
    assert code == 0, err
    job_id = json.loads(out.splitlines()[0])["id"]
    code, _, err = a("data", "rm", "needed@1")
    assert code == ExitCode.USAGE
    assert f"needed@1 is the input of job(s) {job_id} (PENDING)" in err and "--force" in err
    assert len(a.chunks("needed")) == 1  # still there
    code, out, err = a("data", "rm", "needed@1", "--force", "--json")
    assert code == 0, err
    assert json.loads(out)["versions"] == [1]


def test_rebalance_moves_this_stores_copies_but_never_deletes_another_stores(
    lab: Lab, a: Operator, b: Operator, data_dir: str, tmp_path: Path
) -> None:
    first = lab.hosts[0].name
    mine, shared = tmp_path / "mine.bin", tmp_path / "shared.bin"
    mine.write_bytes(os.urandom(8 * 65536))
    shared.write_bytes(os.urandom(8 * 65536))
    for name, path in (("mine", mine), ("shared", shared)):
        code, _, err = a("data", "put", str(path), name, "-k", "1", "-l", first,
                         "--chunk-size", "64KiB")  # fmt: skip
        assert code == 0, err
    code, _, err = b("data", "put", str(shared), "theirs", "-k", "1", "-l", first,
                     "--chunk-size", "64KiB")  # fmt: skip
    assert code == 0, err
    code, out, err = a("data", "rebalance", "--tolerance", "0", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["moves_done"] > 0 and report["moves_done"] == report["moves_planned"]
    moved = [c for c in a.chunks("mine") if c["replicas"] != [first]]
    assert len(moved) == report["moves_done"]
    for chunk in moved:  # copied first, then deleted at the source
        assert not chunk_file(lab, first, data_dir, chunk["hash"]).exists()
    assert all(c["replicas"] == [first] for c in a.chunks("shared"))  # B pins these there
    assert a("data", "verify")[0] == 0
    assert b("data", "verify")[0] == 0
