"""Draining and resuming hosts: the operator's hands on where new work may go."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

from leptonctl.inventory import Inventory, select_hosts
from leptonctl.remote.transport import TransportOptions
from leptonctl.services.reconcile import open_sessions, reconcile
from leptonctl.store.sqlite import SqliteStore


@dataclass(frozen=True)
class NodeRow:
    host: str
    drained: bool
    reason: str | None
    since: float | None
    running: int  # jobs STARTING or RUNNING there, as last reconciled


def drain(
    store: SqliteStore, inventory: Inventory, selector: str, reason: str, now: float
) -> list[str]:
    hosts = [h.name for h in select_hosts(inventory, selector)]
    store.drain(hosts, reason, now)
    return hosts


def resume(store: SqliteStore, inventory: Inventory, selector: str) -> list[str]:
    hosts = [h.name for h in select_hosts(inventory, selector)]
    store.resume(hosts)
    return hosts


def node_rows(store: SqliteStore, inventory: Inventory) -> list[NodeRow]:
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


async def wait_until_idle(
    inventory: Inventory,
    options: TransportOptions,
    store: SqliteStore,
    hosts: list[str],
    poll: float = 2.0,
) -> None:
    """Reconcile until no job runs on ``hosts`` any more (``node drain --wait``)."""
    async with open_sessions(options, store) as sessions:
        while True:
            await reconcile(inventory, options, store, sessions=sessions)
            busy = {r.host for r in store.jobs.in_states(("STARTING", "RUNNING"))}
            if not busy & set(hosts):
                return
            await asyncio.sleep(poll)
