"""Job operations: enqueue, dry-run, wait, cancel, logs.  Each reconciles first
(``leptonctl.services.jobs.reconcile``) so it acts on what the hosts say now."""

from __future__ import annotations

import asyncio
import secrets
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from leptonctl.core.datasets import parse_input
from leptonctl.core.jobspec import Submission
from leptonctl.core.jobviews import nodes_from, owned_job_tags, running_view
from leptonctl.core.reports import DryRun
from leptonctl.core.scheduler import (
    Job,
    plan,
)
from leptonctl.errors import AgentError, UsageError
from leptonctl.inventory import Host, Inventory, select_hosts
from leptonctl.services.context import ServiceContext
from leptonctl.services.jobs.reconcile import (
    NODE_FAIL_AFTER,
    ReconcileReport,
    reconcile,
    stored_facts,
)
from leptonctl.services.jobs.starts import Staging
from leptonctl.store.interface import Store
from leptonctl.store.jobs import FINAL, JobRecord

if TYPE_CHECKING:
    from leptonctl.remote.agent import AgentSessions

# -- submit ----------------------------------------------------------------------


def enqueue(
    store: Store, inventory: Inventory, jobs: Sequence[Submission], now: float
) -> list[int]:
    """Add jobs to the queue; ``after`` names other entries of the batch or existing ids."""
    for job in jobs:
        if job.limit:
            select_hosts(inventory, job.limit)  # an unknown host or group is an error now
    planned = _planned_hosts(store, inventory, jobs, now)
    names: dict[str, list[int]] = defaultdict(list)
    ids: list[int] = []
    with store.jobs.exclusive():  # all of the batch or none of it
        for index, job in enumerate(jobs):
            after = _resolve_after(store, job, names)
            spec = _spec(job, after)
            spec["inputs"] = _resolve_inputs(store, job.inputs)
            if index in planned:
                spec["planned_host"] = planned[index]
            job_id = store.jobs.insert(job.name, spec, job.priority, job.retries, now)
            ids.append(job_id)
            names[job.name].append(job_id)
            if job.array_index is not None:
                names[job.name.split("[", 1)[0]].append(job_id)
    return ids


def _planned_hosts(
    store: Store, inventory: Inventory, jobs: Sequence[Submission], now: float
) -> dict[int, str]:
    """With runtime estimates, the makespan planner decides which host each job of the batch
    should run on; dispatch then keeps the job for that host while the host is up."""
    if not any(job.estimates for job in jobs):
        return {}
    result = dry_run(store, inventory, jobs, now).plan
    return {int(p.job_id): p.host for p in result.placements}


def _resolve_after(store: Store, job: Submission, names: Mapping[str, list[int]]) -> list[int]:
    resolved: list[int] = []
    for ref in job.after:
        if ref in names:
            resolved.extend(names[ref])
        elif ref.isdigit() and store.jobs.get(int(ref)) is not None:
            resolved.append(int(ref))
        else:
            raise UsageError(
                f"job {job.name}: --after {ref!r} is neither a job id "
                "nor an earlier job of this batch"
            )
    return resolved


def _resolve_inputs(store: Store, inputs: Sequence[str]) -> list[dict[str, Any]]:
    """Pin each input to a ready version now: the job sees the data as it was submitted."""
    from leptonctl.services.data.datasets import find_record  # the data layer: inputs only

    resolved = []
    for text in inputs:
        ref = parse_input(text)
        record = find_record(store, ref.name, ref.version)
        resolved.append({"name": ref.name, "version": record.version, "mount": ref.mount})
    return resolved


def _spec(job: Submission, after: list[int]) -> dict[str, Any]:
    return {
        "uid": secrets.token_hex(4),
        "command": job.command if isinstance(job.command, str) else list(job.command),
        "env": dict(job.env),
        "workdir": job.workdir,
        "request": asdict(job.request),
        "walltime": job.walltime,
        "estimates": dict(job.estimates),
        "limit": job.limit,
        "after": after,
        "array_index": job.array_index,
    }


def rejected(store: Store, ids: Sequence[int]) -> dict[int, str]:
    """Jobs of a submit that the first scheduling pass found can never run (more devices,
    CPUs or memory than any allowed host has, a failed dependency): id -> why.

    They stay in the history as FAILED, never started (``jobs --all`` lists them), and
    ``submit`` says so and exits 1, as ``sbatch`` refuses an impossible request."""
    out: dict[int, str] = {}
    for job_id in ids:
        record = store.jobs.get(job_id)
        if record is not None and record.state == "FAILED" and record.started is None:
            out[job_id] = record.reason or "it can never run"
    return out


# -- dry run -------------------------------------------------------------------------


def dry_run(store: Store, inventory: Inventory, jobs: Sequence[Submission], now: float) -> DryRun:
    """Plan without touching a host or the queue: declared capacity + last stored probes."""
    hosts = list(inventory.hosts)
    facts = {n: f for n, (_, f) in stored_facts(store, hosts).items()}
    unknown = tuple(h.name for h in hosts if h.capacity is None and facts.get(h.name) is None)
    drained = store.drained()
    why_not = {n: f"drained: {reason}" for n, (reason, _) in drained.items()}
    schedulable = {h.name for h in hosts} - set(drained)
    ours = owned_job_tags(facts.values(), store.jobs.get)
    nodes = nodes_from(hosts, facts, schedulable, why_not, ours=ours)
    ids = {job.name: str(i) for i, job in enumerate(jobs)}
    views = []
    for i, job in enumerate(jobs):
        after = tuple(ids[a] for a in job.after if a in ids)
        limit = job.limit
        views.append(
            Job(
                id=str(i),
                request=job.request,
                priority=job.priority,
                submitted=float(i),
                walltime=job.walltime,
                after=after,
                hosts=frozenset(h.name for h in select_hosts(inventory, limit)) if limit else None,
                estimates=job.estimates,
            )
        )
    running = [running_view(r) for r in store.jobs.in_states(("RUNNING",))]
    result = plan(views, nodes, running, now=now)
    return DryRun(result, {str(i): j.name for i, j in enumerate(jobs)}, unknown)


# -- cancel and logs -------------------------------------------------------------------


async def cancel(ctx: ServiceContext, ids: Sequence[int], any_user: bool = False) -> dict[int, str]:
    """Cancel jobs: pending ones at once, running ones by killing their process tree.
    Another user's job only with ``any_user`` (nothing is cancelled otherwise)."""
    inventory, options, store, clock = ctx.inventory, ctx.options, ctx.store, ctx.clock
    results: dict[int, str] = {}
    by_name = {h.name: h for h in inventory.hosts}
    records = []
    for job_id in ids:
        record = store.jobs.get(job_id)
        if record is None:
            raise UsageError(f"no job {job_id}")
        records.append(record)
    if not any_user:
        check_own_jobs(records, store.actor.user)
    from leptonctl.remote.agent import run_agent
    from leptonctl.remote.pool import HostPool  # the SSH stack: only when a job is cancelled
    from leptonctl.services.hosts.status import new_host_key_recorder

    async with HostPool(options, new_host_key_recorder(store, clock)) as pool:
        for record in records:
            if record.state in FINAL:
                results[record.id] = record.state
                continue
            # First the flag: from now on no reconcile starts, requeues or keeps it.
            store.jobs.update(record.id, cancel_requested=1)
            if store.jobs.update_if(
                record.id, ("PENDING", record.attempt),
                state="CANCELLED", ended=clock(), reason="cancelled while pending",
            ):  # fmt: skip
                results[record.id] = "CANCELLED"
                continue
            record = store.jobs.get(record.id) or record  # started meanwhile, maybe
            host = by_name.get(record.host or "")
            if record.state in FINAL or host is None:
                results[record.id] = record.state
                continue
            conn = await pool.connect(host)
            doc, _ = await run_agent(
                conn, host, ["job-kill", record.agent_id], options.command_timeout
            )
            results[record.id] = str(doc.get("state", "RUNNING"))
    return results


def check_own_jobs(records: Sequence[JobRecord], user: str) -> None:
    """``UsageError`` naming the jobs another user submitted (a job from before submitters
    were recorded belongs to nobody in particular)."""
    theirs = [r for r in records if r.submitted_by is not None and r.submitted_by != user]
    if theirs:
        named = ", ".join(f"{r.id} ({r.submitted_by}@{r.submitted_from})" for r in theirs)
        raise UsageError(
            f"job{'s' if len(theirs) > 1 else ''} {named} "
            f"{'are' if len(theirs) > 1 else 'is'} not yours ({user}); nothing was cancelled",
            hint="add --any-user to cancel another user's jobs",
        )


async def wait_for(ctx: ServiceContext, ids: Sequence[int], poll: float = 1.0) -> list[JobRecord]:
    """Reconcile until every job in ``ids`` has ended (one connection per host throughout;
    inputs are staged in the background of the passes)."""
    store = ctx.store
    staging = Staging()
    try:
        report = ReconcileReport()
        while True:
            records = [store.jobs.get(i) for i in ids]
            if all(r is not None and r.state in FINAL for r in records):
                return [r for r in records if r is not None]
            busy = report.started or report.finished  # keep going while things move
            await asyncio.sleep(poll / 5 if busy else poll)
            report = await reconcile(ctx, staging=staging)
    finally:
        await staging.close()


async def reconcile_loop(
    ctx: ServiceContext,
    forever: bool,
    interval: float,
    on_report: Callable[[ReconcileReport], None],
    node_fail_after: float = NODE_FAIL_AFTER,
) -> ReconcileReport:
    """``leptonctl schedule [--watch]``: one pass, or a pass every ``interval`` seconds."""
    staging = Staging()  # inputs are copied in the background of the passes
    try:
        while True:
            report = await reconcile(ctx, node_fail_after=node_fail_after, staging=staging)
            if not forever:
                await staging.wait()
            on_report(report)
            if not forever:
                return report
            await asyncio.sleep(interval)
    finally:
        await staging.close()


async def job_log(
    ctx: ServiceContext, job_id: int, follow: bool, write: Callable[[str], None]
) -> None:
    """Copy a job's log to ``write``; with ``follow``, wait for it to start and keep going
    until it ends."""
    inventory, store, sessions = ctx.inventory, ctx.store, ctx.sessions
    while True:
        await reconcile(ctx, stage=False)
        record = store.jobs.get(job_id)
        if record is None:
            raise UsageError(f"no job {job_id}")
        if record.host is not None or record.state in FINAL:
            break
        if not follow:
            raise UsageError(
                f"job {job_id} has no output yet ({record.state})",
                hint=f"`leptonctl logs -f {job_id}` waits for it to start",
            )
        await asyncio.sleep(1.0)
    host = {h.name: h for h in inventory.hosts}.get(record.host or "")
    if host is None:
        raise UsageError(f"job {job_id} never ran on a host of this inventory ({record.state})")
    offset = 0
    while True:
        chunk = await read_log(sessions, host, record.agent_id, offset)
        write(chunk.data)
        offset = chunk.next_offset
        if chunk.eof or (not follow and not chunk.data):
            return
        if not chunk.data:
            await asyncio.sleep(0.5)


@dataclass(frozen=True)
class LogChunk:
    data: str
    next_offset: int
    eof: bool
    state: str


async def read_log(sessions: AgentSessions, host: Host, agent_id: str, offset: int) -> LogChunk:
    """One piece of a job's log, over the host's agent session (``logs -f`` polls this)."""
    from leptonctl.remote.agent import wire

    try:
        doc = await sessions.request(host, wire.JobLog(id=agent_id, offset=offset))
    except AgentError as exc:
        if exc.operation is None:
            raise
        raise UsageError(exc.reason or exc.message) from None
    return LogChunk(
        str(doc.get("data", "")),
        int(doc.get("next_offset", offset)),
        bool(doc.get("eof")),
        str(doc.get("state", "")),
    )
