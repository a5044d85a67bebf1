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
    (installed,) = cache_dir(operator_home).glob("agent-*")
    assert installed.name == f"agent-{agent.agent_digest()}"
    assert hashlib.sha256(agent.agent_payload()).hexdigest() == agent.payload_sha256()
    assert unpacked(installed) == agent.agent_files()
    # byte-compiled at install, so no run ever compiles it again
    assert list((installed / "lepton_agent" / "__pycache__").glob("cli.*.pyc"))


def unpacked(directory: Path) -> dict[str, bytes]:
    """The agent's sources under an installed payload directory, by archive name."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*.py"))
    }


def test_concurrent_pushes_leave_one_intact_agent(operator_home: Path) -> None:
    async def race() -> None:
        await asyncio.gather(
            *(agent.push_agent(LocalConnection(f"c{i}"), HOST, 30) for i in range(8))
        )

    asyncio.run(race())
    directory = cache_dir(operator_home)
    (installed,) = directory.glob("agent-*")
    assert unpacked(installed) == agent.agent_files()
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
    assert not list(cache_dir(operator_home).glob("agent-*"))


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


def test_the_payload_is_deterministic_and_holds_exactly_the_agent_package() -> None:
    import io
    import zipfile

    first = agent.agent_payload()
    agent.agent_payload.cache_clear()
    assert agent.agent_payload() == first  # built again: byte for byte the same
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        infos = archive.infolist()
    names = [info.filename for info in infos]
    assert names == sorted(names) and "__main__.py" in names and "lepton_agent/wire.py" in names
    assert all(n == "__main__.py" or n.startswith("lepton_agent/") for n in names)
    assert {(info.date_time, info.external_attr) for info in infos} == {
        ((1980, 1, 1, 0, 0, 0), 0o644 << 16)
    }
    checkout = Path(__file__).resolve().parents[1] / "agent"
    assert sorted(names) == sorted(
        str(p.relative_to(checkout)) for p in checkout.rglob("*.py") if "__pycache__" not in p.parts
    )


def test_a_host_with_the_old_single_file_agent_gets_the_package_and_loses_the_old_files(
    operator_home: Path,
) -> None:
    directory = cache_dir(operator_home)
    (directory / "__pycache__").mkdir(parents=True, mode=0o700)
    directory.chmod(0o700)
    old = directory / "lepton_agent_0123456789abcdef0123.py"
    old.write_text("raise SystemExit('the old agent must not run')\n")
    old_pyc = directory / "__pycache__" / "lepton_agent_0123456789abcdef0123.cpython-311.pyc"
    old_pyc.write_bytes(b"old")
    mine = directory / "notes.txt"  # not ours: stays
    mine.write_text("keep")
    probe = asyncio.run(agent.probe_host(LocalConnection("me"), HOST, 30))
    assert probe.pushed and probe.facts.hostname
    assert not old.exists() and not old_pyc.exists() and mine.exists()
    assert (directory / agent.payload_name() / "lepton_agent" / "cli.py").is_file()


def test_explode_unpacks_a_payload_that_runs(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    assert agent.main(["explode", str(tmp_path / "x")]) == 0
    out = subprocess.run(
        [sys.executable, "-S", str(tmp_path / "x"), "version"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert json.loads(out.stdout) == {"schema": 1, "agent_version": agent.wire.AGENT_VERSION}
    assert agent.main(["explode"]) == 2


def test_an_installed_wheel_pushes_its_bundled_agent_to_a_local_host(tmp_path: Path) -> None:
    """The wheel's layout (pyproject's force-include: agent/ -> leptonctl/_agent/) without the
    checkout: the bundled wire module and payload are used, and a local host gets the agent."""
    import json
    import shutil
    import subprocess
    import sys

    import tomllib

    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())
    site = tmp_path / "site"
    shutil.copytree(
        root / "leptonctl", site / "leptonctl", ignore=shutil.ignore_patterns("__pycache__")
    )
    for source, target in config["tool"]["hatch"]["build"]["targets"]["wheel"][
        "force-include"
    ].items():
        if (root / source).is_dir():
            shutil.copytree(
                root / source, site / target, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            (site / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / source, site / target)
    script = (
        "import asyncio, json\n"
        "from leptonctl.remote import agent\n"
        "from leptonctl.remote.transport import LocalConnection\n"
        "from tests.helpers import make_host\n"
        "probe = asyncio.run(agent.probe_host(LocalConnection('me'),"
        " make_host('me', connection='local'), 30))\n"
        "print(json.dumps([agent.wire.__name__, agent.__file__, agent.agent_digest(),"
        " probe.pushed]))\n"
    )
    env = dict(os.environ, PYTHONPATH=f"{site}:{root}", XDG_CACHE_HOME=str(tmp_path / "cache"))
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    name, module, digest, pushed = json.loads(out.stdout)
    assert name == "leptonctl._agent.lepton_agent.wire" and module.startswith(str(site))
    assert digest == agent.agent_digest() and pushed  # the same payload as the checkout's
    assert (tmp_path / "cache" / "leptonctl" / f"agent-{digest}" / "lepton_agent").is_dir()
