"""``leptonctl exec`` and playbook shell steps on real sshd hosts: stdin at end-of-file, a
timed-out or interrupted command killed with its process group on the host, any command
line carried intact, output byte for byte."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from leptonctl.errors import ExitCode
from tests.conftest import write_inventory
from tests.lab import Lab

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[1]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = run(list(args))
    return code, capsys.readouterr().out


def gone(lab: Lab, hosts: list[str], needle: bytes, timeout: float = 10) -> bool:
    """True once no process on ``hosts`` matches ``needle`` (given ``timeout`` to go)."""
    deadline = time.monotonic() + timeout
    while any(lab.pids_matching(h, needle) for h in hosts):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_a_timed_out_exec_kills_the_command_and_its_children_on_every_host(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = write_inventory(tmp_path / "hosts.yaml", lab, ["h1", "h2"])
    code, out = cli(
        capsys, "-i", str(inv), "--timeout", "3", "exec", "--json", "--",
        "sleep 517 & sleep 518; wait",
    )  # fmt: skip
    assert code == ExitCode.HOSTS_UNREACHABLE, out
    doc = json.loads(out)
    assert [r["error"]["kind"] for r in doc["results"]] == ["timeout", "timeout"]
    assert gone(lab, ["h1", "h2"], b"sleep\x00517") and gone(lab, ["h1", "h2"], b"sleep\x00518")


def test_exec_gives_the_command_end_of_file_on_stdin(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = write_inventory(tmp_path / "hosts.yaml", lab, ["h1"])
    code, out = cli(capsys, "-i", str(inv), "--timeout", "20", "exec", "--json", "--", "cat")
    assert code == 0  # `cat` ended at once: stdin is closed, not left open until --timeout
    assert json.loads(out)["results"][0]["stdout"] == ""


def test_an_interrupted_exec_kills_its_command_on_the_host(
    lab: Lab, lab_operator: Path, tmp_path: Path
) -> None:
    inv = write_inventory(tmp_path / "hosts.yaml", lab, ["h2"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "leptonctl", "-i", str(inv), "exec", "--", "sleep 519 | cat"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not lab.pids_matching("h2", b"sleep\x00519"):
        assert time.monotonic() < deadline and proc.poll() is None, "the command never started"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    proc.communicate(timeout=30)
    assert proc.returncode == ExitCode.INTERRUPTED
    assert gone(lab, ["h2"], b"sleep\x00519")


def test_any_command_line_arrives_intact_and_its_output_byte_for_byte(
    lab: Lab, lab_operator: Path, tmp_path: Path
) -> None:
    inv = write_inventory(tmp_path / "hosts.yaml", lab, ["h1", "h3"])
    script = "x='it''s'\nprintf '%s!\\t%0200d\\n' \"$x\" 1; printf '\\377'"
    proc = subprocess.run(
        [sys.executable, "-m", "leptonctl", "-i", str(inv), "exec", "--", script],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    header, body = proc.stdout.split(b"\n", 1)
    assert "h[1,3] (2) · exit 0".encode() in header
    assert body == b"its!\t" + b"0" * 199 + b"1\n\xff\n"


def test_a_shell_step_that_times_out_fails_on_that_host_and_stops_its_playbook(
    lab: Lab, lab_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = write_inventory(tmp_path / "hosts.yaml", lab, ["h4"])
    book = tmp_path / "slow.yaml"
    book.write_text(
        "steps:\n  - shell: {command: 'sleep 527', timeout: 2}\n"
        "  - shell: touch /tmp/after-the-timeout\n"
    )
    code, out = cli(capsys, "-i", str(inv), "maintain", "--json", str(book))
    events = [json.loads(line) for line in out.splitlines()]
    steps, done = events[:-1], events[-1]
    assert [s["status"] for s in steps] == ["failed", "skipped"]
    assert steps[0]["hosts"]["h4"]["status"] == "failed"
    assert "timed out after 2 s" in steps[0]["hosts"]["h4"]["message"]
    assert code == ExitCode.FAILED and done["outcome"] == "failed"
    assert done["problems"] == {}  # the host answered: it is not down
    assert gone(lab, ["h4"], b"sleep\x00527")
    assert not lab.path_on("h4", "/tmp/after-the-timeout").exists()
