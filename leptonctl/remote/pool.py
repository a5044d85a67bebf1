"""Fan-out: one connection per host, reused, with bounded concurrency.

``HostPool.fan_out`` runs one coroutine per host and returns a mapping from
host name to either the coroutine's value or the ``HostError`` that stopped
it.  Partial failure is a value; only programming errors propagate.

How a host is reached is the pool's *connector*, as httpx's client takes a
transport: by default ``connect_host`` (a local shell for ``connection: local``,
OpenSSH-compatible asyncssh otherwise).  Tests pass another one
(``leptonctl.testing.fake_agent.FakeCluster.connector``) so that the services run
for real against in-process fake hosts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

from leptonctl.errors import HostError, TimedOut, Unreachable
from leptonctl.inventory.model import Host
from leptonctl.remote.transport import Connection, LocalConnection, TransportOptions

if TYPE_CHECKING:  # asyncssh is imported by the first SSH connection, not by this module
    from leptonctl.remote.connect import NewHostKeyCallback

T = TypeVar("T")

Connector = Callable[[Host], Awaitable[Connection]]
"""Opens the connection to one host; raises only ``HostError`` children."""


def ssh_connector(
    options: TransportOptions, on_new_host_key: NewHostKeyCallback | None = None
) -> Connector:
    """The default connector: a local shell for local hosts, SSH for the others."""

    async def connect(host: Host) -> Connection:
        if host.is_local:
            return LocalConnection(host.name)
        from leptonctl.remote.connect import connect_ssh

        return await connect_ssh(host, options, on_new_host_key)

    return connect


class HostPool:
    """Lazily opened connections to inventory hosts.  Use ``async with``."""

    def __init__(
        self,
        options: TransportOptions,
        on_new_host_key: NewHostKeyCallback | None = None,
        *,
        connector: Connector | None = None,
    ) -> None:
        self.options = options
        self._connector = connector or ssh_connector(options, on_new_host_key)
        self._connections: dict[str, Connection] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._slots = asyncio.Semaphore(max(1, options.forks))

    async def __aenter__(self) -> HostPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def slots(self) -> asyncio.Semaphore:
        """Held around each operation so that at most ``forks`` run at once."""
        return self._slots

    async def connect(self, host: Host) -> Connection:
        """The host's connection, opened on first use."""
        lock = self._locks.setdefault(host.name, asyncio.Lock())
        async with lock:
            conn = self._connections.get(host.name)
            if conn is None:
                conn = await self._connector(host)
                self._connections[host.name] = conn
            return conn

    async def forget(self, name: str) -> None:
        """Close and drop a host's connection (it failed; the next use reconnects)."""
        conn = self._connections.pop(name, None)
        if conn is not None:
            await conn.close()

    async def fan_out(
        self,
        hosts: Iterable[Host],
        operation: Callable[[Host, Connection], Awaitable[T]],
    ) -> dict[str, T | HostError]:
        """Run ``operation`` on every host, at most ``forks`` at a time."""

        async def one(host: Host) -> T | HostError:
            async with self._slots:
                try:
                    conn = await self.connect(host)
                    return await operation(host, conn)
                except HostError as error:
                    if isinstance(error, (Unreachable, TimedOut)):
                        await self.forget(host.name)  # reconnect on next use
                    return error

        hosts = list(hosts)
        outcomes = await asyncio.gather(*(one(h) for h in hosts))
        return {h.name: outcome for h, outcome in zip(hosts, outcomes, strict=True)}

    async def close(self) -> None:
        connections, self._connections = self._connections, {}
        await asyncio.gather(*(c.close() for c in connections.values()))
