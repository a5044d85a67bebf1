"""Cheap repeated commands on real sshd hosts (issue 14 item 3): a job that ended while no
leptonctl ran is collected by the next `jobs`; after that, with nothing active or pending,
`jobs` contacts no host at all (every sshd stopped, and not a word about them).

Root lab only; about 6 s.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from tests.conftest import write_inventory
from tests.lab import Lab

pytestmark = pytest.mark.lab

NAMES = ["h1", "h2", "h3"]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_an_unwatched_end_is_collected_then_nothing_is_contacted(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = str(write_inventory(tmp_path / "hosts.yaml", lab, NAMES))
    code, out, err = cli(capsys, "-i", inv, "submit", "--json", "-l", "h1", "--",
                         "sleep 1.5; echo unwatched")  # fmt: skip
    assert code == 0, err
    job_id = json.loads(out)["id"]
    assert lab.pids_matching("h1", b"sleep\x001.5")  # it runs, and no leptonctl watches it
    deadline = time.monotonic() + 30
    while lab.pids_matching("h1", b"sleep\x001.5") and time.monotonic() < deadline:
        time.sleep(0.2)  # watched from the lab's side only
    time.sleep(0.5)  # its supervisor records the end
    code, out, err = cli(capsys, "-i", inv, "jobs", "--all", "--json")
    assert code == 0, err
    [job] = [j for j in json.loads(out)["jobs"] if j["id"] == job_id]
    assert (job["state"], job["exit_code"], job["host"]) == ("COMPLETED", 0, "h1")
    assert cli(capsys, "-i", inv, "logs", str(job_id))[1] == "unwatched\n"

    for name in NAMES:  # every host away: a command that contacted one would say so
        lab.stop_sshd(name)
    try:
        args = ["-i", inv, "--connect-timeout", "2"]
        code, out, err = cli(capsys, *args, "jobs", "--all", "--json")
        assert code == 0 and err == ""
        assert [j["state"] for j in json.loads(out)["jobs"]] == ["COMPLETED"]
        code, out, err = cli(capsys, *args, "show", str(job_id))
        assert code == 0 and not re.search(r"warning|unreachable", err)
    finally:
        for name in NAMES:
            lab.start_sshd(name)
