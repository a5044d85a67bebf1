"""Repeated job commands contact only the hosts that matter (issue 14 item 3): hosts with
active jobs, hosts holding runs given up on, and the candidates of pending jobs; with no
active or pending job, none at all.

The hosts here are real addresses whose port is closed: contacting one is a refused
connection, which `jobs` reports as a warning, so the warnings name exactly the hosts a
command contacted.  No lab, no root; about 3 s.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from leptonctl.core.records import StoredFacts
from leptonctl.inventory import load_inventory
from leptonctl.services.context import ServiceContext
from leptonctl.services.jobs.reconcile import reconcile
from leptonctl.store.sqlite import SqliteStore


def closed_port() -> int:
    """A local TCP port nobody listens on: a host there refuses the connection at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def warned(err: str) -> set[str]:
    """The hosts a command warned about as unreachable."""
    return set(re.findall(r"^warning: ([^:]+): ", err, re.M))


def unreachable_inventory(path: Path, names: list[str], extra: str = "") -> Path:
    path.write_text(
        "".join(f"{n} ansible_host=127.0.0.1 ansible_port={closed_port()}\n" for n in names) + extra
    )
    return path


def test_jobs_with_nothing_active_contacts_no_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = unreachable_inventory(tmp_path / "hosts.ini", ["h1", "h2", "h3"])
    base = ["-i", str(inv), "--state", str(tmp_path / "state.db"), "--connect-timeout", "2"]
    code, out, err = cli(capsys, *base, "jobs", "--json")
    assert (code, json.loads(out), err) == (0, {"jobs": []}, "")  # not a word: nobody asked
    code, out, err = cli(capsys, *base, "jobs", "--all")
    assert code == 0 and err == ""


def test_a_pending_job_contacts_only_the_hosts_it_may_go_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = unreachable_inventory(tmp_path / "hosts.ini", ["h1", "h2", "h3"])
    base = ["-i", str(inv), "--state", str(tmp_path / "state.db"), "--connect-timeout", "2"]
    code, _, err = cli(capsys, *base, "submit", "-l", "h2", "--", "true")
    assert code == 0 and warned(err) <= {"h2"}  # pending: h2 was never probed
    code, _, err = cli(capsys, *base, "jobs")
    assert code == 0 and warned(err) == {"h2"}
    code, _, err = cli(capsys, *base, "cancel", "1")
    assert code == 0
    code, _, err = cli(capsys, *base, "jobs")
    assert code == 0 and warned(err) == set()  # nothing pending any more: nobody contacted


def test_a_host_whose_known_capacity_can_never_hold_the_job_is_not_contacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ["--state", str(tmp_path / "state.db"), "--connect-timeout", "2"]
    local = tmp_path / "local.ini"
    local.write_text("h1 ansible_connection=local\n")
    code, _, err = cli(capsys, "-i", str(local), *state, "status", "--json")  # facts of h1
    assert code == 0, err
    # h1 is now away, but what it has is known (and fresh): no job of 100000 CPUs fits it
    inv = unreachable_inventory(tmp_path / "hosts.ini", ["h1", "h2"])
    code, _, err = cli(capsys, "-i", str(inv), *state, "submit", "--cpus", "100000", "--", "true")
    assert code == 0, err  # pending: h2 was never probed, it might
    code, _, err = cli(capsys, "-i", str(inv), *state, "jobs")
    assert code == 0 and warned(err) == {"h2"}


def test_a_job_that_ended_while_nothing_watched_is_collected_by_the_next_jobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "submit", "--json", "--", "sleep 0.3")  # the local default
    assert code == 0, err
    job_id = json.loads(out)["id"]
    deadline = time.monotonic() + 30
    while True:
        time.sleep(0.5)  # no command runs meanwhile
        code, out, _ = cli(capsys, "jobs", "--all", "--json")
        [job] = [j for j in json.loads(out)["jobs"] if j["id"] == job_id]
        if job["state"] != "RUNNING" or time.monotonic() > deadline:
            break
    assert (job["state"], job["exit_code"]) == ("COMPLETED", 0)


class FactsReadStore(SqliteStore):
    """A real SQLite store that notes which hosts' facts each pass reads."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.asked: list[list[str]] = []

    def load_facts(self, hosts: Iterable[str] | None = None) -> dict[str, StoredFacts]:
        self.asked.append(sorted(hosts) if hosts is not None else ["*"])
        return super().load_facts(hosts)


def test_with_no_job_waiting_a_pass_reads_the_facts_of_busy_hosts_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = tmp_path / "hosts.ini"
    inv.write_text("h1 ansible_connection=local\nh2 ansible_connection=local\n")
    state = tmp_path / "state.db"
    base = ["-i", str(inv), "--state", str(state)]
    code, out, err = cli(capsys, *base, "submit", "--json", "-l", "h1", "--", "sleep 30")
    assert code == 0, err
    job_id = json.loads(out)["id"]
    try:
        with FactsReadStore(state) as store:

            async def one_pass() -> None:
                async with ServiceContext(load_inventory(inv), store=store) as ctx:
                    await reconcile(ctx)

            asyncio.run(one_pass())
            record = store.jobs.get(job_id)
            assert record is not None and record.state == "RUNNING"
            assert store.asked == [["h1"]]  # h2 runs nothing and nothing waits for a place
    finally:
        assert cli(capsys, *base, "cancel", str(job_id))[0] == 0
