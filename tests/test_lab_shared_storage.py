"""Shared homes on the cluster profile: /home is one directory for every lab host (as an NFS
home is), /scratch is each host's own.  With the default data dir (~/.local/share/leptonctl,
in the shared home) the hosts hold one copy between them, and leptonctl says so: put -k 3
is refused naming the shared dir, -k 1 works with a note, status shows the sharing.  With
lepton_data_dir on /scratch, -k 3 writes three physically separate chunk files."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from tests.lab import Lab

pytestmark = pytest.mark.lab

HOSTS = ("h1", "h2", "h4")  # h3 takes keys only from a central file: not this test's subject
DEFAULT_DATA_DIR = ".local/share/leptonctl"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def inventory(path: Path, lab: Lab, data_dir: str | None) -> Path:
    """h1, h2, h4 as the lab's user; ``data_dir`` None: the agent's default (the shared home)."""
    lines = ["all:", "  vars:", f"    ansible_user: {lab.user}", "  hosts:"]
    for name in HOSTS:
        lines += [f"    {name}:", f"      ansible_host: {lab.host(name).ip}"]
        found = lab.inventory_vars(name)
        found.pop("lepton_data_dir", None)
        if data_dir is not None:
            found["lepton_data_dir"] = data_dir
        lines += [f"      {k}: {v}" for k, v in found.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def chunk_hashes(capsys: pytest.CaptureFixture[str], inv: Path, name: str) -> dict[str, list[str]]:
    """hash -> the hosts `data ls --json` lists for it."""
    code, out, err = cli(capsys, "-i", str(inv), "data", "ls", name, "--json")
    assert code == 0, err
    return {c["hash"]: list(c["replicas"]) for c in json.loads(out)["chunks"]}


def chunk_files(lab: Lab, data_dir: str, digest: str) -> set[Path]:
    """The distinct real files of a chunk on the hosts' data dirs (one for a shared dir)."""
    found = set()
    for name in HOSTS:
        path = lab.path_on(name, f"{data_dir}/chunks/{digest[:2]}/{digest}")
        if path.exists():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
            found.add(path.resolve())
    return found


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "weights.bin"
    src.write_bytes(os.urandom(700_000))
    return src


def test_put_k3_on_the_shared_home_is_refused_and_k1_works_with_a_note(
    cluster_lab: Lab,
    cluster_operator: Path,
    tmp_path: Path,
    source: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home_dir = f"{cluster_lab.home}/{DEFAULT_DATA_DIR}"
    inv = inventory(tmp_path / "inv.yaml", cluster_lab, None)
    code, out, err = cli(capsys, "-i", str(inv), "data", "put", str(source), "w", "-k", "3",
                         "--chunk-size", "256KiB")  # fmt: skip
    assert code != 0, out
    assert "3 replicas need 3 independent storages" in err
    assert f"h1,h2,h4 share {home_dir}" in err
    assert "lepton_data_dir" in err and "/scratch" in err
    code, out, err = cli(capsys, "-i", str(inv), "data", "ls", "--json")
    assert code == 0 and json.loads(out) == {"datasets": []}  # nothing was stored

    code, out, err = cli(capsys, "-i", str(inv), "data", "put", str(source), "w", "-k", "1",
                         "--chunk-size", "256KiB", "--json")  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["replicas"] == 1
    assert any(f"h1,h2,h4 share {home_dir}" in note for note in report["notes"])
    hashes = chunk_hashes(capsys, inv, "w")
    assert len(hashes) == 3  # 700 kB in 256 KiB chunks
    for digest, hosts in hashes.items():
        assert len(hosts) == 1  # one copy, listed once, not under three host names
        assert len(chunk_files(cluster_lab, home_dir, digest)) == 1
    dest = tmp_path / "back.bin"
    code, _, err = cli(capsys, "-i", str(inv), "data", "get", "w", str(dest))
    assert code == 0, err
    assert dest.read_bytes() == source.read_bytes()
    [recorded] = {h for hosts in hashes.values() for h in hosts}
    cluster_lab.stop_sshd(recorded)  # the copy is still there, reachable from the others
    try:
        again = tmp_path / "again.bin"
        code, _, err = cli(capsys, "-i", str(inv), "data", "get", "w", str(again))
        assert code == 0, err
        assert again.read_bytes() == source.read_bytes()
    finally:
        cluster_lab.start_sshd(recorded)

    code, out, err = cli(capsys, "-i", str(inv), "status", "--json")
    assert code == 0, err
    [shared] = json.loads(out)["shared_storages"]
    assert shared["hosts"] == list(HOSTS) and shared["path"] == home_dir
    assert shared["storage_id"].startswith("ls-")
    code, out, err = cli(capsys, "-i", str(inv), "status")
    assert code == 0, err
    assert f"h1,h2,h4 share {home_dir}" in out
    assert out.count("shared data dir") == 3


def test_put_k3_with_node_local_data_dirs_writes_three_separate_copies(
    cluster_lab: Lab,
    cluster_operator: Path,
    tmp_path: Path,
    source: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = "/scratch/lepton-shared-test"
    inv = inventory(tmp_path / "inv.yaml", cluster_lab, data_dir)
    code, out, err = cli(capsys, "-i", str(inv), "data", "put", str(source), "w", "-k", "3",
                         "--chunk-size", "256KiB", "--json")  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["replicas"] == 3
    assert not any("share" in note for note in report["notes"])
    for digest, hosts in chunk_hashes(capsys, inv, "w").items():
        assert sorted(hosts) == sorted(HOSTS)  # no host listed twice
        assert len(chunk_files(cluster_lab, data_dir, digest)) == 3  # three files on disk
    code, out, err = cli(capsys, "-i", str(inv), "status", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["shared_storages"] == []
    ids = {h["disks"][0]["storage_id"] for h in doc["hosts"]}
    assert len(ids) == 3 and all(i.startswith("ls-") for i in ids)
    code, out, err = cli(capsys, "-i", str(inv), "data", "verify", "w", "--json")
    assert code == 0, err


def test_jobs_on_several_hosts_share_the_home_data_dir_without_clobbering(
    cluster_lab: Lab, cluster_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = inventory(tmp_path / "inv.yaml", cluster_lab, None)  # job dirs in the shared home
    code, out, err = cli(capsys, "-i", str(inv), "submit", "--array", "0-5", "--json", "--",
                         "sleep 1; echo out-$LEPTON_JOB_ID-$LEPTON_HOST")  # fmt: skip
    assert code == 0, err
    deadline = time.monotonic() + 90
    while True:
        code, out, err = cli(capsys, "-i", str(inv), "jobs", "--all", "--json")
        assert code == 0, err
        jobs = json.loads(out)["jobs"]
        if all(j["state"] in ("COMPLETED", "FAILED", "CANCELLED", "NODE_FAIL") for j in jobs):
            break
        assert time.monotonic() < deadline, jobs
        time.sleep(1)
    assert len(jobs) == 6 and {j["state"] for j in jobs} == {"COMPLETED"}, jobs
    assert len({j["host"] for j in jobs}) >= 2  # several hosts wrote into one jobs dir
    for job in jobs:
        code, out, err = cli(capsys, "-i", str(inv), "logs", str(job["id"]))
        assert code == 0 and out.strip().endswith(f"out-{job['id']}-{job['host']}"), out
    jobs_dir = cluster_lab.path_on("h1", f"{cluster_lab.home}/{DEFAULT_DATA_DIR}/jobs")
    assert len([p for p in jobs_dir.iterdir() if p.is_dir()]) >= 6


def test_jobs_on_several_hosts_stage_one_input_into_the_shared_home_without_clobbering(
    cluster_lab: Lab, cluster_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three jobs start at once on three hosts with the same --input: the one tree under the
    shared data dir is built once, and no job sees its input vanish while another host
    stages it (it was built by each host, then removed and replaced under the readers)."""
    inv = inventory(tmp_path / "inv.yaml", cluster_lab, None)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(300):  # many files: staging takes a while, the hosts overlap
        (src / f"f{i:03d}").write_bytes(os.urandom(40_000))
    code, _, err = cli(capsys, "-i", str(inv), "data", "put", str(src), "ds", "-k", "1")
    assert code == 0, err
    reader = (
        'for i in 1 2 3 4 5 6 7 8 9 10; do cat "$LEPTON_INPUT_DS"/f* >/dev/null || exit 9; done'
    )
    code, _, err = cli(capsys, "-i", str(inv), "submit", "--array", "0-2", "--cpus", "2",
                       "--input", "ds", "--", reader)  # fmt: skip
    assert code == 0, err
    jobs = wait_all(capsys, inv)
    assert len({j["host"] for j in jobs}) == 3  # one job per host, started together
    assert [j["state"] for j in jobs] == ["COMPLETED"] * 3, [
        (j["host"], j["state"], j.get("reason"), j.get("exit_code")) for j in jobs
    ]


def wait_all(capsys: pytest.CaptureFixture[str], inv: Path, timeout: float = 90) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        code, out, err = cli(capsys, "-i", str(inv), "jobs", "--all", "--json")
        assert code == 0, err
        jobs: list[dict] = json.loads(out)["jobs"]
        if all(j["state"] in ("COMPLETED", "FAILED", "CANCELLED", "NODE_FAIL") for j in jobs):
            return jobs
        assert time.monotonic() < deadline, jobs
        time.sleep(1)
