"""Inventories as they are in the wild: switches, Windows hosts and containers next to the
servers (left out, with one note), and passwords leptonctl never uses (never shown)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from leptonctl.errors import ExitCode, InventoryError, LimitError
from leptonctl.inventory import Inventory, parse_inventory, select_hosts

MIXED_YAML = """\
all:
  children:
    gpu:
      hosts:
        gpu1: {ansible_host: 10.0.0.1}
        gpu2: {ansible_host: 10.0.0.2, ansible_connection: ansible.builtin.ssh}
    switches:
      vars:
        ansible_connection: ansible.netcommon.network_cli
        ansible_network_os: cisco.ios.ios
      hosts:
        sw1:
        sw2:
        core1: {ansible_connection: network_cli}
    windows:
      vars:
        ansible_connection: winrm
      hosts:
        win1:
        win2: {ansible_connection: psrp}
    containers:
      hosts:
        ctr1: {ansible_connection: docker}
        ctr2: {ansible_connection: community.docker.docker}
    rack1:
      hosts:
        gpu1:
        sw1:
  hosts:
    here: {ansible_connection: local}
"""

MIXED_INI = """\
here ansible_connection=local

[gpu]
gpu[1:2] ansible_host=10.0.0.1

[switches]
sw[1:2]
core1 ansible_connection=network_cli

[switches:vars]
ansible_connection=ansible.netcommon.network_cli

[windows]
win1 ansible_connection=winrm
win2 ansible_connection=psrp

[containers]
ctr1 ansible_connection=docker
ctr2 ansible_connection=community.docker.docker

[rack1]
gpu1
sw1
"""

LEFT_OUT = {
    "sw1": "ansible.netcommon.network_cli",
    "sw2": "ansible.netcommon.network_cli",
    "core1": "network_cli",
    "win1": "winrm",
    "win2": "psrp",
    "ctr1": "docker",
    "ctr2": "community.docker.docker",
}


@pytest.fixture(params=["yaml", "ini"])
def mixed(request: pytest.FixtureRequest) -> Inventory:
    text, name = (MIXED_YAML, "mixed.yaml") if request.param == "yaml" else (MIXED_INI, "m.ini")
    return parse_inventory(text, name)


def test_non_ssh_hosts_are_left_out_and_the_servers_are_read(mixed: Inventory) -> None:
    assert set(mixed.host_names) == {"here", "gpu1", "gpu2"}
    assert {h.name: h.connection for h in mixed.left_out} == LEFT_OUT
    assert {h.name: h.connection for h in mixed.hosts} == {
        "here": "local",
        "gpu1": "ssh",
        "gpu2": "ssh",
    }
    # In no group, so no selection reaches them; a group of servers and switches keeps
    # its servers.
    assert mixed.groups["switches"] == ()
    assert mixed.groups["rack1"] == ("gpu1",)
    assert "sw1" not in mixed.groups["all"]
    assert {h.name for h in select_hosts(mixed, None)} == {"here", "gpu1", "gpu2"}
    assert [h.name for h in select_hosts(mixed, "rack1")] == ["gpu1"]


@pytest.mark.parametrize(
    ("limit", "named"),
    [
        ("sw1", ["sw1 (ansible.netcommon.network_cli)"]),
        ("switches", ["sw[1:2] (ansible.netcommon.network_cli)", "core1 (network_cli)"]),
        ("win*", ["win1 (winrm)", "win2 (psrp)"]),
        ("~ctr", ["ctr1 (docker)", "ctr2 (community.docker.docker)"]),
        ("gpu1,sw2", ["sw2 (ansible.netcommon.network_cli)"]),
        ("all,&windows", ["win1 (winrm)"]),
    ],
)
def test_a_limit_that_names_only_left_out_hosts_is_an_error_naming_them(
    mixed: Inventory,
    limit: str,
    named: list[str],
) -> None:
    with pytest.raises(LimitError) as err:
        select_hosts(mixed, limit)
    assert err.value.exit_code == ExitCode.USAGE
    assert "leaves out" in err.value.message
    for text in named:
        assert text in err.value.message


def test_excluding_a_left_out_host_is_allowed_and_changes_nothing(mixed: Inventory) -> None:
    assert {h.name for h in select_hosts(mixed, "all,!sw1,!windows")} == {
        "here",
        "gpu1",
        "gpu2",
    }


def test_asking_for_a_left_out_host_by_name_says_why(mixed: Inventory) -> None:
    with pytest.raises(LimitError, match=r"win1 \(winrm\) is left out"):
        mixed.host("win1")


def test_ssh_spellings_of_ansible_are_ssh() -> None:
    text = "a ansible_connection=paramiko\nb ansible_connection=ansible.builtin.paramiko_ssh\n"
    text += "c ansible_connection=ansible.builtin.local\nd ansible_connection=SSH\n"
    inv = parse_inventory(text, "h.ini")
    assert [h.connection for h in inv.hosts] == ["ssh", "ssh", "local", "ssh"]
    assert inv.left_out == ()


def test_a_connection_that_is_no_plugin_at_all_is_still_an_error() -> None:
    with pytest.raises(InventoryError, match=r"unsupported connection 'sssh'") as err:
        parse_inventory("gpu1\nsw1 ansible_connection=sssh\n", "h.ini")
    assert err.value.line == 2


def test_an_inventory_of_only_left_out_hosts_is_an_error_naming_them() -> None:
    text = "[switches]\nsw[1:3]\n[switches:vars]\nansible_connection=network_cli\n"
    with pytest.raises(InventoryError, match=r"sw\[1:3\] \(network_cli\)"):
        parse_inventory(text, "h.ini")


def write(tmp_path: Path, text: str, name: str = "mixed.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_commands_leave_them_out_with_one_note_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = write(tmp_path, MIXED_INI, "mixed.ini")
    code = run(["-i", str(inventory), "exec", "-l", "here", "--json", "--", "echo", "hi"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    notes = [line for line in captured.err.splitlines() if "leaving out" in line]
    assert len(notes) == 1
    assert "7 hosts" in notes[0]
    for name, connection in (("win1", "winrm"), ("ctr2", "community.docker.docker")):
        assert f"{name} ({connection})" in notes[0]
    assert "sw[1:2] (ansible.netcommon.network_cli)" in notes[0]
    assert json.loads(captured.out)  # stdout stays one JSON document


def test_a_json_document_with_notes_carries_the_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = write(tmp_path, MIXED_YAML)
    source = tmp_path / "small.txt"
    source.write_text("hello\n")
    code = run(["-i", str(inventory), "data", "put", str(source), "small", "-l", "here", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    notes = json.loads(captured.out)["notes"]
    assert [n for n in notes if "leaving out 7 hosts" in n and "win1 (winrm)" in n]


def test_a_limit_of_left_out_hosts_exits_2_naming_host_and_connection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = write(tmp_path, MIXED_YAML)
    code = run(["-i", str(inventory), "exec", "-l", "switches", "--", "true"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == ExitCode.USAGE
    assert "core1 (network_cli)" in err and "leaves out" in err


SECRET = "Tr0ub4dor&3-not-printed"


@pytest.mark.parametrize(
    ("text", "name"),
    [
        (
            f"all:\n  hosts:\n    gpu1:\n      ansible_host: 10.0.0.1\n"
            f"      ansible_password: '{SECRET}'\n      ansible_become_pass: '{SECRET}'\n",
            "p.yaml",
        ),
        (f"[gpu]\ngpu1 ansible_host=10.0.0.1\n[gpu:vars]\nansible_ssh_pass={SECRET}\n", "p.ini"),
    ],
)
def test_passwords_are_dropped_when_the_inventory_is_read(text: str, name: str) -> None:
    inv = parse_inventory(text, name)
    (host,) = inv.hosts
    assert host.password_vars
    assert all(v.startswith("ansible_") for v in host.password_vars)
    assert SECRET not in repr(inv)
    assert SECRET not in repr(dict(host.vars))
    assert host.vars["ansible_host"] == "10.0.0.1"


def test_a_password_host_never_shows_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Without a lab: the host cannot be reached at all; what is printed, logged and stored
    still holds no password (tests/test_lab_ssh_config.py has the failed login)."""
    caplog.set_level(logging.DEBUG)
    inventory = write(
        tmp_path,
        "[gpu]\ngpu1 ansible_host=127.0.0.1 ansible_port=1 ansible_user=alice "
        f"ansible_password={SECRET}\n",
        "p.ini",
    )
    state = tmp_path / "state.db"
    code = run(["-i", str(inventory), "--state", str(state), "--connect-timeout", "2",
                "status", "--json"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == ExitCode.HOSTS_UNREACHABLE
    assert SECRET not in captured.out + captured.err + caplog.text
    assert SECRET.encode() not in b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))


def test_a_job_whose_hosts_are_only_left_out_hosts_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = write(tmp_path, MIXED_YAML)
    batch = tmp_path / "jobs.yaml"
    batch.write_text("jobs:\n  - {name: backup, command: 'true', limit: windows}\n")
    code = run(["-i", str(inventory), "submit", "--file", str(batch)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == ExitCode.USAGE
    assert "win1 (winrm)" in err and "win2 (psrp)" in err
    capsys.readouterr()
    assert run(["-i", str(inventory), "jobs", "--all", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["jobs"] == []  # nothing was queued
