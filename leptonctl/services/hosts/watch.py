"""The live view behind ``leptonctl status --watch``.

Each host gets one SSH connection and one long-lived ``agent serve`` process;
a refresh is then one request line per host, not a new process.  A refresh
never waits longer than it is told: a host that is slow keeps its previous row
until its probe lands.  Hosts that fail are retried with a capped backoff, so
a host that goes away greys out and comes back by itself.

A full probe runs when a host (re)joins and every ``PROBE_EVERY`` seconds; each refresh
in between is one ``sample`` request (CPU ticks, memory, load, GPU utilisation), and a
host's CPU % is the busy share of its ticks between two samples.  ``watch_dashboard``
adds the state store's view (jobs, drained hosts, data health) to make each refresh a
``ClusterFrame``; ``watch_queue`` is ``jobs --watch``: a reconcile pass per refresh.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from leptonctl.core.dashboard import (
    ClusterFrame,
    DataHealth,
    QueueFrame,
    cluster_frame,
    live_jobs,
    queue_frame,
)
from leptonctl.core.facts import HostFacts
from leptonctl.core.history import History
from leptonctl.core.records import ACTIVE, JobRecord
from leptonctl.core.reports import HostStatus
from leptonctl.core.samples import CpuTimes, apply_sample, cpu_percent, parse_sample
from leptonctl.errors import HostError
from leptonctl.inventory.model import Host
from leptonctl.remote.agent import AgentSession, wire
from leptonctl.remote.pool import HostPool
from leptonctl.remote.transport import TransportOptions
from leptonctl.services.context import ServiceContext
from leptonctl.services.hosts.status import new_host_key_recorder
from leptonctl.store.interface import Store

STORE_EVERY = 60.0  # seconds between writes of one host's facts to the state store
PROBE_EVERY = 60.0  # seconds between full probes of a host; samples in between
DATA_EVERY = 30.0  # seconds between reads of the data health (a query over every chunk)
MAX_BACKOFF = 10.0
MAX_JOBS = 256  # job ids one sample asks about (the agent's limit)


class LiveCluster:
    """Persistent agent sessions to a set of hosts.  Use ``async with``."""

    def __init__(
        self,
        hosts: Sequence[Host],
        options: TransportOptions,
        store: Store,
        clock: Callable[[], float] = time.time,
        pool: HostPool | None = None,
    ) -> None:
        self.hosts = list(hosts)
        self._options = options
        self._store = store
        self._clock = clock
        self._pool = pool or HostPool(options, new_host_key_recorder(store, clock))
        self._sessions: dict[str, AgentSession] = {}
        self._inflight: dict[str, asyncio.Task[HostStatus]] = {}
        self._retry_at: dict[str, float] = {}
        self._backoff: dict[str, float] = {}
        self._stored_at: dict[str, float] = {}
        self._probed_at: dict[str, float] = {}
        self._cpu_times: dict[str, CpuTimes] = {}
        self.cpu_pct: dict[str, float | None] = {}  # since the previous sample, by host
        self.job_ids: dict[str, list[str]] = {}  # agent job ids to ask each host about
        self.job_states: dict[str, dict[str, str]] = {}  # host -> agent job id -> state
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
                facts = await self._facts(host, session, timeout)
        except HostError as error:
            await self._drop(host.name)
            self._cpu_times.pop(host.name, None)
            self._probed_at.pop(host.name, None)
            self.cpu_pct[host.name] = None
            self.job_states.pop(host.name, None)
            backoff = min(MAX_BACKOFF, self._backoff.get(host.name, 0.5) * 2)
            self._backoff[host.name] = backoff
            self._retry_at[host.name] = self._clock() + backoff
            previous = self.rows[host.name]
            return HostStatus(host, previous.facts, previous.probed_at, error=error)
        self._backoff.pop(host.name, None)
        return HostStatus(host, facts, self._clock())

    async def _facts(self, host: Host, session: AgentSession, timeout: float) -> HostFacts:
        """The host's facts now: a full probe when due, then a sample on top of it."""
        name = host.name
        previous = self.rows[name]
        facts = previous.facts if previous.error is None else None
        now = self._clock()
        if facts is None or now - self._probed_at.get(name, float("-inf")) >= PROBE_EVERY:
            probe = await session.probe(timeout)
            facts = probe.facts
            self._probed_at[name] = now
            if now - self._stored_at.get(name, 0.0) >= STORE_EVERY:
                self._store.save_facts(now, {name: probe.document})
                self._stored_at[name] = now
        ids = self.job_ids.get(name) or None
        reply = await session.request(wire.Sample(gpus=bool(facts.gpus), jobs=ids), timeout)
        if "error" in reply:  # an answer, not a lost host: the row keeps the probe's values
            self.cpu_pct[name] = None
            return facts
        sample = parse_sample(reply)
        self.job_states[name] = dict(sample.jobs)
        self.cpu_pct[name] = cpu_percent(self._cpu_times.get(name), sample.cpu)
        if sample.cpu is not None:
            self._cpu_times[name] = sample.cpu
        return apply_sample(facts, sample)

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


async def watch_dashboard(
    ctx: ServiceContext, interval: float, by: str = "state"
) -> AsyncIterator[ClusterFrame]:
    """Yield a ``ClusterFrame`` of the selected hosts every ``interval`` seconds, forever:
    their rows and CPU %, their jobs and drains from the state store, cluster totals, and
    the last minutes of CPU and GPU utilisation."""
    loop = asyncio.get_running_loop()
    history = History()
    data: DataHealth | None = None
    data_at = float("-inf")
    async with LiveCluster(ctx.selected, ctx.options, ctx.store, ctx.clock) as live:
        while True:
            started = loop.time()
            active = ctx.store.jobs.in_states(ACTIVE)
            live.job_ids = running_ids(active)
            rows = await live.refresh(wait=interval)
            now = ctx.clock()
            if now - data_at >= DATA_EVERY:
                data, data_at = data_health(ctx.store), now
            record_history(history, rows, live.cpu_pct, now)
            yield cluster_frame(
                rows,
                live.cpu_pct,
                ctx.store.drained(),
                live_jobs(active, live.job_states),
                now,
                data=data,
                history=history,
                by=by,
            )
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))


def running_ids(records: Sequence[JobRecord]) -> dict[str, list[str]]:
    """Host -> the agent ids of the jobs the store has starting or running there."""
    ids: dict[str, list[str]] = {}
    for r in records:
        if r.host and r.state in ("STARTING", "RUNNING"):
            ids.setdefault(r.host, []).append(r.agent_id)
    return {host: found[:MAX_JOBS] for host, found in ids.items()}


def record_history(
    history: History, rows: Sequence[HostStatus], cpu_pct: Mapping[str, float | None], now: float
) -> None:
    """Add this refresh's CPU % and mean GPU % of each host that is up."""
    for row in rows:
        if row.state != "up" or row.facts is None:
            continue
        name = row.host.name
        history.add(f"cpu:{name}", now, cpu_pct.get(name))
        utils = [g.utilization_pct for g in row.facts.gpus if g.utilization_pct is not None]
        if utils:
            history.add(f"gpu:{name}", now, sum(utils) / len(utils))


def data_health(store: Store) -> DataHealth:
    under, lost = store.maintenance.chunk_shortfall()
    corrupt = store.maintenance.replica_counts().get("corrupt", 0)
    return DataHealth(len(store.data.datasets()), under, lost, corrupt)


async def watch_queue(ctx: ServiceContext, interval: float) -> AsyncIterator[QueueFrame]:
    """``jobs --watch``: a reconcile pass (like every ``jobs``), then the queue and the jobs
    that ended in the last minutes, every ``interval`` seconds, forever."""
    from leptonctl.services.jobs.queue import observe  # the job services, only here

    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        report = await observe(ctx)
        yield queue_frame(ctx.store.jobs.all(), ctx.clock(), unreachable=list(report.unreachable))
        await asyncio.sleep(max(0.0, interval - (loop.time() - started)))
