"""Draining and resuming hosts: the operator's hands on where new work may go."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from leptonctl.core.reports import NodeRow
from leptonctl.inventory import Inventory, select_hosts
from leptonctl.remote.transport import TransportOptions
from leptonctl.services.context import open_sessions
from leptonctl.services.reconcile import reconcile
from leptonctl.store.interface import Store


def drain(store: Store, inventory: Inventory, selector: str, reason: str, now: float) -> list[str]:
    hosts = [h.name for h in select_hosts(inventory, selector)]
    store.drain(hosts, reason, now)
    return hosts


def resume(store: Store, inventory: Inventory, selector: str) -> list[str]:
    hosts = [h.name for h in select_hosts(inventory, selector)]
    store.resume(hosts)
    return hosts


def node_rows(store: Store, inventory: Inventory) -> list[NodeRow]:
    drained = store.drained()
    running = Counter(r.host for r in store.jobs.in_states(("STARTING", "RUNNING")))
    return [
        NodeRow(
            host.name,
            host.name in drained,
            drained[host.name][0] if host.name in drained else None,
            drained[host.name][1] if host.name in drained else None,
            running[host.name],
        )
        for host in inventory.hosts
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
    inventory: Inventory,
    options: TransportOptions,
    store: Store,
    hosts: list[str],
    poll: float = 2.0,
    on_waiting: Callable[[list[Waiting]], None] | None = None,
) -> None:
    """Reconcile until no job runs on ``hosts`` any more (``node drain --wait``).
    ``on_waiting`` hears which jobs it waits for whenever that list (or their hosts'
    reachability) changes."""
    said: list[Waiting] | None = None
    async with open_sessions(options, store) as sessions:
        while True:
            report = await reconcile(inventory, options, store, sessions=sessions)
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
