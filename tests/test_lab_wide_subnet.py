"""The lab on a wider network (tests/lab.py ``subnet=``): big fan-out labs past ~230 hosts.

The default stays 10.213.0.0/24 with host i at .(first_ip + i); on 10.214.0.0/16 the
addresses go on past .255, and hosts on either side of a /24 boundary reach each other and
the operator.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from tests.conftest import _lab_address, _operator_for, write_inventory
from tests.lab import SUBNET, WIDE_SUBNET, Lab

pytestmark = pytest.mark.lab


def test_default_addresses_are_unchanged(tmp_path: Path) -> None:
    lab = Lab(3, prefix="lepz", first_ip=40, base=tmp_path / "lab")
    assert [h.ip for h in lab.hosts] == [f"{SUBNET}.41", f"{SUBNET}.42", f"{SUBNET}.43"]
    assert lab.gateway == f"{SUBNET}.1" and lab.network.prefixlen == 24
    with pytest.raises(ValueError, match="bad host count"):
        Lab(231, prefix="lepz", base=tmp_path / "lab")  # 10 + 231 > 240, as before


def test_a_wide_subnet_holds_thousands_of_hosts_past_each_255(tmp_path: Path) -> None:
    lab = Lab(1000, prefix="lepz", first_ip=10, base=tmp_path / "lab", subnet=WIDE_SUBNET)
    ips = [h.ip for h in lab.hosts]
    assert ips[0] == "10.214.0.11" and ips[244:247] == ["10.214.0.255", "10.214.1.0", "10.214.1.1"]
    assert ips[-1] == "10.214.3.242" and len(set(ips)) == 1000
    assert lab.gateway == "10.214.0.1"


@pytest.fixture
def wide_lab(operator_home: Path) -> Iterator[Lab]:
    reason = Lab.unavailable_reason()
    if reason is not None:
        pytest.skip(f"the sshd lab is unavailable: {reason}")
    prefix, first_ip = _lab_address()
    # Three hosts around a /24 boundary (x.254, x.255, x+1.0), the row chosen by this run's
    # LEPTONCTL_TEST_LAB so that two runs on one machine use different addresses.
    with Lab(3, prefix=f"{prefix[:7]}w", first_ip=256 * first_ip + 253, subnet=WIDE_SUBNET) as lab:
        _operator_for(lab, operator_home)
        yield lab


def test_status_reaches_hosts_on_both_sides_of_a_slash_24_boundary(
    wide_lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = wide_lab
    assert [h.ip.split(".")[3] for h in lab.hosts] == ["254", "255", "0"]
    inventory = write_inventory(tmp_path / "hosts.yaml", lab)
    capsys.readouterr()
    assert run(["-i", str(inventory), "status", "--json"]) == 0
    rows = {row["host"]: row for row in json.loads(capsys.readouterr().out)["hosts"]}
    assert {name: row["hostname"] for name, row in rows.items()} == {
        "h1": "h1",
        "h2": "h2",
        "h3": "h3",
    }
    # host to host across the boundary (the data plane's hops go this way)
    probe = "import socket; socket.create_connection((%r, 22), timeout=5).close()"
    reached = lab.run_in("h1", ["python3", "-c", probe % lab.host("h3").ip], env=dict(os.environ))
    assert reached.returncode == 0, reached.stderr
