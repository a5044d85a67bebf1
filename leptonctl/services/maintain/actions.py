"""The built-in actions of playbook steps: probe, health, dispatch, gc, drain, resume, shell.

Each action is ``async def action(ctx, planned) -> StepResult``.  With ``ctx.check``
an action contacts no host and changes nothing: it says what it would do, from the
state store (last probes, queue, drained hosts) alone.  The data actions (scrub,
repair, rebalance, chunk gc) live in ``maintain_data``.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from leptonctl.core.facts import HostFacts, WireError, parse_facts
from leptonctl.core.health import (
    HealthThresholds,
    check_health,
    drain_decisions,
    hardware_changes,
    hardware_signature,
)
from leptonctl.core.jobviews import (
    job_view,
    nodes_from,
    owned_job_tags,
    removable_job_dirs,
    running_view,
)
from leptonctl.core.outputs import RunResult
from leptonctl.core.playbook import PlannedStep
from leptonctl.core.scheduler import dispatch
from leptonctl.errors import AgentError, HostError, TimedOut
from leptonctl.inventory import Host, Inventory
from leptonctl.remote.agent import wire
from leptonctl.remote.transport import Connection
from leptonctl.services.jobs.reconcile import reconcile, stored_facts
from leptonctl.services.maintain.context import (
    HOST_STATES,
    HostResult,
    RunContext,
    StepResult,
    check_result,
    count_hosts,
    hosts_word,
)
from leptonctl.store.interface import Store
from leptonctl.store.jobs import FINAL

DAY = 86400.0


# -- probe -------------------------------------------------------------------------


async def run_probe(ctx: RunContext, planned: PlannedStep) -> StepResult:
    if ctx.check:
        return check_result(ctx, planned)
    result = StepResult(planned)
    tolerance = float(planned.step.args["memory_tolerance_pct"])
    now = ctx.clock()
    for name, outcome in (await ctx.fresh_facts(planned.hosts)).items():
        if isinstance(outcome, HostError):
            result.hosts[name] = HostResult("down", outcome.message)
            continue
        signature = hardware_signature(outcome)
        baseline = _hardware_baseline(ctx, name)
        changes = hardware_changes(baseline, signature, tolerance) if baseline else []
        for change in changes:
            ctx.store.record_event(
                now,
                "hardware_changed",
                name,
                {"change": change.change, "message": change.message, **change.detail},
            )
        ctx.store.set_value(f"hardware:{name}", json.dumps(signature))
        messages = "; ".join(c.message for c in changes)
        result.hosts[name] = HostResult("changed" if changes else "ok", messages)
    changed = [n for n, h in result.hosts.items() if h.status == "changed"]
    result.summary = f"probed {count_hosts(len(planned.hosts))}; hardware changed on " + (
        hosts_word(changed) if changed else "none"
    )
    return result


def _hardware_baseline(ctx: RunContext, host: str) -> dict[str, Any] | None:
    """The hardware as the last probe step saw it; before the first one, the last stored
    probe from before this run (``status`` and others refresh those too)."""
    saved = ctx.store.value(f"hardware:{host}")
    if saved is not None:
        value = json.loads(saved)
        return value if isinstance(value, dict) else None
    previous = ctx.previous.get(host)
    if previous is None:
        return None
    try:
        return hardware_signature(parse_facts(previous.document))
    except WireError:
        return None


# -- health ------------------------------------------------------------------------


@cache
def bundled_agent_version() -> str | None:
    """The version of the agent this leptonctl pushes."""
    return wire.AGENT_VERSION


def thresholds_from(args: Mapping[str, Any]) -> HealthThresholds:
    return HealthThresholds(
        max_gpu_temperature_c=float(args["max_gpu_temperature_c"]),
        max_power_pct=float(args["max_power_pct"]),
        max_ecc_uncorrected=int(args["max_ecc_uncorrected"]),
        min_disk_free_bytes=int(args["min_disk_free"]),
        agent_version=args["agent_version"] or bundled_agent_version(),
    )


async def run_health(ctx: RunContext, planned: PlannedStep) -> StepResult:
    args = planned.step.args
    thresholds = thresholds_from(args)
    result = StepResult(planned, "check" if ctx.check else "ok")
    facts: Mapping[str, HostFacts | HostError | None] = (
        ctx.stored(planned.hosts) if ctx.check else await ctx.fresh_facts(planned.hosts)
    )
    problems: dict[str, list[str]] = {}
    for host in ctx.hosts(planned.hosts):
        outcome = facts[host.name]
        if isinstance(outcome, HostError):
            result.hosts[host.name] = HostResult("down", outcome.message)
        elif outcome is None:
            result.hosts[host.name] = HostResult("skipped", "never probed")
        else:
            declared = host.capacity.gpus if host.capacity else None
            found = problems[host.name] = check_health(outcome, thresholds, declared)
            result.hosts[host.name] = HostResult("unhealthy" if found else "ok", "; ".join(found))
    result.summary = _health_summary(result, ctx.check)
    if args["drain_unhealthy"]:
        _drain_or_resume(ctx, result, problems)
    return result


def _drain_or_resume(ctx: RunContext, result: StepResult, problems: dict[str, list[str]]) -> None:
    """Drain the failing hosts and resume the ones health had drained (or say so, --check).
    Read, decide and write in one transaction: an operator's drain that lands meanwhile
    is never taken for health's own and resumed."""
    if ctx.check:
        drained = {host: reason for host, (reason, _) in ctx.store.drained().items()}
        decisions = drain_decisions(problems, drained)
        result.details.update(would_drain=dict(decisions.drain), would_resume=[*decisions.resume])
        verbs = ("would drain", "would resume")
    else:
        with ctx.store.transaction():
            drained = {host: reason for host, (reason, _) in ctx.store.drained().items()}
            decisions = drain_decisions(problems, drained)
            now = ctx.clock()
            for host, reason in decisions.drain.items():
                ctx.store.drain([host], reason, now)
            ctx.store.resume(decisions.resume)
        result.details.update(drained=dict(decisions.drain), resumed=[*decisions.resume])
        verbs = ("drained", "resumed")
        if decisions.drain or decisions.resume:
            result.status = "changed"
    if decisions.drain:
        result.summary += f"; {verbs[0]} {hosts_word(decisions.drain)}"
    if decisions.resume:
        result.summary += f"; {verbs[1]} {hosts_word(decisions.resume)}"


def _health_summary(result: StepResult, check: bool) -> str:
    by_state: dict[str, list[str]] = {}
    for name, outcome in result.hosts.items():
        by_state.setdefault(outcome.status, []).append(name)
    parts = [f"{len(by_state.get('ok', []))} healthy"]
    for state, label in (("unhealthy", "unhealthy"), ("down", "down"), ("skipped", "never probed")):
        if by_state.get(state):
            parts.append(f"{label}: {hosts_word(by_state[state])}")
    return ("from the last probes: " if check else "") + ", ".join(parts)


# -- dispatch ----------------------------------------------------------------------


async def run_dispatch(ctx: RunContext, planned: PlannedStep) -> StepResult:
    if ctx.check:
        would = preview_dispatch(ctx.store, ctx.sub_inventory(planned.hosts), ctx.clock())
        result = check_result(ctx, planned, would_start=would)
        started = ", ".join(f"{job} on {host}" for job, host in would.items()) or "nothing"
        result.summary = f"would start {started} (assuming every host is up)"
        return result
    whole = set(planned.hosts) >= {h.name for h in ctx.inventory.hosts}
    report = await reconcile(
        ctx.live_within(planned.hosts),
        node_fail_after=float(planned.step.args["node_fail_after"]),
        whole=whole,  # a step on some hosts fails no job that the others may run
    )
    result = StepResult(planned)
    for name in planned.hosts:
        error = report.unreachable.get(name)
        result.hosts[name] = HostResult("down", error.message) if error else HostResult("ok")
        ctx.reached[name] = error is None
    result.details = {
        "started": report.started,
        "finished": report.finished,
        "requeued": report.requeued,
    }
    if report.started or report.finished or report.requeued:
        result.status = "changed"
    result.summary = (
        f"started {len(report.started)}, finished {len(report.finished)}, "
        f"requeued {len(report.requeued)} jobs"
    )
    return result


def preview_dispatch(store: Store, inventory: Inventory, now: float) -> dict[str, str]:
    """Job id -> host for the pending jobs one pass would start now (nothing is changed)."""
    pending = [r for r in store.jobs.in_states(("PENDING",)) if not r.cancel_requested]
    if not pending:
        return {}
    hosts = list(inventory.hosts)
    facts = {n: f for n, (_, f) in stored_facts(store, hosts).items()}
    schedulable = {h.name for h in hosts} - set(store.drained())
    active = store.jobs.in_states(("STARTING", "RUNNING"))
    deps = {int(a) for r in pending for a in r.spec.get("after", ())}
    finished = {str(i): s for i, s in store.jobs.states_of(deps).items() if s in FINAL}
    decision = dispatch(
        [job_view(r, inventory, schedulable) for r in pending],
        nodes_from(hosts, facts, schedulable, ours=owned_job_tags(facts.values(), store.jobs.get)),
        [running_view(r) for r in active],
        finished,
        now,
    )
    return {a.job_id: a.host for a in decision.start}


# -- gc ------------------------------------------------------------------------------


async def run_gc_jobs(ctx: RunContext, planned: PlannedStep) -> StepResult:
    """Finished job directories (with their logs) older than ``days``, on each host."""
    cutoff = ctx.clock() - float(planned.step.args["days"]) * DAY
    hosts = set(planned.hosts)
    if ctx.check:
        old = [
            r.id
            for r in ctx.store.jobs.in_states(FINAL)
            if r.host in hosts and r.ended is not None and r.ended < cutoff
        ]
        result = check_result(ctx, planned, would_remove_jobs=old)
        result.summary = f"would remove the directories of {len(old)} finished jobs" + (
            f" ({', '.join(map(str, old[:20]))}{', ...' if len(old) > 20 else ''})" if old else ""
        )
        return result
    sessions = ctx.live()
    records = {r.id: r for r in ctx.store.jobs.all()}

    async def collect(host: Host, conn: Connection) -> tuple[list[str], list[str]]:
        listing = await sessions.request(host, wire.JobStatus(ids=None))
        removed, refused = [], []
        for agent_id in removable_job_dirs(listing.get("jobs", []), records, cutoff):
            try:
                answer = await sessions.request(host, wire.JobRm(id=agent_id))
            except AgentError as exc:
                if exc.operation is None:
                    raise
                refused.append(f"{agent_id}: {exc.reason}")
                continue
            if answer.get("removed"):
                removed.append(agent_id)
        return removed, refused

    outcomes = await sessions.pool.fan_out(ctx.hosts(planned.hosts), collect)
    ctx.note_reached(outcomes)
    result = StepResult(planned)
    total = 0
    for name, outcome in outcomes.items():
        if isinstance(outcome, HostError):
            result.hosts[name] = HostResult("down", outcome.message)
            continue
        removed, refused = outcome
        total += len(removed)
        message = f"removed {_dirs(len(removed))}" + "".join(
            f"; kept {why}"
            for why in refused  # still running: the agent refuses, rightly
        )
        result.hosts[name] = HostResult("changed" if removed else "ok", message)
    result.summary = f"removed {_dirs(total)}"
    return result


def _dirs(n: int) -> str:
    return f"{n} job director{'y' if n == 1 else 'ies'}"


# -- drain and resume ---------------------------------------------------------------


async def run_drain(ctx: RunContext, planned: PlannedStep) -> StepResult:
    args = planned.step.args
    already = set(ctx.store.drained())
    new = [h for h in planned.hosts if h not in already]
    if ctx.check:
        result = check_result(ctx, planned, would_drain=new)
        result.summary = f"would drain {hosts_word(new) if new else 'nothing new'}"
        return result
    ctx.store.drain(new, str(args["reason"]), ctx.clock())
    result = StepResult(planned, "changed" if new else "ok", details={"drained": new})
    result.summary = f"drained {hosts_word(new) if new else 'nothing new'}"
    if args["wait"]:
        busy = await _wait_idle(ctx, planned.hosts, float(args["timeout"]))
        if busy:
            result.error = (
                f"jobs still run on {hosts_word(busy)} after {float(args['timeout']):g} s"
            )
        else:
            result.summary += "; no jobs left on them"
    return result


async def _wait_idle(ctx: RunContext, hosts: Sequence[str], timeout: float) -> list[str]:
    """Reconcile until no job runs on ``hosts`` or ``timeout`` passes; the busy hosts left."""
    deadline = ctx.clock() + timeout
    while True:
        ctx.live()
        report = await reconcile(ctx)
        ctx.note_reached({n: e for n, e in report.unreachable.items() if n in hosts})
        running = {r.host for r in ctx.store.jobs.in_states(("STARTING", "RUNNING"))}
        busy = [h for h in hosts if h in running]
        if not busy or ctx.clock() >= deadline:
            return busy
        await asyncio.sleep(min(2.0, max(0.1, deadline - ctx.clock())))


async def run_resume(ctx: RunContext, planned: PlannedStep) -> StepResult:
    drained = set(ctx.store.drained())
    back = [h for h in planned.hosts if h in drained]
    if ctx.check:
        result = check_result(ctx, planned, would_resume=back)
        result.summary = f"would resume {hosts_word(back) if back else 'nothing (none drained)'}"
        return result
    ctx.store.resume(back)
    result = StepResult(planned, "changed" if back else "ok", details={"resumed": back})
    result.summary = f"resumed {hosts_word(back) if back else 'nothing (none drained)'}"
    return result


# -- shell ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Late:
    """A shell command that outlived its timeout: a failed step on that host (it was
    killed there), not a host that is down."""

    error: TimedOut


def creates_test(path: str) -> str:
    """``test -e PATH``, with a leading ``~/`` meaning the remote home."""
    if path == "~":
        return 'test -e "$HOME"'
    if path.startswith("~/"):
        return f'test -e "$HOME"/{shlex.quote(path[2:])}'
    return f"test -e {shlex.quote(path)}"


async def run_shell(ctx: RunContext, planned: PlannedStep) -> StepResult:
    args = planned.step.args
    if ctx.check:
        return check_result(ctx, planned)
    command, creates = str(args["command"]), args["creates"]
    timeout = float(args["timeout"] or ctx.options.command_timeout)

    async def one(host: Host, conn: Connection) -> RunResult | _Late | None:
        try:
            if creates:
                guard = await conn.run(creates_test(str(creates)), timeout=timeout, group=True)
                if guard.exit_status == 0:
                    return None
            return await conn.run(command, timeout=timeout, group=True)
        except TimedOut as late:  # the host answered; the command did not finish: a failure
            return _Late(late)

    outcomes = await ctx.live().pool.fan_out(ctx.hosts(planned.hosts), one)
    ctx.note_reached(outcomes)
    result = StepResult(planned)
    for name, outcome in outcomes.items():
        if isinstance(outcome, _Late):
            result.hosts[name] = HostResult("failed", f"timed out after {timeout:g} s (killed)")
        elif isinstance(outcome, HostError):
            result.hosts[name] = HostResult("down", outcome.message)
        elif outcome is None:
            result.hosts[name] = HostResult("skipped", f"{creates} exists")
        elif outcome.ok:
            result.hosts[name] = HostResult("changed", _tail(outcome.stdout))
        else:
            why = _tail(outcome.stderr or outcome.stdout)
            result.hosts[name] = HostResult("failed", f"exit {outcome.exit_status}: {why}")
    counts = {s: sum(1 for h in result.hosts.values() if h.status == s) for s in HOST_STATES}
    result.summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no hosts"
    return result


def _tail(text: str, lines: int = 3, width: int = 300) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    joined = " | ".join(kept)
    return joined if len(joined) <= width else "..." + joined[-width:]
