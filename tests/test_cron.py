"""``leptonctl cron`` against the real crontab(1): idempotent installs, other lines untouched.

The user's crontab is saved before each test and put back after it.  crontab(1)
only edits the spool; no cron daemon has to run.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from leptonctl.core import crontab
from leptonctl.errors import UsageError
from leptonctl.services.maintain import cron

ROOT = Path(__file__).resolve().parents[1]
USER_LINES = [
    "MAILTO=ops@example.org",
    "# the backup, do not touch",
    "30 2 * * * /usr/local/bin/backup --all > /var/log/backup.log 2>&1",
    "@reboot date +\\%s > /tmp/booted",
]


def crontab_text() -> str | None:
    proc = subprocess.run(
        ["crontab", "-l"], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    return proc.stdout if proc.returncode == 0 else None


def set_crontab(lines: list[str] | None) -> None:
    if lines is None:
        subprocess.run(["crontab", "-r"], capture_output=True, stdin=subprocess.DEVNULL)
    else:
        subprocess.run(
            ["crontab", "-"], input="".join(f"{x}\n" for x in lines), text=True, check=True
        )


@pytest.fixture
def user_crontab() -> Iterator[None]:
    """The real crontab of this user, saved and restored around the test."""
    if shutil.which("crontab") is None:
        pytest.skip("crontab(1) is not installed (.ci/run installs the cron package)")
    saved = crontab_text()
    try:
        yield
    finally:
        if saved is None:
            set_crontab(None)
        else:
            subprocess.run(["crontab", "-"], input=saved, text=True, check=True)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = run(list(args))
    return code, capsys.readouterr().out


def ours(text: str | None) -> list[str]:
    return [line for line in (text or "").splitlines() if "# leptonctl:" in line]


def inventory_file(tmp_path: Path) -> Path:
    path = tmp_path / "my cluster" / "hosts.yaml"  # a space: the entry must quote it
    path.parent.mkdir()
    path.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
    return path


def test_install_adds_one_entry_per_schedule_and_keeps_every_other_line(
    user_crontab: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_crontab(USER_LINES)
    inv, state = inventory_file(tmp_path), tmp_path / "state" / "state.db"
    code, out = cli(capsys, "-i", str(inv), "--state", str(state), "cron", "install")
    assert code == 0 and "installed 2 crontab entries" in out
    lines = (crontab_text() or "").splitlines()
    assert lines[: len(USER_LINES)] == USER_LINES
    tick, nightly = lines[len(USER_LINES) :]
    assert tick.startswith("*/5 * * * * ") and tick.endswith(" # leptonctl:default:tick")
    assert nightly.startswith("17 3 * * * ") and nightly.endswith(" # leptonctl:default:nightly")
    words = shlex.split(tick.split(" ", 5)[5].split(" #", 1)[0])
    assert words[:3] == [sys.executable, "-m", "leptonctl"]
    assert words[3:5] == ["-i", str(inv)] and Path(words[4]).is_absolute()
    assert words[5:7] == ["--state", str(state)]
    assert words[7:11] == ["maintain", "--json", "--lock", f"{state}.maintain.lock"]
    assert words[11:13] == ["health", "dispatch"]
    assert words[13:] == [">>", str(state.parent / "maintain.log"), "2>&1"]
    assert shlex.split(nightly.split(" ", 5)[5].split(" #", 1)[0])[11:12] == ["nightly"]


def test_installing_twice_leaves_one_entry_each_and_a_new_schedule_replaces_in_place(
    user_crontab: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_crontab(USER_LINES)
    base = ["-i", str(inventory_file(tmp_path)), "--state", str(tmp_path / "s.db"), "cron"]
    cli(capsys, *base, "install")
    first = crontab_text()
    assert cli(capsys, *base, "install")[0] == 0
    assert crontab_text() == first
    set_crontab([*(first or "").splitlines(), "0 * * * * /usr/bin/true"])  # the user adds one
    cli(capsys, *base, "install", "--tick", "*/2 * * * *", "--scrub", "23 * * * *")
    lines = (crontab_text() or "").splitlines()
    assert [line.split(" # leptonctl:")[-1] for line in ours("\n".join(lines))] == [
        "default:tick", "default:nightly", "default:scrub",
    ]  # fmt: skip
    assert lines[len(USER_LINES)].startswith("*/2 * * * * ")  # where the old tick was
    assert lines[-2] == "0 * * * * /usr/bin/true" and lines[-1].startswith("23 * * * * ")
    cli(capsys, *base, "install", "--nightly", "off", "--scrub", "23 * * * *")  # the whole set
    assert [x.split(":")[-1] for x in ours(crontab_text())] == ["tick", "scrub"]
    assert (crontab_text() or "").splitlines()[: len(USER_LINES)] == USER_LINES


def test_remove_takes_out_only_our_entries(
    user_crontab: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_crontab(USER_LINES)
    base = ["--state", str(tmp_path / "s.db"), "cron"]
    cli(capsys, *base, "install")
    cli(capsys, *base, "install", "--name", "lab2")  # a second cluster in the same crontab
    assert len(ours(crontab_text())) == 4
    code, out = cli(capsys, *base, "remove")
    assert code == 0 and "removed 2 entries" in out
    assert [x.split(" # leptonctl:")[-1] for x in ours(crontab_text())] == [
        "lab2:tick", "lab2:nightly",
    ]  # fmt: skip
    cli(capsys, *base, "remove", "--all")
    assert (crontab_text() or "").splitlines() == USER_LINES
    code, out = cli(capsys, *base, "remove")
    assert code == 0 and "removed 0 entries" in out


def test_install_and_show_work_without_any_crontab_yet(
    user_crontab: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_crontab(None)
    assert crontab_text() is None
    code, out = cli(capsys, "--state", str(tmp_path / "s.db"), "cron", "show")
    assert code == 0 and "no leptonctl entries" in out
    cli(capsys, "--state", str(tmp_path / "s.db"), "cron", "install", "--metrics-dir", "prom")
    code, out = cli(capsys, "cron", "show", "--json")
    entries = json.loads(out)["entries"]
    assert [(e["name"], e["schedule"], e["when"]) for e in entries] == [
        ("default", "tick", "*/5 * * * *"), ("default", "nightly", "17 3 * * *"),
    ]  # fmt: skip
    assert f"--metrics-dir {Path('prom').absolute()}" in entries[0]["command"]
    assert "-i " not in entries[0]["command"]  # no inventory given: the built-in local one


def test_the_installed_tick_runs_as_cron_would_run_it(
    user_crontab: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_crontab(None)
    state = tmp_path / "state.db"
    cli(capsys, "-i", str(inventory_file(tmp_path)), "--state", str(state), "cron", "install")
    (tick,) = [e for e in cron.show("default") if e.schedule == "tick"]
    # cron runs the command with /bin/sh, a bare environment, from the home directory;
    # PYTHONPATH stands in for `pip install`, which CI's venv has.
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        ["/bin/sh", "-c", tick.command.replace("\\%", "%")], env=env, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 0
    log = [json.loads(x) for x in (tmp_path / "maintain.log").read_text().splitlines()]
    assert [e["event"] for e in log] == ["step", "step", "run"]
    assert log[-1]["outcome"] == "ok" and log[-1]["playbooks"] == ["health", "dispatch"]


# -- the crontab text, on plain data ----------------------------------------------------


def test_schedules_are_checked() -> None:
    assert crontab.check_when("*/5  *   * * *", "--tick") == "*/5 * * * *"
    assert crontab.check_when("@daily", "--nightly") == "@daily"
    assert crontab.check_when("off", "--scrub") == "off"
    for bad in ("* * * *", "every day", "* * * * * *", "*/5 * * * ; rm"):
        with pytest.raises(UsageError, match="not a cron schedule"):
            crontab.check_when(bad, "--tick")
    with pytest.raises(UsageError):
        crontab.check_name("my cluster")


def test_percent_signs_are_escaped_and_paths_quoted() -> None:
    target = crontab.CronTarget(
        python=Path("/opt/venv/bin/python"),
        inventory=Path("/srv/100% sure/hosts.ini"),
        state=Path("/var/lib/lepton/state.db"),
        lock=Path("/var/lib/lepton/state.db.maintain.lock"),
        log=Path("/var/log/lepton.log"),
    )
    command = crontab.entry_command(target, ["nightly"])
    assert "'/srv/100\\% sure/hosts.ini'" in command
    assert command.endswith("nightly >> /var/log/lepton.log 2>&1")


def test_a_commented_out_entry_is_the_users_line() -> None:
    lines = ["# */5 * * * * python -m leptonctl maintain # leptonctl:default:tick"]
    assert crontab.marker_of(lines[0]) is None
    assert crontab.without_entries(lines, None) == lines


def test_duplicated_entries_collapse_to_one() -> None:
    entry = crontab.CronEntry("default", "tick", "*/5 * * * *", "leptonctl maintain")
    old = ["1 * * * * x # leptonctl:default:tick", "a=b", "2 * * * * x # leptonctl:default:tick"]
    assert crontab.with_entries(old, [entry], "default") == [entry.line, "a=b"]


def test_environment_is_not_needed_for_the_entry(tmp_path: Path) -> None:
    """The entry names everything it needs: no XDG or LEPTONCTL variables are read."""
    target = crontab.CronTarget(
        Path(sys.executable), None, tmp_path / "s.db", tmp_path / "l", tmp_path / "log"
    )
    command = crontab.entry_command(target, ["health"])
    assert "$" not in command and "LEPTONCTL_" not in command
    assert os.path.isabs(shlex.split(command)[0])
