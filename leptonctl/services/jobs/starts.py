"""Starting jobs: one ``job-start`` per job, and for jobs with ``--input`` datasets the copy
of their inputs to the host first, claimed so that one process stages each job, once.

A job with inputs is claimed in the store (``JobTable.claim_start``: an owner and a lease,
renewed while the copy runs) by the reconcile pass that may stage (``submit``,
``submit --wait``, ``schedule``, maintain's ``dispatch``; not ``jobs``, ``show`` or
``logs``), then copied and started in the background of that process's passes.  Every
other process leaves the job alone while the claim lives; a claim whose owner died runs
out and the next staging pass takes the job over (chunks already there are not sent again).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections import defaultdict
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from leptonctl.core.jobviews import agent_spec
from leptonctl.errors import AgentError, HostError
from leptonctl.inventory import Host
from leptonctl.remote.agent import AgentSessions, wire
from leptonctl.remote.transport import Connection
from leptonctl.services.data.datasets import DataError
from leptonctl.services.jobs.inputs import stage_inputs
from leptonctl.store.interface import Store
from leptonctl.store.jobs import JobRecord

if TYPE_CHECKING:
    from leptonctl.services.jobs.reconcile import ReconcileReport

START_LEASE = 30.0  # seconds a claim on staging and starting a job lasts unless renewed


class Staging:
    """Jobs whose inputs this process copies to their hosts and then starts, in the
    background of its reconcile passes.  Each job is claimed in the store first (a lease,
    renewed while the copy runs), so one process stages it, once; the others, and every
    read-only command, go on without waiting for the transfer."""

    def __init__(self) -> None:
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
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
    store: Store, ids: list[int], staging: Staging | None, now: float
) -> tuple[list[int], list[int]]:
    """Split the STARTING jobs into those started at once and those whose inputs this
    process now stages (claimed); the rest are left to whoever holds or takes their claim.
    Call inside ``exclusive()``."""
    plain: list[int] = []
    staged: list[int] = []
    for job_id in ids:
        record = store.jobs.get(job_id)
        if record is None:
            continue
        if not record.spec.get("inputs"):
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
) -> None:
    """Start STARTING jobs: one ``job-start`` line per job on the host's agent session."""
    by_host: dict[str, list[JobRecord]] = defaultdict(list)
    for record in (store.jobs.get(i) for i in ids):
        if record is not None and record.host in hosts:
            by_host[record.host or ""].append(record)

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
        record.id, expect, state="RUNNING", started=answer.get("started") or now, reason=None
    ):
        report.started.append(record.id)
    else:  # cancelled or requeued while it was starting: that run must not live on
        with store.jobs.exclusive():
            store.jobs.add_orphan(name, record.agent_id, now)


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
