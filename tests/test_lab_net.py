"""The network graph and routed copies on real sshd hosts: a shaped slow link is measured,
routed around, and a relay that dies mid-copy is survived by a rerun."""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from tests.conftest import write_inventory
from tests.lab import Lab

pytestmark = pytest.mark.lab


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = run(list(args))
    return code, capsys.readouterr().out


@pytest.fixture
def shaped(lab: Lab, lab_operator: Path, tmp_path: Path):
    """h1 -> h2 at 8 Mbit/s, every other pair free; an inventory of all hosts."""
    h1, h2 = lab.hosts[0].name, lab.hosts[1].name
    lab.shape(h1, h2, 8)
    try:
        yield write_inventory(tmp_path / "inventory.yaml", lab), h1, h2
    finally:
        lab.clear_shaping()


def test_probe_sees_the_slow_link_and_cp_routes_around_it(
    lab: Lab, shaped: tuple[Path, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv, h1, h2 = shaped
    args = ("-i", str(inv))
    code, out = cli(capsys, *args, "net", "probe", "--seconds", "0.3", "--json")
    assert code == 0, out
    measured = {(m["src"], m["dst"]): m for m in json.loads(out)["measured"]}
    n = len(lab.hosts)
    assert len(measured) == n * (n - 1)
    slow = measured[(h1, h2)]["bandwidth_bps"]
    back = measured[(h2, h1)]["bandwidth_bps"]
    assert slow < 2e6 < back  # 8 Mbit/s is 1 MB/s; the reverse direction is unshaped
    code, out = cli(capsys, *args, "net", "show", "--json")
    assert code == 0
    links = {(link["src"], link["dst"]) for link in json.loads(out)["links"]}
    assert (h1, h2) in links
    code, out = cli(capsys, *args, "net", "show", "--route", h1, h2, "--json")
    assert code == 0, out
    route = json.loads(out)
    hops = list(itertools.pairwise(route["route"]))
    # Relayed around the slow link. Which relay, and whether one or two, depends on the
    # measured numbers: on a busy 2-CPU machine two fast hops can beat one by more than
    # the hop penalty, and that route is the right choice for those numbers.
    assert (
        route["relayed"]
        and (h1, h2) not in hops
        and (route["route"][0], route["route"][-1]) == (h1, h2)
    )
    assert route["expected_bps"] > 3 * route["direct_bps"]

    payload = os.urandom(3 << 20)
    lab.path_on(h1, "/tmp/routed.src").write_bytes(payload)
    code, out = cli(capsys, *args, "cp", f"{h1}:/tmp/routed.src", f"{h2}:/tmp/routed.dst", "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["route"] == route["route"] and doc["bytes"] == len(payload)
    assert lab.path_on(h2, "/tmp/routed.dst").read_bytes() == payload
    for relay in doc["route"][1:-1]:
        assert not lab.path_on(relay, "/tmp/routed.dst").exists()  # relays store nothing

    code, out = cli(
        capsys, *args, "cp", "--direct", f"{h1}:/tmp/routed.src", f"{h2}:/tmp/direct.dst", "--json"
    )
    assert code == 0
    assert json.loads(out)["route"] == [h1, h2]


def test_directory_copy_between_hosts_and_back(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = write_inventory(tmp_path / "inventory.yaml", lab)
    src = tmp_path / "tree"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "data").write_bytes(os.urandom(70_000))
    (src / "tool").write_text("#!/bin/sh\n")
    (src / "tool").chmod(0o700)
    (src / "self").symlink_to("tool")
    h3, h4 = lab.hosts[2].name, lab.hosts[3].name
    args = ("-i", str(inv))
    assert cli(capsys, *args, "cp", str(src), f"{h3}:/tmp/")[0] == 0  # into /tmp, keeps "tree"
    assert cli(capsys, *args, "cp", f"{h3}:/tmp/tree", f"{h4}:/tmp/tree2")[0] == 0
    back = tmp_path / "back"
    assert cli(capsys, *args, "cp", f"{h4}:/tmp/tree2", str(back))[0] == 0
    for rel in ("a/b/data", "tool"):
        assert (back / rel).read_bytes() == (src / rel).read_bytes()
    assert (back / "tool").stat().st_mode & 0o777 == 0o700
    assert os.readlink(back / "self") == "tool"
    # A second run finds everything in place and sends nothing.
    code, out = cli(capsys, *args, "cp", f"{h3}:/tmp/tree", f"{h4}:/tmp/tree2", "--json")
    assert code == 0 and json.loads(out)["bytes"] == 0


def test_a_relay_dying_mid_copy_fails_cleanly_and_a_rerun_finishes(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = write_inventory(tmp_path / "inventory.yaml", lab)
    h1, h2, relay = lab.hosts[0].name, lab.hosts[1].name, lab.hosts[2].name
    payload = os.urandom(6 << 20)
    lab.path_on(h1, "/tmp/relay.src").write_bytes(payload)
    lab.shape(relay, h2, 8)  # the relayed copy takes ~6 s: time to kill the relay
    args = ("-i", str(inv))
    killer = threading.Timer(1.5, lab.crash_host, args=(relay,))
    try:
        killer.start()
        capsys.readouterr()
        code = run([*args, "cp", "--via", relay, f"{h1}:/tmp/relay.src", f"{h2}:/tmp/relay.dst"])
        killer.join()
        assert code != 0
        assert "run the same cp again" in " ".join(capsys.readouterr().err.split())
        assert not lab.path_on(h2, "/tmp/relay.dst").exists()  # nothing half-done is visible
        capsys.readouterr()
        code = run([*args, "cp", f"{h1}:/tmp/relay.src", f"{h2}:/tmp/relay.dst", "--json"])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert relay not in json.loads(out)["route"]
        assert lab.path_on(h2, "/tmp/relay.dst").read_bytes() == payload
    finally:
        killer.cancel()
        lab.clear_shaping()
        time.sleep(0.2)
        lab.start_sshd(relay)


def test_hosts_that_cannot_reach_each_other_are_relayed_by_the_operator(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = write_inventory(tmp_path / "inventory.yaml", lab)
    h1, h2 = lab.hosts[0].name, lab.hosts[1].name
    payload = os.urandom(3 << 20)
    lab.path_on(h1, "/tmp/walled.src").write_bytes(payload)
    blackhole = ["ip", "route", "add", "blackhole", f"{lab.host(h2).ip}/32"]
    lab.run_in(h1, blackhole, check=True)  # h1 can no longer open a connection to h2
    try:
        code, out = cli(capsys, "-i", str(inv), "cp", "--direct", f"{h1}:/tmp/walled.src",
                        f"{h2}:/tmp/walled.dst", "--json")  # fmt: skip
        assert code == 0, out
        doc = json.loads(out)
        assert doc["route"] == [h1, "(operator)", h2] and doc["bytes"] == len(payload)
        assert lab.path_on(h2, "/tmp/walled.dst").read_bytes() == payload

        two = write_inventory(tmp_path / "two.yaml", lab, [h1, h2])
        code, out = cli(capsys, "-i", str(two), "data", "put", f"{h1}:/tmp/walled.src", "walled",
                        "-k", "2", "--json")  # fmt: skip
        assert code == 0, out
        assert any(f"{h2}:" in note for note in json.loads(out)["notes"])  # the failed hop
        code, out = cli(capsys, "-i", str(two), "data", "ls", "walled", "--json")
        assert [sorted(c["replicas"]) for c in json.loads(out)["chunks"]] == [[h1, h2]]
    finally:
        lab.run_in(h1, ["ip", "route", "del", "blackhole", f"{lab.host(h2).ip}/32"])
