"""The user's SSH setup as written, against real sshd hosts: UserKnownHostsFile and
GlobalKnownHostsFile from ~/.ssh/config, new keys of jump hosts, StrictHostKeyChecking; and
a host whose inventory gives a password but no working key."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from leptonctl.errors import ExitCode
from tests.conftest import write_inventory
from tests.lab import Lab

pytestmark = pytest.mark.lab


def status(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, dict], str]:
    """``status --json`` with ``args`` before it: exit code, rows by host, stderr."""
    capsys.readouterr()
    code = run([*args, "status", "--json"])
    captured = capsys.readouterr()
    rows = {row["host"]: row for row in json.loads(captured.out)["hosts"]}
    return code, rows, captured.err


def key_of(lab: Lab, name: str) -> str:
    return " ".join(lab.host(name).host_key_pub.split()[:2])


def ssh_config(home: Path, text: str) -> None:
    (home / ".ssh" / "config").write_text(text)


def found_by_openssh(file: Path, name: str) -> str:
    """The lines of ``file`` that OpenSSH's own lookup finds for ``name`` (hashed or not)."""
    done = subprocess.run(
        ["ssh-keygen", "-F", name, "-f", str(file)], capture_output=True, text=True
    )
    return "".join(line for line in done.stdout.splitlines(True) if not line.startswith("#"))


def test_user_known_hosts_file_with_host_token_is_where_keys_are_read_and_recorded(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h1, h2 = lab.host("h1"), lab.host("h2")
    ssh_config(lab_operator, "Host *\n  UserKnownHostsFile ~/.ssh/hosts.d/%h.keys\n")
    keys = lab_operator / ".ssh" / "hosts.d"
    keys.mkdir()
    (keys / f"{h1.ip}.keys").write_text(f"{h1.ip} {key_of(lab, 'h1')}\n")
    default = lab_operator / ".ssh" / "known_hosts"
    before = default.read_text()  # holds every lab key: the config says not to read it
    inventory = write_inventory(tmp_path / "hosts.yaml", lab, ["h1", "h2"])

    code, rows, _ = status(capsys, "-i", str(inventory))
    assert code == ExitCode.HOSTS_UNREACHABLE
    assert rows["h1"]["state"] == "up"
    assert rows["h2"]["error"]["kind"] == "host_key_unknown"

    code, rows, _ = status(capsys, "-i", str(inventory), "--accept-new-host-keys")
    assert code == 0, rows
    assert (keys / f"{h2.ip}.keys").read_text() == f"{h2.ip} {key_of(lab, 'h2')}\n"
    assert default.read_text() == before

    code, _, _ = status(capsys, "-i", str(inventory))
    assert code == 0


def test_global_known_hosts_file_is_trusted_and_new_keys_go_to_the_first_user_file(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h1, h3 = lab.host("h1"), lab.host("h3")
    site = tmp_path / "site_known_hosts"
    site.write_text(f"{h1.ip} {key_of(lab, 'h1')}\n")
    first, second = tmp_path / "mine", tmp_path / "mine2"
    first.write_text("")
    second.write_text("")
    ssh_config(
        lab_operator,
        f"UserKnownHostsFile {first} {second}\nGlobalKnownHostsFile /nonexistent {site}\n",
    )
    inventory = write_inventory(tmp_path / "hosts.yaml", lab, ["h1", "h3"])

    code, rows, _ = status(capsys, "-i", str(inventory))
    assert rows["h1"]["state"] == "up"
    assert rows["h3"]["error"]["kind"] == "host_key_unknown"
    assert str(site) in rows["h3"]["error"]["message"]  # says which files it looked in

    code, rows, _ = status(capsys, "-i", str(inventory), "--accept-new-host-keys")
    assert code == 0, rows
    assert first.read_text() == f"{h3.ip} {key_of(lab, 'h3')}\n"
    assert second.read_text() == "" and site.read_text().count("\n") == 1


def test_a_new_key_is_hashed_when_the_file_already_hashes_its_names(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h1, h2 = lab.host("h1"), lab.host("h2")
    known = lab_operator / ".ssh" / "known_hosts"
    known.write_text(f"{h1.ip} {key_of(lab, 'h1')}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True)
    assert known.read_text().startswith("|1|")
    inventory = write_inventory(tmp_path / "hosts.yaml", lab, ["h1", "h2"])

    code, rows, _ = status(capsys, "-i", str(inventory), "--accept-new-host-keys")
    assert code == 0, rows
    assert h2.ip not in known.read_text()  # the name is hashed, as the file's others are
    assert key_of(lab, "h2") in found_by_openssh(known, h2.ip)


def test_an_unknown_jump_host_key_is_refused_then_accepted_with_the_flag(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h2, h3, h4 = lab.host("h2"), lab.host("h3"), lab.host("h4")
    known = lab_operator / ".ssh" / "known_hosts"
    known.write_text(  # the targets are known, their jump host is not
        f"{h4.ip} {key_of(lab, 'h4')}\n{h3.ip} {key_of(lab, 'h3')}\n"
    )
    inventory = tmp_path / "jump.ini"
    inventory.write_text(
        f"far ansible_host={h4.ip}\nnear ansible_host={h3.ip}\n[all:vars]\n"
        f"ansible_user=root\nansible_ssh_common_args='-o ProxyJump=root@{h2.ip}'\n"
    )

    code, rows, _ = status(capsys, "-i", str(inventory))
    assert code == ExitCode.HOSTS_UNREACHABLE
    error = rows["far"]["error"]
    assert error["kind"] == "host_key_unknown"
    assert f"jump host {h2.ip}" in error["message"]

    code, rows, _ = status(capsys, "-i", str(inventory), "--accept-new-host-keys")
    assert code == 0, rows
    assert rows["far"]["hostname"] == "h4" and rows["near"]["hostname"] == "h3"
    assert known.read_text().count(f"{h2.ip} {key_of(lab, 'h2')}\n") == 1  # once for both


def test_a_jump_host_from_the_ssh_config_is_verified_with_its_own_known_hosts_file(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h2, h4 = lab.host("h2"), lab.host("h4")
    jump_keys = tmp_path / "jump_keys"
    ssh_config(
        lab_operator,
        f"Host far\n  HostName {h4.ip}\n  User root\n  ProxyJump bastion\n"
        f"Host bastion\n  HostName {h2.ip}\n  User root\n  UserKnownHostsFile {jump_keys}\n",
    )
    inventory = tmp_path / "alias.ini"
    inventory.write_text("far\n")

    code, rows, _ = status(capsys, "-i", str(inventory))
    assert rows["far"]["error"]["kind"] == "host_key_unknown"
    assert "jump host bastion" in rows["far"]["error"]["message"]

    code, rows, _ = status(capsys, "-i", str(inventory), "--accept-new-host-keys")
    assert code == 0, rows
    assert jump_keys.read_text() == f"{h2.ip} {key_of(lab, 'h2')}\n"

    # A changed key of the jump host: the hint removes it by the name and from the file
    # the key is kept under (the HostName, the jump's own file), not by the alias.
    jump_keys.write_text(f"{h2.ip} {key_of(lab, 'h1')}\n")
    code, rows, _ = status(capsys, "-i", str(inventory), "--accept-new-host-keys")
    error = rows["far"]["error"]
    assert error["kind"] == "host_key_mismatch" and "jump host bastion" in error["message"]
    assert f"ssh-keygen -R {h2.ip} -f {jump_keys}" in error["hint"]


def test_strict_host_key_checking_yes_refuses_new_keys_even_with_the_flag(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h1, h3 = lab.host("h1"), lab.host("h3")
    known = lab_operator / ".ssh" / "known_hosts"
    known.write_text(f"{h1.ip} {key_of(lab, 'h1')}\n")
    ssh_config(lab_operator, f"Host {h3.ip}\n  StrictHostKeyChecking yes\n")
    inventory = write_inventory(tmp_path / "hosts.yaml", lab, ["h1", "h3"])

    code, rows, _ = status(capsys, "-i", str(inventory), "--accept-new-host-keys")
    assert code == ExitCode.HOSTS_UNREACHABLE
    assert rows["h1"]["state"] == "up"
    error = rows["h3"]["error"]
    assert error["kind"] == "host_key_unknown"
    assert "StrictHostKeyChecking yes" in error["message"]
    assert "--accept-new-host-keys" in error["message"]
    assert h3.ip not in known.read_text()


@pytest.mark.parametrize("value", ["no", "accept-new"])
def test_looser_strict_host_key_checking_does_not_accept_without_the_flag(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    h3 = lab.host("h3")
    known = lab_operator / ".ssh" / "known_hosts"
    known.write_text("")
    ssh_config(lab_operator, f"Host *\n  StrictHostKeyChecking {value}\n")
    inventory = write_inventory(tmp_path / "hosts.yaml", lab, ["h3"])

    code, rows, _ = status(capsys, "-i", str(inventory))
    assert code == ExitCode.HOSTS_UNREACHABLE
    assert rows["h3"]["error"]["kind"] == "host_key_unknown"
    assert known.read_text() == ""
    # Nor does it let a changed key through.
    known.write_text(f"{h3.ip} ssh-ed25519 {key_of(lab, 'h1').split()[1]}\n")
    code, rows, _ = status(capsys, "-i", str(inventory), "--accept-new-host-keys")
    assert rows["h3"]["error"]["kind"] == "host_key_mismatch"


SECRET = "pa55-w0rd-of-the-inventory"


def test_a_password_host_without_a_working_key_says_keys_only_and_never_the_password(
    lab: Lab,
    lab_operator: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    h2 = lab.host("h2")
    stranger = tmp_path / "stranger_ed25519"  # a key no lab host authorizes
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
                   check=True)  # fmt: skip
    inventory = tmp_path / "pw.yaml"
    inventory.write_text(
        "all:\n  hosts:\n    pw:\n"
        f"      ansible_host: {h2.ip}\n      ansible_user: root\n"
        f"      ansible_ssh_private_key_file: {stranger}\n"
        f"      ansible_password: {SECRET}\n      ansible_become_pass: {SECRET}\n"
    )
    state = tmp_path / "state.db"

    code, rows, err = status(capsys, "-i", str(inventory), "--state", str(state))
    assert code == ExitCode.HOSTS_UNREACHABLE
    error = rows["pw"]["error"]
    assert error["kind"] == "auth_failed"
    assert "keys only" in error["message"]
    assert f"ssh-copy-id -i {stranger}.pub root@{h2.ip}" in error["hint"]

    capsys.readouterr()
    code = run(["-i", str(inventory), "--state", str(state), "exec", "--", "true"])
    captured = capsys.readouterr()
    assert code == ExitCode.HOSTS_UNREACHABLE
    assert "ssh-copy-id" in captured.out + captured.err
    shown = json.dumps(rows) + err + captured.out + captured.err + caplog.text
    assert SECRET not in shown
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))
    assert SECRET.encode() not in stored
