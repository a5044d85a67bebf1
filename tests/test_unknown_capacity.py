"""Unknown is not zero: a host nobody has probed yet (and whose inventory entry declares
little or nothing) has unknown capacity, not none.  A job that only such a host might run
waits, saying why, and starts once the host answers; it is never failed as impossible."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from leptonctl.core.jobspec import Submission
from leptonctl.core.jobviews import nodes_from
from leptonctl.core.scheduler import Job, Node, Request, dispatch, plan
from leptonctl.core.scheduler.model import SIZES
from leptonctl.inventory import parse_inventory
from leptonctl.remote.transport import TransportOptions
from leptonctl.services.context import ServiceContext
from leptonctl.services.jobs.operations import dry_run, enqueue, rejected
from leptonctl.services.jobs.reconcile import reconcile
from leptonctl.store.sqlite import SqliteStore
from leptonctl.testing.fake_agent import FakeCluster
from tests.lab import Lab

ONE_CPU = Request(cpus=1)
NEVER_PROBED = frozenset(SIZES)


def job(request: Request = ONE_CPU, job_id: str = "1") -> Job:
    return Job(id=job_id, request=request)


# -- the scheduler --------------------------------------------------------------------


def test_a_never_probed_host_that_is_down_keeps_the_job_pending_and_says_why() -> None:
    h2 = Node("h2", schedulable=False, unknown=NEVER_PROBED, why_not="unreachable: refused")
    result = dispatch([job()], [h2], [], {}, now=0.0)
    assert result.doomed == () and result.start == ()
    (blocked,) = result.blocked
    assert "h2 (unreachable: refused; never probed" in blocked.reason
    assert "can never run" not in blocked.reason


def test_a_too_small_known_host_does_not_doom_a_job_an_unknown_host_may_run() -> None:
    small = Node("c1", cpus=2, memory_bytes=1 << 30)
    unknown = Node("h2", schedulable=False, unknown=NEVER_PROBED, why_not="unreachable: timeout")
    result = dispatch([job(Request(cpus=8))], [small, unknown], [], {}, now=0.0)
    assert result.doomed == ()
    assert "only hosts that are away could run it: h2" in result.blocked[0].reason


def test_known_hosts_too_small_still_doom_the_job() -> None:
    small = Node("c1", cpus=2, memory_bytes=1 << 30)
    result = dispatch([job(Request(cpus=8))], [small], [], {}, now=0.0)
    assert result.doomed[0].reason == "can never run: needs 8 CPUs; best host c1 has 2"


def test_only_what_is_known_can_rule_a_host_out() -> None:
    # declared cpus: 4 and nothing else, never probed: its GPUs are unknown, its CPUs are not
    declared = Node("g1", cpus=4, schedulable=True, unknown=frozenset({"memory", "gpus", "fpgas"}))
    gpu_job = dispatch([job(Request(cpus=1, gpus=1))], [declared], [], {}, now=0.0)
    assert gpu_job.doomed == () and gpu_job.start == ()
    assert gpu_job.blocked[0].reason.startswith("waiting for a probe of g1")
    too_many_cpus = dispatch([job(Request(cpus=8, gpus=1))], [declared], [], {}, now=0.0)
    assert too_many_cpus.doomed[0].reason == "can never run: needs 8 CPUs; best host g1 has 4"


def test_the_dry_run_does_not_call_a_job_impossible_for_want_of_a_probe() -> None:
    unknown = Node("h2", schedulable=False, unknown=NEVER_PROBED)
    (blocked,) = plan([job()], [unknown], now=0.0).unplaceable
    assert blocked.reason.startswith("not planned: only hosts whose capacity is not known yet")
    assert "h2" in blocked.reason and "can never run" not in blocked.reason


def test_nodes_know_what_the_probe_or_the_inventory_says_and_nothing_else() -> None:
    inventory = parse_inventory(
        "all:\n  hosts:\n    bare: {}\n    declared:\n      capacity: {cpus: 4, gpus: 0}\n",
        "hosts.yaml",
        fmt="yaml",
    )
    nodes = {n.name: n for n in nodes_from(inventory.hosts, {}, {"bare", "declared"})}
    assert nodes["bare"].unknown == NEVER_PROBED and not nodes["bare"].schedulable
    assert nodes["declared"].unknown == {"memory", "fpgas"}
    assert nodes["declared"].schedulable and nodes["declared"].cpus == 4


# -- reconcile, with a fake host that is down at the first submit ------------------------


class Bed:
    def __init__(self, tmp_path: Path) -> None:
        self.inventory = parse_inventory("h2\n", "hosts.ini", fmt="ini")
        self.cluster = FakeCluster(tmp_path / "hosts")
        self.cluster.add("h2")
        self.store = SqliteStore(tmp_path / "state.db")
        self.options = TransportOptions(command_timeout=5.0)

    def reconcile(self) -> None:
        async def one() -> None:
            async with (
                self.cluster.pool(self.options) as pool,
                ServiceContext(
                    self.inventory, store=self.store, options=self.options, pool=pool
                ) as ctx,
            ):
                await reconcile(ctx)

        asyncio.run(one())


def test_a_job_for_a_never_probed_host_that_is_down_waits_and_starts_when_it_answers(
    tmp_path: Path,
) -> None:
    bed = Bed(tmp_path)
    try:
        bed.cluster["h2"].go_down()
        [job_id] = enqueue(
            bed.store, bed.inventory, [Submission(name="j", command="true")], time.time()
        )
        bed.reconcile()
        record = bed.store.jobs.get(job_id)
        assert record is not None and record.state == "PENDING", record
        assert rejected(bed.store, [job_id]) == {}
        assert "h2 (unreachable: " in (record.reason or "")
        assert "never probed" in (record.reason or "")
        bed.cluster["h2"].come_up()
        bed.reconcile()
        record = bed.store.jobs.get(job_id)
        assert record is not None and record.state == "RUNNING" and record.host == "h2"
    finally:
        bed.store.close()


def test_submit_dry_run_on_a_never_probed_host_says_it_is_unknown(tmp_path: Path) -> None:
    inventory = parse_inventory("h2\n", "hosts.ini", fmt="ini")
    store = SqliteStore(tmp_path / "state.db")
    try:
        result = dry_run(store, inventory, [Submission(name="j", command="true")], time.time())
    finally:
        store.close()
    assert result.unknown_hosts == ("h2",)
    (blocked,) = result.plan.unplaceable
    assert "can never run" not in blocked.reason and "not known yet" in blocked.reason


# -- for real: the only host is down at the first submit, then comes back ----------------


@pytest.mark.lab
def test_lab_a_job_submitted_while_its_only_host_was_never_reachable_completes(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = tmp_path / "hosts.yaml"
    extra = "".join(f"\n      {k}: {v}" for k, v in lab.inventory_vars("h2").items())
    inv.write_text(
        f"all:\n  vars:\n    ansible_user: {lab.user}\n  hosts:\n"
        f"    h2:\n      ansible_host: {lab.host('h2').ip}{extra}\n"
    )
    lab.stop_sshd("h2")
    try:
        capsys.readouterr()
        code = run(["-i", str(inv), "submit", "--json", "--", "true"])
        out = capsys.readouterr().out
        assert code == 0, out
        capsys.readouterr()
        run(["-i", str(inv), "show", "--json", "1"])
        shown = json.loads(capsys.readouterr().out)
        assert shown["state"] == "PENDING", shown
        assert "never probed" in shown["reason"] and "unreachable" in shown["reason"]
    finally:
        lab.start_sshd("h2")
    deadline = time.monotonic() + 60
    while True:
        capsys.readouterr()
        run(["-i", str(inv), "schedule"])
        capsys.readouterr()
        run(["-i", str(inv), "show", "--json", "1"])
        shown = json.loads(capsys.readouterr().out)
        if shown["state"] not in ("PENDING", "STARTING", "RUNNING"):
            break
        assert time.monotonic() < deadline, shown
        time.sleep(0.5)
    assert shown["state"] == "COMPLETED", shown


# -- a maintenance step on some hosts sees part of the cluster, not all of it ------------


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = run(list(args))
    return code, capsys.readouterr().out


def test_a_dispatch_step_on_some_hosts_fails_no_job_the_other_hosts_may_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = tmp_path / "hosts.yaml"
    inv.write_text(
        "all:\n  vars:\n    ansible_connection: local\n  hosts:\n"
        "    a:\n      capacity: {cpus: 1}\n    b: {}\n"
    )
    book = tmp_path / "only-a.yaml"
    book.write_text("hosts: a\nsteps:\n  - dispatch:\n")
    base = ("--state", str(tmp_path / "state.db"), "-i", str(inv))
    assert _cli(capsys, *base, "node", "drain", "b")[0] == 0
    code, out = _cli(capsys, *base, "submit", "--json", "--limit", "b", "--", "true")
    assert code == 0, out
    code, out = _cli(capsys, *base, "submit", "--json", "--cpus", "2", "--", "true")
    assert code == 0, out  # only b (drained, 2 CPUs here) can run it
    code, out = _cli(capsys, *base, "maintain", "--json", str(book))
    assert code == 0, out
    for job_id in ("1", "2"):
        code, out = _cli(capsys, *base, "show", "--json", job_id)
        assert json.loads(out)["state"] == "PENDING", out
        assert "drained" in json.loads(out)["reason"]  # the whole view's reason stands
    assert _cli(capsys, *base, "node", "resume", "b")[0] == 0
    for job_id in ("1", "2"):
        code, out = _cli(capsys, *base, "submit", "--wait", "--after", job_id, "--", "true")
        assert code == 0, out
