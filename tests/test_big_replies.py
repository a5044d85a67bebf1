"""No size limit hides in the protocol (issue 17, item 1): replies of several MiB come back
through ``agent serve`` on the local default, a job log that is one long line is shown,
and every reader has a deliberate bound that fails with a clear error, not a traceback.

These run the real agent (``connection: local``: a real shell and real files)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.lepton_agent import keys
from agent.lepton_agent.fsutil import write_json_atomic
from leptonctl.cli.app import run
from leptonctl.errors import AgentError
from leptonctl.remote import transfer, transport
from leptonctl.remote.agent import AgentSession, wire
from leptonctl.remote.transport import LocalConnection
from tests.helpers import make_host

AGENT = Path(__file__).resolve().parents[1] / "agent"  # the payload: `python agent COMMAND`
OLD_LINE_LIMIT = 65536  # asyncio's default StreamReader limit: what used to cut replies


def test_a_scan_reply_of_several_mib_comes_back_through_serve_on_the_local_default(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "tree"
    for d in range(10):
        sub = tree / f"dir-{d:02}-{'x' * 100}"
        sub.mkdir(parents=True)
        for f in range(600):
            (sub / f"file-{f:04}-{'y' * 150}").write_bytes(b"z")
    host = make_host("me", connection="local", data_dir=str(tmp_path / "data"))

    async def scan() -> dict[str, object]:
        session = await AgentSession.open(LocalConnection("me"), host, 60)
        try:
            reply = await session.request(wire.Scan(path=str(tree), chunk_size=1 << 20), 120)
            ping = await session.request(wire.Ping(), 30)  # the stream is still in step
            assert "error" not in ping
            return reply
        finally:
            await session.close()

    reply = asyncio.run(scan())
    assert "error" not in reply, reply
    entries = reply["entries"]
    assert isinstance(entries, list)
    assert sum(1 for e in entries if e["type"] == "file") == 6000
    assert len(json.dumps(reply)) > 2 * 1024 * 1024  # several MiB, far over any line limit


def test_logs_of_a_job_that_printed_one_long_line_on_the_local_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a progress bar redrawn with escape sequences, 30 KB and never a newline
    text = "\x1b[A\x1b[K\u2588\r" * 3000
    assert len(text.encode()) >= 30_000
    assert len(json.dumps(text)) > OLD_LINE_LIMIT  # as a JSON string: over the old limit
    script = tmp_path / "bar.py"
    script.write_text(f"import sys\nsys.stdout.write({text!r})\n")
    capsys.readouterr()
    code = run(["submit", "--wait", "--", f"{sys.executable} {script}"])
    out = capsys.readouterr().out
    assert code == 0, out
    job_id = out.split()[1]
    code = run(["logs", job_id])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.rstrip("\n") == text


def ask(command: str) -> AgentError:
    async def go() -> AgentError:
        stream = await LocalConnection("me").start(command)
        session = AgentSession(make_host("me", connection="local"), stream)
        try:
            await session.request(wire.Ping(), 10)
        except AgentError as exc:
            return exc
        finally:
            await session.close()
        raise AssertionError("no error")

    return asyncio.run(go())


def test_a_reply_over_the_bound_is_refused_before_it_is_read() -> None:
    error = ask("""printf '{"frame":9999999999}\\n'; sleep 10""")
    assert "ping" in error.message and "9999999999" in error.message
    assert f"{wire.MAX_MESSAGE_BYTES}" in error.message and "256 MiB" in error.message
    assert error.hint and "split" in error.hint


def test_an_answer_that_is_not_a_message_is_shown_not_parsed() -> None:
    error = ask("printf 'Welcome to the cluster, lepu!\\n'; sleep 10")
    assert "not a framed message" in error.message and "Welcome to the clus" in error.message


def test_serve_frames_big_replies_and_bounds_request_lines(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ping = json.dumps({"op": "ping"}).encode()
    big = json.dumps({"op": "ping", "pad": "p" * (wire.MAX_REQUEST_LINE + 10)}).encode()
    stdin = (
        b'{"frame":%d}\n%s\n' % (len(ping), ping)  # a framed request: a framed reply
        + big + b"\n"  # a bare line over the bound: an error, then the next request
        + ping + b"\n"  # a bare line: a bare reply
        + b'{"frame":%d}\n' % (wire.MAX_MESSAGE_BYTES + 1)  # over the bound: said, then stop
    )  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(AGENT), "serve", "--data-dir", str(data)],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    out = proc.stdout
    header, out = out.split(b"\n", 1)
    size = wire.message_header(header + b"\n")
    assert size is not None and len(header) + 1 == wire.MESSAGE_HEADER_SIZE
    first, out = out[:size], out[size + 1 :]
    assert "error" not in json.loads(first)
    lines = out.splitlines()
    assert len(lines) == 3
    assert f"longer than {wire.MAX_REQUEST_LINE} bytes" in json.loads(lines[0])["error"]
    assert "error" not in json.loads(lines[1])
    assert "over the bound" in json.loads(lines[2])["error"]


def test_a_transfer_spec_over_one_mib_is_read_whole(tmp_path: Path) -> None:
    spec = {"store": "files", "files": [f"/data/tree/{n:06}/{'f' * 100}" for n in range(20000)]}
    assert len(json.dumps(spec)) > 2 * 1024 * 1024
    os.makedirs(tmp_path / "transfers")
    write_json_atomic(keys.transfer_path(str(tmp_path), "abcdefgh1234", ".json"), spec)
    assert keys.read_transfer_spec(str(tmp_path), "abcdefgh1234") == spec


def test_transfer_lines_are_read_whole_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "MAX_RESULT_LINE", 3 << 20)

    async def lines(command: str) -> list[bytes]:
        pipe = await LocalConnection("me").open_pipe(command)
        try:
            return [line async for line in transfer.bounded_lines(pipe, "me", "the sender")]
        finally:
            await pipe.kill()

    long = "head -c 2500000 /dev/zero | tr '\\0' a"
    got = asyncio.run(lines(f"echo one; {long}; echo; echo two"))
    assert got == [b"one\n", b"a" * 2_500_000 + b"\n", b"two\n"]
    with pytest.raises(AgentError, match="over the bound of 3 MiB"):
        asyncio.run(lines("head -c 5000000 /dev/zero | tr '\\0' a; sleep 5"))


def test_a_transfer_result_on_stderr_comes_back_whole_and_stderr_is_bounded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # a pumped sender reports on stderr: its result line can be far longer than an error tail
    monkeypatch.setattr(transport, "PIPE_STDERR_BYTES", 1 << 20)
    doc = {"schema": 1, "hops": [{"name": "h1", "stored": [f"{n:064x}" for n in range(4000)]}]}
    result = tmp_path / "result.json"
    result.write_text(json.dumps(doc) + "\n")
    assert 200_000 < result.stat().st_size < 1 << 20

    async def waited() -> str:
        command = f"head -c 5000000 /dev/zero | tr '\\0' e >&2; echo >&2; cat {result} >&2"
        pipe = await LocalConnection("me").open_pipe(command)
        await pipe.write_eof()
        assert await pipe.read(10) == b""
        _, errors = await pipe.wait(30)
        return errors

    errors = asyncio.run(waited())
    assert len(errors) <= 1 << 20  # the chatter before it is not all kept
    assert json.loads(errors.splitlines()[-1]) == doc
