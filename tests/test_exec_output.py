"""``leptonctl exec`` output on this machine (``connection: local``): printed byte for byte
when piped, stdin at end-of-file, and a timed-out or interrupted command killed with its
whole process group."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from leptonctl.errors import ExitCode
from leptonctl.remote.transport import group_command, kill_group_command, sh_line

ROOT = Path(__file__).resolve().parents[1]


def leptonctl(*args: str, **kw: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "leptonctl", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, **kw,
    )  # type: ignore[call-overload]  # fmt: skip


def pids_of(needle: str) -> list[int]:
    """Processes on this machine whose command line contains ``needle`` (NUL-separated)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def gone_within(needle: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while pids_of(needle) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not pids_of(needle)


def test_piped_output_is_written_byte_for_byte() -> None:
    # a 300-column line with tabs, bytes that are not UTF-8, and no final newline
    script = r"printf 'a\tb\t%0300d|\n\377\376 end' 7; printf 'warn\t!\n' >&2"
    proc = leptonctl("exec", "--", script)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    header, body = out.split(b"\n", 1)
    assert header.startswith("── localhost (1) · exit 0".encode())
    assert body == b"a\tb\t" + b"0" * 299 + b"7|\n\xff\xfe end\nwarn\t!\n"


def test_stdin_is_closed_so_a_reading_command_ends_at_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `cat` reads stdin until end-of-file: it must end at once, not at --timeout
    assert run(["--timeout", "30", "exec", "--json", "--", "cat; echo done"]) == 0
    assert '"stdout": "done\\n"' in capsys.readouterr().out


def unique_seconds() -> tuple[int, int]:
    """Two sleep lengths no other test run uses: their processes are told apart by them."""
    first = random.randrange(100_000, 900_000)
    return first, first + 1


def test_a_timed_out_command_is_killed_with_its_children(
    capsys: pytest.CaptureFixture[str],
) -> None:
    a, b = unique_seconds()
    code = run(["--timeout", "1", "exec", "--", f"sleep {a} & sleep {b}; wait"])
    assert code == ExitCode.HOSTS_UNREACHABLE
    assert "did not finish within 1 s" in capsys.readouterr().out
    assert gone_within(f"sleep\x00{a}", 5) and gone_within(f"sleep\x00{b}", 5)


def test_an_interrupted_exec_kills_its_command() -> None:
    a, b = unique_seconds()
    proc = leptonctl("exec", "--", f"sleep {a} & sleep {b}; wait")
    deadline = time.monotonic() + 30
    while not (pids_of(f"sleep\x00{a}") and pids_of(f"sleep\x00{b}")):
        assert time.monotonic() < deadline and proc.poll() is None, "the command never started"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    proc.communicate(timeout=30)
    assert proc.returncode == ExitCode.INTERRUPTED
    assert gone_within(f"sleep\x00{a}", 5) and gone_within(f"sleep\x00{b}", 5)


@pytest.mark.parametrize("login_shell", ["sh", "bash", "tcsh"])
def test_the_remote_line_means_the_same_in_any_login_shell(login_shell: str) -> None:
    # sshd hands the line to the user's login shell; tcsh expands `!` even in single quotes
    # and refuses newlines in them, so the command itself must not appear in the line
    if shutil.which(login_shell) is None:
        pytest.skip(f"{login_shell} is not installed here")
    command = "x='it''s'; printf '%s!\\t\"q\"\\n' \"$x\"\necho $((1+2)) `echo back`"
    line = sh_line(group_command(sys.executable, command))
    done = subprocess.run([login_shell, "-c", line], capture_output=True, timeout=30)
    pgid, rest = done.stdout.split(b"\n", 1)
    assert done.returncode == 0 and int(pgid) > 1
    assert rest == b'its!\t"q"\n3 back\n'
    victim = subprocess.Popen(["sleep", "300"], start_new_session=True)  # its own group
    killed = subprocess.run(
        [login_shell, "-c", sh_line(kill_group_command(victim.pid))], timeout=30
    )
    assert killed.returncode == 0 and victim.wait(timeout=10) == -signal.SIGKILL
