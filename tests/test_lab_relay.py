"""Host-to-host hops on a cluster that takes keys from a central file and has a cut pair.

The cluster profile's h3 reads keys only from a root-owned central file, so the one-shot
transfer key appended to ~/.ssh/authorized_keys is ignored there; ``lab.block`` makes a
pair unable to connect.  Every data path still works, relaying the hops it must through
the operator, and says so; a host key that does not match is never relayed around.
Data dirs are node-local (/scratch), so each replica is a file of its own.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from leptonctl.paths import default_state_path
from leptonctl.store.open import open_store
from tests.conftest import write_inventory
from tests.lab import Lab

pytestmark = pytest.mark.lab

CENTRAL = "h3"  # conftest.CLUSTER: keys only from a central file
CENTRAL_REASON = "h3's sshd ignores ~/.ssh/authorized_keys (central keys)"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())


@pytest.fixture
def lab(cluster_lab: Lab, cluster_operator: Path) -> Iterator[Lab]:
    try:
        yield cluster_lab
    finally:
        cluster_lab.unblock_all()


@pytest.fixture
def inv(lab: Lab, tmp_path: Path) -> Path:
    return write_inventory(tmp_path / "inventory.yaml", lab)


def chunk_path(lab: Lab, host: str, digest: str) -> Path:
    return lab.path_on(host, f"{lab.data_dir}/chunks/{digest[:2]}/{digest}")


def chunks_of(capsys: pytest.CaptureFixture[str], inv: Path, name: str) -> list[dict]:
    code, out, err = cli(capsys, "-i", str(inv), "data", "ls", name, "--json")
    assert code == 0, err
    chunks: list[dict] = json.loads(out)["chunks"]
    return chunks


def source_file(path: Path, size: int = 3_000_000, seed: int = 1) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def test_put_from_the_operator_relays_the_hop_into_the_central_keys_host(
    lab: Lab, inv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = source_file(tmp_path / "weights.bin")
    code, out, err = cli(
        capsys, "-i", str(inv), "data", "put", str(src), "ds", "-l", "h1,h2,h3", "-k", "3",
        "--chunk-size", "1MiB", "--json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["replicas"] == 3
    assert [r["to"] for r in report["relayed"]] == [CENTRAL]
    assert CENTRAL_REASON in report["relayed"][0]["reason"]
    assert any(CENTRAL_REASON in note for note in report["notes"])
    for chunk in chunks_of(capsys, inv, "ds"):
        assert sorted(chunk["replicas"]) == ["h1", "h2", "h3"]
        for host in ("h1", "h2", "h3"):  # three files on three node-local disks
            assert chunk_path(lab, host, chunk["hash"]).is_file(), host
    back = tmp_path / "back.bin"
    code, _, err = cli(capsys, "-i", str(inv), "data", "get", "ds", str(back))
    assert code == 0, err
    assert back.read_bytes() == src.read_bytes()


def test_put_from_a_host_and_repair_relay_into_the_central_keys_host(
    lab: Lab, inv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = random.Random(2).randbytes(2_500_000)
    lab.path_on("h1", "/scratch/relay-src.bin").write_bytes(data)
    lab.give(lab.path_on("h1", "/scratch/relay-src.bin"))
    code, _, err = cli(
        capsys, "-i", str(inv), "data", "put", "h1:/scratch/relay-src.bin", "hostds",
        "-l", "h1,h2,h3", "-k", "3", "--chunk-size", "1MiB",
    )  # fmt: skip
    assert code == 0, err
    chunks = chunks_of(capsys, inv, "hostds")
    for chunk in chunks:
        assert chunk_path(lab, CENTRAL, chunk["hash"]).is_file()
    lost = chunk_path(lab, CENTRAL, chunks[0]["hash"])
    lost.unlink()
    cli(capsys, "-i", str(inv), "data", "verify", "hostds", "-l", "h1,h2,h3")
    code, out, err = cli(
        capsys, "-i", str(inv), "data", "repair", "hostds", "-l", "h1,h2,h3", "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["healthy"] is True
    assert [(r["to"], r["via"]) for r in report["relayed"]] == [(CENTRAL, "(operator)")]
    assert lost.is_file()
    assert lost.read_bytes() == chunk_path(lab, "h1", chunks[0]["hash"]).read_bytes()


def test_rebalance_moves_replicas_into_the_central_keys_host(
    lab: Lab, inv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = source_file(tmp_path / "many.bin", 4_000_000, seed=3)
    code, _, err = cli(
        capsys, "-i", str(inv), "data", "put", str(src), "rb", "-l", "h1", "-k", "1",
        "--chunk-size", "256KiB",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = cli(
        capsys, "-i", str(inv), "data", "rebalance", "-l", "h1,h3", "--tolerance", "0.0", "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["moves_done"] > 0, report
    assert [(r["from"], r["to"], r["via"]) for r in report["relayed"]] == [
        ("h1", CENTRAL, "(operator)")
    ]
    assert CENTRAL_REASON in report["relayed"][0]["reason"]
    moved = [c for c in chunks_of(capsys, inv, "rb") if c["replicas"] == ["h3"]]
    assert moved and all(chunk_path(lab, CENTRAL, c["hash"]).is_file() for c in moved)


def test_input_staging_onto_the_central_keys_host(
    lab: Lab, inv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = source_file(tmp_path / "input.bin", 1_500_000, seed=4)
    code, _, err = cli(
        capsys, "-i", str(inv), "data", "put", str(src), "inp", "-l", "h1", "-k", "1"
    )
    assert code == 0, err
    code, out, err = cli(
        capsys, "-i", str(inv), "submit", "--input", "inp:/scratch/relay-in", "--limit", CENTRAL,
        "--wait", "--json", "--", "sh", "-c", "cat /scratch/relay-in/input.bin | cksum",
    )  # fmt: skip
    assert code == 0, out + err
    assert lab.path_on(CENTRAL, "/scratch/relay-in").read_bytes() == src.read_bytes()
    job_id = json.loads(out.splitlines()[0])["id"]
    store = open_store(default_state_path())
    try:
        events = store.events("hop_relayed")
    finally:
        store.close()
    assert [(e.host, e.detail["from"], e.detail["to"], e.detail["job"]) for e in events] == [
        (CENTRAL, "h1", CENTRAL, job_id)
    ]
    assert CENTRAL_REASON in events[0].detail["reason"]


def test_cp_into_the_central_keys_host_and_over_a_blocked_pair_is_relayed_and_said(
    lab: Lab, inv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = os.urandom(1_200_000)
    lab.path_on("h1", "/scratch/cp-src.bin").write_bytes(payload)
    lab.give(lab.path_on("h1", "/scratch/cp-src.bin"))
    code, out, err = cli(
        capsys, "-i", str(inv), "cp", "h1:/scratch/cp-src.bin", "h3:/scratch/cp-dst.bin", "--json"
    )
    assert code == 0, err
    doc = json.loads(out)
    assert lab.path_on("h3", "/scratch/cp-dst.bin").read_bytes() == payload
    assert doc["route"] == ["h1", "(operator)", "h3"]
    assert [(r["from"], r["to"], r["via"]) for r in doc["relayed"]] == [("h1", "h3", "(operator)")]
    assert CENTRAL_REASON in doc["relayed"][0]["reason"]
    code, out, err = cli(
        capsys, "-i", str(inv), "cp", "h1:/scratch/cp-src.bin", "h3:/scratch/cp-dst2.bin"
    )
    assert code == 0, err  # the text output says it too
    assert f"h1 -> h3 relayed by the operator: {CENTRAL_REASON}" in err

    lab.block("h1", "h2")
    code, out, err = cli(
        capsys, "-i", str(inv), "cp", "h1:/scratch/cp-src.bin", "h2:/scratch/cp-dst.bin", "--json"
    )
    assert code == 0, err
    doc = json.loads(out)
    assert lab.path_on("h2", "/scratch/cp-dst.bin").read_bytes() == payload
    assert doc["relayed"] == [
        {
            "from": "h1",
            "to": "h2",
            "via": "(operator)",
            "reason": "h1 cannot connect to h2 (no route to host)",
        }
    ]


def test_net_probe_records_a_blocked_pair_and_the_central_keys_host_as_relayed(
    lab: Lab, inv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lab.block("h1", "h2")
    code, out, err = cli(
        capsys, "-i", str(inv), "net", "probe", "-l", "h1,h2,h3", "--seconds", "0.2", "--json"
    )
    assert code == 0, err
    doc = json.loads(out)
    relayed = {(r["from"], r["to"]): r["reason"] for r in doc["relayed"]}
    assert relayed[("h1", "h2")] == "h1 cannot connect to h2 (no route to host)"
    assert relayed[("h2", "h1")] == "h2 cannot connect to h1 (no route to host)"
    assert CENTRAL_REASON in relayed[("h1", "h3")] and CENTRAL_REASON in relayed[("h2", "h3")]
    measured = {(m["src"], m["dst"]): m for m in doc["measured"]}
    assert measured[("h3", "h1")]["bandwidth_bps"]  # from h3 outwards keys work
    # the measured graph routes around the relayed pairs; cp still gets through
    payload = os.urandom(300_000)
    lab.path_on("h1", "/scratch/probe-src.bin").write_bytes(payload)
    lab.give(lab.path_on("h1", "/scratch/probe-src.bin"))
    code, out, err = cli(
        capsys, "-i", str(inv), "cp", "h1:/scratch/probe-src.bin", "h2:/scratch/probe-dst.bin",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    assert lab.path_on("h2", "/scratch/probe-dst.bin").read_bytes() == payload
    assert json.loads(out)["route"] == ["h1", "(operator)", "h2"]


def test_a_host_key_mismatch_on_the_next_hop_is_not_relayed_around(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # h2's data_address leads to h4: what answers there is not the host the operator
    # verified as h2 (as a spoofed or re-keyed host would)
    h4 = next(h for h in lab.hosts if h.name == "h4")
    inv = write_inventory(
        tmp_path / "inventory.yaml", lab, host_vars={"h2": {"data_address": h4.ip}}
    )
    payload = os.urandom(200_000)
    lab.path_on("h1", "/scratch/hk-src.bin").write_bytes(payload)
    lab.give(lab.path_on("h1", "/scratch/hk-src.bin"))
    code, _, err = cli(
        capsys, "-i", str(inv), "cp", "h1:/scratch/hk-src.bin", "h2:/scratch/hk-dst.bin"
    )
    assert code != 0
    assert "not relayed around" in err and "security failure" in err, err
    assert "relayed by the operator" not in err
    assert not lab.path_on("h2", "/scratch/hk-dst.bin").exists()


def test_a_chain_on_a_shared_home_keeps_every_hops_one_shot_key(
    lab: Lab, inv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # h2 and h4 read the one ~/.ssh/authorized_keys of the shared home: the relay h2
    # blanking its own key line when it starts must leave h4's in place
    payload = os.urandom(700_000)
    lab.path_on("h1", "/scratch/via-src.bin").write_bytes(payload)
    lab.give(lab.path_on("h1", "/scratch/via-src.bin"))
    code, out, err = cli(
        capsys, "-i", str(inv), "cp", "h1:/scratch/via-src.bin", "h4:/scratch/via-dst.bin",
        "--via", "h2", "--json",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert lab.path_on("h4", "/scratch/via-dst.bin").read_bytes() == payload
    assert doc["route"] == ["h1", "h2", "h4"] and doc["relayed"] == [], doc
