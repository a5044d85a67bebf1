"""The job commands' services, each taking the command's ``ServiceContext``.

``submit`` queues jobs and runs the first reconcile; ``plan`` is its dry run;
``observe`` is the reconcile pass every reading command starts with (it never stages
inputs); ``jobs``/``show`` read the queue after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from leptonctl.core.records import JobRecord
from leptonctl.services import queries
from leptonctl.services.context import ServiceContext
from leptonctl.services.jobs.reconcile import ReconcileReport, reconcile

if TYPE_CHECKING:  # `jobs` and `show` load neither the job spec nor the planner
    from leptonctl.core.jobspec import Submission
    from leptonctl.core.reports import DryRun

# How a finished job maps to `submit --wait`'s exit status (documented in the README).
WAIT_EXIT = {"COMPLETED": 0, "TIMEOUT": 124, "CANCELLED": 130, "NODE_FAIL": 3}


@dataclass(frozen=True)
class Submitted:
    """What ``submit`` did: the new ids, those the first pass started, and those it
    rejected (they can never run: id -> why)."""

    ids: list[int]
    started: frozenset[int]
    rejected: dict[int, str] = field(default_factory=dict)


def plan(ctx: ServiceContext, jobs: Sequence[Submission]) -> DryRun:
    """``submit --dry-run``: the plan, touching neither a host nor the queue."""
    from leptonctl.services.jobs import operations as job_service

    _check_after(ctx, jobs)
    return job_service.dry_run(ctx.store, ctx.inventory, jobs, ctx.clock())


async def submit(ctx: ServiceContext, jobs: Sequence[Submission]) -> Submitted:
    """Queue ``jobs`` (all or none), then reconcile once: what fits starts now."""
    from leptonctl.services.jobs import operations as job_service

    _check_after(ctx, jobs)
    ids = job_service.enqueue(ctx.store, ctx.inventory, jobs, ctx.clock())
    report = await reconcile(ctx)
    return Submitted(ids, frozenset(report.started), job_service.rejected(ctx.store, ids))


async def wait_exit_code(ctx: ServiceContext, ids: Sequence[int]) -> int:
    """Wait until every job in ``ids`` has ended; the exit status ``submit --wait`` gives:
    the first job's that did not complete (0 when all did)."""
    from leptonctl.services.jobs import operations as job_service

    records = await job_service.wait_for(ctx, ids)
    worst = 0
    for record in records:
        code = WAIT_EXIT.get(record.state, record.exit_code if record.exit_code else 1)
        worst = worst or code
    return worst


async def observe(ctx: ServiceContext) -> ReconcileReport:
    """The reconcile pass a reading command starts with: it never stages a job's inputs,
    nor waits for a transfer another process runs."""
    return await reconcile(ctx, stage=False)


async def job_list(
    ctx: ServiceContext,
    *,
    all_jobs: bool = False,
    state: str | None = None,
    host: str | None = None,
    name: str | None = None,
    user: str | None = None,
    mine: bool = False,
) -> tuple[ReconcileReport, list[JobRecord]]:
    """``jobs``: the queue (or history) after one reconcile pass; ``mine``: only the jobs
    this user submitted (the store's actor)."""
    report = await observe(ctx)
    if mine:
        user = ctx.store.actor.user
    records = queries.job_list(
        ctx.store, all_jobs=all_jobs, state=state, host=host, name=name, user=user
    )
    return report, records


async def job_detail(ctx: ServiceContext, job_id: int) -> tuple[ReconcileReport, JobRecord]:
    """``show``: one job after one reconcile pass."""
    report = await observe(ctx)
    return report, queries.job_detail(ctx.store, job_id)


async def cancel(ctx: ServiceContext, ids: Sequence[int], any_user: bool = False) -> dict[int, str]:
    """Cancel jobs, then reconcile once (a cancelled pending job leaves the queue now)."""
    from leptonctl.services.jobs import operations as job_service

    results = await job_service.cancel(ctx, ids, any_user)
    await observe(ctx)
    return results


def _check_after(ctx: ServiceContext, jobs: Sequence[Submission]) -> None:
    from leptonctl.core.jobspec import check_after

    check_after(jobs, lambda job_id: ctx.store.jobs.get(job_id) is not None)
