"""The live view behind ``leptonctl status --watch``.

Each host gets one SSH connection and one long-lived ``agent serve`` process;
a refresh is then one request line per host, not a new process.  A refresh
never waits longer than it is told: a host that is slow keeps its previous row
until its probe lands.  Hosts that fail are retried with a capped backoff, so
a host that goes away greys out and comes back by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence

from leptonctl.core.reports import HostStatus
from leptonctl.errors import HostError
from leptonctl.inventory.model import Host
from leptonctl.remote.agent import AgentSession
from leptonctl.remote.pool import HostPool
from leptonctl.remote.transport import TransportOptions
from leptonctl.services.context import ServiceContext
from leptonctl.services.hosts.status import new_host_key_recorder
from leptonctl.store.interface import Store

STORE_EVERY = 60.0  # seconds between writes of one host's facts to the state store
MAX_BACKOFF = 10.0


class LiveCluster:
    """Persistent agent sessions to a set of hosts.  Use ``async with``."""

    def __init__(
        self,
        hosts: Sequence[Host],
        options: TransportOptions,
        store: Store,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.hosts = list(hosts)
        self._options = options
        self._store = store
        self._clock = clock
        self._pool = HostPool(options, new_host_key_recorder(store, clock))
        self._sessions: dict[str, AgentSession] = {}
        self._inflight: dict[str, asyncio.Task[HostStatus]] = {}
        self._retry_at: dict[str, float] = {}
        self._backoff: dict[str, float] = {}
        self._stored_at: dict[str, float] = {}
        remembered = store.load_facts([h.name for h in self.hosts])
        self.rows: dict[str, HostStatus] = {}
        for host in self.hosts:
            self.rows[host.name] = HostStatus(host, None, None, error=None)
            if host.name in remembered:
                self._stored_at[host.name] = remembered[host.name].probed_at

    async def __aenter__(self) -> LiveCluster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._inflight.values():
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        await asyncio.gather(*(s.close() for s in self._sessions.values()), return_exceptions=True)
        await self._pool.close()

    async def refresh(self, wait: float) -> list[HostStatus]:
        """Start a probe on every idle host and return the rows after at most ``wait`` s."""
        now = self._clock()
        for host in self.hosts:
            if host.name not in self._inflight and self._retry_at.get(host.name, 0.0) <= now:
                self._inflight[host.name] = asyncio.create_task(self._probe(host))
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=wait)
        for name, task in list(self._inflight.items()):
            if task.done():
                del self._inflight[name]
                self.rows[name] = task.result()
        return [self.rows[h.name] for h in self.hosts]

    async def _probe(self, host: Host) -> HostStatus:
        timeout = self._options.command_timeout
        try:
            async with self._pool.slots:
                session = self._sessions.get(host.name)
                if session is None:
                    conn = await self._pool.connect(host)
                    session = await AgentSession.open(conn, host, timeout)
                    self._sessions[host.name] = session
                probe = await session.probe(timeout)
        except HostError as error:
            await self._drop(host.name)
            backoff = min(MAX_BACKOFF, self._backoff.get(host.name, 0.5) * 2)
            self._backoff[host.name] = backoff
            self._retry_at[host.name] = self._clock() + backoff
            previous = self.rows[host.name]
            return HostStatus(host, previous.facts, previous.probed_at, error=error)
        self._backoff.pop(host.name, None)
        now = self._clock()
        if now - self._stored_at.get(host.name, 0.0) >= STORE_EVERY:
            self._store.save_facts(now, {host.name: probe.document})
            self._stored_at[host.name] = now
        return HostStatus(host, probe.facts, now)

    async def _drop(self, name: str) -> None:
        session = self._sessions.pop(name, None)
        if session is not None:
            await session.close()
        await self._pool.forget(name)


async def watch_status(ctx: ServiceContext, interval: float) -> AsyncIterator[list[HostStatus]]:
    """Yield a full set of rows of the selected hosts every ``interval`` seconds, forever."""
    loop = asyncio.get_running_loop()
    async with LiveCluster(ctx.selected, ctx.options, ctx.store, ctx.clock) as live:
        while True:
            started = loop.time()
            yield await live.refresh(wait=interval)
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))
