"""The job reconcile loop: observe the hosts, decide under one transaction, act.

Daemonless and level-triggered.  ``reconcile`` asks each host's agent what
became of the jobs it runs (truth lives on the host), records what ended,
fails or requeues what was lost, then decides under one store transaction
which pending jobs start where (the pure scheduler), then starts them.  Every
job command calls it first; so do ``leptonctl schedule`` and cron.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from leptonctl.errors import AgentError, HostError
from leptonctl.inventory import Host, Inventory
from leptonctl.services.context import ServiceContext
from leptonctl.store.claims import new_claimant
from leptonctl.store.interface import Store
from leptonctl.store.jobs import FINAL, JobRecord

if TYPE_CHECKING:
    from leptonctl.core.facts import HostFacts
    from leptonctl.core.scheduler import Node
    from leptonctl.remote.agent import AgentSessions
    from leptonctl.remote.transport import Connection
    from leptonctl.services.jobs.starts import Staging

# The scheduler, the job views, the facts parser and the start machinery are imported where
# a pass needs them (a job active, pending or to start): a pass with nothing to do, the one
# every reading command begins with when nothing is queued, loads none of them.

FACTS_MAX_AGE = 600.0  # seconds before a host's stored capacity is probed again
NODE_FAIL_AFTER = 120.0  # seconds a host may be unreachable before its jobs are NODE_FAIL


# -- the scheduler's view of the cluster -------------------------------------------


def stored_facts(store: Store, hosts: Sequence[Host]) -> dict[str, tuple[float, HostFacts | None]]:
    out: dict[str, tuple[float, HostFacts | None]] = {}
    stored = store.load_facts([h.name for h in hosts])
    if not stored:
        return out
    from leptonctl.core.facts import WireError, parse_facts

    for name, facts in stored.items():
        try:
            out[name] = (facts.probed_at, parse_facts(facts.document))
        except WireError:
            out[name] = (facts.probed_at, None)
    return out


# -- which hosts a pass observes ------------------------------------------------------


def hosts_to_observe(
    inventory: Inventory,
    active: Sequence[JobRecord],
    pending: Sequence[JobRecord],
    orphans: Mapping[str, Sequence[str]],
    facts: Mapping[str, HostFacts | None],
    stale: Collection[str],
    drained: Collection[str],
) -> list[Host]:
    """The hosts a reconcile pass must talk to, in inventory order, pure.

    A host matters when it runs (or is starting) one of our ``active`` jobs, when it holds
    runs given up on (``orphans``: to be stopped, or their ends collected), or when a
    ``pending`` job (not being cancelled) may go there: allowed by the job's ``--limit``,
    not drained, and either its capacity as last known could ever hold the job or that
    knowledge is ``stale`` (never probed, or too old: the pass probes it again).  With no
    active, pending or orphaned job, no host matters and none is contacted.  A job that
    ended while nothing watched is still STARTING/RUNNING in the store, so its host is
    observed by the next pass, which collects it."""
    wanted = {r.host for r in active if r.host} | {h for h, ids in orphans.items() if ids}
    waiting = [r for r in pending if r.state == "PENDING" and not r.cancel_requested]
    if waiting:
        from leptonctl.core.jobviews import job_view, nodes_from
        from leptonctl.core.scheduler.allocate import could_ever_fit
        from leptonctl.core.scheduler.dispatch import allowed_nodes

        names = {h.name for h in inventory.hosts}
        nodes = nodes_from(inventory.hosts, facts, names)  # capacity only: who is up is moot
        for record in waiting:
            job = job_view(record, inventory)
            wanted.update(
                n.name
                for n in allowed_nodes(job, nodes)
                if n.name not in drained and (n.name in stale or could_ever_fit(n, job.request))
            )
    return [h for h in inventory.hosts if h.name in wanted]


# -- reconcile ---------------------------------------------------------------------


@dataclass
class ReconcileReport:
    started: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    unreachable: dict[str, HostError] = field(default_factory=dict)


@dataclass(frozen=True)
class _HostReport:
    jobs: Mapping[str, Mapping[str, Any]]  # agent id -> job-status entry
    probed: Any | None  # a fresh Probe, when the stored facts were stale
    # Runs given up on while the host was away that had ended there meanwhile (agent id ->
    # job-status entry): what really happened to them, recorded under the transaction.
    orphans_ended: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


async def reconcile(
    ctx: ServiceContext,
    *,
    node_fail_after: float = NODE_FAIL_AFTER,
    stage: bool = True,
    staging: Staging | None = None,
    whole: bool = True,
) -> ReconcileReport:
    """Collect what ended, requeue what was lost, start what now fits, on the hosts of the
    context's inventory, over the context's sessions (kept across repeated passes:
    ``--wait``, ``schedule --watch``).

    Jobs with ``--input`` datasets are staged (copied to their host) before they start:
    with ``stage=False`` (the read-only commands) this pass neither stages nor waits for
    staging; with a long-lived ``staging``, the copies run in the background of the
    caller's passes; otherwise this pass waits for the copies it began.

    ``whole=False``: the context's inventory is only part of the cluster (a maintenance
    step on some hosts): the pass starts what fits there, and neither fails a job that
    none of those hosts could run nor rewrites why a job waits.
    """
    if staging is None and stage:
        from leptonctl.services.jobs.starts import Staging

        mine = Staging()
        try:
            report = await reconcile(
                ctx, node_fail_after=node_fail_after, stage=stage, staging=mine, whole=whole
            )
            await mine.wait()
            return report
        finally:
            await mine.close()
    inventory, options, store, clock = ctx.inventory, ctx.options, ctx.store, ctx.clock
    owner = staging.owner if staging is not None else new_claimant()  # starts.new_owner()
    report = ReconcileReport()
    hosts = list(inventory.hosts)
    by_name = {h.name: h for h in hosts}
    active = [r for r in store.jobs.in_states(("STARTING", "RUNNING")) if r.host in by_name]
    # Only records seen exactly like this are judged below: another leptonctl may start,
    # cancel or requeue jobs while this one talks to the hosts.
    observed = {r.id: (r.state, r.attempt, r.host) for r in active}
    ids_on: dict[str, list[str]] = defaultdict(list)
    cancels_on: dict[str, list[str]] = defaultdict(list)
    for record in active:
        ids_on[record.host or ""].append(record.agent_id)
        if record.cancel_requested:
            cancels_on[record.host or ""].append(record.agent_id)
    orphans = store.jobs.orphans()
    pending = store.jobs.in_states(("PENDING",))
    # every host's stored facts are read and parsed only when a job waits for a place
    waiting = any(not r.cancel_requested for r in pending)
    busy = set(ids_on) | {h for h, ids in orphans.items() if ids}
    known = stored_facts(store, hosts if waiting else [h for h in hosts if h.name in busy])
    now = clock()
    stale = {n for n, (at, f) in known.items() if f is None or now - at > FACTS_MAX_AGE}
    stale.update(h.name for h in hosts if h.name not in known)
    observed_hosts = hosts_to_observe(
        inventory,
        active,
        pending,
        orphans,
        {n: f for n, (_, f) in known.items()},
        stale,
        store.drained(),
    )

    async def observe(host: Host, conn: Connection) -> _HostReport:
        from leptonctl.remote.agent import probe_host, wire  # a host is contacted: the wire

        sessions = ctx.sessions
        ended = await _settle_orphans(sessions, store, host, orphans.get(host.name, []))
        for agent_id in cancels_on.get(host.name, []):  # cancel is level-triggered
            await _kill(sessions, host, agent_id)
        probe = None
        if host.name in stale:
            probe = await probe_host(conn, host, options.command_timeout)
        ids = ids_on.get(host.name)
        if not ids:  # nothing of ours runs there: being reachable is all we need to know
            if probe is None:
                (await conn.run("true", timeout=options.command_timeout)).check()
            return _HostReport({}, probe, ended)
        # an error reply raises: not an observation, judging from it would fail healthy jobs
        doc = await sessions.request(host, wire.JobStatus(ids=list(ids)))
        return _HostReport({j["id"]: j for j in doc.get("jobs", [])}, probe, ended)

    # no host to observe (nothing active or pending): no connection, not even the SSH stack
    outcomes: dict[str, _HostReport | HostError] = {}
    if observed_hosts:
        outcomes = await ctx.sessions.pool.fan_out(observed_hosts, observe)
    now = clock()
    fresh = {
        n: o.probed.document for n, o in outcomes.items() if isinstance(o, _HostReport) and o.probed
    }
    if fresh:
        store.save_facts(now, fresh)
    # a host not observed is as last known: no pending job could go there anyway
    up = {h.name for h in hosts if not isinstance(outcomes.get(h.name), HostError)}
    report.unreachable = {n: o for n, o in outcomes.items() if isinstance(o, HostError)}
    # read (and parsed) before the queue's lock: capacity only, never what holds it
    facts = {n: f for n, (_, f) in stored_facts(store, hosts).items()} if waiting else None
    with store.jobs.exclusive():
        for name, outcome in outcomes.items():
            if isinstance(outcome, _HostReport) and outcome.orphans_ended:
                _record_late_ends(store, name, outcome.orphans_ended, report)
        for record in store.jobs.in_states(("STARTING", "RUNNING")):
            if observed.get(record.id) != (record.state, record.attempt, record.host):
                continue  # changed meanwhile, or on a host of another inventory: next pass
            if record.state == "STARTING" and _claimed_by_other(store, record.id, owner, now):
                continue  # another process is starting it right now: its host may not know
            _collect(store, record, outcomes.get(record.host or ""), now, node_fail_after, report)
        drained = store.drained()
        why_not = {n: f"unreachable: {e.message}" for n, e in report.unreachable.items()}
        why_not.update((n, f"drained: {reason}") for n, (reason, _) in drained.items())

        def nodes() -> list[Node]:
            # no job waited when the pass began, but one was queued meanwhile: read now
            parsed = facts
            if parsed is None:
                parsed = {n: f for n, (_, f) in stored_facts(store, hosts).items()}
            from leptonctl.core.jobviews import nodes_from, owned_job_tags

            ours = owned_job_tags(parsed.values(), store.jobs.get)
            return nodes_from(hosts, parsed, up - set(drained), why_not, ours=ours)

        starts = _decide(store, inventory, nodes, now, stage, whole)
        plain: list[int] = []
        staged: list[int] = []
        if starts:
            from leptonctl.services.jobs.starts import claim_starts

            plain, staged = claim_starts(store, starts, staging, owner, now)
    if staging is not None and staged:
        from leptonctl.services.jobs.starts import stage_and_start

        for job_id in staged:
            work = stage_and_start(
                ctx.sessions, store, job_id, by_name, staging.owner, clock, report
            )
            staging.spawn(job_id, work)
    if plain:
        from leptonctl.services.jobs.starts import start_jobs

        await start_jobs(ctx.sessions, store, plain, by_name, clock, report, owner)
    return report


def _claimed_by_other(store: Store, job_id: int, owner: str, now: float) -> bool:
    held = store.jobs.start_claim(job_id, now)
    return held is not None and held[0] != owner


def _collect(
    store: Store,
    record: JobRecord,
    outcome: _HostReport | HostError | None,
    now: float,
    node_fail_after: float,
    report: ReconcileReport,
) -> None:
    if isinstance(outcome, _HostReport):
        status = outcome.jobs.get(record.agent_id, {})
        state = status.get("state", "UNKNOWN")
        if state == "CANCELLED" and not record.cancel_requested:
            # nobody here asked: the supervisor was stopped on the host (e.g. a shutdown)
            _node_fail(store, record, status.get("reason") or "stopped on its host", now, report)
        elif state in FINAL:
            store.jobs.update(
                record.id,
                state=state,
                exit_code=status.get("exit_code"),
                ended=status.get("ended") or now,
                peak_rss_bytes=status.get("peak_rss_bytes"),
                reason=status.get("reason"),
                lost_since=None,
            )
            report.finished.append(record.id)
            retry = record.attempt < record.retries and not record.cancel_requested
            if state in ("FAILED", "TIMEOUT") and retry:
                _requeue(store, record, f"attempt {record.attempt + 1} ended {state}", report)
        elif state == "UNKNOWN" and record.cancel_requested:  # cancelled before it started
            store.jobs.update(record.id, state="CANCELLED", ended=now, reason="cancelled")
            report.finished.append(record.id)
        elif state == "LOST" or (state == "UNKNOWN" and record.state == "RUNNING"):
            _node_fail(
                store, record, status.get("reason") or "the job vanished from its host", now, report
            )
        elif record.lost_since is not None:
            store.jobs.update(record.id, lost_since=None)
        return
    if record.lost_since is None:
        store.jobs.update(record.id, lost_since=now)
    elif now - record.lost_since >= node_fail_after:
        why = outcome.message if isinstance(outcome, HostError) else "host not in the inventory"
        _node_fail(store, record, f"host {record.host} unreachable: {why}", now, report)


async def _settle_orphans(
    sessions: AgentSessions, store: Store, host: Host, agent_ids: Sequence[str]
) -> dict[str, Mapping[str, Any]]:
    """The host of runs given up on is back: kill those still alive there; return those
    that had ended meanwhile (their end records tell what really happened)."""
    if not agent_ids:
        return {}
    from leptonctl.remote.agent import wire

    doc = await sessions.request(host, wire.JobStatus(ids=list(agent_ids)))
    ended: dict[str, Mapping[str, Any]] = {
        str(j["id"]): j
        for j in doc.get("jobs", [])
        if isinstance(j, Mapping) and j.get("state") in ("COMPLETED", "FAILED", "TIMEOUT")
    }
    for agent_id in agent_ids:
        if agent_id not in ended:  # back from the dead: stop the old run
            await _kill(sessions, host, agent_id)
    store.jobs.forget_orphans(host.name, [a for a in agent_ids if a not in ended])
    return ended


async def _kill(sessions: AgentSessions, host: Host, agent_id: str) -> None:
    """job-kill; the agent's refusal changes nothing here (the next observation tells)."""
    from leptonctl.remote.agent import wire

    try:
        await sessions.request(host, wire.JobKill(id=agent_id))
    except AgentError as exc:
        if exc.operation is None:
            raise


def _record_late_ends(
    store: Store,
    host: str,
    ended: Mapping[str, Mapping[str, Any]],
    report: ReconcileReport,
) -> None:
    """Runs that ended while their host was unreachable, reported now that it is back.

    A job judged NODE_FAIL for that run takes the state its host recorded (the reason says
    it was once considered lost).  A job requeued for it that has not started again takes
    the old run's result if it COMPLETED (the requeue is withdrawn: one run, counted once);
    a failed old run leaves the requeue standing, as a failure with retries would.  A job
    whose new attempt already started keeps that attempt: the old run is not counted.
    Call inside ``exclusive()``."""
    for agent_id, status in ended.items():
        job_id, attempt, uid = _parse_agent_id(agent_id)
        record = store.jobs.get(job_id) if job_id is not None else None
        if record is None or record.spec.get("uid", "x") != uid:
            continue
        state = str(status.get("state"))
        outcome = f"{state}, exit {status.get('exit_code')}" if state != "TIMEOUT" else state
        fields: dict[str, Any] = {
            "state": state,
            "exit_code": status.get("exit_code"),
            "ended": status.get("ended"),
            "peak_rss_bytes": status.get("peak_rss_bytes"),
            "lost_since": None,
        }
        if record.state == "NODE_FAIL" and record.attempt == attempt and record.host == host:
            fields["reason"] = (
                f"{outcome} while {host} was unreachable; it had been considered lost "
                f"(NODE_FAIL: {record.reason}) until its host came back and reported its end"
            )
            if store.jobs.update_if(record.id, ("NODE_FAIL", attempt), **fields):
                report.finished.append(record.id)
        elif (
            record.state == "PENDING"
            and record.attempt == attempt + 1
            and not record.cancel_requested
            and state == "COMPLETED"
        ):
            fields.update(
                attempt=attempt,
                host=host,
                started=status.get("started"),
                reason=(
                    f"{outcome} while {host} was unreachable; it had been considered lost and "
                    "requeued until its host came back and reported its end (requeue withdrawn)"
                ),
            )
            if store.jobs.update_if(record.id, ("PENDING", attempt + 1), **fields):
                report.finished.append(record.id)
        store.jobs.forget_orphans(host, [agent_id])


def _parse_agent_id(agent_id: str) -> tuple[int | None, int, str]:
    """``JobRecord.agent_id`` back into (job id, attempt, uid); (None, 0, "") if not ours."""
    parts = agent_id.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None, 0, ""
    return int(parts[0]), int(parts[1]), parts[2]


def _node_fail(
    store: Store, record: JobRecord, why: str, now: float, report: ReconcileReport
) -> None:
    if record.host:  # it may still run there: kill it if that host comes back
        store.jobs.add_orphan(record.host, record.agent_id, now)
    if record.cancel_requested:
        store.jobs.update(record.id, state="CANCELLED", ended=now, reason=f"cancelled; {why}")
        report.finished.append(record.id)
        return
    if record.attempt < record.retries:
        _requeue(store, record, why, report)
        return
    store.jobs.update(record.id, state="NODE_FAIL", ended=now, reason=why)
    report.finished.append(record.id)


def _requeue(store: Store, record: JobRecord, why: str, report: ReconcileReport) -> None:
    if record.cancel_requested:
        return
    store.jobs.update(
        record.id,
        state="PENDING",
        attempt=record.attempt + 1,
        host=None,
        allocation=None,
        started=None,
        ended=None,
        exit_code=None,
        lost_since=None,
        reason=f"requeued: {why}",
    )
    report.requeued.append(record.id)


def _decide(
    store: Store,
    inventory: Inventory,
    nodes_now: Callable[[], list[Node]],
    now: float,
    stage: bool = True,
    whole: bool = True,
) -> list[int]:
    """One scheduling pass inside the caller's transaction; returns ids now STARTING.
    Without ``stage``, a job with inputs is not moved to STARTING (a read-only command
    would not stage it: its devices would sit idle).  Without ``whole`` (a part of the
    cluster), no job is failed as impossible and no waiting reason is rewritten.
    ``nodes_now`` gives the scheduler's nodes; it is called only when a job waits."""
    queued = store.jobs.in_states(("PENDING", "STARTING", "RUNNING"))  # one read of the queue
    pending = []
    for record in queued:
        if record.state == "PENDING" and record.cancel_requested:
            store.jobs.update(record.id, state="CANCELLED", ended=now, reason="cancelled")
        elif record.state == "PENDING":
            pending.append(record)
    starting = [r for r in queued if r.state == "STARTING"]
    if not pending:
        return [r.id for r in starting]
    nodes = nodes_now()
    up = {n.name for n in nodes if n.schedulable}
    from leptonctl.core.jobviews import allocation_record, job_view, running_view
    from leptonctl.core.scheduler import dispatch
    from leptonctl.services.jobs.inputs import input_locality  # the data layer: pending only

    active = [r for r in queued if r.state != "PENDING"]
    said = {r.id: r.reason for r in pending}  # a reason is written only when it changes
    deps = {int(a) for r in pending for a in r.spec.get("after", ())}
    finished = {str(i): s for i, s in store.jobs.states_of(deps).items() if s in FINAL}
    locality = input_locality(store, pending)
    decision = dispatch(
        [job_view(r, inventory, up, locality.get(r.id)) for r in pending],
        nodes,
        [running_view(r) for r in active],
        finished,
        now,
        whole=whole,
    )
    with_inputs = {r.id for r in pending if r.spec.get("inputs")}
    started = []
    for alloc in decision.start:
        if not stage and int(alloc.job_id) in with_inputs:
            why = (
                f"fits on {alloc.host}; its input is staged by the next submit, "
                "schedule or maintain run"
            )
            if said.get(int(alloc.job_id)) != why:
                store.jobs.update(int(alloc.job_id), reason=why)
            continue
        started.append(int(alloc.job_id))
        store.jobs.update(
            int(alloc.job_id),
            state="STARTING",
            host=alloc.host,
            allocation=allocation_record(alloc),
            reason=None,
        )
    for doomed in decision.doomed:
        store.jobs.update(int(doomed.job_id), state="FAILED", ended=now, reason=doomed.reason)
    for blocked in decision.blocked if whole else ():
        if said.get(int(blocked.job_id)) != blocked.reason:
            store.jobs.update(int(blocked.job_id), reason=blocked.reason)
    return [r.id for r in starting] + started
