"""What people copy into an inventory or a path never becomes an ssh option or a crontab line.

* An address, user, jump host, data address or host name that starts with ``-`` (ssh
  would read ``-oProxyCommand=...`` as an option) or holds whitespace or control
  characters is refused when the inventory loads, with the file, line and key.
* ``cron install`` refuses any control character in what it writes (a newline in a
  path would start a second, working crontab line), and creates the directories its
  line writes into, so the first tick on a fresh machine gets as far as leptonctl.
"""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from leptonctl.core import crontab
from leptonctl.errors import ExitCode, InventoryError, UsageError
from leptonctl.inventory import parse_inventory
from leptonctl.services.maintain import cron
from tests.test_cron import cli, crontab_text, inventory_file, set_crontab, user_crontab

__all__ = ["user_crontab"]  # the fixture, imported for the tests below

EVIL = "-oProxyCommand=touch /tmp/pwned"

# -- the inventory -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "key"),
    [
        (f"gpu01 ansible_host='{EVIL}'", "ansible_host"),
        ("gpu01 ansible_host=-oProxyCommand=id", "ansible_host"),
        ("gpu01 ansible_ssh_host=-p2222", "ansible_ssh_host"),
        ("gpu01 ansible_user=-oProxyCommand=id", "ansible_user"),
        ("gpu01 user=-lroot", "user"),
        ("gpu01 lepton_proxy_jump=-oProxyCommand=id", "lepton_proxy_jump"),
        ("gpu01 lepton_proxy_jump=ops@bastion,-oProxyCommand=id", "lepton_proxy_jump"),
        ("gpu01 lepton_proxy_jump=ops@-oProxyCommand=id", "lepton_proxy_jump"),
        ("gpu01 ansible_ssh_common_args='-J -oProxyCommand=id'", "ansible_ssh_common_args"),
        ("gpu01 ansible_ssh_extra_args='-o ProxyJump=-oX'", "ansible_ssh_extra_args"),
        ("gpu01 data_address=-oProxyCommand=id", "data_address"),
        ("gpu01 ansible_host='10.0.0.1 -oProxyCommand=id'", "ansible_host"),
        ("gpu01 ansible_user='ops\troot'", "ansible_user"),
    ],
)
def test_an_address_user_or_jump_that_ssh_would_read_as_an_option_is_refused(
    line: str, key: str
) -> None:
    text = f"[gpu]\n# the GPU nodes\n{line}\n"
    with pytest.raises(InventoryError) as caught:
        parse_inventory(text, "hosts.ini")
    error = caught.value
    assert error.exit_code == ExitCode.USAGE
    assert (error.source, error.line, error.key) == ("hosts.ini", 3, key)
    assert error.hint and "option" in error.hint


@pytest.mark.parametrize("value", ["ops\\nroot", "10.0.0.1\\rx", "bastion\\u0000"])
def test_control_characters_in_yaml_addresses_are_refused(value: str) -> None:
    text = f'all:\n  hosts:\n    gpu01:\n      ansible_host: "{value}"\n'
    with pytest.raises(InventoryError, match="whitespace or control") as caught:
        parse_inventory(text, "hosts.yaml")
    assert caught.value.line == 4


@pytest.mark.parametrize("name", ["-oProxyCommand=id", "gpu 01", "gpu\\t01"])
def test_a_host_name_that_ssh_would_be_handed_is_checked_too(name: str) -> None:
    text = f'all:\n  hosts:\n    ok01:\n    "{name}":\n'
    with pytest.raises(InventoryError, match="host name") as caught:
        parse_inventory(text, "hosts.yaml")
    assert caught.value.line == 4


def test_ordinary_addresses_users_and_jumps_still_load() -> None:
    inventory = parse_inventory(
        "[gpu]\n"
        "gpu01 ansible_host=10.0.0.1 ansible_user=ops lepton_proxy_jump=ops@bastion:22,b2\n"
        "gpu02 ansible_host=fe80::1 data_address=10.1.0.2 ansible_ssh_common_args='-J bastion'\n"
        "gpu-03\n",
        "hosts.ini",
    )
    first, second, third = inventory.hosts
    assert (first.address, first.user, first.proxy_jump) == ("10.0.0.1", "ops", "ops@bastion:22,b2")
    assert (second.proxy_jump, second.vars["data_address"]) == ("bastion", "10.1.0.2")
    assert third.ssh_target == "gpu-03"


# -- the crontab ---------------------------------------------------------------------


def _target(inventory: Path, base: Path) -> crontab.CronTarget:
    return crontab.CronTarget(
        python=Path("/opt/venv/bin/python"),
        inventory=inventory,
        state=base / "state.db",
        lock=base / "state.db.maintain.lock",
        log=base / "maintain.log",
    )


@pytest.mark.parametrize("bad", ["\n* * * * * touch /tmp/pwned #", "\r", "\t", "\x00", "\x7f"])
def test_a_control_character_in_a_path_never_reaches_the_crontab(bad: str) -> None:
    with pytest.raises(UsageError, match="control character"):
        crontab.entry_command(_target(Path(f"/srv/a{bad}b/hosts.ini"), Path("/var/lib/l")), ["x"])
    with pytest.raises(UsageError, match="control character"):
        crontab.entry_command(_target(Path("/srv/hosts.ini"), Path(f"/var/lib/l{bad}")), ["x"])


def test_cron_install_refuses_an_inventory_path_with_a_newline(
    user_crontab: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_crontab(["MAILTO=ops@example.org"])
    folder = tmp_path / "x\n* * * * * touch pwned #"
    folder.mkdir()
    inventory = folder / "hosts.yaml"
    inventory.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
    code, _ = cli(
        capsys, "-i", str(inventory), "--state", str(tmp_path / "s.db"), "cron", "install"
    )
    assert code == ExitCode.USAGE
    assert crontab_text() == "MAILTO=ops@example.org\n"


def test_the_first_tick_on_a_fresh_machine_gets_as_far_as_leptonctl(
    user_crontab: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No state directory yet: install creates it (0700), and the line, run by sh in cron's
    bare environment, writes leptonctl's JSON lines to the log it names."""
    set_crontab(None)
    home = tmp_path / "home"
    home.mkdir()
    state = tmp_path / "fresh machine" / "lepton" / "state.db"  # nothing of it exists
    code, _ = cli(
        capsys, "-i", str(inventory_file(tmp_path)), "--state", str(state), "cron", "install"
    )
    assert code == 0
    for directory in (state.parent, state.parent.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    (tick,) = [e for e in cron.show("default") if e.schedule == "tick"]
    command = tick.command.replace("\\%", "%")  # what cron hands to sh
    proc = subprocess.run(
        ["env", "-i", f"HOME={home}", "PATH=/usr/bin:/bin", "sh", "-c", command],
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    log = [json.loads(x) for x in (state.parent / "maintain.log").read_text().splitlines()]
    assert log[-1]["event"] == "run" and log[-1]["outcome"] == "ok"
