"""One service context per command: store and sessions opened on first use, closed after."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from leptonctl.core.records import StoredFacts
from leptonctl.errors import LeptonError, StateError
from leptonctl.inventory import load_inventory
from leptonctl.remote.transport import TransportOptions
from leptonctl.services.context import ServiceContext
from leptonctl.services.maintain.context import RunContext
from leptonctl.store.sqlite import SqliteStore


def test_the_store_opens_on_first_use_and_closes_with_the_context(tmp_path: Path) -> None:
    opened: list[SqliteStore] = []

    def opener() -> SqliteStore:
        opened.append(SqliteStore(tmp_path / "s.db"))
        return opened[-1]

    async def main() -> None:
        async with ServiceContext(load_inventory(None), store=opener) as ctx:
            assert opened == []  # nothing is opened before it is used
            ctx.store.set_value("k", "v")
            assert ctx.store is opened[0]  # once per context
        with pytest.raises(StateError):  # closed with the context
            opened[0].value("k")
        with pytest.raises(LeptonError, match="closed service context"):
            ctx.store  # noqa: B018 - using a closed context is a bug, said loudly

    asyncio.run(main())
    assert len(opened) == 1
    with SqliteStore(tmp_path / "s.db") as store:
        assert store.value("k") == "v"


def test_a_store_handed_in_stays_open_for_its_owner(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.db") as store:

        async def main() -> None:
            async with ServiceContext(load_inventory(None), store=store) as ctx:
                ctx.store.set_value("k", "v")

        asyncio.run(main())
        assert store.value("k") == "v"


def test_sessions_reach_the_hosts_and_close_with_the_context(tmp_path: Path) -> None:
    async def main() -> None:
        async with ServiceContext(
            load_inventory(None), store=lambda: SqliteStore(tmp_path / "s.db")
        ) as ctx:
            (host,) = ctx.selected
            assert host.is_local
            sessions = ctx.sessions
            assert ctx.sessions is sessions  # one set of sessions per context
            outcome = await sessions.pool.fan_out(
                ctx.selected, lambda h, conn: conn.run("echo hi", timeout=10)
            )
            result = outcome[host.name]
            assert not isinstance(result, LeptonError) and result.stdout.strip() == "hi"
            assert sessions.pool._connections  # the connection is kept for the command
        assert not sessions.pool._connections  # closed with the context

    asyncio.run(main())


def test_a_maintenance_run_context_is_a_service_context_that_never_contacts_hosts_in_check(
    tmp_path: Path,
) -> None:
    with SqliteStore(tmp_path / "s.db") as store:
        previous = {"h": StoredFacts("h", 1.0, {})}
        ctx = RunContext(
            load_inventory(None), TransportOptions(), store, True, lambda: 5.0, previous
        )
        assert isinstance(ctx, ServiceContext)
        assert ctx.store is store and ctx.clock() == 5.0 and ctx.previous == previous
        with pytest.raises(LeptonError, match="check run tried to contact a host"):
            ctx.live()


@pytest.mark.parametrize(
    "function",
    [
        "jobs.operations.cancel",
        "jobs.operations.wait_for",
        "jobs.operations.reconcile_loop",
        "jobs.operations.job_log",
        "hosts.status.probe_hosts",
        "hosts.execute.run_everywhere",
        "hosts.watch.watch_status",
        "hosts.nodes.drain",
        "hosts.nodes.resume",
        "hosts.nodes.node_rows",
        "hosts.nodes.wait_until_idle",
        "maintain.run.maintain",
        "jobs.queue.submit",
        "jobs.queue.plan",
        "jobs.queue.observe",
        "jobs.queue.cancel",
        "data.datasets.put",
        "data.datasets.get",
        "data.datasets.remove",
        "data.replicas.verify",
        "data.replicas.scrub",
        "data.replicas.repair",
        "data.replicas.rebalance",
        "data.replicas.collect_garbage",
        "net.probe.probe_links",
        "net.copy.copy",
        "jobs.reconcile.reconcile",
    ],
)
def test_a_command_service_takes_the_service_context_first(function: str) -> None:
    import importlib
    import inspect

    module, _, name = function.rpartition(".")
    target = getattr(importlib.import_module(f"leptonctl.services.{module}"), name)
    first = next(iter(inspect.signature(target).parameters.values()))
    assert first.annotation in ("ServiceContext", ServiceContext), function


def test_a_view_among_some_hosts_shares_the_store_and_sessions_and_closes_nothing(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with ServiceContext(
            load_inventory(None), store=lambda: SqliteStore(tmp_path / "s.db")
        ) as ctx:
            view = ctx.among(())
            assert view.selected == () and view.store is ctx.store
            assert view.sessions is ctx.sessions
            await view.close()
            ctx.store.set_value("k", "v")  # the parent's store is still open
            assert ctx.sessions is view.sessions

    asyncio.run(main())
