"""`connection: local` runs through the same interface as SSH, with the same failure values."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from leptonctl.errors import TimedOut, Unreachable
from leptonctl.remote.transport import LocalConnection


def test_run_returns_output_and_status_without_raising() -> None:
    result = asyncio.run(LocalConnection("me").run("echo out; echo err >&2; exit 3", timeout=5))
    assert (result.exit_status, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result.ok


def test_input_is_fed_on_stdin() -> None:
    result = asyncio.run(LocalConnection("me").run("wc -c", input=b"12345", timeout=5))
    assert result.stdout.strip() == "5"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    command = f"sleep 30 & echo $! > {marker}; wait"
    with pytest.raises(TimedOut):
        asyncio.run(LocalConnection("me").run(command, timeout=0.5))
    child = int(marker.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            return  # killed, waiting to be reaped by init
        time.sleep(0.05)
    raise AssertionError("the background child survived the timeout")


def test_stream_answers_by_size_and_reports_exit() -> None:
    async def scenario() -> tuple[bytes, bytes]:
        stream = await LocalConnection("me").start("read a; echo got-$a; read b; echo got-$b")
        await stream.send_line(b"one")
        first = await stream.read_exactly(8, 5)
        await stream.send_line(b"two")
        second = await stream.read_exactly(8, 5)
        with pytest.raises(Unreachable):
            await stream.read_exactly(1, 5)  # the process has exited
        await stream.close()
        return first, second

    assert asyncio.run(scenario()) == (b"got-one\n", b"got-two\n")
