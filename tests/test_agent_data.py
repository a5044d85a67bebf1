"""Tests of the agent's data plane (agent/lepton_agent/): chunks, scan, transfers, materialize.

The agent runs as a subprocess, as on a host. ``request`` answers one JSON request read from
stdin: the op under test goes through it; set-up and follow-up requests of a test go through
one ``serve`` process per data dir (the same ops, without a process each). ``send`` writes a
transfer's frames to its stdout when its next hop is ``{"kind": "stdout"}`` and ``recv`` reads
them from stdin, so a whole transfer runs here as two processes joined by a pipe, without SSH.
``LEPTON_AGENT_AUTHORIZED_KEYS`` points every agent at a file under tmp_path: the real
authorized_keys is never read or written. ``LEPTON_TEST_AGENT_PYTHON`` picks the interpreter
that runs the agent (default: this one).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import shlex
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from leptonctl.services.data.datasets import files_spec, manifest_from_scan
from leptonctl.services.net.copy import copy_spec

AGENT = Path(__file__).resolve().parents[1] / "agent"  # the payload: `python agent COMMAND`
AGENT_PYTHON = os.environ.get("LEPTON_TEST_AGENT_PYTHON", sys.executable)
KEYS_VAR = "LEPTON_AGENT_AUTHORIZED_KEYS"
TIMEOUT_S = 60
CHUNK = 4096  # the smallest chunk size scan accepts
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHd1bW15a2V5Zm9ybGVwdG9uY3RsdGVzdHM="
OPERATOR_KEY = "ssh-ed25519 AAAAoperator op@laptop\n"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux")


@pytest.fixture(autouse=True)
def keys_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every agent of every test edits this file, never ~/.ssh/authorized_keys."""
    path = tmp_path / "ssh" / "authorized_keys"
    path.parent.mkdir(mode=0o700)
    monkeypatch.setenv(KEYS_VAR, str(path))
    return path


def agent_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k == KEYS_VAR or not k.startswith(("LEPTON_AGENT_", "FAKE_"))
    }
    assert env.get(KEYS_VAR), "refusing to run the agent against the real authorized_keys"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def agent_argv(command: str, data_dir: Path, *extra: str) -> list[str]:
    # -S: no site-packages, which proves the data plane needs only the stdlib (and is faster)
    return [AGENT_PYTHON, "-S", str(AGENT), command, *extra, "--data-dir", str(data_dir)]


def sha(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


class AgentHost:
    """One data dir as a host: `request` command lines, and a lazily started serve session."""

    def __init__(self, data_dir: Path) -> None:
        self.data = data_dir
        self.session: subprocess.Popen[str] | None = None

    def request(self, op: str, **fields: Any) -> tuple[int, dict[str, Any]]:
        """One `request` command: (exit status, its one JSON reply line)."""
        proc = subprocess.run(
            agent_argv("request", self.data),
            input=json.dumps({"op": op, **fields}),
            capture_output=True,
            text=True,
            env=agent_env(),
            timeout=TIMEOUT_S,
        )
        assert proc.stdout.count("\n") == 1, (proc.stdout, proc.stderr)
        return proc.returncode, json.loads(proc.stdout)

    def ok(self, op: str, **fields: Any) -> dict[str, Any]:
        code, reply = self.request(op, **fields)
        assert code == 0 and "error" not in reply, reply
        return reply

    def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        """The same request through the serve session (set-up and follow-up checks)."""
        if self.session is None:
            self.session = subprocess.Popen(
                agent_argv("serve", self.data),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=agent_env(),
            )
        assert self.session.stdin is not None and self.session.stdout is not None
        self.session.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.session.stdin.flush()
        ready, _, _ = select.select([self.session.stdout], [], [], TIMEOUT_S)
        assert ready, f"no reply to {op}"
        line = self.session.stdout.readline()
        assert line.endswith("\n"), (op, line)
        reply: dict[str, Any] = json.loads(line)
        return reply

    def have(self, op: str, **fields: Any) -> dict[str, Any]:
        reply = self.ask(op, **fields)
        assert "error" not in reply, reply
        return reply

    def close(self) -> None:
        if self.session is not None:
            assert self.session.stdin is not None
            self.session.stdin.close()
            self.session.wait(timeout=TIMEOUT_S)

    def import_file(self, path: Path, chunk_size: int = CHUNK) -> list[tuple[str, int]]:
        """Put every chunk of path into the store; [(hash, size)] in file order."""
        data = path.read_bytes()
        items, found = [], []
        for offset in range(0, len(data), chunk_size):
            piece = data[offset : offset + chunk_size]
            items.append({"h": sha(piece), "n": len(piece), "path": str(path), "o": offset})
            found.append((sha(piece), len(piece)))
        reply = self.have("chunk-import", items=items)
        assert reply["failed"] == {}
        return found

    def chunk_file(self, digest: str) -> Path:
        return self.data / "chunks" / digest[:2] / digest

    def chunks_on_disk(self) -> dict[str, bytes]:
        """Every file under DATA/chunks, the temp dir included: relative path -> bytes."""
        root = self.data / "chunks"
        if not root.exists():
            return {}
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    def stored(self, *chunks: bytes) -> dict[str, bytes]:
        """What chunks_on_disk says when exactly these chunks are stored."""
        return {f"{sha(c)[:2]}/{sha(c)}": c for c in chunks}

    def temp_files(self) -> list[str]:
        tmp = self.data / "chunks" / ".tmp"
        return sorted(os.listdir(tmp)) if tmp.exists() else []


def agent_host(tmp_path: Path, name: str) -> Iterator[AgentHost]:
    host = AgentHost(tmp_path / name)
    try:
        yield host
    finally:
        host.close()


@pytest.fixture
def host(tmp_path: Path) -> Iterator[AgentHost]:
    yield from agent_host(tmp_path, "data")


@pytest.fixture
def src(tmp_path: Path) -> Iterator[AgentHost]:
    yield from agent_host(tmp_path, "src-data")


@pytest.fixture
def dst(tmp_path: Path) -> Iterator[AgentHost]:
    yield from agent_host(tmp_path, "dst-data")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def distinct_bytes(size: int, seed: int) -> bytes:
    """size bytes in which every 4 KiB block differs from every other (and from other seeds)."""
    out = bytearray()
    block = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d:%d" % (seed, block)).digest() * 128
        block += 1
    return bytes(out[:size])


# ---------------------------------------------------------------- transfers without SSH


def grant(dst: AgentHost, transfer: str, spec: dict[str, Any]) -> None:
    reply = dst.ask("grant", transfer=transfer, spec=spec)
    assert reply == {"schema": 1, "granted": transfer, "key": False}
    assert (dst.data / "transfers" / (transfer + ".json")).exists()


def pipe_transfer(
    src: AgentHost, dst: AgentHost, transfer: str, items: list[dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """send --data-dir SRC | recv --transfer ID --data-dir DST: (send's result, recv's)."""
    env = agent_env()
    spec = {"transfer": transfer, "name": "src", "next": {"kind": "stdout"}, "items": items}
    sender = subprocess.Popen(
        agent_argv("send", src.data),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert sender.stdin is not None and sender.stdout is not None and sender.stderr is not None
    receiver = subprocess.Popen(
        agent_argv("recv", dst.data, "--transfer", transfer),
        stdin=sender.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    sender.stdout.close()  # the receiver holds the only read end now
    sender.stdin.write(json.dumps(spec).encode() + b"\n")
    sender.stdin.close()
    out, err = receiver.communicate(timeout=TIMEOUT_S)
    send_err = sender.stderr.read()
    sender.stderr.close()
    assert sender.wait(timeout=TIMEOUT_S) == 0, send_err
    assert receiver.returncode == 0 and out.lstrip(b"\n").count(b"\n") == 1, (out, err)
    return json.loads(send_err.splitlines()[-1]), json.loads(out)


def send_stream(src: AgentHost, transfer: str, items: list[dict[str, Any]]) -> bytes:
    """The raw frames that send writes for items (to cut by hand)."""
    spec = {"transfer": transfer, "next": {"kind": "stdout"}, "items": items}
    proc = subprocess.run(
        agent_argv("send", src.data),
        input=json.dumps(spec).encode() + b"\n",
        capture_output=True,
        env=agent_env(),
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def recv_stream(dst: AgentHost, transfer: str, stream: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        agent_argv("recv", dst.data, "--transfer", transfer),
        input=stream,
        capture_output=True,
        env=agent_env(),
        timeout=TIMEOUT_S,
    )


def recv_ok(dst: AgentHost, transfer: str, stream: bytes) -> dict[str, Any]:
    proc = recv_stream(dst, transfer, stream)
    assert proc.returncode == 0 and proc.stdout.lstrip(b"\n").count(b"\n") == 1, (
        proc.stdout,
        proc.stderr,
    )
    reply: dict[str, Any] = json.loads(proc.stdout)
    return reply


def frame_payload_starts(stream: bytes) -> list[int]:
    """Offsets in stream where each frame's bytes begin (right after its header line)."""
    starts: list[int] = []
    at = 0
    while True:
        end = stream.index(b"\n", at) + 1
        header = json.loads(stream[at:end])
        if header.get("end"):
            return starts
        starts.append(end)
        at = end + int(header["n"])
        if "h" not in header:  # a streamed frame: its hash follows on one line
            at = stream.index(b"\n", at) + 1


def journal_lines(dest: Path) -> list[str]:
    """The "offset hash" lines of dest's journal (its "# ..." header lines left out)."""
    text = Path(str(dest) + ".lepton-part.done").read_text()
    return [line for line in text.splitlines() if not line.startswith("#")]


def receiver_files_spec(scan: dict[str, Any], dest: Path) -> dict[str, Any]:
    """The receiver's spec as leptonctl builds it for `cp` / `data get`."""
    return {**files_spec(manifest_from_scan(scan), str(dest)), "store": "files", "name": "dst"}


def files_items(
    source: Path, spec: dict[str, Any], dest: Path, skip: set[tuple[int, int]] | None = None
) -> list[dict[str, Any]]:
    """One frame per (file, chunk) not in skip, read from the same relative path in source."""
    items = []
    for index, entry in enumerate(spec["files"]):
        rel = os.path.relpath(entry["path"], dest)
        path = source if rel == "." else source / rel
        for offset, size, digest in entry["chunks"]:
            if (index, offset) not in (skip or set()):
                items.append(
                    {"h": digest, "n": size, "path": str(path), "o": offset, "t": [[index, offset]]}
                )
    return items


# ---------------------------------------------------------------- scan


def test_scan_of_a_file_gives_one_entry_whose_chunks_hash_its_byte_ranges(tmp_path, host):
    data = distinct_bytes(2 * CHUNK + 1808, seed=1)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    path.chmod(0o640)
    reply = host.ok("scan", path=str(path), chunk_size=CHUNK)
    assert reply["kind"] == "file"
    [entry] = reply["entries"]
    assert (entry["path"], entry["type"], entry["mode"]) == ("", "file", 0o640)
    assert entry["size"] == len(data)
    assert entry["chunks"] == [
        [sha(data[0:CHUNK]), CHUNK],
        [sha(data[CHUNK : 2 * CHUNK]), CHUNK],
        [sha(data[2 * CHUNK :]), 1808],
    ]


def test_scan_cuts_chunks_of_the_requested_chunk_size(tmp_path, host):
    data = distinct_bytes(3 * 8192 + 1, seed=2)
    (tmp_path / "blob.bin").write_bytes(data)
    reply = host.ok("scan", path=str(tmp_path / "blob.bin"), chunk_size=8192)
    chunks = reply["entries"][0]["chunks"]
    assert [size for _, size in chunks] == [8192, 8192, 8192, 1]
    assert [digest for digest, _ in chunks] == [
        sha(data[i : i + 8192]) for i in range(0, len(data), 8192)
    ]


def test_scan_of_a_tree_lists_dirs_files_symlinks_empty_files_and_modes(tmp_path, host):
    root = tmp_path / "tree"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "sub").chmod(0o750)
    big = distinct_bytes(CHUNK + 10, seed=3)
    (root / "big.bin").write_bytes(big)
    (root / "big.bin").chmod(0o644)
    (root / "empty").write_bytes(b"")
    (root / "empty").chmod(0o600)
    (root / "sub" / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "sub" / "run.sh").chmod(0o755)
    (root / "sub" / "deep" / "note.txt").write_bytes(b"note")
    (root / "link").symlink_to("sub/run.sh")
    (root / "dirlink").symlink_to("sub")  # a link to a dir is listed as a link, never walked
    reply = host.ok("scan", path=str(root), chunk_size=CHUNK)
    assert reply["kind"] == "dir"
    entries = {e["path"]: e for e in reply["entries"]}
    assert set(entries) == {
        "big.bin",
        "empty",
        "link",
        "dirlink",
        "sub",
        "sub/run.sh",
        "sub/deep",
        "sub/deep/note.txt",
    }
    assert (entries["sub"]["type"], entries["sub"]["mode"]) == ("dir", 0o750)
    assert entries["sub/deep"]["type"] == "dir"
    assert entries["big.bin"]["chunks"] == [[sha(big[:CHUNK]), CHUNK], [sha(big[CHUNK:]), 10]]
    empty = entries["empty"]
    assert (empty["type"], empty["size"], empty["chunks"], empty["mode"]) == ("file", 0, [], 0o600)
    assert entries["sub/run.sh"]["mode"] == 0o755
    assert entries["sub/run.sh"]["chunks"] == [[sha(b"#!/bin/sh\necho hi\n"), 18]]
    assert entries["sub/deep/note.txt"]["chunks"] == [[sha(b"note"), 4]]
    assert (entries["link"]["type"], entries["link"]["target"]) == ("symlink", "sub/run.sh")
    assert (entries["dirlink"]["type"], entries["dirlink"]["target"]) == ("symlink", "sub")
    order = [e["path"] for e in reply["entries"]]
    for path in entries:  # a directory comes before everything in it
        if "/" in path:
            assert order.index(path.rsplit("/", 1)[0]) < order.index(path)


def test_scan_of_a_missing_path_is_an_error_reply_with_exit_status_1(tmp_path, host):
    code, reply = host.request("scan", path=str(tmp_path / "nope"), chunk_size=CHUNK)
    assert code == 1
    assert reply == {"schema": 1, "error": "no such file or directory: %s" % (tmp_path / "nope")}


def test_scan_refuses_a_chunk_size_below_4096(tmp_path, host):
    (tmp_path / "f").write_bytes(b"x")
    code, reply = host.request("scan", path=str(tmp_path / "f"), chunk_size=4095)
    assert code == 1 and "chunk_size must be an integer >= 4096" in reply["error"]


def test_a_request_that_is_not_json_is_an_error_reply_with_exit_status_2(host):
    proc = subprocess.run(
        agent_argv("request", host.data),
        input="{not json",
        capture_output=True,
        text=True,
        env=agent_env(),
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 2
    assert "not JSON" in json.loads(proc.stdout)["error"]


# ---------------------------------------------------------------- chunk store


def test_chunk_import_stores_file_ranges_read_only_under_their_hash(tmp_path, host):
    data = distinct_bytes(CHUNK + 100, seed=4)
    (tmp_path / "f").write_bytes(data)
    first, second = data[:CHUNK], data[CHUNK:]
    items = [
        {"h": sha(first), "n": CHUNK, "path": str(tmp_path / "f"), "o": 0},
        {"h": sha(second), "n": 100, "path": str(tmp_path / "f"), "o": CHUNK},
    ]
    reply = host.ok("chunk-import", items=items)
    assert reply == {"schema": 1, "stored": [sha(first), sha(second)], "failed": {}}
    assert host.chunks_on_disk() == host.stored(first, second)
    assert mode_of(host.chunk_file(sha(first))) == mode_of(host.chunk_file(sha(second))) == 0o400


def test_chunk_import_refuses_a_wrong_hash_and_leaves_no_chunk(tmp_path, host):
    (tmp_path / "f").write_bytes(b"a" * 100)
    claimed = sha(b"b" * 100)
    item = {"h": claimed, "n": 100, "path": str(tmp_path / "f")}
    reply = host.ok("chunk-import", items=[item])
    assert reply["stored"] == [] and list(reply["failed"]) == [claimed]
    assert "hash mismatch" in reply["failed"][claimed]
    assert host.chunks_on_disk() == {}


def test_chunk_import_refuses_a_range_past_the_end_of_the_file(tmp_path, host):
    (tmp_path / "f").write_bytes(b"a" * 100)
    digest = sha(b"a" * 200)
    reply = host.ok("chunk-import", items=[{"h": digest, "n": 200, "path": str(tmp_path / "f")}])
    assert reply["stored"] == [] and "shorter" in reply["failed"][digest]
    assert host.chunks_on_disk() == {}


def test_chunk_have_reports_the_sizes_of_present_chunks_and_free_bytes(tmp_path, host):
    (tmp_path / "f").write_bytes(distinct_bytes(CHUNK + 7, seed=5))
    (a, size_a), _ = host.import_file(tmp_path / "f")
    reply = host.ok("chunk-have", hashes=[a, sha(b"not stored")])
    assert reply["present"] == {a: size_a}
    assert reply["used_bytes"] is None
    assert isinstance(reply["free_bytes"], int) and reply["free_bytes"] > 0


def test_chunk_have_of_every_chunk_adds_up_the_used_bytes(tmp_path, host):
    assert host.have("chunk-have", hashes=None)["used_bytes"] == 0
    (tmp_path / "f").write_bytes(distinct_bytes(CHUNK + 7, seed=6))
    (a, _), (b, _) = host.import_file(tmp_path / "f")
    reply = host.ok("chunk-have", hashes=None)
    assert reply["present"] == {a: CHUNK, b: 7}
    assert reply["used_bytes"] == CHUNK + 7


def test_chunk_verify_tells_ok_missing_and_a_corrupt_chunk_after_a_flipped_byte(tmp_path, host):
    (tmp_path / "f").write_bytes(distinct_bytes(2 * CHUNK, seed=7))
    (good, _), (bad, _) = host.import_file(tmp_path / "f")
    absent = sha(b"absent")
    path = host.chunk_file(bad)
    path.chmod(0o600)
    raw = bytearray(path.read_bytes())
    raw[1000] ^= 0x01
    path.write_bytes(bytes(raw))
    path.chmod(0o400)
    reply = host.ok("chunk-verify", hashes=[good, absent, bad])
    assert (reply["ok"], reply["missing"], reply["corrupt"]) == ([good], [absent], [bad])
    assert reply["bytes"] == 2 * CHUNK
    everything = host.have("chunk-verify", hashes=None)
    assert (everything["ok"], everything["missing"], everything["corrupt"]) == ([good], [], [bad])


def test_chunk_rm_removes_the_chunks_and_counts_the_freed_bytes(tmp_path, host):
    (tmp_path / "f").write_bytes(distinct_bytes(CHUNK + 50, seed=8))
    (a, _), (b, size_b) = host.import_file(tmp_path / "f")
    reply = host.ok("chunk-rm", hashes=[b, sha(b"never stored")])
    assert reply == {"schema": 1, "removed": [b], "freed_bytes": size_b}
    assert not host.chunk_file(b).exists()
    assert host.have("chunk-have", hashes=None)["present"] == {a: CHUNK}


def test_a_malformed_chunk_hash_is_an_error_reply_with_exit_status_1(tmp_path, host):
    code, reply = host.request("chunk-have", hashes=["A" * 64])
    assert code == 1
    assert reply == {
        "schema": 1,
        "error": "chunk hash must be 64 lowercase hex digits, got '%s'" % ("A" * 64),
    }


def test_every_chunk_op_refuses_every_kind_of_malformed_hash(tmp_path, host):
    (tmp_path / "f").write_bytes(b"x")
    for bad in ["A" * 64, "a" * 63, "a" * 65, "g" * 64, "../" + "a" * 61, "", 7, None]:
        for op in ("chunk-have", "chunk-verify", "chunk-rm"):
            reply = host.ask(op, hashes=[sha(b"x"), bad])
            assert "chunk hash must be 64 lowercase hex digits" in reply.get("error", ""), (op, bad)
        reply = host.ask("chunk-import", items=[{"h": bad, "n": 1, "path": str(tmp_path / "f")}])
        assert "chunk hash must be" in reply.get("error", ""), ("chunk-import", bad)
    assert "hashes must be a list" in host.ask("chunk-rm", hashes=None)["error"]
    assert "hashes must be a list" in host.ask("chunk-have", hashes="a" * 64)["error"]
    assert host.chunks_on_disk() == {}


# ---------------------------------------------------------------- transfers: chunks mode


def test_recv_stores_exactly_the_sent_chunks_read_only_and_reports_them(tmp_path, src, dst):
    data = distinct_bytes(3 * CHUNK, seed=9)
    (tmp_path / "f").write_bytes(data)
    (a, _), (_, _), (c, _) = src.import_file(tmp_path / "f")
    grant(dst, "xfer-chunks-1", {"name": "dst", "store": "chunks"})
    items = [{"h": a, "n": CHUNK}, {"h": c, "n": CHUNK}]  # from src's chunk store
    sent, received = pipe_transfer(src, dst, "xfer-chunks-1", items)
    [mine] = received["hops"]
    assert (mine["name"], mine["error"], mine["failed"]) == ("dst", None, {})
    assert (mine["stored"], mine["bytes"]) == ([a, c], 2 * CHUNK)
    assert (sent["hops"][0]["bytes"], sent["hops"][0]["failed"]) == (2 * CHUNK, {})
    assert dst.chunks_on_disk() == dst.stored(data[:CHUNK], data[2 * CHUNK :])
    assert mode_of(dst.chunk_file(a)) == mode_of(dst.chunk_file(c)) == 0o400
    assert not (dst.data / "transfers" / "xfer-chunks-1.json").exists()


def test_recv_refuses_a_frame_whose_bytes_do_not_match_its_hash_and_leaves_no_trace(
    tmp_path, src, dst
):
    data = distinct_bytes(2 * CHUNK, seed=10)
    (tmp_path / "f").write_bytes(data)
    good, lie = sha(data[:CHUNK]), sha(b"what the header claims")
    items = [
        {"h": lie, "n": CHUNK, "path": str(tmp_path / "f"), "o": CHUNK},
        {"h": good, "n": CHUNK, "path": str(tmp_path / "f"), "o": 0},
    ]
    grant(dst, "xfer-mismatch", {"name": "dst", "store": "chunks"})
    _, received = pipe_transfer(src, dst, "xfer-mismatch", items)
    [mine] = received["hops"]
    assert mine["stored"] == [good]
    assert list(mine["failed"]) == [lie] and "hash mismatch" in mine["failed"][lie]
    assert not dst.chunk_file(lie).exists()
    assert dst.chunks_on_disk() == dst.stored(data[:CHUNK])  # nothing left in .tmp either


def test_a_stream_that_ends_inside_a_chunk_keeps_only_the_verified_chunks(tmp_path, src, dst):
    data = distinct_bytes(2 * CHUNK, seed=11)
    (tmp_path / "f").write_bytes(data)
    (a, _), (b, _) = src.import_file(tmp_path / "f")
    stream = send_stream(src, "xfer-early", [{"h": a, "n": CHUNK}, {"h": b, "n": CHUNK}])
    grant(dst, "xfer-early", {"store": "chunks"})
    received = recv_ok(dst, "xfer-early", stream[: frame_payload_starts(stream)[1] + 10])
    [mine] = received["hops"]
    assert mine["stored"] == [a] and "ended inside a chunk" in mine["error"]
    assert dst.chunks_on_disk() == dst.stored(data[:CHUNK])
    assert not (dst.data / "transfers" / "xfer-early.json").exists()


def test_a_stream_without_its_end_frame_is_reported_as_ended_early(tmp_path, src, dst):
    (tmp_path / "f").write_bytes(b"tiny")
    [(a, _)] = src.import_file(tmp_path / "f")
    stream = send_stream(src, "xfer-no-end", [{"h": a, "n": 4}])
    assert stream.endswith(b'{"end":true}\n')
    grant(dst, "xfer-no-end", {"store": "chunks"})
    [mine] = recv_ok(dst, "xfer-no-end", stream[: -len(b'{"end":true}\n')])["hops"]
    assert mine["stored"] == [a] and "ended early" in mine["error"]


def test_recv_removes_its_own_key_line_when_it_runs(dst, keys_file):
    keys_file.write_text(OPERATOR_KEY)
    dst.ok("grant", transfer="xfer-oneshot", spec={"store": "chunks"}, pubkey=PUBKEY)
    assert "leptonctl-transfer:xfer-oneshot" in keys_file.read_text()
    received = recv_ok(dst, "xfer-oneshot", b'{"end":true}\n')
    assert received["hops"][0]["error"] is None
    operator, blanked, end = keys_file.read_text().split("\n")
    assert (operator + "\n", end) == (OPERATOR_KEY, "")
    assert re.fullmatch("#leptonctl-free *", blanked)  # the line's own bytes, overwritten


def test_recv_without_a_granted_spec_is_refused_with_exit_status_2(dst):
    proc = recv_stream(dst, "xfer-never-granted", b'{"end":true}\n')
    assert proc.returncode == 2
    assert "no spec for transfer xfer-never-granted" in json.loads(proc.stdout)["error"]


# ---------------------------------------------------------------- transfers: files mode


def test_files_mode_rebuilds_the_tree_with_identical_bytes_and_modes(tmp_path, src, dst):
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "sub").chmod(0o750)
    repeated = bytes(2 * CHUNK) + distinct_bytes(CHUNK + 5, seed=12)  # two equal chunks
    (root / "a.bin").write_bytes(repeated)
    (root / "a.bin").chmod(0o640)
    (root / "sub" / "run.sh").write_bytes(b"#!/bin/sh\nexit 0\n")
    (root / "sub" / "run.sh").chmod(0o755)
    (root / "empty").write_bytes(b"")
    (root / "empty").chmod(0o604)
    (root / "link").symlink_to("sub/run.sh")
    scan = src.have("scan", path=str(root), chunk_size=CHUNK)
    dest = tmp_path / "out" / "tree"
    spec = receiver_files_spec(scan, dest)
    grant(dst, "xfer-files-1", spec)
    _, received = pipe_transfer(src, dst, "xfer-files-1", files_items(root, spec, dest))
    [mine] = received["hops"]
    assert (mine["error"], mine["failed"]) == (None, {})
    assert sorted(mine["files_done"]) == sorted(f["path"] for f in spec["files"])
    assert len(scan["entries"]) == 5
    for entry in scan["entries"]:
        original, copy = root / entry["path"], dest / entry["path"]
        if entry["type"] == "symlink":
            assert os.readlink(copy) == os.readlink(original)
            continue
        assert mode_of(copy) == mode_of(original), entry["path"]
        if entry["type"] == "file":
            assert copy.read_bytes() == original.read_bytes(), entry["path"]
    assert [p for p in (tmp_path / "out").rglob("*lepton-part*")] == []
    assert not (dst.data / "transfers" / "xfer-files-1.json").exists()
    assert dst.chunks_on_disk() == {}  # files mode writes files, not chunks
    status = dst.have("file-status", files=spec["files"])
    assert [f["complete"] for f in status["files"]] == [True] * len(spec["files"])


def test_a_stream_cut_inside_a_chunk_journals_only_verified_chunks_and_a_rerun_completes(
    tmp_path, src, dst
):
    data = distinct_bytes(4 * CHUNK, seed=13)
    (tmp_path / "big.bin").write_bytes(data)
    (tmp_path / "big.bin").chmod(0o644)
    scan = src.have("scan", path=str(tmp_path / "big.bin"), chunk_size=CHUNK)
    dest = tmp_path / "out" / "big.bin"
    part, journal = Path(str(dest) + ".lepton-part"), Path(str(dest) + ".lepton-part.done")
    spec = receiver_files_spec(scan, dest)
    hashes = [sha(data[i : i + CHUNK]) for i in range(0, len(data), CHUNK)]
    stream = send_stream(src, "xfer-cut-1", files_items(tmp_path / "big.bin", spec, dest))
    grant(dst, "xfer-cut-1", spec)
    cut = frame_payload_starts(stream)[2] + 100  # 100 bytes into the third chunk
    [mine] = recv_ok(dst, "xfer-cut-1", stream[:cut])["hops"]
    assert mine["stored"] == hashes[:2] and "ended inside a chunk" in mine["error"]
    assert mine["files_done"] == [] and not dest.exists() and part.exists()
    assert journal_lines(dest) == ["0 " + hashes[0], f"{CHUNK} {hashes[1]}"]
    assert not (dst.data / "transfers" / "xfer-cut-1.json").exists()
    status = dst.have("file-status", files=spec["files"])
    assert status["files"] == [{"path": str(dest), "done": [0, CHUNK], "complete": False}]

    skip = {(0, offset) for offset in status["files"][0]["done"]}
    rest = files_items(tmp_path / "big.bin", spec, dest, skip)
    assert [item["o"] for item in rest] == [2 * CHUNK, 3 * CHUNK]
    grant(dst, "xfer-cut-2", spec)
    _, received = pipe_transfer(src, dst, "xfer-cut-2", rest)
    [mine] = received["hops"]
    assert (mine["stored"], mine["files_done"], mine["error"]) == (hashes[2:], [str(dest)], None)
    assert dest.read_bytes() == data and mode_of(dest) == 0o644
    assert not journal.exists() and not part.exists()
    final = dst.have("file-status", files=spec["files"])
    done = [0, CHUNK, 2 * CHUNK, 3 * CHUNK]
    assert final["files"] == [{"path": str(dest), "done": done, "complete": True}]


def test_files_mode_never_journals_a_frame_whose_bytes_do_not_match_its_hash(tmp_path, src, dst):
    data = distinct_bytes(2 * CHUNK, seed=18)
    (tmp_path / "good").write_bytes(data)
    (tmp_path / "bad").write_bytes(distinct_bytes(CHUNK, seed=19))
    scan = src.have("scan", path=str(tmp_path / "good"), chunk_size=CHUNK)
    dest = tmp_path / "out.bin"
    spec = receiver_files_spec(scan, dest)
    first, second = files_items(tmp_path / "good", spec, dest)
    grant(dst, "xfer-files-bad", spec)
    items = [{**first, "path": str(tmp_path / "bad")}, second]
    _, received = pipe_transfer(src, dst, "xfer-files-bad", items)
    [mine] = received["hops"]
    assert mine["failed"] == {first["h"]: "hash mismatch"}
    assert (mine["stored"], mine["files_done"]) == ([second["h"]], [])
    assert not dest.exists()
    assert journal_lines(dest) == [f"{CHUNK} {second['h']}"]
    status = dst.have("file-status", files=spec["files"])
    assert status["files"] == [{"path": str(dest), "done": [CHUNK], "complete": False}]


def test_file_status_counts_journal_lines_only_where_offset_and_hash_match(tmp_path, host):
    data = distinct_bytes(3 * CHUNK, seed=20)
    hashes = [sha(data[i : i + CHUNK]) for i in range(0, len(data), CHUNK)]
    chunks = [[i * CHUNK, CHUNK, h] for i, h in enumerate(hashes)]
    entry = {"path": str(tmp_path / "f.bin"), "size": len(data), "mode": 0o644, "chunks": chunks}
    (tmp_path / "f.bin.lepton-part").write_bytes(data)
    (tmp_path / "f.bin.lepton-part.done").write_text(
        f"0 {hashes[1]}\n{CHUNK} {hashes[1]}\n{2 * CHUNK}\nnot a line\n"
    )
    reply = host.ok("file-status", files=[entry])
    assert reply["files"] == [{"path": entry["path"], "done": [CHUNK], "complete": False}]


def test_file_status_of_a_finished_file_rehashes_its_chunks(tmp_path, host):
    data = bytearray(distinct_bytes(2 * CHUNK, seed=21))
    chunks = [[0, CHUNK, sha(data[:CHUNK])], [CHUNK, CHUNK, sha(data[CHUNK:])]]
    entry = {"path": str(tmp_path / "f.bin"), "size": len(data), "mode": 0o644, "chunks": chunks}
    missing = {**entry, "path": str(tmp_path / "absent.bin")}
    data[CHUNK + 1] ^= 0xFF
    (tmp_path / "f.bin").write_bytes(bytes(data))
    reply = host.ok("file-status", files=[entry, missing])
    assert reply["files"] == [
        {"path": entry["path"], "done": [0], "complete": False},
        {"path": missing["path"], "done": [], "complete": False},
    ]


def test_files_mode_never_lets_a_bad_frame_overwrite_a_verified_chunk(tmp_path, src, dst):
    data = distinct_bytes(2 * CHUNK, seed=14)
    (tmp_path / "good").write_bytes(data)
    (tmp_path / "bad").write_bytes(distinct_bytes(CHUNK, seed=15))
    scan = src.have("scan", path=str(tmp_path / "good"), chunk_size=CHUNK)
    dest = tmp_path / "out.bin"
    spec = receiver_files_spec(scan, dest)
    first, second = files_items(tmp_path / "good", spec, dest)
    grant(dst, "xfer-verified-1", spec)
    pipe_transfer(src, dst, "xfer-verified-1", [first])
    grant(dst, "xfer-verified-2", spec)
    _, received = pipe_transfer(
        src, dst, "xfer-verified-2", [{**first, "path": str(tmp_path / "bad")}, second]
    )
    assert list(received["hops"][0]["failed"]) == [first["h"]]
    assert not dest.exists() or dest.read_bytes() == data


def test_recv_answers_a_json_line_when_the_files_spec_cannot_be_laid_out(tmp_path, dst):
    (tmp_path / "out" / "x").mkdir(parents=True)
    (tmp_path / "out" / "x" / "keep").write_text("operator file")
    spec = {
        "store": "files",
        "files": [],
        "dirs": [],
        "links": [{"path": str(tmp_path / "out" / "x"), "target": "y"}],
    }
    grant(dst, "xfer-layout", spec)
    proc = recv_stream(dst, "xfer-layout", b'{"end":true}\n')
    assert (tmp_path / "out" / "x" / "keep").read_text() == "operator file"
    assert not (dst.data / "transfers" / "xfer-layout.json").exists()
    assert proc.returncode == 0 and json.loads(proc.stdout)["hops"][0]["error"]


# ---------------------------------------------------------------- grant and revoke


KEY_LINE = re.compile(
    r'^restrict,command="(?P<command>[^"]*)",expiry-time="(?P<expiry>\d{14})Z" '
    r"(?P<key>ssh-ed25519 [A-Za-z0-9+/=]+) leptonctl-transfer:(?P<transfer>\S+)$"
)


def utc_stamp(seconds: float) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(seconds))


def test_grant_appends_a_restricted_forced_command_key_line_that_expires(host, keys_file):
    existing = OPERATOR_KEY + "ssh-rsa AAAAB3other other@host"  # no trailing newline
    keys_file.write_text(existing)
    before = time.time()
    reply = host.ok(
        "grant", transfer="xfer-key-1", spec={"store": "chunks"}, pubkey=PUBKEY, ttl_s=120
    )
    after = time.time()
    lines = keys_file.read_text().split("\n")
    assert lines[:2] == existing.split("\n") and lines[3:] == [""]  # intact, own lines
    found = KEY_LINE.match(lines[2])
    assert found, lines[2]
    assert (found["key"], found["transfer"]) == (PUBKEY, "xfer-key-1")
    login_line = shlex.split(found["command"])  # runs under /bin/sh whatever the login shell
    assert login_line[:3] == ["exec", "/bin/sh", "-c"] and len(login_line) == 4
    assert shlex.split(login_line[3]) == [
        "exec",
        AGENT_PYTHON,
        str(AGENT),
        "recv",
        "--transfer",
        "xfer-key-1",
        "--data-dir",
        str(host.data),
    ]
    assert utc_stamp(before + 119) <= found["expiry"] <= utc_stamp(after + 120)
    assert utc_stamp(after) < found["expiry"]
    assert reply == {
        "schema": 1,
        "granted": "xfer-key-1",
        "key": True,
        "expires": found["expiry"] + "Z",
    }
    spec_file = host.data / "transfers" / "xfer-key-1.json"
    assert json.loads(spec_file.read_text()) == {"store": "chunks"}
    assert mode_of(spec_file) == 0o600


def test_grant_creates_a_private_authorized_keys_with_one_line(host, keys_file):
    host.ok("grant", transfer="xfer-key-2", spec={}, pubkey=PUBKEY)
    assert mode_of(keys_file) == 0o600
    [line] = keys_file.read_text().splitlines()
    assert KEY_LINE.match(line)


def test_revoke_removes_its_line_and_expired_transfer_lines_but_never_operator_keys(
    host, keys_file
):
    operator_expired = 'expiry-time="20000101000000Z" ssh-ed25519 AAAAold op@old\n'
    stale = (
        'restrict,command="exec true",expiry-time="20000101000000Z" '
        "ssh-ed25519 AAAAstale leptonctl-transfer:xfer-stale-0\n"
    )
    live = (
        'restrict,command="exec true",expiry-time="29991231235959Z" '
        "ssh-ed25519 AAAAlive leptonctl-transfer:xfer-live-00\n"
    )
    keys_file.write_text(OPERATOR_KEY + operator_expired + stale + live)
    host.have("grant", transfer="xfer-revoke", spec={}, pubkey=PUBKEY)
    assert len(keys_file.read_text().splitlines()) == 5
    reply = host.ok("revoke", transfer="xfer-revoke")
    assert reply == {
        "schema": 1,
        "revoked": "xfer-revoke",
        "key_lines_removed": 1,  # the expired line went when the agent started (the grant)
        "stale_files_removed": 0,
    }
    lines = keys_file.read_text().split("\n")
    assert len(lines) == 6 and lines[5] == ""
    assert [lines[i] + "\n" for i in (0, 1, 3)] == [OPERATOR_KEY, operator_expired, live]
    assert lines[2] == "#leptonctl-free".ljust(len(stale) - 1)  # blanked in place
    assert re.fullmatch("#leptonctl-free *", lines[4])
    assert not (host.data / "transfers" / "xfer-revoke.json").exists()


def test_revoke_of_an_unknown_transfer_leaves_the_file_byte_for_byte(host, keys_file):
    keys_file.write_text(OPERATOR_KEY + "ssh-rsa AAAAB3other other@host")
    reply = host.ok("revoke", transfer="xfer-unknown")
    assert reply["key_lines_removed"] == 0
    assert keys_file.read_text() == OPERATOR_KEY + "ssh-rsa AAAAB3other other@host"


def test_grant_refuses_a_malformed_pubkey_and_writes_no_key_line(host, keys_file):
    keys_file.write_text(OPERATOR_KEY)
    code, reply = host.request("grant", transfer="xfer-badkey", spec={}, pubkey="ssh-rsa AAAA")
    assert code == 1 and "pubkey must be one 'ssh-ed25519 BASE64' key" in reply["error"]
    for pubkey in [
        PUBKEY + " comment",
        PUBKEY + "\nssh-ed25519 AAAAinjected",
        'ssh-ed25519 AAAA",command="sh',
        "ssh-ed25519 ",
        "",
        42,
    ]:
        reply = host.ask("grant", transfer="xfer-badkey", spec={}, pubkey=pubkey)
        assert "pubkey must be" in reply.get("error", ""), pubkey
    assert keys_file.read_text() == OPERATOR_KEY


def test_grant_and_revoke_refuse_a_malformed_transfer_id(host, keys_file):
    for transfer in ["short", "has space 123", "../../etc/xyz", "a" * 65, None]:
        for op in ("grant", "revoke"):
            reply = host.ask(op, transfer=transfer, spec={}, pubkey=PUBKEY)
            assert "transfer id must match" in reply.get("error", ""), (op, transfer)
    assert not (host.data / "transfers").exists() and not keys_file.exists()


# ---------------------------------------------------------------- materialize


def chunks_of(data: bytes) -> list[dict[str, Any]]:
    """A manifest's chunk list: {"hash", "size"} objects, as an operator's manifest has them."""
    return [
        {"hash": sha(data[i : i + CHUNK]), "size": len(data[i : i + CHUNK])}
        for i in range(0, len(data), CHUNK)
    ]


def store_dataset(host: AgentHost, tmp_path: Path) -> dict[str, Any]:
    """The chunks of a small tree in host's store, and the tree's manifest."""
    one = b"a single chunk file\n"
    multi = distinct_bytes(2 * CHUNK + 33, seed=16)
    (tmp_path / "one").write_bytes(one)
    (tmp_path / "multi").write_bytes(multi)
    items = [{"h": sha(one), "n": len(one), "path": str(tmp_path / "one")}]
    for chunk, offset in zip(chunks_of(multi), range(0, len(multi), CHUNK), strict=True):
        items.append(
            {"h": chunk["hash"], "n": chunk["size"], "path": str(tmp_path / "multi"), "o": offset}
        )
    assert len(host.have("chunk-import", items=items)["stored"]) == 4

    def entry(path: str, kind: str, mode: int, data: bytes = b"", **extra: Any) -> dict[str, Any]:
        return {
            "path": path,
            "type": kind,
            "mode": mode,
            "size": len(data),
            "chunks": chunks_of(data),
            **extra,
        }

    return {
        "kind": "dir",
        "entries": [
            entry("sub", "dir", 0o750),
            entry("sub/one", "file", 0o644, one),
            entry("multi", "file", 0o640, multi),
            entry("empty", "file", 0o600),
            entry("link", "symlink", 0o777, target="sub/one"),
        ],
    }


def test_materialize_copies_every_file_and_recreates_symlinks(tmp_path, host):
    manifest = store_dataset(host, tmp_path)
    reply = host.ok("materialize", dest="sets/ds", manifest=manifest, label="ds@1")
    out = host.data / "sets" / "ds"
    assert reply == {
        "schema": 1,
        "done": True,
        "missing": [],
        "path": str(out),
        "copied": 3,
    }
    one = (tmp_path / "one").read_bytes()
    assert os.stat(out / "sub" / "one").st_ino != os.stat(host.chunk_file(sha(one))).st_ino
    assert (out / "sub" / "one").read_bytes() == one and mode_of(out / "sub" / "one") == 0o644
    assert (out / "multi").read_bytes() == (tmp_path / "multi").read_bytes()
    assert mode_of(out / "multi") == 0o640 and os.stat(out / "multi").st_nlink == 1
    assert (out / "empty").read_bytes() == b"" and mode_of(out / "empty") == 0o600
    assert mode_of(out / "sub") == 0o750
    assert os.readlink(out / "link") == "sub/one"
    assert sorted(os.listdir(out)) == ["empty", "link", "multi", "sub"]
    assert sorted(os.listdir(host.data / "sets")) == [".ds.lepton-dataset", "ds"]


def test_materialize_of_a_file_manifest_at_an_absolute_dest_copies_it_with_its_mode(tmp_path, host):
    data = distinct_bytes(3 * CHUNK, seed=17)
    (tmp_path / "f").write_bytes(data)
    host.import_file(tmp_path / "f")
    entry = {
        "path": "",
        "type": "file",
        "mode": 0o755,
        "size": len(data),
        "chunks": chunks_of(data),
    }
    dest = tmp_path / "out" / "f.bin"
    reply = host.ok("materialize", dest=str(dest), manifest={"kind": "file", "entries": [entry]})
    assert (reply["path"], reply["copied"]) == (str(dest), 1)
    assert dest.read_bytes() == data and mode_of(dest) == 0o755


def test_materialize_with_missing_chunks_lists_them_and_writes_nothing(tmp_path, host):
    manifest = store_dataset(host, tmp_path)
    gone = manifest["entries"][2]["chunks"][1]["hash"]
    host.have("chunk-rm", hashes=[gone])
    reply = host.ok("materialize", dest="sets/ds", manifest=manifest)
    assert reply == {
        "schema": 1,
        "done": False,
        "missing": [gone],
        "path": str(host.data / "sets" / "ds"),
    }
    assert not (host.data / "sets").exists()


def test_materialize_refuses_to_replace_a_destination_it_did_not_make(tmp_path, host):
    manifest = store_dataset(host, tmp_path)
    mine = tmp_path / "operator-files" / "precious"
    mine.mkdir(parents=True)
    (mine / "thesis.tex").write_text("years of work")
    code, reply = host.request("materialize", dest=str(mine), manifest=manifest, label="x")
    assert code == 1 and "exists and was not made by leptonctl" in reply["error"]
    assert os.listdir(mine) == ["thesis.tex"]
    assert (mine / "thesis.tex").read_text() == "years of work"
    single = tmp_path / "operator-files" / "notes.txt"
    single.write_text("mine")
    reply = host.ask("materialize", dest=str(single), manifest=manifest, label="x")
    assert "not made by leptonctl" in reply["error"] and single.read_text() == "mine"
    assert sorted(os.listdir(tmp_path / "operator-files")) == ["notes.txt", "precious"]


def test_materialize_again_with_the_same_label_is_a_no_op_and_a_new_label_rebuilds(tmp_path, host):
    manifest = store_dataset(host, tmp_path)
    first = host.have("materialize", dest="sets/ds", manifest=manifest, label="ds@1")
    copy = Path(first["path"]) / "multi"
    inode = os.stat(copy).st_ino
    again = host.ok("materialize", dest="sets/ds", manifest=manifest, label="ds@1")
    assert again == {
        "schema": 1,
        "done": True,
        "missing": [],
        "path": first["path"],
        "reused": True,
    }
    assert os.stat(copy).st_ino == inode
    rebuilt = host.have("materialize", dest="sets/ds", manifest=manifest, label="ds@2")
    assert "reused" not in rebuilt and rebuilt["copied"] == 3
    assert os.stat(copy).st_ino != inode
    assert copy.read_bytes() == (tmp_path / "multi").read_bytes()


def test_materialize_refuses_a_manifest_path_that_escapes_the_destination(tmp_path, host):
    for rel in ["../escape", "sub/../../escape", "/abs/escape"]:
        manifest = {"kind": "dir", "entries": [{"path": rel, "type": "symlink", "target": "x"}]}
        reply = host.ask("materialize", dest="sets/ds", manifest=manifest)
        assert "escapes the destination" in reply.get("error", ""), rel
    assert os.listdir(host.data / "sets") == []


# ---------------------------------------------------------------- streamed hashes (cp)


def streamed_spec(src: AgentHost, path: Path, dest: Path) -> dict[str, Any]:
    """The receiver spec `cp` builds: from an unhashed scan, hashes follow the bytes."""
    scan = src.have("scan", path=str(path), chunk_size=CHUNK, hash=False)
    assert all(c[0] is None for e in scan["entries"] for c in e.get("chunks", []))
    return {**copy_spec(scan, str(dest)), "store": "files", "name": "dst"}


def streamed_items(path: Path, spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"n": size, "path": str(path), "o": offset, "t": [[0, offset]]}
        for offset, size, _ in spec["files"][0]["chunks"]
    ]


def test_a_streamed_copy_is_hashed_while_sent_and_keeps_the_source_mtime(tmp_path, src, dst):
    data = distinct_bytes(3 * CHUNK + 7, seed=21)
    source = tmp_path / "src.bin"
    source.write_bytes(data)
    os.utime(source, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    dest = tmp_path / "out" / "copy.bin"
    spec = streamed_spec(src, source, dest)
    grant(dst, "xfer-stream-1", spec)
    _, received = pipe_transfer(src, dst, "xfer-stream-1", streamed_items(source, spec))
    [mine] = received["hops"]
    hashes = [sha(data[i : i + CHUNK]) for i in range(0, len(data), CHUNK)]
    assert (mine["stored"], mine["files_done"], mine["error"]) == (hashes, [str(dest)], None)
    assert dest.read_bytes() == data
    assert dest.stat().st_mtime_ns == source.stat().st_mtime_ns
    status = dst.have("file-status", files=spec["files"])  # the quick check: size + mtime
    assert status["files"][0]["complete"] is True
    os.utime(dest, ns=(1, 1))
    assert dst.have("file-status", files=spec["files"])["files"][0]["complete"] is False


def test_a_streamed_chunk_whose_bytes_do_not_match_the_trailer_is_not_journaled(tmp_path, src, dst):
    data = distinct_bytes(2 * CHUNK, seed=22)
    source = tmp_path / "src.bin"
    source.write_bytes(data)
    dest = tmp_path / "out" / "copy.bin"
    spec = streamed_spec(src, source, dest)
    stream = bytearray(send_stream(src, "xfer-stream-2", streamed_items(source, spec)))
    stream[frame_payload_starts(bytes(stream))[1] + 5] ^= 0xFF  # rot in the second chunk
    grant(dst, "xfer-stream-2", spec)
    [mine] = recv_ok(dst, "xfer-stream-2", bytes(stream))["hops"]
    assert mine["stored"] == [sha(data[:CHUNK])]
    assert list(mine["failed"]) == [sha(data[CHUNK:])]  # keyed by the hash the sender saw
    assert mine["files_done"] == [] and not dest.exists()
    assert journal_lines(dest) == ["0 " + sha(data[:CHUNK])]


def test_a_partial_copy_of_an_older_version_of_the_source_is_started_over(tmp_path, src, dst):
    source = tmp_path / "src.bin"
    source.write_bytes(distinct_bytes(3 * CHUNK, seed=23))
    dest = tmp_path / "out" / "copy.bin"
    spec = streamed_spec(src, source, dest)
    stream = send_stream(src, "xfer-stream-3", streamed_items(source, spec))
    grant(dst, "xfer-stream-3", spec)
    recv_ok(dst, "xfer-stream-3", stream[: frame_payload_starts(stream)[2] + 10])
    assert dst.have("file-status", files=spec["files"])["files"][0]["done"] == [0, CHUNK]

    new = distinct_bytes(3 * CHUNK, seed=24)  # the source changes before the rerun
    source.write_bytes(new)
    os.utime(source, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    spec = streamed_spec(src, source, dest)
    assert dst.have("file-status", files=spec["files"])["files"][0]["done"] == []
    grant(dst, "xfer-stream-4", spec)
    _, received = pipe_transfer(src, dst, "xfer-stream-4", streamed_items(source, spec))
    assert received["hops"][0]["files_done"] == [str(dest)]
    assert dest.read_bytes() == new  # nothing of the old version survived


def test_a_refused_grant_writes_nothing_and_a_null_ttl_means_the_default(host, keys_file):
    code, reply = host.request("grant", transfer="xfer-key-9", spec={}, pubkey="ssh-rsa AAAA")
    assert code == 1 and "pubkey" in reply["error"]
    assert not (host.data / "transfers" / "xfer-key-9.json").exists()
    assert not keys_file.exists()
    reply = host.ok("grant", transfer="xfer-key-9", spec={}, pubkey=PUBKEY, ttl_s=None)
    expires = time.mktime(time.strptime(reply["expires"], "%Y%m%d%H%M%SZ")) - time.timezone
    assert 250 < expires - time.time() <= 301


def test_revoke_also_deletes_transfer_files_left_over_an_hour_ago(host, keys_file):
    transfers = host.data / "transfers"
    host.ok("grant", transfer="xfer-fresh-1", spec={})
    host.ok("grant", transfer="xfer-old-01", spec={})
    (transfers / "xfer-old-01.key").write_text("a private key nobody came for")
    for leftover in ("xfer-old-01.json", "xfer-old-01.key"):
        os.utime(transfers / leftover, (time.time() - 7200, time.time() - 7200))
    host.ok("revoke", transfer="xfer-other-1")  # removed when this agent starts
    assert sorted(p.name for p in transfers.iterdir()) == ["xfer-fresh-1.json"]
