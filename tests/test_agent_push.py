"""Pushing the agent: by content hash, verified on the host, atomic, safe to race.

These use `connection: local` (a real shell, real files) instead of SSH: the
installer's behaviour does not depend on the transport.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from leptonctl.errors import AgentError
from leptonctl.remote import agent
from leptonctl.remote.pool import HostPool
from leptonctl.remote.transport import LocalConnection, TransportOptions
from tests.helpers import make_host

HOST = make_host("me", connection="local")


def cache_dir(operator_home: Path) -> Path:
    return Path(os.environ["XDG_CACHE_HOME"]) / "leptonctl"


def test_first_probe_pushes_and_later_probes_reuse(operator_home: Path) -> None:
    async def twice() -> tuple[bool, bool]:
        conn = LocalConnection("me")
        first = await agent.probe_host(conn, HOST, 30)
        second = await agent.probe_host(conn, HOST, 30)
        return first.pushed, second.pushed

    assert asyncio.run(twice()) == (True, False)
    (installed,) = cache_dir(operator_home).glob("lepton_agent_*.py")
    assert installed.read_bytes() == agent.agent_source()
    assert installed.name == f"lepton_agent_{agent.agent_digest()}.py"
    assert hashlib.sha256(installed.read_bytes()).hexdigest().startswith(agent.agent_digest())
    # byte-compiled at install, so no run ever compiles it again
    assert list((installed.parent / "__pycache__").glob(f"{installed.stem}.*.pyc"))


def test_concurrent_pushes_leave_one_intact_agent(operator_home: Path) -> None:
    async def race() -> None:
        await asyncio.gather(
            *(agent.push_agent(LocalConnection(f"c{i}"), HOST, 30) for i in range(8))
        )

    asyncio.run(race())
    directory = cache_dir(operator_home)
    (installed,) = directory.glob("lepton_agent_*.py")
    assert installed.read_bytes() == agent.agent_source()
    assert list(directory.glob(".agent-*")) == []  # no temp files left by the race
    assert directory.stat().st_mode & 0o777 == 0o700


def test_truncated_upload_is_refused_and_never_installed(
    operator_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = agent.agent_source()
    # What a connection dropped mid-upload delivers: the first half of the file.
    monkeypatch.setattr(agent, "agent_source", lambda: real[: len(real) // 2])
    with pytest.raises(AgentError, match="sha256 mismatch"):
        asyncio.run(agent.push_agent(LocalConnection("me"), HOST, 30))
    assert not list(cache_dir(operator_home).glob("lepton_agent_*.py"))


def test_missing_interpreter_is_an_agent_error_with_a_hint(operator_home: Path) -> None:
    host = make_host("me", connection="local", python="python3-does-not-exist")
    with pytest.raises(AgentError) as info:
        asyncio.run(agent.probe_host(LocalConnection("me"), host, 30))
    assert "python3-does-not-exist" in info.value.message
    assert info.value.hint and "ansible_python_interpreter" in info.value.hint


def test_fan_out_never_runs_more_than_forks_at_once(tmp_path: Path) -> None:
    running = tmp_path / "running"
    running.mkdir()
    peak = tmp_path / "peak"
    # Each host marks itself running, records how many are running, then leaves.
    command = f"touch {running}/$$; ls {running} | wc -l >> {peak}; sleep 0.2; rm {running}/$$"
    hosts = [make_host(f"h{i}", connection="local") for i in range(9)]

    async def go() -> dict[str, object]:
        async with HostPool(TransportOptions(forks=3)) as pool:
            return await pool.fan_out(hosts, lambda host, conn: conn.run(command, timeout=10))

    outcomes = asyncio.run(go())
    assert all(getattr(o, "ok", False) for o in outcomes.values())
    counts = [int(line) for line in peak.read_text().split()]
    assert len(counts) == 9 and max(counts) <= 3
