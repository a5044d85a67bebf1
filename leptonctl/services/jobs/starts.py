"""Starting jobs: one ``job-start`` per job, and for jobs with ``--input`` datasets the copy
of their inputs to the host first, claimed so that one process stages each job, once.

Every STARTING job is claimed in the store (``JobTable.claim_start``: an owner and a
lease) by the one reconcile pass that starts it, in the transaction that decided it: the
other terminals reconciling meanwhile neither start it a second time nor judge it from a
host that has not seen it yet.  The claim is released once the start is recorded; a claim
whose owner died (a terminal killed between deciding and starting) runs out, and the next
pass takes the job over.  Another process that did start the same run (its lease ran out,
and job-start is idempotent on the host) records the same run: never a reason to kill it.

A job with inputs is claimed by the reconcile pass that may stage (``submit``,
``submit --wait``, ``schedule``, maintain's ``dispatch``; not ``jobs``, ``show`` or
``logs``), then copied and started in the background of that process's passes; the claim
is renewed while the copy runs (chunks already there are not sent again on a takeover).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from leptonctl.core.jobviews import agent_spec
from leptonctl.errors import AgentError, HostError
from leptonctl.inventory import Host
from leptonctl.remote.transport import Connection
from leptonctl.store.claims import new_claimant
from leptonctl.store.interface import Store
from leptonctl.store.jobs import JobRecord

if TYPE_CHECKING:
    from leptonctl.remote.agent import AgentSessions, wire
    from leptonctl.services.jobs.reconcile import ReconcileReport

START_LEASE = 30.0  # seconds a claim on staging and starting a job lasts unless renewed


def new_owner() -> str:
    """A claimant's name: this machine, this process, a random part (one per pass or per
    ``Staging``), and its pid space, so a claim whose holder died here is taken over at once."""
    return new_claimant()


class Staging:
    """Jobs whose inputs this process copies to their hosts and then starts, in the
    background of its reconcile passes.  Each job is claimed in the store first (a lease,
    renewed while the copy runs), so one process stages it, once; the others, and every
    read-only command, go on without waiting for the transfer."""

    def __init__(self) -> None:
        self.owner = new_owner()
        self._tasks: dict[int, asyncio.Task[None]] = {}

    def busy(self) -> set[int]:
        return {i for i, t in self._tasks.items() if not t.done()}

    def spawn(self, job_id: int, work: Coroutine[Any, Any, None]) -> None:
        self._tasks[job_id] = asyncio.ensure_future(work)

    async def wait(self) -> None:
        """Until every staging begun so far has started its job or given up."""
        while self.busy():
            await asyncio.gather(*(self._tasks[i] for i in self.busy()))

    async def close(self) -> None:
        """Stop what is still copying (its claim is released: another process takes over)."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()


def claim_starts(
    store: Store, ids: list[int], staging: Staging | None, owner: str, now: float
) -> tuple[list[int], list[int]]:
    """Split the STARTING jobs into those this pass starts at once and those whose inputs
    it now stages; both are claimed for ``owner`` (``staging.owner`` when staging).  Jobs
    another live claim holds are left to their claimant.  Call inside ``exclusive()``."""
    plain: list[int] = []
    staged: list[int] = []
    for job_id in ids:
        record = store.jobs.get(job_id)
        if record is None:
            continue
        if not record.spec.get("inputs"):
            if store.jobs.claim_start(job_id, owner, now, START_LEASE) is None:
                plain.append(job_id)
        elif (
            staging is not None
            and job_id not in staging.busy()
            and store.jobs.claim_start(job_id, staging.owner, now, START_LEASE) is None
        ):
            store.jobs.update(job_id, reason=f"staging its input on {record.host}")
            staged.append(job_id)
        elif staging is None and store.jobs.start_claim(job_id, now) is None:
            store.jobs.update(
                job_id,
                reason=f"its input is to be staged on {record.host} by the next submit, "
                "schedule or maintain run",
            )  # its last stager stopped (killed, or its host went away)
    return plain, staged


async def start_jobs(
    sessions: AgentSessions,
    store: Store,
    ids: list[int],
    hosts: Mapping[str, Host],
    clock: Callable[[], float],
    report: ReconcileReport,
    owner: str,
) -> None:
    """Start STARTING jobs ``owner`` claimed: one ``job-start`` line per job on the host's
    agent session; each claim is released once its start is recorded."""
    by_host: dict[str, list[JobRecord]] = defaultdict(list)
    for record in (store.jobs.get(i) for i in ids):
        if record is not None and record.host in hosts and not record.cancel_requested:
            by_host[record.host or ""].append(record)
    try:
        await _start_on_hosts(sessions, store, by_host, hosts, clock, report)
    finally:
        with store.jobs.exclusive():
            for job_id in ids:
                store.jobs.release_start(job_id, owner)


async def _start_on_hosts(
    sessions: AgentSessions,
    store: Store,
    by_host: Mapping[str, list[JobRecord]],
    hosts: Mapping[str, Host],
    clock: Callable[[], float],
    report: ReconcileReport,
) -> None:

    async def start_all(host: Host, conn: Connection) -> dict[int, wire.JobStartReply | HostError]:
        return {
            record.id: await start_one(sessions, host, agent_spec(record))
            for record in by_host[host.name]
        }

    outcomes = await sessions.pool.fan_out([hosts[name] for name in by_host], start_all)
    now = clock()
    for name, records in by_host.items():
        outcome = outcomes[name]
        for record in records:
            answer = outcome if isinstance(outcome, HostError) else outcome.get(record.id, {})
            record_start(store, record, answer, now, report)


async def start_one(
    sessions: AgentSessions, host: Host, spec: dict[str, Any]
) -> wire.JobStartReply | AgentError:
    """One ``job-start``: its reply, or the agent's refusal (a job-level failure; a host
    that cannot be asked raises)."""
    from leptonctl.remote.agent import wire  # imported when a job starts

    try:
        return await sessions.request(host, wire.JobStart(spec=spec))
    except AgentError as exc:
        if exc.operation is None:
            raise
        return exc


def record_start(
    store: Store,
    record: JobRecord,
    answer: Mapping[str, Any] | HostError,
    now: float,
    report: ReconcileReport,
) -> None:
    """What became of one ``job-start``: RUNNING, FAILED, or still STARTING."""
    expect = ("STARTING", record.attempt)
    name = record.host or ""
    if isinstance(answer, AgentError) and answer.operation is not None:
        store.jobs.update_if(
            record.id, expect, state="FAILED", ended=now,
            reason=f"the agent refused to start it: {answer.reason}",
        )  # fmt: skip
    elif isinstance(answer, HostError):
        # It may have started before the connection failed: keep it STARTING (the
        # start is idempotent and is sent again); a host that stays away turns it
        # NODE_FAIL through lost_since, with the usual orphan kill.
        store.jobs.update_if(
            record.id, expect, reason=f"start on {name} unconfirmed: {answer.message}"
        )
    elif store.jobs.update_if(
        record.id,
        expect,
        state="RUNNING",
        started=answer.get("started") or now,
        reason=None,
        **_with_containment(record, answer.get("containment")),
    ):
        report.started.append(record.id)
    else:
        with store.jobs.exclusive():
            if not recorded_elsewhere(store.jobs.get(record.id), record):
                # cancelled or requeued while it was starting: that run must not live on
                store.jobs.add_orphan(name, record.agent_id, now)


def _with_containment(record: JobRecord, reported: Any) -> dict[str, Any]:
    """The allocation with what the host enforces (``containment``), checked: the CPUs it
    pinned the job to, how its memory limit is enforced; {} (no change) if it says nothing."""
    if not isinstance(reported, Mapping):
        return {}
    cpus = reported.get("cpus")
    note = reported.get("cpus_note")
    memory = reported.get("memory")
    containment = {
        "cpus": [c for c in cpus if isinstance(c, int)] if isinstance(cpus, list) else None,
        "cpus_note": note if isinstance(note, str) else None,
        "memory": memory if memory in ("sampling", "rlimit", "cgroup") else None,
    }
    return {"allocation": {**(record.allocation or {}), "containment": containment}}


def recorded_elsewhere(current: JobRecord | None, started: JobRecord) -> bool:
    """Whether the job, no longer STARTING, is recorded as the very run just started: the
    same attempt on the same host, RUNNING or ended as its host reported (another terminal
    started it too, or saw it run and end).  Otherwise the run is an orphan to kill."""
    return (
        current is not None
        and current.attempt == started.attempt
        and current.host == started.host
        and current.state in ("RUNNING", "COMPLETED", "FAILED", "TIMEOUT")
    )


async def stage_and_start(
    sessions: AgentSessions,
    store: Store,
    job_id: int,
    hosts: Mapping[str, Host],
    owner: str,
    clock: Callable[[], float],
    report: ReconcileReport,
) -> None:
    """Copy a claimed job's inputs to its host, then start it; the claim is renewed
    meanwhile and released at the end, whatever happens."""
    from leptonctl.services.data.datasets import DataError  # the data layer: inputs only
    from leptonctl.services.jobs.inputs import stage_inputs

    renewing = asyncio.ensure_future(_renew_claim(store, job_id, owner, clock))
    try:
        record = store.jobs.get(job_id)
        if record is None or record.state != "STARTING" or record.host not in hosts:
            return
        host = hosts[record.host or ""]
        expect = ("STARTING", record.attempt)
        try:
            env = await stage_inputs(sessions, store, hosts, host, record)
        except DataError as exc:
            store.jobs.update_if(
                record.id, expect, state="FAILED", ended=clock(),
                reason=f"its input could not be staged: {exc.message}",
            )  # fmt: skip
            return
        except HostError as exc:
            store.jobs.update_if(
                record.id, expect, reason=f"staging its input on {host.name} stopped: "
                f"{exc.message}; the next submit, schedule or maintain run goes on",
            )  # fmt: skip
            return
        current = store.jobs.get(job_id)
        if current is None or (current.state, current.attempt) != expect:
            return  # requeued or failed while its input was copied
        if current.cancel_requested:
            return  # never started: the next reconcile records it CANCELLED
        try:
            answer: Mapping[str, Any] | HostError = await start_one(
                sessions, host, agent_spec(current, env)
            )
        except HostError as exc:
            answer = exc
        record_start(store, current, answer, clock(), report)
    finally:
        renewing.cancel()
        store.jobs.release_start(job_id, owner)


async def _renew_claim(store: Store, job_id: int, owner: str, clock: Callable[[], float]) -> None:
    while True:
        await asyncio.sleep(START_LEASE / 3)
        with store.jobs.exclusive():
            store.jobs.claim_start(job_id, owner, clock(), START_LEASE)
