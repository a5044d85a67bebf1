"""reconcile as a table: a job, what then happens to its host, what the store says after.

The reconcile loop, the scheduler, starts and the state store run for real against
``leptonctl.testing.fake_agent`` hosts (a job there is an in-memory record the row moves
on: it ends, its host drops off the network or reboots).  Each pass is a command of its
own (its own pool and sessions), on a clock the row advances.  No root and no lab: the
lab tests keep real supervisors, kills and sshd (tests/test_lab_jobs*.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from leptonctl.core.jobspec import Submission
from leptonctl.inventory import parse_inventory
from leptonctl.remote.transport import TransportOptions
from leptonctl.services.context import ServiceContext
from leptonctl.services.jobs.operations import enqueue
from leptonctl.services.jobs.reconcile import NODE_FAIL_AFTER, ReconcileReport, reconcile
from leptonctl.store.jobs import JobRecord
from leptonctl.store.open import open_store
from leptonctl.testing.fake_agent import FakeCluster

LATER = NODE_FAIL_AFTER + 60.0


@dataclass(frozen=True)
class Row:
    id: str
    steps: tuple[tuple[str, float], ...]  # (what happens to the job's first host, seconds)
    state: str  # the job's state in the store after the last pass
    attempt: int = 0  # counted from 0
    retries: int = 0
    on: str | None = "same"  # "same" / "other" host as the first run, or None (no host)
    first_run: str | None = "RUNNING"  # the first run's state on its fake host
    lost_since: bool = False
    refuse_start: bool = False


ROWS = [
    Row("started", (("none", 1.0),), "RUNNING"),
    Row("completed", (("end 0", 1.0),), "COMPLETED", first_run="COMPLETED"),
    Row("failed", (("end 3", 1.0),), "FAILED", first_run="FAILED"),
    Row(
        "failed-then-retried",
        (("end 1", 1.0),),
        "RUNNING",
        attempt=1,
        retries=1,
        on=None,
        first_run="FAILED",
    ),
    Row("host-away-briefly", (("down", 1.0), ("none", 60.0)), "RUNNING", lost_since=True),
    Row(
        "host-lost-node-fail",
        (("down", 1.0), ("none", LATER)),
        "NODE_FAIL",
        on="same",
    ),
    Row(
        "host-lost-requeued-elsewhere",
        (("down", 1.0), ("none", LATER)),
        "RUNNING",
        attempt=1,
        retries=1,
        on="other",
    ),
    Row(
        "host-rebooted-job-lost",
        (("down", 1.0), ("reboot", 1.0)),
        "NODE_FAIL",
        first_run="LOST",
    ),
    Row(
        "lost-host-returns-its-abandoned-run-is-killed",
        (("down", 1.0), ("none", LATER), ("up", 1.0)),
        "RUNNING",
        attempt=1,
        retries=1,
        on="other",
        first_run="CANCELLED",
    ),
    Row(
        "agent-refuses-the-start",
        (),
        "FAILED",
        on="same",
        first_run=None,
        refuse_start=True,
    ),
]


class Bed:
    def __init__(self, tmp_path: Path, state: str) -> None:
        self.inventory = parse_inventory("h1\nh2\n", "hosts.ini", fmt="ini")
        self.cluster = FakeCluster(tmp_path / "hosts")
        for host in self.inventory.hosts:
            self.cluster.add(host.name)
        self.store = open_store(state)
        self.now = 1_000_000.0
        self.options = TransportOptions(command_timeout=5.0)

    def clock(self) -> float:
        return self.now

    def reconcile(self) -> ReconcileReport:
        async def one() -> ReconcileReport:
            async with (
                self.cluster.pool(self.options) as pool,
                ServiceContext(
                    self.inventory,
                    store=self.store,
                    options=self.options,
                    clock=self.clock,
                    pool=pool,
                ) as ctx,
            ):
                return await reconcile(ctx)

        return asyncio.run(one())

    def job(self, job_id: int) -> JobRecord:
        record = self.store.jobs.get(job_id)
        assert record is not None
        return record


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_reconcile(tmp_path: Path, row: Row, state_backend: str) -> None:
    bed = Bed(tmp_path, state_backend)
    try:
        if row.refuse_start:
            for fake in bed.cluster.hosts.values():
                fake.refuse["job-start"] = "cannot run that here"
        [job_id] = enqueue(
            bed.store,
            bed.inventory,
            [Submission("train", ("python", "train.py"), retries=row.retries)],
            bed.now,
        )
        first = bed.reconcile()
        record = bed.job(job_id)
        assert record.host is not None
        host, agent_id = record.host, record.agent_id
        if row.refuse_start:
            assert "refused" in (record.reason or "")
        else:
            assert first.started == [job_id] and record.state == "RUNNING"
            assert bed.cluster[host].jobs[agent_id].state == "RUNNING"
        for action, seconds in row.steps:
            fake = bed.cluster[host]
            if action.startswith("end "):
                fake.end_job(agent_id, int(action.split()[1]))
            elif action == "down":
                fake.go_down()
            elif action in ("up", "reboot"):
                fake.come_up(rebooted=action == "reboot")
            bed.now += seconds
            bed.reconcile()
        record = bed.job(job_id)
        assert (record.state, record.attempt) == (row.state, row.attempt)
        if record.state == "RUNNING":  # away but not given up on yet, or not away
            assert (record.lost_since is not None) is row.lost_since
        if row.on == "same":
            assert record.host == host
        elif row.on == "other":
            assert record.host not in (None, host)
        if record.state == "RUNNING":  # the run the store believes in is running there
            assert record.host is not None
            assert bed.cluster[record.host].jobs[record.agent_id].state == "RUNNING"
        runs = bed.cluster[host].jobs
        assert (runs[agent_id].state if agent_id in runs else None) == row.first_run
    finally:
        bed.store.close()
