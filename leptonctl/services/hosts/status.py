"""Probe hosts and report their state; keep the last probe of each in the store."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from leptonctl.core.facts import HostFacts, WireError, parse_facts
from leptonctl.core.reports import HostStatus
from leptonctl.errors import HostError
from leptonctl.inventory.model import Host
from leptonctl.remote.agent import Probe, probe_host
from leptonctl.remote.transport import Connection
from leptonctl.store.interface import Store

if TYPE_CHECKING:  # the context imports this module
    from leptonctl.services.context import ServiceContext


def new_host_key_recorder(
    store: Store, clock: Callable[[], float] = time.time
) -> Callable[[str, str, str], None]:
    """Record each accepted host key in the event log (accepting is an explicit act)."""

    def record(host: str, known_as: str, key: str) -> None:
        store.record_event(clock(), "host_key_accepted", host, {"known_as": known_as, "key": key})

    return record


async def probe_hosts(ctx: ServiceContext) -> list[HostStatus]:
    """Probe every selected host once, in parallel; store fresh facts; keep failures as
    rows."""
    hosts, options, store, clock = ctx.selected, ctx.options, ctx.store, ctx.clock

    async def probe(host: Host, conn: Connection) -> Probe:
        return await probe_host(conn, host, options.command_timeout)

    outcomes = await ctx.sessions.pool.fan_out(hosts, probe)
    now = clock()
    store.save_facts(
        now, {name: o.document for name, o in outcomes.items() if isinstance(o, Probe)}
    )
    return statuses_from(hosts, outcomes, store, now)


def statuses_from(
    hosts: Sequence[Host],
    outcomes: dict[str, Probe | HostError],
    store: Store,
    now: float,
) -> list[HostStatus]:
    """Rows for ``hosts``: fresh where probed, last known facts where not."""
    failed = [h.name for h in hosts if isinstance(outcomes[h.name], HostError)]
    remembered = store.load_facts(failed) if failed else {}
    rows = []
    for host in hosts:
        outcome = outcomes[host.name]
        if isinstance(outcome, Probe):
            rows.append(HostStatus(host, outcome.facts, now, agent_pushed=outcome.pushed))
            continue
        last = remembered.get(host.name)
        rows.append(
            HostStatus(
                host,
                _stored(last.document) if last else None,
                last.probed_at if last else None,
                error=outcome,
            )
        )
    return rows


def _stored(document: object) -> HostFacts | None:
    try:
        return parse_facts(document)
    except WireError:
        return None  # written by an older or newer leptonctl; not worth failing over
