"""The live dashboard's engine over persistent sessions: hosts go away and come back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from leptonctl.inventory import load_inventory
from leptonctl.remote.transport import TransportOptions
from leptonctl.services.hosts.watch import LiveCluster
from leptonctl.store.sqlite import SqliteStore
from tests.conftest import write_inventory
from tests.lab import Lab

pytestmark = pytest.mark.lab


def serve_processes(lab: Lab, name: str) -> list[int]:
    """PIDs of `agent serve` processes inside one lab host."""
    return [p for p in lab.pids_matching(name, b"from lepton_agent.cli import") if p in
            lab.pids_matching(name, b"serve")]  # fmt: skip


def test_live_view_greys_a_crashed_host_and_recovers_it(
    lab: Lab, lab_operator: Path, tmp_path: Path
) -> None:
    hosts = load_inventory(write_inventory(tmp_path / "hosts.yaml", lab, ["h1", "h2"])).hosts
    options = TransportOptions(connect_timeout=3, command_timeout=5)

    async def scenario() -> list[dict[str, str]]:
        seen = []
        with SqliteStore(tmp_path / "state.db") as store:
            async with LiveCluster(hosts, options, store) as live:
                rows = await live.refresh(wait=20)
                seen.append({r.host.name: r.state for r in rows})
                agents = serve_processes(lab, "h2")
                seen.append({"h2 serve processes": str(len(agents))})
                rows = await live.refresh(wait=20)  # same sessions, no new agent process
                again = serve_processes(lab, "h2")
                seen.append({"same serve process": str(again == agents)})

                lab.crash_host("h2")
                rows = await live.refresh(wait=10)
                seen.append({r.host.name: r.state for r in rows})
                h2 = next(r for r in rows if r.host.name == "h2")
                seen.append({"h2 kept facts": str(h2.facts is not None)})

                lab.start_sshd("h2")
                for _ in range(40):  # retried with a capped backoff; give it time
                    await asyncio.sleep(0.5)
                    rows = await live.refresh(wait=5)
                    if all(r.state == "up" for r in rows):
                        break
                seen.append({r.host.name: r.state for r in rows})
        return seen

    seen = asyncio.run(scenario())
    assert seen[0] == {"h1": "up", "h2": "up"}
    assert seen[1] == {"h2 serve processes": "1"}
    assert seen[2] == {"same serve process": "True"}
    assert seen[3] == {"h1": "up", "h2": "down"}
    assert seen[4] == {"h2 kept facts": "True"}
    assert seen[5] == {"h1": "up", "h2": "up"}
