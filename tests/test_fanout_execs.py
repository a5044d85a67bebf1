"""How many commands a probe sends to a host: one when the agent is there (a cold status is one
SSH session per host), and the upload only once per agent version.

A real local shell stands in for the host (`connection: local`), counted by a thin wrapper;
the count is the transport's, whatever carries it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from leptonctl.core.outputs import RunResult
from leptonctl.inventory.model import Host
from leptonctl.remote import agent
from leptonctl.remote.pool import HostPool
from leptonctl.remote.transport import Connection, LocalConnection, TransportOptions
from tests.helpers import make_host

HOST = make_host("me", connection="local")


class CountingConnection(LocalConnection):
    """A local shell that remembers every command it ran and the bytes it was given."""

    def __init__(self, host: str) -> None:
        super().__init__(host)
        self.runs: list[tuple[str, int]] = []

    async def run(
        self, command: str, *, input: bytes | None = None, timeout: float, group: bool = False
    ) -> RunResult:
        self.runs.append((command, len(input or b"")))
        return await super().run(command, input=input, timeout=timeout, group=group)


def test_a_probe_is_one_command_once_the_agent_is_there(operator_home: Path) -> None:
    conn = CountingConnection("me")

    async def probe() -> bool:
        return (await agent.probe_host(conn, HOST, 30)).pushed

    assert asyncio.run(probe())  # first contact: try, upload, run
    assert [size > 0 for _, size in conn.runs] == [False, True, False]
    assert conn.runs[1][1] == len(agent.agent_payload())
    conn.runs.clear()
    assert not asyncio.run(probe())
    assert conn.runs == [(agent.agent_command(HOST, ["probe"]), 0)]


def test_a_fan_out_status_sends_each_host_one_command(operator_home: Path) -> None:
    hosts = [make_host(f"h{i}", connection="local") for i in range(5)]
    opened: dict[str, CountingConnection] = {}

    async def connector(host: Host) -> Connection:
        opened[host.name] = CountingConnection(host.name)
        return opened[host.name]

    async def status() -> None:
        async with HostPool(TransportOptions(), connector=connector) as pool:
            await agent.probe_host(await pool.connect(hosts[0]), hosts[0], 30)  # installs
            for conn in opened.values():
                conn.runs.clear()
            outcomes = await pool.fan_out(hosts, lambda h, c: agent.probe_host(c, h, 30))
            assert all(isinstance(o, agent.Probe) for o in outcomes.values()), outcomes

    asyncio.run(status())
    assert {name: len(conn.runs) for name, conn in opened.items()} == {h.name: 1 for h in hosts}
