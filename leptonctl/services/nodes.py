"""Draining and resuming hosts: the operator's hands on where new work may go."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

from leptonctl.inventory import Inventory, select_hosts
from leptonctl.remote.agent import AgentSessions
from leptonctl.remote.pool import HostPool
from leptonctl.remote.transport import TransportOptions
from leptonctl.services.reconcile import reconcile
from leptonctl.services.status import new_host_key_recorder
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
    async with HostPool(options, new_host_key_recorder(store)) as pool:
        sessions = AgentSessions(pool)
        try:
            while True:
                await reconcile(inventory, options, store, sessions=sessions)
                busy = {r.host for r in store.jobs.in_states(("STARTING", "RUNNING"))}
                if not busy & set(hosts):
                    return
                await asyncio.sleep(poll)
        finally:
            await sessions.close()
