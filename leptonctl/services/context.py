"""The one context a command's services work in.

A ``ServiceContext`` is built once per command (``leptonctl.cli.context``) and handed to
the services it calls.  It carries the inventory, the hosts the command selected, the
transport options, the clock, and, opened on first use and closed when the context
closes: the state store, one connection and one agent session per host, and the measured
network graph.  Use it as an async context manager::

    async with ServiceContext(inventory, options=options, store=opener) as ctx:
        report = await replicas.verify(ctx, None)

A store passed in as an object stays open (its owner closes it); a store passed as a
callable is opened by the context on first use and closed with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from leptonctl.errors import LeptonError
from leptonctl.inventory import Host, Inventory
from leptonctl.remote.transport import TransportOptions
from leptonctl.store.interface import Store

if TYPE_CHECKING:
    import networkx as nx  # type: ignore[import-untyped]

    from leptonctl.remote.agent import AgentSessions
    from leptonctl.remote.pool import HostPool

Clock = Callable[[], float]


class ServiceContext:
    """Inventory, selected hosts, store, agent sessions, clock and network graph of one
    command (or one maintenance run)."""

    def __init__(
        self,
        inventory: Inventory,
        *,
        store: Store | Callable[[], Store],
        hosts: Sequence[Host] | None = None,
        options: TransportOptions | None = None,
        clock: Clock = time.time,
        pool: HostPool | None = None,
    ) -> None:
        self.inventory = inventory
        self.selected: tuple[Host, ...] = tuple(inventory.hosts if hosts is None else hosts)
        self.options = options or TransportOptions()
        self.clock = clock
        if callable(store):
            self._open_store: Callable[[], Store] | None = store
            self._store: Store | None = None
        else:
            self._open_store, self._store = None, store
        self._given_pool = pool  # its owner closes it (a test seam: fake hosts)
        self._pool: HostPool | None = None
        self._sessions: AgentSessions | None = None
        self._parent: ServiceContext | None = None
        self._graph: tuple[Any] | None = None
        self._closed = False

    async def __aenter__(self) -> ServiceContext:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def store(self) -> Store:
        """The state store, opened on first use."""
        if self._store is None:
            self._check_open()
            assert self._open_store is not None
            self._store = self._open_store()
        return self._store

    @property
    def sessions(self) -> AgentSessions:
        """One connection and one agent session per host, each opened on first use and
        kept until the context closes."""
        if self._parent is not None:
            return self._parent.sessions
        if self._sessions is None:
            self._check_open()
            # imported here: a command that contacts no host never loads the SSH stack
            from leptonctl.remote.agent import AgentSessions
            from leptonctl.remote.hopmemory import hop_memory
            from leptonctl.remote.pool import HostPool
            from leptonctl.services.hosts.status import new_host_key_recorder

            if self._given_pool is not None:
                self._sessions = AgentSessions(self._given_pool)
            else:
                self._pool = HostPool(self.options, new_host_key_recorder(self.store, self.clock))
                self._sessions = AgentSessions(self._pool)
            hop_memory(self._sessions, self.store, self.clock)  # what hops taught is kept
        return self._sessions

    @property
    def graph(self) -> nx.DiGraph | None:
        """The measured network between the selected hosts (None before any `net probe`),
        loaded on first use."""
        if self._graph is None:
            from leptonctl.services.net.graph import measured_graph

            self._graph = (measured_graph(self.store, self.selected, self.clock()),)
        return self._graph[0]

    def host(self, name: str) -> Host:
        return self.inventory.host(name)

    def restricted(self, names: Iterable[str]) -> ServiceContext:
        """This context on the inventory restricted to the hosts ``names`` (a maintenance
        step acts on its hosts only), sharing store, sessions, clock and options."""
        keep = set(names)
        inventory = Inventory(
            source=self.inventory.source,
            hosts=tuple(h for h in self.inventory.hosts if h.name in keep),
            groups={g: tuple(h for h in m if h in keep) for g, m in self.inventory.groups.items()},
        )
        view = ServiceContext(inventory, store=self.store, options=self.options, clock=self.clock)
        view._parent = self
        return view

    def among(self, hosts: Sequence[Host]) -> ServiceContext:
        """This context acting on ``hosts``: the same store, sessions, clock and options
        (closing the view closes nothing; its parent owns them)."""
        view = ServiceContext(
            self.inventory, store=self.store, hosts=hosts, options=self.options, clock=self.clock
        )
        view._parent = self
        return view

    async def close(self) -> None:
        """Close the agent sessions and connections, then the store if this context
        opened it.  Closing twice is harmless."""
        self._closed = True
        sessions, pool, self._sessions, self._pool = self._sessions, self._pool, None, None
        try:
            if sessions is not None:
                await sessions.close()
            if pool is not None:
                await pool.close()
        finally:
            if self._open_store is not None and self._store is not None:
                store, self._store = self._store, None
                store.close()

    def _check_open(self) -> None:
        if self._closed:
            raise LeptonError("internal error: a closed service context was used")
