"""Hosts whose login shell talks: a `.bashrc` that prints (with and without a newline) before
every command, as many real accounts do.  sshd runs every command, the forced command of a
transfer key included, through that shell, so its output comes before ours on the channel.
Each command below failed on such a host (status saw "not JSON", exec lost the process
group id, host-to-host copies fell back to the operator relay)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from tests.conftest import write_inventory
from tests.lab import Lab

pytestmark = pytest.mark.lab

CHATTY = 'echo "welcome to $(hostname)! [no newline next]"; printf "chatty"\n'


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())


@pytest.fixture
def chatty(lab: Lab, lab_operator: Path) -> Iterator[list[str]]:
    """Two hosts whose root login (bash) prints before every command; put back after."""
    names = [h.name for h in lab.hosts[:2]]
    rc_files = [lab.base / name / "home" / ".bashrc" for name in names]
    for rc in rc_files:
        rc.write_text(CHATTY)
    try:
        yield names
    finally:
        for rc in rc_files:
            rc.unlink(missing_ok=True)


def test_every_command_works_on_hosts_whose_bashrc_prints(
    lab: Lab, chatty: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h1, h2 = chatty
    inv = str(write_inventory(tmp_path / "inventory.yaml", lab, names=chatty))
    state = str(tmp_path / "state.db")
    base = ("-i", inv, "--state", state)

    code, out, err = cli(capsys, *base, "status", "--json")
    assert code == 0, err
    assert {h["host"]: h["state"] for h in json.loads(out)["hosts"]} == {h1: "up", h2: "up"}

    code, out, err = cli(capsys, *base, "exec", "--json", "--", "echo", "hi")
    assert code == 0, err
    assert {r["host"]: r["stdout"] for r in json.loads(out)["results"]} == {
        h1: "hi\n",
        h2: "hi\n",
    }

    lab.path_on(h1, "/tmp/chatty.src").write_bytes(b"payload " * 4096)
    code, out, err = cli(capsys, *base, "cp", "--json", f"{h1}:/tmp/chatty.src", f"{h2}:/tmp/c")
    assert code == 0, err
    assert json.loads(out)["route"] == [h1, h2]  # direct: the forced command's talk is skipped
    assert lab.path_on(h2, "/tmp/c").read_bytes() == b"payload " * 4096

    code, _, err = cli(capsys, *base, "data", "put", f"{h1}:/tmp/chatty.src", "talk", "-k", "2")
    assert code == 0 and "relayed" not in err, err
    code, _, err = cli(capsys, *base, "data", "verify")
    assert code == 0, err

    code, _, err = cli(capsys, *base, "net", "probe", "--seconds", "0.2")
    assert code == 0, err
