"""~/.ssh/config's host-key settings, read as OpenSSH reads them (no host needed; the real
connections are in tests/test_lab_ssh_config.py)."""

from __future__ import annotations

import getpass
import subprocess
from pathlib import Path

import asyncssh
import pytest

from leptonctl.errors import UsageError
from leptonctl.remote.ssh_config import (
    host_key_settings,
    known_host_entry,
    load_known_hosts,
    uses_hashed_names,
)

CONFIG = """\
Host gpu*
  UserKnownHostsFile ~/.ssh/kh/%h_%u %d/second %%percent
  StrictHostKeyChecking yes
Host bastion
  HostName 10.9.9.9
  UserKnownHostsFile /keys/%h-%p-%r-%k
  HashKnownHosts yes
  ProxyJump none
Match user ops
  StrictHostKeyChecking accept-new
Host *
  GlobalKnownHostsFile /etc/site_keys "/etc/other keys"
  ProxyJump gw@bastion:2222
"""


@pytest.fixture
def config(operator_home: Path) -> Path:
    path = operator_home / ".ssh" / "config"
    path.write_text(CONFIG)
    return path


def test_known_hosts_files_expand_tokens_and_tilde_per_host(
    config: Path, operator_home: Path
) -> None:
    me = getpass.getuser()
    gpu = host_key_settings("gpu7")
    assert gpu.user_files == (
        operator_home / ".ssh" / "kh" / f"gpu7_{me}",
        operator_home / "second",
        Path("%percent"),
    )
    assert gpu.global_files == (Path("/etc/site_keys"), Path("/etc/other keys"))
    assert gpu.refuses_new_keys
    assert gpu.proxy_jump == "gw@bastion:2222"
    bastion = host_key_settings("bastion", "root", 2222)
    assert bastion.user_files == (Path("/keys/10.9.9.9-2222-root-bastion"),)
    assert bastion.hash_names and not bastion.refuses_new_keys
    assert bastion.proxy_jump is None  # "none" ends the chain


def test_without_a_config_the_openssh_defaults_apply(operator_home: Path) -> None:
    settings = host_key_settings("anything")
    assert settings.user_files == (
        operator_home / ".ssh" / "known_hosts",
        operator_home / ".ssh" / "known_hosts2",
    )
    assert settings.global_files == (
        Path("/etc/ssh/ssh_known_hosts"),
        Path("/etc/ssh/ssh_known_hosts2"),
    )
    assert settings.strict is None and settings.proxy_jump is None


@pytest.mark.parametrize("value", ["no", "off", "accept-new", "ask"])
def test_looser_strict_host_key_checking_never_refuses_nor_loosens(
    operator_home: Path, value: str
) -> None:
    (operator_home / ".ssh" / "config").write_text(f"StrictHostKeyChecking {value}\n")
    settings = host_key_settings("h")
    assert settings.strict == value and not settings.refuses_new_keys


def test_match_user_blocks_see_the_inventory_user(config: Path) -> None:
    assert host_key_settings("web1", "ops").strict == "accept-new"
    assert host_key_settings("web1", "root").strict is None


def test_a_broken_config_is_a_usage_error_naming_it(operator_home: Path) -> None:
    path = operator_home / ".ssh" / "config"
    path.write_text("Host a\n  Port notanumber\n")
    with pytest.raises(UsageError, match=str(path)):
        host_key_settings("a")


def test_a_hashed_entry_is_found_by_openssh_and_asyncssh(tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    key = " ".join(key.split()[:2])
    file = tmp_path / "known"
    file.write_text(known_host_entry("[10.1.2.3]:2222", key, hashed=True) + "\n")
    assert file.read_text().startswith("|1|") and "10.1.2.3" not in file.read_text()
    assert uses_hashed_names(file)
    found = subprocess.run(
        ["ssh-keygen", "-F", "[10.1.2.3]:2222", "-f", str(file)], capture_output=True, text=True
    )
    assert found.returncode == 0 and key in found.stdout
    trusted = load_known_hosts([file]).match("10.1.2.3", "", 2222)[0]
    assert [k.export_public_key().decode().split()[1] for k in trusted] == [key.split()[1]]


def test_plain_entries_stay_plain(tmp_path: Path) -> None:
    file = tmp_path / "known"
    file.write_text("10.0.0.1 ssh-ed25519 AAAA\n")
    assert not uses_hashed_names(file)
    assert known_host_entry("10.0.0.2", "ssh-ed25519 BBBB", hashed=False) == (
        "10.0.0.2 ssh-ed25519 BBBB"
    )


def test_missing_known_hosts_files_are_skipped_and_a_broken_one_is_named(tmp_path: Path) -> None:
    assert load_known_hosts([tmp_path / "nope"]).match("h", "", None)[0] == []
    broken = tmp_path / "broken"
    broken.write_text("@revoke-typo h ssh-ed25519 AAAA\n")
    with pytest.raises(UsageError, match=str(broken)):
        load_known_hosts([tmp_path / "nope", broken])


def test_a_known_hosts_file_is_read_again_once_it_changes(tmp_path: Path) -> None:
    keys = [asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()]
    keys.append(asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode())
    file = tmp_path / "known"
    file.write_text(f"h1 {keys[0]}")
    first = load_known_hosts([file])
    assert load_known_hosts([file]) is first  # unchanged: not parsed again
    with file.open("a") as handle:
        handle.write(f"h2 {keys[1]}")
    assert len(load_known_hosts([file]).match("h2", "", None)[0]) == 1
