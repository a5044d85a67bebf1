"""The data actions of playbook steps: scrub, repair, rebalance, and gc of orphan chunks.

Each is one function, ``async def action(ctx, planned) -> StepResult`` like the actions in
``maintain_actions``; under ``ctx.check`` they contact no host and change nothing, and say
what they would do from the state store.  They call the same services as ``leptonctl
data verify|repair|rebalance|gc``.  ``replica_health`` feeds the metrics.
"""

from __future__ import annotations

import math

from leptonctl.core.datasets import VerifyReport
from leptonctl.core.metrics import ReplicaHealth
from leptonctl.core.playbook import PlannedStep
from leptonctl.services.data import replicas
from leptonctl.services.maintain.context import HostResult, RunContext, StepResult, check_result
from leptonctl.store.interface import Store

DEFAULT_SCRUB_SLICE = 1 / 168  # hourly runs read every replica about once a week


def scrub_budget(total: int, slice_: float | None, per_run: int | None) -> int:
    """Replicas one scrub run verifies: ``replicas_per_run``, else ``slice`` of all."""
    if per_run is not None:
        return per_run
    return max(1, math.ceil(total * (slice_ if slice_ is not None else DEFAULT_SCRUB_SLICE)))


async def run_scrub(ctx: RunContext, planned: PlannedStep) -> StepResult:
    """Verify the next slice of replicas (args: slice, replicas_per_run, dataset)."""
    args = planned.step.args
    pairs = replicas.scrub_pairs(ctx.store, set(planned.hosts), args.get("dataset"))
    budget = scrub_budget(len(pairs), args.get("slice"), args.get("replicas_per_run"))
    runs = math.ceil(len(pairs) / budget) if pairs else 0
    if ctx.check:
        result = check_result(ctx, planned, replicas=len(pairs), per_run=budget)
        result.summary = (
            f"would verify {min(budget, len(pairs))} of {len(pairs)} replicas "
            f"(every replica once per {runs} run(s))"
        )
        return result
    report = await replicas.scrub(ctx.live_among(planned.hosts), budget, args.get("dataset"))
    result = _verified(planned, report)
    result.details["rotation_runs"] = runs
    return result


def _verified(planned: PlannedStep, report: VerifyReport) -> StepResult:
    result = StepResult(planned)
    bad: dict[str, list[str]] = {}
    for problem in report.problems:
        bad.setdefault(problem.host, []).append(problem.problem)
    for host in planned.hosts:
        kinds = bad.get(host)
        if not kinds:
            result.hosts[host] = HostResult("ok")
        elif set(kinds) == {"unreachable"}:
            result.hosts[host] = HostResult("down", "unreachable: replicas not verified")
        else:
            counts = ", ".join(f"{kinds.count(k)} {k}" for k in sorted(set(kinds)))
            result.hosts[host] = HostResult("unhealthy", f"replicas: {counts} (repair heals)")
    result.summary = (
        f"verified {report.replicas_checked} replicas ({report.replicas_ok} ok), "
        f"{len(report.problems)} problem(s), {len(report.under_replicated)} chunk(s) short"
    )
    result.details = {
        "problems": [
            {"hash": p.hash, "host": p.host, "problem": p.problem} for p in report.problems
        ],
        "under_replicated": list(report.under_replicated),
    }
    return result.settle()


async def run_repair(ctx: RunContext, planned: PlannedStep) -> StepResult:
    """Delete corrupt copies, re-replicate chunks below K (args: dataset)."""
    name = planned.step.args.get("dataset")
    if ctx.check:
        under, lost = ctx.store.maintenance.chunk_shortfall()
        result = check_result(ctx, planned, under_replicated=under, without_replica=lost)
        result.summary = f"would re-replicate {under} chunk(s) short of K ({lost} with no copy)"
        return result
    report = await replicas.repair(ctx.live_among(planned.hosts), name)
    result = StepResult(planned, "changed" if report.copies_made else "ok")
    result.summary = (
        f"{report.chunks} chunk(s): {report.copies_made} copies made, "
        f"{report.corrupt_removed} corrupt removed"
        + (f", {len(report.lost)} LOST (no healthy copy)" if report.lost else "")
    )
    for host, why in report.problems.items():
        result.hosts[host] = HostResult("down", why)
    result.details = {"lost": report.lost, "short": report.short, "sent_bytes": report.sent_bytes}
    if report.lost or report.short:
        result.error = f"{len(report.lost) + len(report.short)} chunk(s) still below K"
    return result.settle()


async def run_rebalance(ctx: RunContext, planned: PlannedStep) -> StepResult:
    """Even out disk use across hosts, never below K (args: tolerance)."""
    if ctx.check:
        result = check_result(ctx, planned)
        result.summary = "would move replicas from the fullest hosts to the emptiest"
        return result
    report = await replicas.rebalance(
        ctx.live_among(planned.hosts), planned.step.args["tolerance"], check=False
    )
    result = StepResult(planned, "changed" if report.moves_done else "ok")
    result.summary = (
        f"{report.moves_done}/{report.moves_planned} move(s); disk use spread "
        f"{report.spread_before:.1%} -> {report.spread_after:.1%}"
    )
    for host, why in report.problems.items():
        result.hosts[host] = HostResult("down", why)
    return result.settle()


async def run_gc_chunks(ctx: RunContext, planned: PlannedStep) -> StepResult:
    """Remove chunks that no state store references any more (``gc`` with ``chunks: true``);
    chunks another store's datasets use stay (the hosts keep every store's refs)."""
    if ctx.check:
        result = check_result(ctx, planned)
        result.summary = "would delete the chunks no state store's dataset version references"
        return result
    report = await replicas.collect_garbage(ctx.live_among(planned.hosts))
    total = sum(report.removed.values())
    result = StepResult(planned, "changed" if total else "ok")
    result.summary = f"deleted {total} unreferenced chunk(s), {report.freed_bytes} bytes"
    if report.problems:
        result.summary += f"; skipped {len(report.problems)} unreachable host(s)"
    for host, count in report.removed.items():
        result.hosts[host] = HostResult("changed", f"{count} chunk(s) deleted")
    for host, why in report.problems.items():
        result.hosts[host] = HostResult("down", f"skipped, nothing deleted: {why}")
    result.details = {"legacy": report.legacy, "stale_refs": report.stale_refs}
    return result.settle()


def replica_health(store: Store) -> ReplicaHealth:
    """For the metrics: replicas by state, and chunks short of replicas."""
    under, lost = store.maintenance.chunk_shortfall()
    return ReplicaHealth(store.maintenance.replica_counts(), under, lost)
