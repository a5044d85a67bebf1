"""One scheduling pass: which pending jobs start now, on which devices, and why the rest wait.

Strict priority (priority, then submission time, then id) with EASY backfill: the
first eligible job that cannot start gets a reservation (the earliest time enough
resources free up on one host, from the walltimes of what holds them); a later job
may start now only if the reservation still fits at its time with that job's
resources counted (held until its walltime ends, forever without a walltime).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from leptonctl.core.scheduler.allocate import (
    Usage,
    allocate,
    could_ever_fit,
    explain_shortage,
    fits_empty,
    free_gpus,
    usage_of,
)
from leptonctl.core.scheduler.model import (
    COMPLETED,
    SIZES,
    Allocation,
    Blocked,
    Dispatch,
    Job,
    Node,
    Running,
    dependency_cycles,
    estimate_for,
)


@dataclass(frozen=True)
class Hold:
    """Resources held on a host until ``end`` (None = no known end)."""

    allocation: Allocation
    end: float | None


@dataclass(frozen=True)
class Reservation:
    """The top blocked job's claim: ``host`` at ``time``, or (time None) every host it could use."""

    job: Job
    time: float | None
    hosts: frozenset[str]


def queue_order(jobs: Sequence[Job]) -> list[Job]:
    """Highest priority first, then first submitted, then the lower id: ids are numbers
    (array and batch jobs share a submit time), so ``10`` comes after ``9``, not after ``1``."""
    return sorted(jobs, key=lambda j: (-j.priority, j.submitted, _id_order(j.id)))


def _id_order(job_id: str) -> tuple[int, int, str]:
    if job_id.isascii() and job_id.isdigit():
        return (0, int(job_id), "")
    return (1, 0, job_id)


def allowed_nodes(job: Job, nodes: Sequence[Node]) -> list[Node]:
    return [n for n in nodes if job.hosts is None or n.name in job.hosts]


def usage_at(host: str, holds: Sequence[Hold], time: float | None) -> Usage:
    """What ``holds`` occupy on ``host`` just after ``time`` (None = now: everything held)."""
    return usage_of(
        h.allocation
        for h in holds
        if h.allocation.host == host and (time is None or h.end is None or h.end > time)
    )


def reservation_for(
    job: Job, nodes: Sequence[Node], holds: Sequence[Hold], now: float
) -> Reservation:
    """The earliest time and host at which ``job`` fits, as holds end by their walltimes."""
    hosts = [n for n in allowed_nodes(job, nodes) if n.schedulable and fits_empty(n, job.request)]
    ends = sorted({max(h.end, now) for h in holds if h.end is not None})
    for time in [now, *ends]:
        fitting = [
            (_fit_key(job, n, a), n.name)
            for n in hosts
            if (a := allocate(job.id, n, job.request, usage_at(n.name, holds, time))) is not None
        ]
        if fitting:
            return Reservation(job, time, frozenset({min(fitting)[1]}))
    return Reservation(job, None, frozenset(n.name for n in hosts))


def reservation_kept(
    reservation: Reservation,
    nodes: Sequence[Node],
    holds: Sequence[Hold],
    candidate: Hold,
) -> bool:
    """Whether starting ``candidate`` leaves the reservation's job able to start as planned."""
    host = candidate.allocation.host
    if host not in reservation.hosts:
        return True
    if reservation.time is None:
        return False
    node = next(n for n in nodes if n.name == host)
    usage = usage_at(host, [*holds, candidate], reservation.time)
    return allocate(reservation.job.id, node, reservation.job.request, usage) is not None


def _fit_key(job: Job, node: Node, alloc: Allocation) -> tuple[int, int, int]:
    """Best fit: no unused device kinds, whole GPUs before MIG devices (as on one node),
    smallest GPUs, then least slack, scarcest first."""
    request = job.request
    unused_kinds = int(bool(node.gpus) and request.gpus == 0)
    unused_kinds += int(bool(node.fpgas) and request.fpgas == 0)
    by_id = {g.id: g for g in node.gpus}
    chosen = [by_id[i] for i in alloc.devices if i in by_id]
    migs = sum(1 for g in chosen if g.mig is not None)
    return (unused_kinds, migs, sum(g.memory_bytes or 0 for g in chosen))


def _placements(
    job: Job,
    nodes: Sequence[Node],
    usage: Mapping[str, Usage],
    use_estimates: bool,
) -> list[Allocation]:
    """Allocations for ``job`` on every node where it fits now, most preferred first."""
    ranked: list[tuple[tuple[float, ...], str, Allocation]] = []
    request = job.request
    for node in allowed_nodes(job, nodes):
        if not node.schedulable:
            continue
        held = usage[node.name]
        alloc = allocate(job.id, node, request, held)
        if alloc is None:
            continue
        after = held.plus(alloc)
        fit = _fit_key(job, node, alloc)
        gpus_left = len(free_gpus(node, request, after)) if request.gpus else 0
        fpgas_left = len(node.fpgas) - len(after.fpgas) if request.fpgas else 0
        slack = (
            gpus_left,
            fpgas_left,
            node.cpus - after.cpus,
            node.memory_bytes - after.memory_bytes,
        )
        est = estimate_for(job, node) if use_estimates else None
        mct = (0.0, est) if est is not None else (1.0, 0.0)
        local = -job.locality.get(node.name, 0.0)
        ranked.append(((*mct, local, *fit, *slack), node.name, alloc))
    ranked.sort(key=lambda r: (r[0], r[1]))
    return [r[2] for r in ranked]


def _dependency_verdicts(
    order: Sequence[Job], running_ids: set[str], finished: Mapping[str, str]
) -> dict[str, str]:
    """Doomed job id -> reason, for dependency trouble (failed, unknown, cyclic, transitive)."""
    pending = {j.id: j for j in order}
    doomed: dict[str, str] = {}
    for job in order:
        for dep in job.after:
            if dep in finished:
                if finished[dep] != COMPLETED:
                    doomed[job.id] = f"dependency job {dep} ended {finished[dep]}"
                    break
            elif dep not in pending and dep not in running_ids:
                doomed[job.id] = f"dependency job {dep} is unknown (not pending, running or done)"
                break
    # Cycles among pending jobs never resolve.
    for member, cycle in dependency_cycles(order, settled=finished).items():
        doomed.setdefault(member, "dependency cycle: " + " -> ".join(cycle))
    return doomed


def never_fits_reason(job: Job, nodes: Sequence[Node]) -> str | None:
    """Why no known host could ever run ``job`` (None if one could)."""
    allowed = allowed_nodes(job, nodes)
    if not allowed and job.hosts is None:
        return (
            "can never run: no host can take jobs (none has declared capacity or a probe: "
            "run `leptonctl status` first; or every host is drained)"
        )
    if not allowed:
        return (
            "can never run: no host that --limit allows has declared capacity or a probe "
            "(run `leptonctl status` first), or all of them are drained"
        )
    if any(could_ever_fit(n, job.request) for n in allowed):
        return None  # a host whose capacity is not known yet may run it: wait and see
    detail = explain_shortage(job.request, [(n, Usage()) for n in allowed], ever=True)
    return f"can never run: {detail}"


def dispatch(
    pending: Sequence[Job],
    nodes: Sequence[Node],
    running: Sequence[Running],
    finished: Mapping[str, str],
    now: float,
    *,
    whole: bool = True,
) -> Dispatch:
    """Decide which pending jobs start now and on which devices (see the module docstring).

    ``whole=False``: ``nodes`` are only part of the cluster (a maintenance step on some
    hosts), so a job none of them could ever run is blocked, not doomed."""
    names = {n.name for n in nodes}
    holds = [
        Hold(r.allocation, None if r.walltime is None else r.started + r.walltime)
        for r in running
        if r.allocation.host in names
    ]
    usage: dict[str, Usage] = {n.name: usage_at(n.name, holds, None) for n in nodes}
    running_state = {r.allocation.job_id: "RUNNING" for r in running}
    order = queue_order(pending)
    doomed = _dependency_verdicts(order, set(running_state), finished)
    for job in order:
        if not whole or job.id in doomed:
            continue
        if (reason := never_fits_reason(job, nodes)) is not None:
            doomed[job.id] = reason
    # A job whose dependency can never run can never run either.
    doomed = _propagate(order, doomed)

    use_estimates = any(j.estimates for j in pending)
    started: list[Allocation] = []
    blocked: list[Blocked] = []
    reservation: Reservation | None = None
    for job in order:
        if job.id in doomed:
            continue
        waiting = [d for d in job.after if finished.get(d) != COMPLETED]
        if waiting:
            dep = waiting[0]
            state = running_state.get(dep, "PENDING")
            blocked.append(Blocked(job.id, f"waiting for job {dep} ({state})"))
            continue
        options = _placements(job, nodes, usage, use_estimates)
        hold_end = None if job.walltime is None else now + job.walltime
        chosen: Allocation | None = None
        for alloc in options:
            if reservation is None or reservation_kept(
                reservation, nodes, holds, Hold(alloc, hold_end)
            ):
                chosen = alloc
                break
        if chosen is not None:
            started.append(chosen)
            holds.append(Hold(chosen, hold_end))
            usage[chosen.host] = usage[chosen.host].plus(chosen)
            running_state[job.id] = "STARTING"
            continue
        if options and reservation is not None:
            top = reservation.job
            blocked.append(
                Blocked(
                    job.id,
                    f"priority: job {top.id} (priority {top.priority}) "
                    "is waiting for these resources",
                )
            )
            continue
        blocked.append(Blocked(job.id, _shortage_now(job, nodes, usage)))
        if reservation is None:
            reservation = reservation_for(job, nodes, holds, now)
    doomed_list = tuple(Blocked(j.id, doomed[j.id]) for j in order if j.id in doomed)
    return Dispatch(tuple(started), tuple(blocked), doomed_list)


def _propagate(order: Sequence[Job], doomed: dict[str, str]) -> dict[str, str]:
    result = dict(doomed)
    changed = True
    while changed:
        changed = False
        for job in order:
            if job.id in result:
                continue
            bad = next((d for d in job.after if d in result), None)
            if bad is not None:
                result[job.id] = f"dependency job {bad} can never run"
                changed = True
    return result


def _shortage_now(job: Job, nodes: Sequence[Node], usage: Mapping[str, Usage]) -> str:
    allowed = allowed_nodes(job, nodes)
    up = [n for n in allowed if n.schedulable]
    if not up:
        return f"no schedulable host: {describe_away(allowed)}"
    # hosts whose GPUs are busy or unhealthy now fit it later: say which GPUs and why
    fitting = [n for n in up if fits_empty(n, job.request, ever=True)]
    if not fitting:
        away = [n for n in allowed if not n.schedulable and could_ever_fit(n, job.request)]
        unprobed = [n for n in up if n.unknown and could_ever_fit(n, job.request)]
        if unprobed and not away:
            names = ", ".join(n.name for n in unprobed)
            return f"waiting for a probe of {names}: what it has is not known yet"
        if not unprobed and not away:  # dispatch(whole=False): the others may run it
            empty = [(n, Usage()) for n in allowed]
            return f"no host of this pass fits it: {explain_shortage(job.request, empty)}"
        return f"only hosts that are away could run it: {describe_away(away + unprobed)}"
    return explain_shortage(job.request, [(n, usage[n.name]) for n in fitting])


def describe_away(nodes: Sequence[Node]) -> str:
    """Why each of ``nodes`` takes nothing now: "h2 (unreachable: ...; never probed)"."""
    parts = []
    for node in nodes:
        notes = [node.why_not or ("drained or down" if not node.schedulable else "up")]
        if set(node.unknown) == set(SIZES):
            notes.append("never probed: its capacity is unknown")
        elif node.unknown:
            notes.append(f"not probed yet: its {', '.join(sorted(node.unknown))} unknown")
        parts.append(f"{node.name} ({'; '.join(notes)})")
    return ", ".join(parts) or "none"
