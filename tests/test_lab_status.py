"""`leptonctl status` and `exec` against real OpenSSH sshd hosts in the namespace lab."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from leptonctl.errors import ExitCode
from leptonctl.store.sqlite import SqliteStore
from tests.conftest import write_inventory
from tests.lab import Lab

pytestmark = pytest.mark.lab


def status_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = run([*args, "status", "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def by_host(doc: dict) -> dict[str, dict]:
    return {row["host"]: row for row in doc["hosts"]}


def test_status_json_reports_every_lab_host_up_with_its_own_hostname(
    lab: Lab, lab_operator: Path, tmp_path: Path
) -> None:
    inventory = write_inventory(tmp_path / "hosts.yaml", lab, local=True)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "leptonctl", "-i", str(inventory), "status", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = by_host(json.loads(proc.stdout))
    assert set(rows) == {h.name for h in lab.hosts} | {"local"}
    for host in lab.hosts:
        row = rows[host.name]
        assert row["state"] == "up"
        assert row["hostname"] == host.name  # answered by that namespace's sshd, not another
        assert row["cpus"] == os.cpu_count()
        assert row["memory_bytes"] > 0 and row["agent_version"]
        assert row["gpus"] == [] and "gpus" in row["unavailable"]
    assert rows["local"]["state"] == "up"


def test_ini_inventory_reaches_the_same_hosts_as_yaml(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ini = tmp_path / "hosts.ini"
    lines = ["[gpu]"] + [f"{h.name} ansible_host={h.ip}" for h in lab.hosts[:2]]
    lines += ["[cpu]", f"{lab.hosts[2].name} ansible_host={lab.hosts[2].ip}", ""]
    lines += ["[all:vars]", "ansible_user=root"]
    ini.write_text("\n".join(lines) + "\n")
    code, doc = status_json(capsys, "-i", str(ini))
    assert code == 0
    rows = by_host(doc)
    assert [r["hostname"] for r in rows.values()] == ["h1", "h2", "h3"]
    assert "gpu" in rows["h1"]["groups"] and "cpu" in rows["h3"]["groups"]

    capsys.readouterr()
    assert run(["-i", str(ini), "status", "--json", "--limit", "gpu,!h2"]) == 0
    assert [r["host"] for r in json.loads(capsys.readouterr().out)["hosts"]] == ["h1"]


def test_ssh_config_alias_and_proxyjump_are_honoured(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h1, h3 = lab.host("h1"), lab.host("h3")
    (lab_operator / ".ssh" / "config").write_text(
        f"Host jump\n  HostName {h1.ip}\n  User root\n\n"
        f"Host inner\n  HostName {h3.ip}\n  User root\n  ProxyJump jump\n"
    )
    inventory = tmp_path / "alias.ini"
    inventory.write_text("jump\ninner\n")  # no addresses: both are ~/.ssh/config aliases
    log = h3.root / "sshd.log"
    before = log.read_text() if log.exists() else ""
    code, doc = status_json(capsys, "-i", str(inventory))
    assert code == 0, doc
    rows = by_host(doc)
    assert rows["jump"]["hostname"] == "h1" and rows["inner"]["hostname"] == "h3"
    # h3 saw the connection coming from h1: the jump host was really used.
    assert f"Connection from {h1.ip}" in log.read_text()[len(before) :]


def test_proxy_jump_from_ansible_ssh_args_goes_through_the_jump_host(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h2, h4 = lab.host("h2"), lab.host("h4")
    inventory = tmp_path / "jump.ini"
    inventory.write_text(
        f"far ansible_host={h4.ip} ansible_user=root "
        f"ansible_ssh_common_args='-o ProxyJump=root@{h2.ip}'\n"
    )
    log = h4.root / "sshd.log"
    before = log.read_text() if log.exists() else ""
    code, doc = status_json(capsys, "-i", str(inventory))
    assert code == 0, doc
    assert by_host(doc)["far"]["hostname"] == "h4"
    assert f"Connection from {h2.ip}" in log.read_text()[len(before) :]


def test_changed_host_key_is_refused_while_other_hosts_answer(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = write_inventory(tmp_path / "hosts.yaml", lab, ["h1", "h2", "h3"])
    lab.regenerate_host_key("h2")
    try:
        code, doc = status_json(capsys, "-i", str(inventory))
        err = capsys.readouterr().err
    finally:
        lab.refresh_known_hosts()
    assert code == ExitCode.HOSTS_UNREACHABLE
    rows = by_host(doc)
    assert rows["h1"]["state"] == rows["h3"]["state"] == "up"
    assert rows["h2"]["state"] == "down"
    assert rows["h2"]["error"]["kind"] == "host_key_mismatch"
    assert "CHANGED" in rows["h2"]["error"]["message"]
    assert "ssh-keygen -R" in rows["h2"]["error"]["hint"]
    assert err == ""  # per-host failures are rows, not crashes
    # --accept-new-host-keys never accepts a *changed* key.
    lab.regenerate_host_key("h2")
    (lab_operator / ".ssh" / "known_hosts").write_text(
        (lab.operator_home / ".ssh" / "known_hosts").read_text()
    )
    try:
        code, doc = status_json(capsys, "-i", str(inventory), "--accept-new-host-keys")
    finally:
        lab.refresh_known_hosts()
    assert by_host(doc)["h2"]["error"]["kind"] == "host_key_mismatch"


def test_unknown_host_key_needs_explicit_acceptance_which_is_recorded(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = write_inventory(tmp_path / "hosts.yaml", lab, ["h1", "h4"])
    known = lab_operator / ".ssh" / "known_hosts"
    h4 = lab.host("h4")
    kept = [line for line in known.read_text().splitlines() if h4.ip not in line]
    known.write_text("".join(line + "\n" for line in kept))

    code, doc = status_json(capsys, "-i", str(inventory))
    assert code == ExitCode.HOSTS_UNREACHABLE
    assert by_host(doc)["h4"]["error"]["kind"] == "host_key_unknown"
    assert h4.ip not in known.read_text()

    code, doc = status_json(capsys, "-i", str(inventory), "--accept-new-host-keys")
    assert code == 0
    assert f"{h4.ip} {' '.join(h4.host_key_pub.split()[:2])}" in known.read_text()
    state = Path(os.environ["XDG_DATA_HOME"]) / "leptonctl" / "state.db"
    with SqliteStore(state) as store:
        events = store.events("host_key_accepted")
    assert [(e.host, e.detail["known_as"]) for e in events] == [("h4", h4.ip)]

    code, _ = status_json(capsys, "-i", str(inventory))  # now known: no flag needed
    assert code == 0


def test_host_with_sshd_stopped_is_reported_unreachable_by_name(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = write_inventory(tmp_path / "hosts.yaml", lab, ["h1", "h3"])
    code, _ = status_json(capsys, "-i", str(inventory))  # a probe to remember
    assert code == 0
    lab.stop_sshd("h3")
    try:
        capsys.readouterr()
        code = run(["-i", str(inventory), "status"])
        table = capsys.readouterr().out
        code_json, doc = status_json(capsys, "-i", str(inventory))
    finally:
        lab.start_sshd("h3")
    assert code == code_json == ExitCode.HOSTS_UNREACHABLE
    row = by_host(doc)["h3"]
    assert row["state"] == "down" and row["error"]["kind"] == "unreachable"
    assert "refused" in row["error"]["message"]
    assert row["last_probed_at"] is not None  # the last probe is still known
    h3_line = next(line for line in table.splitlines() if line.startswith("h3"))
    assert "down" in h3_line and "unreachable" in h3_line
    assert f"h3: {row['error']['message']}" in table  # the full reason, under the table
    assert "hint: is sshd running" in table


def test_auth_failure_is_its_own_outcome(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = write_inventory(tmp_path / "hosts.yaml", lab, ["h1", "h2"])
    lab.deauthorize_operator("h2")
    try:
        code, doc = status_json(capsys, "-i", str(inventory))
    finally:
        lab.authorize("h2", lab.operator_pub)
    assert code == ExitCode.HOSTS_UNREACHABLE
    assert by_host(doc)["h2"]["error"]["kind"] == "auth_failed"
    assert by_host(doc)["h1"]["state"] == "up"


def test_agent_is_pushed_once_then_reused(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = write_inventory(tmp_path / "hosts.yaml", lab, ["h2"])
    cache = lab.path_on("h2", "/root/.cache/leptonctl")
    for old in cache.glob("agent-*") if cache.exists() else []:
        shutil.rmtree(old)
    assert status_json(capsys, "-i", str(inventory))[0] == 0
    (installed,) = cache.glob("agent-*")
    agent = installed / "lepton_agent" / "cli.py"
    first = agent.stat()
    assert first.st_mode & 0o777 == 0o600 and cache.stat().st_mode & 0o777 == 0o700
    assert status_json(capsys, "-i", str(inventory))[0] == 0
    second = agent.stat()
    assert (second.st_ino, second.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert list(cache.glob(".agent-*")) == []  # no temp files left behind
    assert list((agent.parent / "__pycache__").glob("cli.*.pyc"))


def test_probe_reports_the_hosts_real_memory_python_and_private_data_dir(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = write_inventory(tmp_path / "hosts.yaml", lab, ["h1"])
    code, doc = status_json(capsys, "-i", str(inventory))
    assert code == 0
    row = by_host(doc)["h1"]
    meminfo = Path("/proc/meminfo").read_text().split()
    assert row["memory_bytes"] == int(meminfo[meminfo.index("MemTotal:") + 1]) * 1024
    assert row["os"]["release"] == os.uname().release
    (disk,) = row["disks"]
    assert disk["path"] == "/root/.local/share/leptonctl"
    assert lab.path_on("h1", disk["path"]).stat().st_mode & 0o777 == 0o700
    assert 0 < disk["free_bytes"] <= disk["total_bytes"]


def test_exec_folds_identical_output_and_keeps_distinct_output_apart(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = write_inventory(tmp_path / "hosts.yaml", lab, ["h1", "h2", "h3"])
    capsys.readouterr()
    assert run(["-i", str(inventory), "exec", "--", "echo", "same; not a command"]) == 0
    out = capsys.readouterr().out
    assert out.count("same; not a command") == 1  # quoted word by word, and folded
    assert "h[1:3] (3)" in out

    assert run(["-i", str(inventory), "exec", "--json", "--", "hostname"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(r["host"], r["stdout"].strip()) for r in doc["results"]] == [
        ("h1", "h1"),
        ("h2", "h2"),
        ("h3", "h3"),
    ]


def test_exec_exit_codes_tell_failed_commands_from_unreachable_hosts(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = write_inventory(tmp_path / "hosts.yaml", lab, ["h1", "h2"])
    code = run(["-i", str(inventory), "exec", "--json", "--", "test $(hostname) = h1"])
    doc = json.loads(capsys.readouterr().out)
    assert code == ExitCode.COMMAND_FAILED
    assert {r["host"]: r["exit_status"] for r in doc["results"]} == {"h1": 0, "h2": 1}

    lab.stop_sshd("h2")
    try:
        code = run(["-i", str(inventory), "exec", "--", "true"])
        out = capsys.readouterr().out
    finally:
        lab.start_sshd("h2")
    assert code == ExitCode.HOSTS_UNREACHABLE
    assert "h2 · unreachable" in out


def test_command_timeout_is_reported_as_timeout(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = write_inventory(tmp_path / "hosts.yaml", lab, ["h1"])
    code = run(["-i", str(inventory), "--timeout", "1", "exec", "--json", "--", "sleep 5"])
    doc = json.loads(capsys.readouterr().out)
    assert code == ExitCode.HOSTS_UNREACHABLE
    assert doc["results"][0]["error"]["kind"] == "timeout"
