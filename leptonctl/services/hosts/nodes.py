"""Draining and resuming hosts: the operator's hands on where new work may go."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from leptonctl.core.reports import NodeRow
from leptonctl.inventory import select_hosts
from leptonctl.services.context import ServiceContext
from leptonctl.services.jobs.reconcile import reconcile


def drain(ctx: ServiceContext, selector: str, reason: str) -> list[str]:
    hosts = [h.name for h in select_hosts(ctx.inventory, selector)]
    ctx.store.drain(hosts, reason, ctx.clock())
    return hosts


def resume(ctx: ServiceContext, selector: str) -> list[str]:
    hosts = [h.name for h in select_hosts(ctx.inventory, selector)]
    ctx.store.resume(hosts)
    return hosts


def node_rows(ctx: ServiceContext) -> list[NodeRow]:
    drained = ctx.store.drained()
    running = Counter(r.host for r in ctx.store.jobs.in_states(("STARTING", "RUNNING")))
    return [
        NodeRow(
            host.name,
            host.name in drained,
            drained[host.name][0] if host.name in drained else None,
            drained[host.name][1] if host.name in drained else None,
            running[host.name],
        )
        for host in ctx.inventory.hosts
    ]


@dataclass(frozen=True)
class Waiting:
    """What ``node drain --wait`` still waits for: a job, and why its host may not answer."""

    job_id: int
    name: str
    host: str
    state: str
    unreachable: str | None  # why the host did not answer this pass (None: it did)


async def wait_until_idle(
    ctx: ServiceContext,
    hosts: list[str],
    poll: float = 2.0,
    on_waiting: Callable[[list[Waiting]], None] | None = None,
) -> None:
    """Reconcile until no job runs on ``hosts`` any more (``node drain --wait``).
    ``on_waiting`` hears which jobs it waits for whenever that list (or their hosts'
    reachability) changes."""
    said: list[Waiting] | None = None
    store = ctx.store
    while True:  # one connection per host for the whole wait: the context's sessions
        report = await reconcile(ctx)
        waiting = [
            Waiting(
                r.id,
                r.name,
                r.host or "",
                r.state,
                report.unreachable[r.host].message if r.host in report.unreachable else None,
            )
            for r in store.jobs.in_states(("STARTING", "RUNNING"))
            if r.host in hosts
        ]
        if not waiting:
            return
        if on_waiting is not None and waiting != said:
            on_waiting(waiting)
        said = waiting
        await asyncio.sleep(poll)
