"""Security of the agent's data plane (agent/lepton_agent/), host side.

Planted symbolic links never carry a write out of a destination (files mode, materialize);
transfer keys never change a byte of authorized_keys that leptonctl did not write, even with
another tool appending at the same moment; the next hop cannot be turned into an ssh option;
recv bounds what it buffers; a LOST job's process group is only killed while its leader is the
process that started the job; the agent launcher refuses a cache directory others can write.

Like tests/test_agent_data.py (whose helpers these reuse), the agent runs as a subprocess; the
stress test of authorized_keys also calls grant/revoke in this process (many rounds), against
a real appender process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from leptonctl.errors import AgentError
from leptonctl.remote import agent as agent_client
from leptonctl.remote.transport import LocalConnection
from tests.helpers import make_host
from tests.test_agent_data import (
    CHUNK,
    KEYS_VAR,
    OPERATOR_KEY,
    PUBKEY,
    TIMEOUT_S,
    AgentHost,
    agent_argv,
    agent_env,
    agent_host,
    distinct_bytes,
    files_items,
    grant,
    mode_of,
    pipe_transfer,
    receiver_files_spec,
    recv_stream,
    sha,
    streamed_spec,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux")

FREE = re.compile(rb"#leptonctl-free *")


@pytest.fixture(autouse=True)
def keys_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every agent of every test edits this file, never ~/.ssh/authorized_keys."""
    path = tmp_path / "ssh" / "authorized_keys"
    path.parent.mkdir(mode=0o700)
    monkeypatch.setenv(KEYS_VAR, str(path))
    return path


@pytest.fixture
def host(tmp_path: Path) -> Iterator[AgentHost]:
    yield from agent_host(tmp_path, "data")


@pytest.fixture
def src(tmp_path: Path) -> Iterator[AgentHost]:
    yield from agent_host(tmp_path, "src-data")


@pytest.fixture
def dst(tmp_path: Path) -> Iterator[AgentHost]:
    yield from agent_host(tmp_path, "dst-data")


def load_agent() -> ModuleType:
    """The agent's grants in this process (they are in agent/lepton_agent/keys.py)."""
    from agent.lepton_agent import keys

    return keys


def grant_request(transfer: str, pubkey: str) -> Any:
    from agent.lepton_agent import wire

    return wire.Grant(transfer=transfer, spec={}, pubkey=pubkey)


def without_free_slots(data: bytes) -> bytes:
    """The file with leptonctl's blanked lines taken out (they are all it may add)."""
    return b"".join(
        line for line in data.splitlines(keepends=True) if not FREE.fullmatch(line.rstrip(b"\n"))
    )


def transfer_lines(data: bytes) -> list[bytes]:
    return [line for line in data.split(b"\n") if b"leptonctl-transfer:" in line]


# ---------------------------------------------------------------- planted symbolic links


def make_tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "x.bin").write_bytes(distinct_bytes(2 * CHUNK, seed=40))
    (root / "a.bin").write_bytes(distinct_bytes(CHUNK + 3, seed=41))
    (root / "empty").write_bytes(b"")
    return root


def copy_tree(sender: AgentHost, receiver: AgentHost, root: Path, dest: Path, name: str):
    scan = sender.have("scan", path=str(root), chunk_size=CHUNK)
    spec = receiver_files_spec(scan, dest)
    grant(receiver, name, spec)
    _, received = pipe_transfer(sender, receiver, name, files_items(root, spec, dest))
    return spec, received["hops"][0]


def test_files_mode_replaces_a_planted_directory_link_and_writes_nothing_through_it(
    tmp_path, src, dst
):
    root = make_tree(tmp_path / "tree")
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    dest = tmp_path / "out" / "tree"
    dest.mkdir(parents=True)
    (dest / "sub").symlink_to(outside)  # planted before the copy
    _, mine = copy_tree(src, dst, root, dest, "xfer-planted-1")
    assert (mine["error"], mine["failed"]) == (None, {})
    assert os.listdir(outside) == [] and mode_of(outside) == 0o700  # not written, not chmod'ed
    assert not (dest / "sub").is_symlink() and (dest / "sub").is_dir()
    assert (dest / "sub" / "x.bin").read_bytes() == (root / "sub" / "x.bin").read_bytes()


def test_files_mode_never_writes_through_a_planted_part_file_or_empty_file_link(tmp_path, src, dst):
    root = make_tree(tmp_path / "tree")
    victim, target = tmp_path / "victim", tmp_path / "not-to-be-created"
    victim.write_bytes(b"precious")
    dest = tmp_path / "out" / "tree"
    (dest / "sub").mkdir(parents=True)
    (dest / "a.bin.lepton-part").symlink_to(victim)
    (dest / "sub" / "x.bin.lepton-part.done").symlink_to(victim)
    (dest / "empty").symlink_to(target)
    _, mine = copy_tree(src, dst, root, dest, "xfer-planted-2")
    assert (mine["error"], mine["failed"]) == (None, {})
    assert victim.read_bytes() == b"precious" and not target.exists()
    for rel in ("a.bin", "sub/x.bin", "empty"):
        assert (
            not (dest / rel).is_symlink() and (dest / rel).read_bytes() == (root / rel).read_bytes()
        )


def test_files_mode_copies_a_tree_of_more_files_and_dirs_than_open_files_allowed(
    tmp_path, src, dst
):
    import resource

    root = tmp_path / "tree"
    for i in range(700):
        (root / f"d{i}").mkdir(parents=True)
        (root / f"d{i}" / "f").write_bytes(b"x%d" % i)
    dest = tmp_path / "out" / "tree"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))  # the agents inherit it
    try:
        _, mine = copy_tree(src, dst, root, dest, "xfer-many-files")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert (mine["error"], len(mine["files_done"])) == (None, 700)
    assert [(dest / f"d{i}" / "f").read_bytes() for i in range(700)] == [
        b"x%d" % i for i in range(700)
    ]


def test_file_status_never_counts_a_file_reached_through_a_planted_link(tmp_path, src, dst):
    root = make_tree(tmp_path / "tree")
    dest = tmp_path / "out" / "tree"
    dest.mkdir(parents=True)
    (dest / "sub").symlink_to(root / "sub")  # the same bytes, but not in the destination
    scan = src.have("scan", path=str(root), chunk_size=CHUNK)
    spec = receiver_files_spec(scan, dest)
    [entry] = [f for f in spec["files"] if f["path"].endswith("x.bin")]
    status = dst.have("file-status", files=spec["files"], dest=str(dest))
    [state] = [f for f in status["files"] if f["path"] == entry["path"]]
    assert state == {"path": entry["path"], "done": [], "complete": False}


def test_files_mode_refuses_a_spec_with_a_path_under_one_of_its_own_links(tmp_path, dst):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "out"
    spec = {
        "store": "files",
        "dirs": [{"path": str(dest), "mode": 0o755}],
        "links": [{"path": str(dest / "sub"), "target": str(outside)}],
        "files": [{"path": str(dest / "sub" / "x"), "size": 0, "mode": 0o644, "chunks": []}],
    }
    grant(dst, "xfer-under-link", spec)
    proc = recv_stream(dst, "xfer-under-link", b'{"end":true}\n')
    assert "symbolic link" in proc.stdout.decode(), proc.stdout
    assert os.listdir(outside) == []


def materialize_manifest(agent: AgentHost, tmp_path: Path) -> tuple[dict[str, Any], bytes]:
    data = b"one chunk\n"
    (tmp_path / "one").write_bytes(data)
    agent.have(
        "chunk-import", items=[{"h": sha(data), "n": len(data), "path": str(tmp_path / "one")}]
    )
    entry = {"path": "a.txt", "type": "file", "mode": 0o444, "size": len(data),
             "chunks": [{"hash": sha(data), "size": len(data)}]}  # fmt: skip
    return {"kind": "dir", "entries": [entry]}, data


def test_materialize_refuses_an_entry_under_a_symlink_of_the_same_manifest(tmp_path, host):
    manifest, _ = materialize_manifest(host, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    link = {"path": "sub", "type": "symlink", "mode": 0o777, "size": 0, "chunks": [],
            "target": str(outside)}  # fmt: skip
    under = [
        {**manifest["entries"][0], "path": "sub/a.txt"},
        {"path": "sub/deeper", "type": "dir", "mode": 0o777, "size": 0, "chunks": []},
    ]
    for entry in under:
        bad = {"kind": "dir", "entries": [link, entry]}
        code, reply = host.request("materialize", dest="sets/bad", manifest=bad, label="x")
        assert code == 1 and "under its symbolic link" in reply["error"], reply
    assert os.listdir(outside) == [] and mode_of(outside) == 0o700
    assert not (host.data / "sets" / "bad").exists()


def test_materialize_gives_the_top_directory_of_a_manifest_its_mode(tmp_path, host):
    manifest, data = materialize_manifest(host, tmp_path)
    top = {"path": "", "type": "dir", "mode": 0o750, "size": 0, "chunks": []}
    manifest = {"kind": "dir", "entries": [top, *manifest["entries"]]}
    reply = host.ok("materialize", dest="sets/top", manifest=manifest, label="top@1")
    assert mode_of(Path(reply["path"])) == 0o750
    assert (Path(reply["path"]) / "a.txt").read_bytes() == data


def test_materialize_never_writes_its_sidecar_through_a_planted_link(tmp_path, host):
    manifest, _ = materialize_manifest(host, tmp_path)
    (host.data / "sets").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (host.data / "sets" / ".ds.lepton-dataset").symlink_to(victim)
    reply = host.ok("materialize", dest="sets/ds", manifest=manifest, label="ds@1")
    assert reply["done"] and victim.read_text() == "precious"
    assert (host.data / "sets" / ".ds.lepton-dataset").read_text() == "ds@1\n"


def test_materialize_never_replaces_a_destination_whose_sidecar_another_user_owns(tmp_path, host):
    manifest, _ = materialize_manifest(host, tmp_path)
    shared = tmp_path / "shared"  # a /tmp-like directory of several users
    (shared / "in").mkdir(parents=True)
    (shared / "in" / "keep").write_text("theirs")
    sidecar = shared / ".in.lepton-dataset"
    sidecar.write_text("tr@1\n")
    os.chown(sidecar, 4242, 4242)
    code, reply = host.request("materialize", dest=str(shared / "in"), manifest=manifest, label="x")
    assert code == 1 and "not made by leptonctl" in reply["error"]
    assert (shared / "in" / "keep").read_text() == "theirs"


def test_a_materialised_input_never_shares_storage_with_its_chunk(tmp_path, host):
    manifest, data = materialize_manifest(host, tmp_path)
    reply = host.ok("materialize", dest="inputs/tr@1", manifest=manifest, label="tr@1")
    copy = Path(reply["path"]) / "a.txt"
    assert copy.read_bytes() == data and mode_of(copy) == 0o444
    copy.chmod(0o644)  # what a job can do to its own input
    with copy.open("ab") as fh:
        fh.write(b"oops\n")
    assert host.ok("chunk-verify", hashes=[sha(data)])["ok"] == [sha(data)]
    assert host.chunk_file(sha(data)).read_bytes() == data


# ---------------------------------------------------------------- authorized_keys


OTHER_LINES = (
    b"ssh-ed25519 AAAAcrlf crlf@host\r\n"
    + b'command="echo a\rb",no-pty ssh-ed25519 AAAAlonecr lone-cr@host\n'
    + b"# caf\xe9 \xff\xfe not utf-8\n"
    + OPERATOR_KEY.encode()
)


def test_grant_and_revoke_keep_crlf_lone_cr_and_non_utf8_lines_byte_for_byte(host, keys_file):
    keys_file.write_bytes(OTHER_LINES)
    host.ok("grant", transfer="xfer-bytes-1", spec={}, pubkey=PUBKEY)
    host.ok("grant", transfer="xfer-bytes-2", spec={}, pubkey=PUBKEY)
    reply = host.ok("revoke", transfer="xfer-bytes-1")
    assert reply["key_lines_removed"] == 1
    data = keys_file.read_bytes()
    assert data.startswith(OTHER_LINES)
    [live] = transfer_lines(data)
    assert b"leptonctl-transfer:xfer-bytes-2" in live
    host.ok("revoke", transfer="xfer-bytes-2")
    assert without_free_slots(keys_file.read_bytes()) == OTHER_LINES


def test_recv_removes_its_key_line_from_a_file_that_is_not_utf8(dst, keys_file):
    keys_file.write_bytes(OTHER_LINES)
    dst.ok("grant", transfer="xfer-bytes-3", spec={"store": "chunks"}, pubkey=PUBKEY)
    proc = recv_stream(dst, "xfer-bytes-3", b'{"end":true}\n')
    assert proc.returncode == 0 and json.loads(proc.stdout)["hops"][0]["error"] is None
    assert without_free_slots(keys_file.read_bytes()) == OTHER_LINES


READ_ONLY_FILE = Path("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size")  # even for root


@pytest.mark.skipif(not READ_ONLY_FILE.exists(), reason="needs a file nobody may write")
def test_a_read_only_authorized_keys_without_transfer_lines_is_never_opened_for_writing(
    dst, monkeypatch
):
    monkeypatch.setenv(KEYS_VAR, str(READ_ONLY_FILE))  # managed elsewhere; keyless transfers
    grant(dst, "xfer-readonly", {"store": "chunks"})
    proc = recv_stream(dst, "xfer-readonly", b'{"end":true}\n')
    assert proc.returncode == 0 and json.loads(proc.stdout)["hops"][0]["error"] is None
    assert dst.ok("revoke", transfer="xfer-readonly")["key_lines_removed"] == 0


def test_a_symlinked_authorized_keys_stays_a_link_and_its_target_loses_the_line(
    host, keys_file, tmp_path
):
    target = tmp_path / "dotfiles" / "authorized_keys"
    target.parent.mkdir()
    target.write_bytes(OPERATOR_KEY.encode())
    keys_file.symlink_to(target)
    host.ok("grant", transfer="xfer-linked", spec={}, pubkey=PUBKEY)
    assert transfer_lines(target.read_bytes())
    host.ok("revoke", transfer="xfer-linked")
    assert keys_file.is_symlink() and os.readlink(keys_file) == str(target)
    assert transfer_lines(target.read_bytes()) == []
    assert without_free_slots(target.read_bytes()) == OPERATOR_KEY.encode()


def test_a_blanked_slot_is_reused_so_the_file_does_not_grow(host, keys_file):
    keys_file.write_bytes(OPERATOR_KEY.encode())
    host.ok("grant", transfer="xfer-reuse-00", spec={}, pubkey=PUBKEY)
    host.ok("revoke", transfer="xfer-reuse-00")
    size = keys_file.stat().st_size
    for n in range(1, 6):
        host.ask("grant", transfer=f"xfer-reuse-{n:02d}", spec={}, pubkey=PUBKEY)
        assert keys_file.stat().st_size == size  # written over the free slot
        [line] = transfer_lines(keys_file.read_bytes())
        assert line.rstrip(b" ").endswith(f"leptonctl-transfer:xfer-reuse-{n:02d}".encode())
        host.ask("revoke", transfer=f"xfer-reuse-{n:02d}")
    assert without_free_slots(keys_file.read_bytes()) == OPERATOR_KEY.encode()


APPENDER = """
import os, sys
path, count = sys.argv[1], int(sys.argv[2])
for i in range(count):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, b"ssh-ed25519 AAAAappended%05d other-tool@host\\n" % i)
    os.close(fd)
"""


def test_lines_appended_by_another_tool_during_grants_and_revokes_all_survive(
    keys_file, tmp_path, monkeypatch
):
    agent = load_agent()
    data_dir = tmp_path / "data"
    keys_file.write_bytes(OPERATOR_KEY.encode())
    count = 1500
    appender = subprocess.Popen([sys.executable, "-c", APPENDER, str(keys_file), str(count)])
    rounds = 0
    try:
        while appender.poll() is None or rounds < 20:
            transfer = f"xfer-race-{rounds:04d}"
            agent.grant(str(data_dir), grant_request(transfer, PUBKEY))
            agent.revoke(str(data_dir), transfer)
            rounds += 1
    finally:
        appender.wait(timeout=TIMEOUT_S)
    data = keys_file.read_bytes()
    assert data.startswith(OPERATOR_KEY.encode()) and transfer_lines(data) == []
    appended = [line for line in data.split(b"\n") if b"other-tool@host" in line]
    assert appended == [b"ssh-ed25519 AAAAappended%05d other-tool@host" % i for i in range(count)]
    assert without_free_slots(data) == OPERATOR_KEY.encode() + b"".join(
        line + b"\n" for line in appended
    )


def refuse_flock_on(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """flock answers EBADF on files with these names, as an NFS server does for a read-only fd
    (a failure mode that needs an NFS home to provoke for real)."""
    import errno
    import fcntl

    real = fcntl.flock

    def flock(fd: int, operation: int) -> None:
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) in names:
            raise OSError(errno.EBADF, "Bad file descriptor")
        real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)


def test_grant_and_revoke_fall_back_to_a_lock_in_the_data_dir_when_flock_is_refused(
    keys_file, tmp_path, monkeypatch
):
    agent = load_agent()
    data_dir = str(tmp_path / "data")
    keys_file.write_bytes(OPERATOR_KEY.encode())
    refuse_flock_on(monkeypatch, "authorized_keys", keys_file.parent.name)  # the file, ~/.ssh
    agent.grant(data_dir, grant_request("xfer-nfs-01", PUBKEY))
    assert transfer_lines(keys_file.read_bytes())
    assert (tmp_path / "data" / "transfers" / ".authorized_keys.lock").exists()
    assert agent.revoke(data_dir, "xfer-nfs-01")["key_lines_removed"] == 1
    assert without_free_slots(keys_file.read_bytes()) == OPERATOR_KEY.encode()


def test_revoke_fails_loudly_when_nothing_can_be_locked(keys_file, tmp_path, monkeypatch):
    agent = load_agent()
    data_dir = str(tmp_path / "data")
    agent.grant(data_dir, grant_request("xfer-nfs-02", PUBKEY))
    refuse_flock_on(monkeypatch, "authorized_keys", keys_file.parent.name, ".authorized_keys.lock")
    with pytest.raises(OSError, match="cannot lock authorized_keys"):
        agent.revoke(data_dir, "xfer-nfs-02")


def test_the_next_agent_start_removes_what_a_killed_operator_left(host, keys_file):
    keys_file.write_bytes(OPERATOR_KEY.encode())
    host.ok("grant", transfer="xfer-killed-1", spec={}, pubkey=PUBKEY, ttl_s=1)
    transfers = host.data / "transfers"
    (transfers / "xfer-killed-2.key").write_text("a sender's key, its sender killed")
    old = time.time() - 3600
    os.utime(transfers / "xfer-killed-2.key", (old, old))
    assert transfer_lines(keys_file.read_bytes()) != []
    time.sleep(3.5)  # past the expiry-time (1 s) and the spec's grace (2 s)
    host.ok("chunk-have", hashes=[])  # any use of the agent on this host
    assert transfer_lines(keys_file.read_bytes()) == []
    assert without_free_slots(keys_file.read_bytes()) == OPERATOR_KEY.encode()
    assert sorted(p.name for p in transfers.iterdir() if not p.name.startswith(".")) == []


def test_a_recv_killed_mid_transfer_leaves_no_key_line(src, dst, keys_file, tmp_path):
    keys_file.write_bytes(OPERATOR_KEY.encode())
    data = distinct_bytes(4 * CHUNK, seed=42)
    (tmp_path / "f").write_bytes(data)
    dst.ok("grant", transfer="xfer-killed-3", spec={"store": "chunks"}, pubkey=PUBKEY, ttl_s=1)
    recv = subprocess.Popen(
        agent_argv("recv", dst.data, "--transfer", "xfer-killed-3"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=agent_env(),
    )
    assert recv.stdin is not None
    recv.stdin.write(json.dumps({"h": sha(data), "n": len(data)}).encode() + b"\n" + data[:100])
    recv.stdin.flush()
    deadline = time.monotonic() + TIMEOUT_S
    while transfer_lines(keys_file.read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.02)
    recv.send_signal(signal.SIGKILL)
    recv.wait(timeout=TIMEOUT_S)
    assert transfer_lines(keys_file.read_bytes()) == []  # one-shot: gone when recv started
    time.sleep(3.5)
    dst.ok("chunk-have", hashes=[])
    assert not (dst.data / "transfers" / "xfer-killed-3.json").exists()


# ---------------------------------------------------------------- the next hop and the stream


def test_a_next_hop_address_or_user_that_looks_like_an_ssh_option_is_refused(tmp_path, src):
    marker = tmp_path / "proxy-ran"
    script = tmp_path / "proxy.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    hop = {"name": "evil", "user": "root", "address": "127.0.0.1", "port": 22,
           "key": "not a key\n", "host_key": "ssh-ed25519 AAAAhostkey"}  # fmt: skip
    for bad in (
        {"address": f"-oProxyCommand={script}"},
        {"user": f"-oProxyCommand={script}"},
        {"address": "host name"},
        {"address": "host\nname"},
        {"host_key": "ssh-ed25519 AAAA\n@cert-authority * ssh-ed25519 AAAAevil"},
    ):
        spec = {"transfer": "xfer-option-1", "next": {**hop, **bad}, "items": []}
        proc = subprocess.run(
            agent_argv("send", src.data),
            input=json.dumps(spec).encode() + b"\n",
            capture_output=True,
            env=agent_env(),
            timeout=TIMEOUT_S,
        )
        assert proc.returncode == 2 and b"not usable with ssh" in proc.stdout, (bad, proc.stdout)
    assert not marker.exists()


def test_ssh_takes_the_address_after_double_dash_as_the_host(tmp_path, src):
    # a real ssh: "--" then the host then the command; port 1 refuses the connection
    hop = {"name": "peer", "user": "root", "address": "127.0.0.1", "port": 1,
           "key": "not a key\n", "host_key": "ssh-ed25519 AAAAhostkey"}  # fmt: skip
    spec = {"transfer": "xfer-option-2", "next": hop, "items": []}
    proc = subprocess.run(
        agent_argv("send", src.data),
        input=json.dumps(spec).encode() + b"\n",
        capture_output=True,
        env=agent_env(),
        timeout=TIMEOUT_S,
    )
    [_, peer] = json.loads(proc.stdout)["hops"]
    assert "127.0.0.1 port 1" in peer["error"], peer


def limited_recv(
    receiver: AgentHost, transfer: str, head: bytes, tail_bytes: int
) -> dict[str, Any]:
    """recv under a 256 MiB address-space limit, fed head then tail_bytes of zeros: a recv
    that buffers what it was sent runs out of memory instead of answering."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (256 << 20, 256 << 20))

    proc = subprocess.Popen(
        agent_argv("recv", receiver.data, "--transfer", transfer),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=agent_env(),
        preexec_fn=limit,
        bufsize=0,
    )
    assert proc.stdin is not None

    def feed() -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(head)
            block = bytes(1 << 20)
            for _ in range(tail_bytes >> 20):
                proc.stdin.write(block)
            proc.stdin.close()
        except OSError:  # recv stopped reading: what this test wants
            pass
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()

    writer = threading.Thread(target=feed)
    writer.start()
    writer.join(timeout=TIMEOUT_S)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.wait(timeout=TIMEOUT_S)
    assert out.lstrip(b"\n").count(b"\n") == 1, (out, err[-2000:])
    reply: dict[str, Any] = json.loads(out)
    return reply


def test_recv_refuses_a_negative_frame_size_without_buffering_the_stream(dst):
    grant(dst, "xfer-negative", {"store": "chunks"})
    head = json.dumps({"h": "0" * 64, "n": -1}).encode() + b"\n"
    [mine] = limited_recv(dst, "xfer-negative", head, 384 << 20)["hops"]
    assert "frame size must be an integer" in mine["error"]


def test_recv_refuses_a_header_line_without_a_newline_past_its_limit(dst):
    grant(dst, "xfer-longline", {"store": "chunks"})
    [mine] = limited_recv(dst, "xfer-longline", b'{"h": "', 384 << 20)["hops"]
    assert "frame header is longer than" in mine["error"]


def test_recv_answers_a_trailer_that_is_not_an_object_with_a_clear_error(tmp_path, src, dst):
    root = make_tree(tmp_path / "tree")
    dest = tmp_path / "out" / "tree"
    grant(dst, "xfer-trailer", streamed_spec(src, root, dest))
    stream = b'{"n": 4, "t": [[0, 0]]}\nabcd[1, 2]\n{"end":true}\n'
    proc = recv_stream(dst, "xfer-trailer", stream)
    [mine] = json.loads(proc.stdout)["hops"]
    assert "must be a JSON object" in mine["error"]


def test_recv_refuses_a_files_frame_aimed_outside_its_files(tmp_path, src, dst):
    root = make_tree(tmp_path / "tree")
    dest = tmp_path / "out" / "tree"
    scan = src.have("scan", path=str(root), chunk_size=CHUNK)
    spec = receiver_files_spec(scan, dest)
    grant(dst, "xfer-targets", spec)
    block = b"x" * 16
    frame = {"h": sha(block), "n": len(block), "t": [[-1, 0]]}
    stream = json.dumps(frame).encode() + b"\n" + block + b'{"end":true}\n'
    [mine] = json.loads(recv_stream(dst, "xfer-targets", stream).stdout)["hops"]
    assert "is not inside the files" in mine["error"]


# ---------------------------------------------------------------- jobs: pid reuse


def lost_job_with_group_of(agent: AgentHost, job_id: str, pid: int, leader_start: int) -> None:
    """The records of a job whose supervisor is gone (LOST) and whose recorded process group
    is pid's, with the leader start time given."""
    job = agent.data / "jobs" / job_id
    job.mkdir(parents=True)
    spec = {"id": job_id, "command": "true", "env": {}, "workdir": "/", "walltime": None,
            "grace": 0}  # fmt: skip
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    state = {"state": "RUNNING", "pid": pid, "pgid": pid, "supervisor_pid": 1,
             "started": time.time(), "boot_id": boot, "leader_start": leader_start}  # fmt: skip
    (job / "spec.json").write_text(json.dumps(spec))
    (job / "state.json").write_text(json.dumps(state))


def start_time(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def test_job_kill_of_a_lost_job_never_kills_a_group_that_reused_its_pid(host):
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        lost_job_with_group_of(host, "lost-1", stranger.pid, start_time(stranger.pid) - 1)
        reply = host.ok("job-kill", id="lost-1", grace=0)
        assert reply["state"] == "LOST"
        time.sleep(0.2)
        assert stranger.poll() is None  # a process of the same user, but not the job's
        lost_job_with_group_of(host, "lost-2", stranger.pid, start_time(stranger.pid))
        assert host.ok("job-kill", id="lost-2", grace=0)["state"] == "CANCELLED"
        assert stranger.wait(timeout=TIMEOUT_S) == -signal.SIGTERM
    finally:
        if stranger.poll() is None:
            stranger.kill()
            stranger.wait()


def test_a_started_job_records_the_start_time_of_its_leader(host):
    reply = host.ok("job-start", spec={"id": "timed-1", "command": ["sleep", "30"]})
    try:
        state = json.loads((host.data / "jobs" / "timed-1" / "state.json").read_text())
        assert state["leader_start"] == start_time(state["pid"])
    finally:
        host.ok("job-kill", id=reply["id"], grace=0)


# ---------------------------------------------------------------- the launcher


LOCAL = make_host("me", connection="local")


def probe() -> None:
    asyncio.run(agent_client.probe_host(LocalConnection("me"), LOCAL, 30))


def test_the_launcher_refuses_a_cache_directory_or_agent_file_others_can_write(operator_home):
    probe()
    directory = Path(os.environ["XDG_CACHE_HOME"]) / "leptonctl"
    installed = directory / f"agent-{agent_client.agent_digest()}"
    for mode, agent_mode in ((0o770, 0o700), (0o707, 0o700), (0o700, 0o722)):
        directory.chmod(mode)
        installed.chmod(agent_mode)
        with pytest.raises(AgentError, match="refusing to run the agent"):
            probe()
    directory.chmod(0o700)
    installed.chmod(0o700)
    os.chown(directory, 4242, 4242)
    with pytest.raises(AgentError, match="refusing to run the agent"):
        probe()
    os.chown(directory, os.getuid(), os.getgid())
    probe()


def test_the_installer_refuses_a_cache_directory_others_can_write(operator_home):
    directory = Path(os.environ["XDG_CACHE_HOME"]) / "leptonctl"
    directory.mkdir(parents=True)
    directory.chmod(0o777)
    with pytest.raises(AgentError, match="refusing to install the agent"):
        probe()
    assert list(directory.iterdir()) == []


def test_a_next_hop_that_answers_without_end_is_cut_at_the_reply_limit(tmp_path, monkeypatch):
    """The downstream hops' reply is read up to a bound: a hostile or broken next hop that
    prints without end costs a bounded read and an error, not the sender's memory."""
    from agent.lepton_agent import transfers

    monkeypatch.setattr(transfers, "HOPS_REPLY_LIMIT", 4096)
    hop = transfers.NextHop.__new__(transfers.NextHop)
    hop.name, hop.error, hop.out = "h2", None, None
    hop.stderr_path = str(tmp_path / "stderr")
    hop.err = open(hop.stderr_path, "w+b")  # noqa: SIM115 (NextHop.finish closes it)
    hop.err.write(b"x" * (200 * 1024) + b"\nlast words\n")
    endless = "yes '{\"hops\": []}' | head -c 1000000"  # well past the limit, but finite
    hop.proc = subprocess.Popen(["sh", "-c", endless], stdout=subprocess.PIPE)
    (result,) = hop.finish()
    assert result["name"] == "h2" and "over 4096 bytes" in result["error"]
    assert result["error"].endswith("last words")
