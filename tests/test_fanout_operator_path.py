"""What a cold ``status`` costs on the operator: its path imports neither the agent's protocol
registry (wire) nor asyncssh before a host is contacted; both come on first use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIRE = ("agent.lepton_agent.wire", "leptonctl._agent.lepton_agent.wire")


def imported_after(code: str) -> set[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.splitlines()[-1]))


def test_the_probe_service_imports_neither_wire_nor_asyncssh() -> None:
    modules = imported_after("import leptonctl.services.hosts.status")
    assert "leptonctl.remote.agent" in modules
    assert not modules & {*WIRE, "asyncssh"}


def test_wire_comes_on_first_use_and_is_the_agents_own_module() -> None:
    from agent.lepton_agent import wire as agents
    from leptonctl.remote import agent
    from leptonctl.remote.agent import wire

    assert wire is agents and agent.wire is agents
    assert wire.Probe.OP == "probe"
    modules = imported_after("from leptonctl.remote.agent import wire")
    assert modules & set(WIRE)


def test_a_probe_of_a_host_that_has_the_agent_never_packs_the_payload(operator_home: Path) -> None:
    import asyncio

    from leptonctl.remote import agent
    from leptonctl.remote.transport import LocalConnection
    from tests.helpers import make_host

    host = make_host("me", connection="local")
    assert asyncio.run(agent.probe_host(LocalConnection("me"), host, 30)).pushed
    agent.agent_payload.cache_clear()
    agent.agent_digest.cache_clear()
    assert not asyncio.run(agent.probe_host(LocalConnection("me"), host, 30)).pushed
    assert agent.agent_payload.cache_info().misses == 0  # named from the files, not the zip


def test_the_agents_name_follows_every_byte_and_name_of_its_files(monkeypatch) -> None:
    from leptonctl.remote import agent

    files = dict(agent.agent_files())
    names = {agent.agent_digest()}
    for changed in (
        {**files, "lepton_agent/probe.py": files["lepton_agent/probe.py"] + b"\n"},
        {**files, "lepton_agent/extra.py": b""},
        {k.replace("probe.py", "probe2.py"): v for k, v in files.items()},
    ):
        agent.agent_digest.cache_clear()
        monkeypatch.setattr(agent, "agent_files", lambda changed=changed: changed)
        names.add(agent.agent_digest())
    agent.agent_digest.cache_clear()
    assert len(names) == 4
