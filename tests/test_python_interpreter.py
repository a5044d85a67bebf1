"""Python on the hosts: a host without the interpreter leptonctl tries, or with one older
than the agent's floor (3.8), gets a per-host error that names the interpreter and says how
to point ``ansible_python_interpreter`` at another; the interpreter named there runs the
agent, the job supervisor and the forced command of a transfer key."""

from __future__ import annotations

import ast
import asyncio
import json
import sys
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from leptonctl.errors import AgentError
from leptonctl.inventory.model import Host
from leptonctl.remote import agent as agent_mod
from leptonctl.remote.agent import AgentSession, push_agent, run_agent
from leptonctl.remote.transport import LocalConnection
from tests.conftest import write_inventory
from tests.lab import Lab

# A Python that says it is 3.7 (and is this one underneath): what the agent sees of a too
# old interpreter is sys.version_info, before anything else.
OLD_PYTHON = """\
#!/bin/sh
[ "$1" = -c ] || exit 2
shift
exec {python} -c 'import sys
sys.version_info = (3, 7, 17)
sys.version = "3.7.17 (pretend)"
source = sys.argv.pop(1)
exec(compile(source, "<string>", "exec"))' "$@"
"""


def local_host(python: str, data_dir: Path) -> Host:
    return Host(
        name="node7",
        address=None,
        port=None,
        user=None,
        identity_file=None,
        connection="local",
        python=python,
        data_dir=str(data_dir),
        groups=("all",),
        vars={},
        capacity=None,
        source="test",
    )


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty agent cache for the local 'host'."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def old_python(tmp_path: Path) -> str:
    path = tmp_path / "python3.7"
    path.write_text(OLD_PYTHON.format(python=sys.executable))
    path.chmod(0o755)
    return str(path)


def probe(host: Host) -> dict[str, object]:
    return asyncio.run(run_agent(LocalConnection(host.name), host, ["probe"], 30.0))[0]


def test_a_missing_interpreter_is_named_with_how_to_set_another(
    cache: Path, tmp_path: Path
) -> None:
    with pytest.raises(AgentError) as caught:
        probe(local_host("/opt/nowhere/python3", tmp_path / "data"))
    error = caught.value
    assert error.host == "node7"
    assert "the interpreter `/opt/nowhere/python3` was not found" in error.message
    assert error.hint is not None
    assert "node7 ansible_python_interpreter=" in error.hint


def test_an_interpreter_older_than_the_floor_is_refused_by_the_installer(
    cache: Path, tmp_path: Path, old_python: str
) -> None:
    with pytest.raises(AgentError) as caught:
        probe(local_host(old_python, tmp_path / "data"))
    message = caught.value.message
    assert f"the interpreter `{old_python}` is older than Python 3.8" in message
    assert "3.7.17" in message  # what it said it is
    assert "ansible_python_interpreter" in (caught.value.hint or "")
    assert not list(cache.glob("leptonctl/agent-*"))  # nothing was installed


def test_an_interpreter_older_than_the_floor_is_refused_by_the_launcher(
    cache: Path, tmp_path: Path, old_python: str
) -> None:
    # a shared home: another host installed the agent, this one's python is too old
    good = local_host(sys.executable, tmp_path / "data")
    asyncio.run(push_agent(LocalConnection(good.name), good, 30.0))
    assert probe(good)["schema"] == 1
    with pytest.raises(AgentError) as caught:
        probe(local_host(old_python, tmp_path / "data"))
    assert f"`{old_python}` is older than Python 3.8" in caught.value.message


def test_a_session_on_a_host_that_lacks_the_interpreter_names_it(
    cache: Path, tmp_path: Path
) -> None:
    # a shared home: the agent is cached (another host put it there), the interpreter is not
    good = local_host(sys.executable, tmp_path / "data")
    asyncio.run(push_agent(LocalConnection(good.name), good, 30.0))
    lacking = local_host("/opt/nowhere/python3", tmp_path / "data")
    with pytest.raises(AgentError) as caught:
        asyncio.run(AgentSession.open(LocalConnection(lacking.name), lacking, 30.0))
    assert "the interpreter `/opt/nowhere/python3` was not found" in caught.value.message
    assert "node7 ansible_python_interpreter=" in (caught.value.hint or "")


def test_an_old_python_reads_the_installer_and_launcher_up_to_the_version_check() -> None:
    # they must compile there to exit 96 with a message, not with a SyntaxError
    for source in (agent_mod._INSTALLER, agent_mod._LAUNCHER):
        ast.parse(source, feature_version=(3, 4))
        assert source.startswith("import sys\nif sys.version_info < (3, 8):")


def test_the_agent_runs_with_the_interpreter_named_in_the_inventory(
    cache: Path, tmp_path: Path
) -> None:
    document = probe(local_host(sys.executable, tmp_path / "data"))
    assert document["python"] == {
        "version": ".".join(map(str, sys.version_info[:3])),
        "executable": sys.executable,
    }


def test_status_shows_the_interpreter_error_and_hint_per_host(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        "[w]\n"
        f"ok ansible_connection=local ansible_python_interpreter={sys.executable}\n"
        "bad ansible_connection=local ansible_python_interpreter=/opt/nowhere/python3\n"
    )
    code = run(["-i", str(inventory), "--state", str(tmp_path / "s.db"), "status", "--json"])
    hosts = {h["host"]: h for h in json.loads(capsys.readouterr().out)["hosts"]}
    assert code != 0
    assert hosts["ok"]["state"] == "up" and hosts["ok"].get("error") is None
    error = hosts["bad"]["error"]
    assert error["kind"] == "agent_error"
    assert "`/opt/nowhere/python3` was not found" in error["message"]
    assert "bad ansible_python_interpreter=" in error["hint"]


@pytest.mark.lab
def test_a_host_without_python3_on_its_path(
    cluster_lab: Lab,
    cluster_operator: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def cli(inventory: Path, *args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = run(["-i", str(inventory), "--state", str(tmp_path / "s.db"), *args])
        return code, capsys.readouterr().out

    # without ansible_python_interpreter: python3, which h4 lacks
    bare = write_inventory(
        tmp_path / "bare.yaml",
        cluster_lab,
        names=["h1", "h4"],
        host_vars={"h4": {"ansible_python_interpreter": "python3"}},
    )
    code, out = cli(bare, "status", "--json")
    hosts = {h["host"]: h for h in json.loads(out)["hosts"]}
    assert code != 0 and hosts["h1"]["state"] == "up"
    error = hosts["h4"]["error"]
    assert "the interpreter `python3` was not found" in error["message"]
    assert "h4 ansible_python_interpreter=" in error["hint"]
    code, out = cli(bare, "exec", "--json", "-l", "h4", "--", "echo no python needed")
    (result,) = json.loads(out)["results"]
    assert (code, result["stdout"]) == (0, "no python needed\n"), out  # exec runs sh only

    # with it: status, a job (its supervisor) and a copy into h4 (the forced command) work
    named = write_inventory(tmp_path / "named.yaml", cluster_lab, names=["h1", "h4"])
    code, out = cli(named, "status", "--json")
    hosts = {h["host"]: h for h in json.loads(out)["hosts"]}
    assert code == 0 and {h["state"] for h in hosts.values()} == {"up"}
    code, out = cli(named, "submit", "--wait", "-l", "h4", "--", "echo on $(hostname)")
    assert code == 0, out
    code, out = cli(named, "jobs", "--all", "--json")
    (job,) = json.loads(out)["jobs"]
    assert (job["state"], job["host"]) == ("COMPLETED", "h4"), job
    code, out = cli(named, "logs", str(job["id"]))
    assert out == "on h4\n"
    source = cluster_lab.path_on("h1", "/scratch/py.src")
    source.write_bytes(b"interpreter " * 1000)
    cluster_lab.give(source)
    code, out = cli(named, "cp", "--json", "h1:/scratch/py.src", "h4:/scratch/py.dst")
    assert code == 0, out
    assert json.loads(out)["route"] == ["h1", "h4"]  # direct: h4's forced command ran
    assert cluster_lab.path_on("h4", "/scratch/py.dst").read_bytes() == source.read_bytes()
