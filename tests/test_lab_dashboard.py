"""The dashboards in a real terminal: ``status --watch`` and ``jobs --watch`` run in tmux
against the sshd lab with a job running, read off the screen as a person would, then
quit with ``q`` and Ctrl-C; the terminal must be back in its normal modes afterwards."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import write_inventory
from tests.lab import Lab

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def lab(any_lab: Lab) -> Lab:
    """The root lab, then the cluster profile (a plain user with a chatty shell, /home
    shared by every host, a host taking keys from a central file, one without python3)."""
    return any_lab


def leptonctl(inventory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "leptonctl", "-i", str(inventory), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
        check=False,
    )


class Terminal:
    """A tmux pane of a private tmux server, running one command (then a shell)."""

    def __init__(self, socket: str, width: int, height: int) -> None:
        self.socket = socket
        self.width, self.height = width, height

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=20,
        ).stdout

    def start(self, script: Path) -> None:
        self.tmux(
            "new-session", "-d", "-s", "dash", "-x", str(self.width), "-y", str(self.height),
            f"bash --norc --noprofile {shlex.quote(str(script))}; exec bash --norc --noprofile",
        )  # fmt: skip

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "dash")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "dash", *keys)

    def wait_for(self, ok: Callable[[str], bool], timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if ok(screen) or time.monotonic() > deadline:
                return screen
            time.sleep(0.5)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, check=False)
        where = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}" / self.socket
        where.unlink(missing_ok=True)  # the server is gone; its socket file is not


@pytest.fixture
def terminal() -> Iterator[Callable[[int, int], Terminal]]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    opened: list[Terminal] = []

    def open_terminal(width: int, height: int) -> Terminal:
        term = Terminal(f"ldsh-{os.getpid()}-{len(opened)}", width, height)
        opened.append(term)
        return term

    yield open_terminal
    for term in opened:
        term.close()


def script(path: Path, inventory: Path, args: str, out: Path) -> Path:
    """Run leptonctl in the pane with this test's operator environment; afterwards record
    its exit status and the terminal's modes (stty) in ``out``."""
    keep = ("HOME", "PATH", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")
    lines = [f"export {k}={shlex.quote(os.environ[k])}" for k in keep if k in os.environ]
    lines += [
        f"export PYTHONPATH={shlex.quote(str(ROOT))} TERM=xterm-256color",
        f"{shlex.quote(sys.executable)} -m leptonctl -i {shlex.quote(str(inventory))} {args}",
        f'echo "exit=$?" > {shlex.quote(str(out))}',
        f"stty -a >> {shlex.quote(str(out))}",
        "echo DASHBOARD-DONE",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def host_row(screen: str, host: str) -> str:
    rows = [line for line in screen.splitlines() if re.match(rf"{host} +(up|down|drained)", line)]
    return rows[0] if rows else ""


def test_dashboards_show_the_running_job_live_and_quit_cleanly(
    lab: Lab, lab_operator: Path, tmp_path: Path, terminal: Callable[[int, int], Terminal]
) -> None:
    inventory = write_inventory(tmp_path / "hosts.yaml", lab)  # every host of the profile
    names = [h.name for h in lab.hosts]
    submitted = leptonctl(
        inventory, "submit", "--json", "--name", "dashjob", "--time", "10m", "--", "sleep 600"
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["id"]
    listed = json.loads(leptonctl(inventory, "jobs", "--json").stdout)["jobs"]
    (job,) = [j for j in listed if j["id"] == job_id]
    assert job["state"] == "RUNNING"
    host = job["host"]
    short = leptonctl(inventory, "submit", "--json", "--name", "shortjob", "--", "sleep 12")
    short_id = json.loads(short.stdout)["id"]
    try:
        # status --watch at 120 columns: the job on its host, CPU %, totals; q quits
        status_out = tmp_path / "status.out"
        term = terminal(120, 40)
        term.start(script(tmp_path / "status.sh", inventory, "status --watch", status_out))
        screen = term.wait_for(
            lambda s: (
                f"{job_id} dashjob" in host_row(s, host)
                and f"{short_id} shortjob" in s
                and all(re.search(r"\d+%", host_row(s, name)) for name in names)
            )
        )
        row = host_row(screen, host)
        assert f"{job_id} dashjob" in row, screen
        assert re.search(r"█*░* +\d+% ", row), screen  # the CPU bar and its percentage
        assert all(re.search(r"\d+%", host_row(screen, name)) for name in names), screen
        assert f"hosts {len(names)} up" in screen and "2 running" in screen, screen
        assert all(len(line) <= 120 for line in screen.splitlines())
        # the short job ends on its host; nothing reconciles meanwhile, the samples tell
        screen = term.wait_for(lambda s: f"{short_id} shortjob" not in s, timeout=45)
        assert f"{short_id} shortjob" not in screen and "1 running" in screen, screen
        assert f"{job_id} dashjob" in host_row(screen, host)
        term.keys("q")
        after = term.wait_for(lambda s: "DASHBOARD-DONE" in s, timeout=30)
        assert "DASHBOARD-DONE" in after, after
        assert "HOST " not in after  # the alternate screen is gone: the shell's screen is back
        modes = status_out.read_text()
        assert modes.startswith("exit=0")
        assert re.search(r"(?<!-)icanon", modes) and re.search(r"(?<!-)echo\b", modes), modes

        # the same at 80 columns: columns dropped, not lines wrapped; the job still shows
        narrow_out = tmp_path / "narrow.out"
        term = terminal(80, 24)
        term.start(script(tmp_path / "narrow.sh", inventory, "status --watch", narrow_out))
        screen = term.wait_for(lambda s: re.search(r"\d+%", host_row(s, host)) is not None)
        row = host_row(screen, host)
        assert f"{job_id} dashjob" in row and re.search(r"\d+% ", row), screen
        assert all(len(line) <= 80 for line in screen.splitlines())
        term.keys("q")
        assert "DASHBOARD-DONE" in term.wait_for(lambda s: "DASHBOARD-DONE" in s, timeout=30)
        assert narrow_out.read_text().startswith("exit=0")

        # jobs --watch at 80 columns: the job live, elapsed and walltime left; Ctrl-C quits
        jobs_out = tmp_path / "jobs.out"
        term = terminal(80, 24)
        term.start(script(tmp_path / "jobs.sh", inventory, "jobs --watch", jobs_out))
        screen = term.wait_for(lambda s: re.search(rf"^{job_id} +RUNNING", s, re.M) is not None)
        (line,) = [s for s in screen.splitlines() if re.match(rf"{job_id} +RUNNING", s)]
        assert "dashjob" in line and host in line, screen
        assert re.search(r" \d+:\d\d +\d:\d\d ", line), line  # elapsed, then walltime left
        assert all(len(s) <= 80 for s in screen.splitlines())
        term.keys("C-c")
        after = term.wait_for(lambda s: "DASHBOARD-DONE" in s, timeout=30)
        assert "DASHBOARD-DONE" in after, after
        modes = jobs_out.read_text()
        assert modes.startswith("exit=0") and re.search(r"(?<!-)icanon", modes), modes
    finally:
        leptonctl(inventory, "cancel", str(job_id))
