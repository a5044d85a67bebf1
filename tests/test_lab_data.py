"""Datasets end to end on real sshd hosts: put/get round trips, K distinct replicas, the
one-shot transfer keys, corruption found and healed, a dead host healed onto live ones, an
interrupted put resumed, get falling over from a corrupt replica, rm reclaiming space, a full
disk skipped, and a job with --input seeing the data.  Every test runs on the root lab and
again on the cluster profile (a non-root user on a shared home, node-local data dirs, a host
that takes keys only from a central file, one without python3 on the PATH)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from tests.conftest import write_inventory
from tests.lab import Lab

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def lab(any_lab: Lab) -> Lab:
    return any_lab


def chunks_dir(lab: Lab) -> str:
    return f"{lab.data_dir}/chunks"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = run(list(args))
    return code, capsys.readouterr().out


def make_tree(root: Path, seed: bytes) -> Path:
    """A small tree: a multi-chunk file, an executable, an empty file, a symlink, a subdir."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "weights.bin").write_bytes(random.Random(seed).randbytes(1_300_000))
    (root / "sub" / "run.sh").write_text("#!/bin/sh\necho " + seed.hex() + "\n")
    (root / "sub" / "run.sh").chmod(0o750)
    (root / "sub" / "deeper" / "empty").write_bytes(b"")
    (root / "link").symlink_to("weights.bin")
    return root


def listing(root: Path) -> dict[str, tuple[str, int, bytes | str]]:
    out: dict[str, tuple[str, int, bytes | str]] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = ("link", 0, os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir", path.stat().st_mode & 0o777, b"")
        else:
            out[rel] = ("file", path.stat().st_mode & 0o777, path.read_bytes())
    return out


def chunk_file(lab: Lab, host: str, digest: str) -> Path:
    return lab.path_on(host, f"{chunks_dir(lab)}/{digest[:2]}/{digest}")


def dataset(capsys: pytest.CaptureFixture[str], inv: Path, ref: str) -> dict:
    code, out = cli(capsys, "-i", str(inv), "data", "ls", ref, "--json")
    assert code == 0
    return json.loads(out)


@pytest.fixture
def inv(lab: Lab, lab_operator: Path, tmp_path: Path) -> Path:
    return write_inventory(tmp_path / "inventory.yaml", lab)


def test_put_get_round_trip_of_a_tree_keeps_bytes_and_modes(
    lab: Lab, inv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = make_tree(tmp_path / "src", b"round-trip")
    code, out = cli(
        capsys, "-i", str(inv), "data", "put", str(src), "tree", "-k", "3",
        "--chunk-size", "256KiB", "--json",
    )  # fmt: skip
    assert code == 0, out
    report = json.loads(out)
    assert report["version"] == 1 and report["replicas"] == 3
    doc = dataset(capsys, inv, "tree")
    assert doc["replicas"] == 3 and doc["state"] == "ready"
    assert len(doc["chunks"]) >= 5  # 1.25 MiB in 256 KiB chunks, plus the script
    for chunk in doc["chunks"]:
        assert len(set(chunk["replicas"])) == 3  # K distinct hosts
        for host in chunk["replicas"]:
            stored = chunk_file(lab, host, chunk["hash"]).read_bytes()
            assert hashlib.sha256(stored).hexdigest() == chunk["hash"]
    for host in lab.hosts:  # the one-shot transfer keys are gone again
        keys = lab.path_on(host.name, f"{lab.home}/.ssh/authorized_keys").read_text()
        assert "leptonctl-transfer" not in keys
    dest = tmp_path / "out"
    code, out = cli(capsys, "-i", str(inv), "data", "get", "tree", str(dest), "--json")
    assert code == 0, out
    assert listing(dest) == listing(src)


def test_single_file_round_trip_and_new_versions(
    lab: Lab, inv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(300_000))
    assert cli(capsys, "-i", str(inv), "data", "put", str(src), "model", "-k", "2")[0] == 0
    src.write_bytes(os.urandom(200_000))
    assert cli(capsys, "-i", str(inv), "data", "put", str(src), "model", "-k", "2")[0] == 0
    assert dataset(capsys, inv, "model")["version"] == 2
    old = tmp_path / "v1.bin"
    assert cli(capsys, "-i", str(inv), "data", "get", "model@1", str(old))[0] == 0
    assert old.stat().st_size == 300_000
    new = tmp_path / "v2.bin"
    assert cli(capsys, "-i", str(inv), "data", "get", "model", str(new))[0] == 0
    assert new.read_bytes() == src.read_bytes()


def test_replicas_are_capped_at_the_reachable_hosts_with_a_note(
    lab: Lab, inv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "small"
    src.write_bytes(os.urandom(1000))
    code, out = cli(capsys, "-i", str(inv), "data", "put", str(src), "capped", "-k", "9", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["replicas"] == len(lab.hosts) and report["requested_replicas"] == 9
    assert any("storing 4 replica(s), not 9" in n for n in report["notes"])


def test_verify_finds_a_corrupt_chunk_and_repair_heals_it(
    lab: Lab, inv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(600_000))
    args = ("-i", str(inv), "data")
    assert cli(capsys, *args, "put", str(src), "rot", "-k", "2", "--chunk-size", "256KiB")[0] == 0
    chunk = dataset(capsys, inv, "rot")["chunks"][0]
    victim = chunk["replicas"][0]
    path = chunk_file(lab, victim, chunk["hash"])
    path.chmod(0o600)
    with path.open("r+b") as fh:
        fh.seek(1000)
        fh.write(b"bit rot")
    code, out = cli(capsys, *args, "verify", "rot", "--json")
    assert code == 4  # missing or corrupt replicas found
    problems = json.loads(out)["problems"]
    assert [(p["hash"], p["host"], p["problem"]) for p in problems] == [
        (chunk["hash"], victim, "corrupt")
    ]
    code, out = cli(capsys, *args, "repair", "rot", "--json")
    assert code == 0, out
    assert json.loads(out)["corrupt_removed"] == 1
    assert cli(capsys, *args, "verify", "rot")[0] == 0
    healed = dataset(capsys, inv, "rot")["chunks"][0]
    assert len(healed["replicas"]) == 2
    for host in healed["replicas"]:
        assert (
            hashlib.sha256(chunk_file(lab, host, chunk["hash"]).read_bytes()).hexdigest()
            == (chunk["hash"])
        )


def test_get_falls_over_from_a_corrupt_replica(
    lab: Lab, inv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(100_000))
    args = ("-i", str(inv), "data")
    assert cli(capsys, *args, "put", str(src), "fallover", "-k", "2")[0] == 0
    chunk = dataset(capsys, inv, "fallover")["chunks"][0]
    for host in chunk["replicas"][:1]:
        path = chunk_file(lab, host, chunk["hash"])
        path.chmod(0o600)
        path.write_bytes(b"garbage" + path.read_bytes()[7:])
    # Try the corrupt copy first: limit to it, then to both.
    code, _ = cli(capsys, *args, "get", "fallover", str(tmp_path / "a"), "-l", chunk["replicas"][0])
    assert code != 0
    assert not (tmp_path / "a").exists()  # a corrupt chunk is never served
    code, out = cli(capsys, *args, "get", "fallover", str(tmp_path / "b"), "--json")
    assert code == 0, out
    assert (tmp_path / "b").read_bytes() == src.read_bytes()


def test_repair_moves_replicas_of_a_dead_host_to_live_ones(
    lab: Lab, inv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(700_000))
    args = ("-i", str(inv), "data")
    assert (
        cli(capsys, *args, "put", str(src), "survivor", "-k", "2", "--chunk-size", "128KiB")[0] == 0
    )
    chunks = dataset(capsys, inv, "survivor")["chunks"]
    dead = chunks[0]["replicas"][0]
    lab.stop_sshd(dead)
    try:
        code, out = cli(capsys, *args, "repair", "survivor", "--json")
        assert code == 0, out
        assert json.loads(out)["copies_made"] >= 1
        for chunk in chunks:
            live = [
                h.name
                for h in lab.hosts
                if h.name != dead and chunk_file(lab, h.name, chunk["hash"]).exists()
            ]
            assert len(live) >= 2, (chunk["hash"], live)
        code, _ = cli(capsys, *args, "get", "survivor", str(tmp_path / "out"))
        assert code == 0
        assert (tmp_path / "out").read_bytes() == src.read_bytes()
    finally:
        lab.start_sshd(dead)


def test_an_interrupted_put_is_invisible_and_resumes_sending_only_what_is_missing(
    lab: Lab, inv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h1, h2 = lab.hosts[0].name, lab.hosts[1].name
    payload = os.urandom(8 << 20)
    lab.path_on(h1, "/tmp/slow.bin").write_bytes(payload)
    two = write_inventory(tmp_path / "two.yaml", lab, [h1, h2])
    lab.shape(h1, h2, 16)  # 2 MB/s: the 8 MiB put takes ~4 s
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-c", "import sys; from leptonctl.cli.app import run; "
            "sys.exit(run(sys.argv[1:]))", "-i", str(two), "data", "put", f"{h1}:/tmp/slow.bin",
            "slow", "-k", "2", "--chunk-size", "512KiB"]  # fmt: skip

    def arriving_on_h2() -> set[str]:
        """Chunks stored on h2, and chunks it is receiving (still in chunks/.tmp)."""
        return {p.name for p in lab.path_on(h2, chunks_dir(lab)).rglob("*") if p.is_file()}

    before = arriving_on_h2()
    try:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(arriving_on_h2() - before) < 4:
            time.sleep(0.05)  # until a few chunks arrived on h2
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        code, out = cli(capsys, "-i", str(two), "data", "ls", "--json")
        assert [d["state"] for d in json.loads(out)["datasets"] if d["name"] == "slow"] == [
            "writing"
        ]
        assert cli(capsys, "-i", str(two), "data", "get", "slow", str(tmp_path / "x"))[0] != 0
    finally:
        lab.clear_shaping(h1)
    code, out = cli(capsys, "-i", str(two), "data", "put", f"{h1}:/tmp/slow.bin", "slow", "-k",
                    "2", "--chunk-size", "512KiB", "--json")  # fmt: skip
    assert code == 0, out
    report = json.loads(out)
    assert report["version"] == 1  # the same version, finished
    assert report["sent_bytes"] < len(payload)  # only what was missing went again
    assert cli(capsys, "-i", str(two), "data", "get", "slow", str(tmp_path / "y"))[0] == 0
    assert (tmp_path / "y").read_bytes() == payload


def test_rm_reclaims_chunks_not_used_by_other_datasets(
    lab: Lab, inv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shared, own = os.urandom(64 << 10), os.urandom(64 << 10)
    (tmp_path / "a").write_bytes(shared + own)
    (tmp_path / "b").write_bytes(shared)
    args = ("-i", str(inv), "data")
    for name in ("a", "b"):
        assert (
            cli(capsys, *args, "put", str(tmp_path / name), name, "--chunk-size", "64KiB")[0] == 0
        )
    chunks_a = {c["hash"]: c["replicas"] for c in dataset(capsys, inv, "a")["chunks"]}
    shared_hash = hashlib.sha256(shared).hexdigest()
    own_hash = hashlib.sha256(own).hexdigest()
    assert set(chunks_a) == {shared_hash, own_hash}
    code, out = cli(capsys, *args, "rm", "a", "--json")
    assert code == 0
    assert json.loads(out)["freed_chunks"] == 1
    for host in chunks_a[own_hash]:
        assert not chunk_file(lab, host, own_hash).exists()
    for host in chunks_a[shared_hash]:
        assert chunk_file(lab, host, shared_hash).exists()
    assert cli(capsys, *args, "get", "b", str(tmp_path / "b2"))[0] == 0
    assert (tmp_path / "b2").read_bytes() == shared


def test_a_host_with_a_full_disk_is_skipped_with_a_reason(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = [h.name for h in lab.hosts[:3]]
    full = names[0]
    tiny = f"{lab.home if lab.profile is None else '/scratch'}/tiny-data-dir"
    lab.run_in(full, ["mkdir", "-p", tiny])  # inside the host's own mount namespace:
    lab.run_in(full, ["mount", "-t", "tmpfs", "-o", "size=1m,mode=1777", "tmpfs", tiny])
    try:
        inv = write_inventory(
            tmp_path / "inv.yaml", lab, names, host_vars={full: {"lepton_data_dir": tiny}}
        )
        src = tmp_path / "big"
        src.write_bytes(os.urandom(600_000))
        code, out = cli(capsys, "-i", str(inv), "data", "put", str(src), "roomy", "-k", "2",
                        "--json")  # fmt: skip
        assert code == 0, out
        chunk = dataset(capsys, inv, "roomy")["chunks"][0]
        assert full not in chunk["replicas"]
        capsys.readouterr()
        code = run(["-i", str(inv), "data", "put", str(src), "tight", "-k", "3"])
        assert code == 1  # three replicas need the full host too: a clear failure
        err = " ".join(capsys.readouterr().err.split())
        assert "did not reach 3 replicas" in err and "no space" in err
        code, out = cli(capsys, "-i", str(inv), "data", "ls", "--json")
        states = {d["name"]: d["state"] for d in json.loads(out)["datasets"]}
        assert states["tight"] == "writing"  # never visible
    finally:
        lab.run_in(full, ["umount", tiny], check=False)


def test_a_job_with_input_sees_the_dataset(
    lab: Lab, inv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = make_tree(tmp_path / "src", b"job-input")
    args = ("-i", str(inv))
    assert cli(capsys, *args, "data", "put", str(src), "inputs", "-k", "1")[0] == 0
    biggest = max(dataset(capsys, inv, "inputs")["chunks"], key=lambda c: c["size"])
    holder = biggest["replicas"][0]
    code, out = cli(
        capsys, *args, "submit", "--input", "inputs", "--wait", "--json", "--",
        "sh", "-c", 'cat "$LEPTON_INPUT_INPUTS/sub/run.sh"; hostname',
    )  # fmt: skip
    assert code == 0, out
    job_id = json.loads(out.splitlines()[0])["id"]
    code, log = cli(capsys, *args, "logs", str(job_id))
    assert "echo " + b"job-input".hex() in log
    assert log.strip().splitlines()[-1] == holder  # it ran where the data already was
    other = next(h.name for h in lab.hosts if h.name != holder)
    code, out = cli(
        capsys, *args, "submit", "--input", "inputs:/tmp/in", "--limit", other, "--wait",
        "--json", "--", "sh", "-c", "cmp /tmp/in/weights.bin /tmp/in/link && ls /tmp/in/sub",
    )  # fmt: skip
    assert code == 0, out
    job_id = json.loads(out.splitlines()[0])["id"]
    code, log = cli(capsys, *args, "logs", str(job_id))
    assert "run.sh" in log
    assert (lab.path_on(other, "/tmp/in/weights.bin")).read_bytes() == (
        src / "weights.bin"
    ).read_bytes()


def test_scrub_finds_a_corrupt_replica_within_the_promised_runs_and_repair_heals_it(
    lab: Lab, inv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(6 * 4096 * 16))
    args = ("-i", str(inv))
    assert cli(capsys, *args, "data", "put", str(src), "scrubbed", "-k", "2", "--chunk-size",
               "64KiB")[0] == 0  # fmt: skip
    chunks = dataset(capsys, inv, "scrubbed")["chunks"]
    replicas = sum(len(c["replicas"]) for c in chunks)
    assert replicas == 12
    victim_chunk = chunks[-1]
    victim = victim_chunk["replicas"][-1]
    path = chunk_file(lab, victim, victim_chunk["hash"])
    path.chmod(0o600)
    path.write_bytes(b"\0" * path.stat().st_size)
    scrub = tmp_path / "scrub.yaml"
    scrub.write_text("steps:\n  - scrub: {replicas_per_run: 5}\n")
    found = None
    for attempt in range(3):  # the rotation promises every replica within ceil(12 / 5) runs
        code, out = cli(capsys, *args, "maintain", str(scrub), "--json")
        step = json.loads(out.splitlines()[0])
        if code == 3:
            found = attempt
            assert step["hosts"][victim]["status"] == "unhealthy"
            assert {p["hash"] for p in step["details"]["problems"]} == {victim_chunk["hash"]}
            break
        assert code == 0, out
    assert found is not None
    heal = tmp_path / "heal.yaml"
    heal.write_text("steps:\n  - repair:\n")
    code, out = cli(capsys, *args, "maintain", str(heal), "--json")
    assert code == 0, out
    assert cli(capsys, *args, "data", "verify", "scrubbed")[0] == 0
