"""The wire contract: every registered operation, sent as leptonctl builds it (a typed
request from agent/lepton_agent/wire.py), through a real agent process; the command line
derived from the registry; docs/protocol.md generated from it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.lepton_agent import protocol, wire
from leptonctl.remote.agent import wire as operator_wire

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "agent"
AGENT_PYTHON = os.environ.get("LEPTON_TEST_AGENT_PYTHON", sys.executable)
STORE = "5" * 32
REF = "6" * 64
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHd1bW15a2V5Zm9ybGVwdG9uY3RsdGVzdHM="


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def requests_for(tmp: Path) -> list[wire.Request]:
    """One valid request of every operation, in an order in which each can succeed."""
    data = b"contract chunk\n"
    source = tmp / "source.bin"
    source.write_bytes(data)
    h, n = sha(data), len(data)
    tree = tmp / "tree"
    tree.mkdir()
    (tree / "a.txt").write_bytes(data)
    entry = {"path": "a.txt", "type": "file", "mode": 0o644, "size": n,
             "chunks": [{"hash": h, "size": n}]}  # fmt: skip
    target = {"path": str(tmp / "out.bin"), "size": n, "mode": 0o644, "chunks": [[0, n, h]]}
    return [
        wire.Ping(),
        wire.Version(),
        wire.Probe(),
        wire.Sample(),
        wire.JobStart(spec={"id": "contract-1", "command": ["true"]}),
        wire.JobStatus(ids=["contract-1"]),
        wire.JobLog(id="contract-1"),
        wire.JobKill(id="contract-1", grace=0),
        wire.JobStatus(),
        wire.JobRm(id="contract-1"),
        wire.ChunkImport(items=[{"h": h, "n": n, "path": str(source), "o": 0}]),
        wire.ChunkHave(hashes=[h]),
        wire.ChunkVerify(),
        wire.ChunkPin(store=STORE, refs=[{"ref": REF, "name": "contract@1", "hashes": [h]}]),
        wire.Scan(path=str(tree), chunk_size=4096),
        wire.Scan(path=str(tree), chunk_size=4096, pack=True),
        wire.PathInfo(paths=[str(tree), str(tmp / "nothing")]),
        wire.Materialize(dest=str(tmp / "ds"), manifest={"kind": "dir", "entries": [entry]}),
        wire.FileStatus(files=[target]),
        wire.Grant(transfer="xfer-contract-1", spec={"store": "chunks"}, pubkey=PUBKEY),
        wire.Revoke(transfer="xfer-contract-1"),
        wire.ChunkUnpin(store=STORE, refs=[REF]),
        wire.ChunkGc(store=STORE, keep=[]),
        wire.ChunkDrop(store=STORE, hashes=[h]),
        wire.ChunkRm(hashes=[h]),
    ]


def agent_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEPTON_AGENT_")}
    env["LEPTON_AGENT_AUTHORIZED_KEYS"] = str(tmp / "authorized_keys")  # never the real one
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def test_every_registered_operation_round_trips_through_a_real_agent(tmp_path: Path) -> None:
    requests = requests_for(tmp_path)
    assert {type(r).OP for r in requests} == set(wire.OPS)  # none left out
    lines = "".join(json.dumps(r.to_wire()) + "\n" for r in requests)
    proc = subprocess.run(
        [AGENT_PYTHON, "-S", str(AGENT), "serve", "--data-dir", str(tmp_path / "data")],
        input=lines,
        capture_output=True,
        text=True,
        timeout=60,
        env=agent_env(tmp_path),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    replies = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(replies) == len(requests)
    for request, reply in zip(requests, replies, strict=True):
        assert "error" not in reply, (request, reply)
        assert reply["schema"] == wire.SCHEMA
        missing = [key for key in wire.reply_keys(type(request)) if key not in reply]
        assert missing == [], (request.OP, reply)
        shapes = wire.reply_shapes(type(request))
        assert not shapes or any(all(k in reply for k in shape) for shape in shapes), reply


def test_every_operation_names_a_typed_reply_whose_keys_the_agent_documents() -> None:
    for cls in wire.OPS.values():
        reply = wire.reply_type(cls)
        assert reply.__name__ == cls.__name__ + "Reply"
        assert "schema" in wire.reply_keys(cls)
    keys = ("schema", "present", "free_bytes", "used_bytes", "storage")
    assert wire.reply_keys(wire.ChunkHave) == keys


def test_a_request_round_trips_through_its_wire_form_with_defaults_for_what_is_missing() -> None:
    for cls in wire.OPS.values():
        assert cls.from_wire(cls.from_wire({}).to_wire()) == cls.from_wire({})
    assert wire.JobLog.from_wire({"id": "j"}) == wire.JobLog(id="j", offset=0, limit=65536)
    assert wire.Scan.from_wire({"path": "/", "chunk_size": 1}).hash is True
    assert wire.JobKill.from_wire({}).id is None  # the agent's check answers it, not a crash
    with pytest.raises(dataclasses_frozen_error()):
        wire.JobRm(id="j").id = "k"  # type: ignore[misc]


def dataclasses_frozen_error() -> type[Exception]:
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_the_operator_imports_the_same_wire_module_as_the_agent_it_pushes() -> None:
    assert operator_wire.OPS.keys() == wire.OPS.keys()
    assert (
        Path(operator_wire.__file__).read_bytes() == (AGENT / "lepton_agent/wire.py").read_bytes()
    )


def agent_help(*args: str) -> str:
    proc = subprocess.run(
        [AGENT_PYTHON, "-S", str(AGENT), *args, "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return proc.stdout


def test_the_command_line_is_derived_from_the_registry() -> None:
    top = agent_help()
    for name in wire.command_names():
        assert name in top
    assert "--offset" in agent_help("job-log") and "--grace" in agent_help("job-kill")
    assert "--transfer" in agent_help("recv")


def test_an_unregistered_op_is_refused_by_name(tmp_path: Path) -> None:
    proc = subprocess.run(
        [AGENT_PYTHON, "-S", str(AGENT), "request", "--data-dir", str(tmp_path / "d")],
        input='{"op": "chunk-burn"}',
        capture_output=True,
        text=True,
        timeout=30,
        env=agent_env(tmp_path),
    )
    assert proc.returncode == 1
    assert json.loads(proc.stdout) == {"schema": 1, "error": "unknown op 'chunk-burn'"}


def test_docs_protocol_md_is_generated_from_the_registry() -> None:
    """Regenerate with: python -m agent.lepton_agent.wire --markdown > docs/protocol.md"""
    written = (ROOT / "docs" / "protocol.md").read_text()
    assert written == protocol.markdown(), "docs/protocol.md is stale: regenerate it"
    for name in wire.OPS:
        assert f"### `{name}`" in written


def test_the_protocol_generator_prints_the_markdown(capsys: pytest.CaptureFixture[str]) -> None:
    import io

    out = io.StringIO()
    assert wire.main(["--markdown"], stdout=out) == 0
    assert out.getvalue() == protocol.markdown()
    assert wire.main([]) == 2


def test_frames_encode_and_decode(tmp_path: Path) -> None:
    import io

    line = wire.encode_frame({"h": "a" * 64, "n": 3})
    stream = io.BytesIO(line + b"abc" + wire.END_FRAME)
    frame = wire.frame_object(wire.read_frame_line(stream))
    assert frame == {"h": "a" * 64, "n": 3} and wire.frame_size(frame) == 3
    assert stream.read(3) == b"abc"
    assert wire.frame_object(wire.read_frame_line(stream)) == {"end": True}
    with pytest.raises(ValueError, match="frame size"):
        wire.frame_size({"n": -1})


def test_an_agent_session_takes_typed_requests(operator_home: Path) -> None:
    import asyncio

    from leptonctl.remote.agent import AgentSession
    from leptonctl.remote.transport import LocalConnection
    from tests.helpers import make_host

    host = make_host("me", connection="local")

    async def talk() -> list[dict[str, object]]:
        session = await AgentSession.open(LocalConnection("me"), host, 30)
        try:
            return [
                await session.request(wire.Ping(), 30),
                await session.request(operator_wire.JobStatus(ids=["nope"]), 30),
            ]
        finally:
            await session.close()

    pong, status = asyncio.run(talk())
    assert pong == {"schema": 1, "pong": True, "agent_version": wire.AGENT_VERSION}
    assert [job["state"] for job in status["jobs"]] == ["UNKNOWN"]  # type: ignore[index, union-attr]


def test_an_error_reply_raises_one_agent_error_with_host_operation_and_reason(
    operator_home: Path,
) -> None:
    import asyncio

    from leptonctl.errors import AgentError
    from leptonctl.remote.agent import AgentSessions
    from leptonctl.remote.pool import HostPool
    from leptonctl.remote.transport import TransportOptions
    from tests.helpers import make_host

    host = make_host("me", connection="local")

    async def talk() -> tuple[AgentError, dict[str, object], bool]:
        async with HostPool(TransportOptions(command_timeout=30)) as pool:
            sessions = AgentSessions(pool)
            try:
                first = await sessions.get(host)
                with pytest.raises(AgentError) as info:
                    await sessions.request(host, operator_wire.JobKill(id="../etc"))
                pong = await sessions.request(host, operator_wire.Ping())
                return info.value, pong, (await sessions.get(host)) is first
            finally:
                await sessions.close()

    error, pong, kept = asyncio.run(talk())
    assert (error.host, error.operation) == ("me", "job-kill")
    assert error.reason is not None and "job id must match" in error.reason
    assert error.message == f"job-kill failed: {error.reason}"
    assert error.to_json()["operation"] == "job-kill"
    assert pong["pong"] is True and kept  # an error reply is an answer: the session stays


def test_a_send_item_has_one_wire_shape_for_chunks_file_ranges_and_targets() -> None:
    """Services build send items as typed values; the sender reads exactly these keys."""
    assert wire.SendItem(5, hash="ab" * 32).to_wire() == {"n": 5, "h": "ab" * 32}
    ranged = wire.SendItem(7, None, "/src/f", 1024, ((3, 1024),)).to_wire()
    assert ranged == {"n": 7, "path": "/src/f", "o": 1024, "t": [[3, 1024]]}
    assert json.loads(json.dumps(ranged)) == ranged  # plain JSON on the wire
