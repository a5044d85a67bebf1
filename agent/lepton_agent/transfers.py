"""The data plane: send (frames to the next hop) and recv (the forced command: store, write,
relay).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

from .chunks import ChunkBatch, ChunkSink, chunk_path, widen_pipe
from .files import FilesSink, out_of_space
from .fsutil import IO_BLOCK, fsync_dir
from .keys import blank_key_lines, read_transfer_spec, revoke, transfer_path
from .wire import (
    END_FRAME,
    MAX_RESULT_LINE,
    SCHEMA,
    BadRequest,
    check_hash,
    check_transfer_id,
    encode_frame,
    frame_object,
    frame_size,
    json_line,
    read_frame_line,
)

PEER_ALIAS = "leptonctl-peer"


PROGRESS_EVERY_S = 0.5


def check_ssh_word(value, what, spaces=False):
    """A user, address or host key for ssh's command line: a string that cannot be taken for an
    option (a leading "-") or split (whitespace, control characters; spaces where allowed)."""
    bad = not isinstance(value, str) or not value or value.startswith("-")
    if not bad:
        bad = any(ord(c) < 32 or ord(c) == 127 or (c.isspace() and not (spaces and c == " "))
                  for c in value)  # fmt: skip
    if bad:
        raise BadRequest("the next hop's %s is not usable with ssh: %r" % (what, value))
    return value


# recv's result starts on a line of its own: a login shell's rc file may have printed a
# partial line first (sshd runs the forced command through the user's shell). RESULT_LINE
HOPS_REPLY_LIMIT = MAX_RESULT_LINE  # the downstream hops' result line (what they stored)
STDERR_TAIL_BYTES = 64 * 1024  # what is kept of ssh's stderr for an error message


def read_bounded(stream, limit):
    """Everything up to the end of stream, or the first limit bytes (an unbuffered pipe's
    read returns what one read(2) gives, so read until the end)."""
    parts, size = [], 0
    while size < limit:
        part = stream.read(min(IO_BLOCK, limit - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


class NextHop:
    """The ssh process to the next host of the chain (or stdout), fed while we receive."""

    def __init__(self, data_dir, transfer_id, spec):
        import subprocess

        self.name, self.error, self.proc, self.out = spec.get("name"), None, None, None
        if spec.get("kind") == "stdout":
            self.out = sys.stdout.buffer
            return
        user = check_ssh_word(spec.get("user"), "user")
        address = check_ssh_word(spec.get("address"), "address")
        host_key = check_ssh_word(spec.get("host_key"), "host key", spaces=True)
        port = spec.get("port") or 22
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise BadRequest("the next hop's port must be 1..65535, got %r" % (port,))
        key = transfer_path(data_dir, transfer_id, ".key")
        known = transfer_path(data_dir, transfer_id, ".known_hosts")
        os.makedirs(os.path.dirname(key), mode=0o700, exist_ok=True)
        for path, text in ((key, spec["key"]), (known, "%s %s\n" % (PEER_ALIAS, host_key))):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
        argv = ["ssh", "-T", "-i", key, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", "UserKnownHostsFile=" + known, "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "HostKeyAlias=" + PEER_ALIAS, "-o", "ConnectTimeout=10",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                "-o", "Ciphers=aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,"
                "aes256-gcm@openssh.com,aes128-ctr",
                "-o", "Compression=" + ("yes" if spec.get("compress") else "no"),
                "-F", "/dev/null", "-p", str(port),
                "-l", user, "--", address, "lepton-recv"]  # fmt: skip
        self.stderr_path = transfer_path(data_dir, transfer_id, ".stderr")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.stderr_path)
        fd = os.open(self.stderr_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        self.err = os.fdopen(fd, "w+b")  # read back by finish(), even after a sweep unlinked it
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, bufsize=0)  # fmt: skip
        self.out = self.proc.stdin
        widen_pipe(self.out.fileno())

    def write(self, block):
        if self.out is None:
            return
        try:
            self.out.write(block)
        except (BrokenPipeError, OSError) as exc:
            self.fail("lost the connection to the next hop: %s" % exc)

    def fail(self, message):
        if self.error is None:
            self.error = message
        if self.proc is not None:
            with contextlib.suppress(OSError):
                self.proc.kill()
        self.out = None

    def finish(self):
        """Close the stream; the downstream hops' results (a list)."""
        if self.proc is None:
            if self.out is not None:
                self.out.flush()
            return []
        try:
            if self.out is not None:
                self.out.close()
        except OSError:
            pass
        output = read_bounded(self.proc.stdout, HOPS_REPLY_LIMIT + 1)
        if len(output) > HOPS_REPLY_LIMIT:
            with contextlib.suppress(OSError):
                self.proc.kill()
            self.error = self.error or "the next hop's reply is over %d bytes" % HOPS_REPLY_LIMIT
            output = b""
        code = self.proc.wait()
        self.err.seek(max(0, os.fstat(self.err.fileno()).st_size - STDERR_TAIL_BYTES))
        tail = self.err.read().decode("utf-8", "replace").strip().splitlines()[-3:]
        self.err.close()
        with contextlib.suppress(OSError):
            os.unlink(self.stderr_path)
        for line in output.decode("utf-8", "replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and isinstance(doc.get("hops"), list):
                return doc["hops"]
        reason = self.error or "ssh exited with status %s" % code
        if tail:
            reason += ": " + " | ".join(tail)
        return [{"name": self.name, "error": reason, "stored": [], "failed": {}}]


def receive(data_dir, transfer_id):
    """The forced command of a transfer key: receive frames, store them, pass them on."""
    import gc
    import hashlib

    gc.disable()  # a process of its own; a spec of 100,000 files is no garbage to look for

    spec = read_transfer_spec(data_dir, transfer_id)
    try:  # one-shot: nobody can use this key again
        blank_key_lines(data_dir, lambda other, expiry: other == transfer_id)
    except OSError as exc:
        error = "cannot remove the transfer key from authorized_keys: %s" % exc
        mine = {"name": spec.get("name"), "stored": [], "failed": {}, "error": error, "bytes": 0}
        sys.stdout.write("\n" + json_line({"schema": SCHEMA, "hops": [mine]}))  # see RESULT_LINE
        return 1
    mode = spec.get("store", "chunks")
    hop = NextHop(data_dir, transfer_id, spec["next"]) if spec.get("next") else None
    mine = {"name": spec.get("name"), "stored": [], "failed": {}, "error": None, "bytes": 0}
    files = None
    batch = ChunkBatch()
    stdin, broken = sys.stdin.buffer, None
    widen_pipe(stdin.fileno())
    try:
        files = FilesSink(spec) if mode == "files" else None
        while True:
            header = read_frame_line(stdin)
            if not header:
                broken = "the stream ended early (the sender or a previous hop was lost)"
                break
            frame = frame_object(header)
            if frame.get("end"):
                break
            if mode == "probe":  # net probe: discard the bytes, answer acks at once
                skip(stdin, frame_size(frame))
                if frame.get("ack"):
                    sys.stdout.write("ack\n")
                    sys.stdout.flush()
                continue
            digest, size = frame.get("h"), frame_size(frame)
            targets = files.check_targets(frame.get("t"), size) if files is not None else []
            if digest is not None:
                check_hash(digest)
            elif mode == "chunks":
                raise BadRequest("a chunk frame needs its hash up front")
            if hop is not None:
                hop.write(header)
            sink = ChunkSink(data_dir, digest) if mode == "chunks" and not mine["error"] else None
            hasher = hashlib.sha256() if files is not None else None
            held = bytearray() if files is not None and files.buffers(targets, size) else None
            left = size
            while left:
                block = stdin.read(min(left, IO_BLOCK))
                if not block:
                    break
                if hop is not None:
                    hop.write(block)
                try:
                    if sink is not None:
                        sink.write(block)
                    elif hasher is not None and not mine["error"]:
                        hasher.update(block)
                        if held is not None:
                            held += block
                        else:
                            files.write(targets, size - left, block, digest)
                except OSError as exc:  # disk full, quota: keep forwarding, store no more
                    mine["error"] = "cannot store: %s" % exc
                    if sink is not None:
                        sink.abort()
                        sink = None
                left -= len(block)
            if not left and digest is None:  # streamed: the hash follows the bytes
                trailer = read_frame_line(stdin)
                if hop is not None:
                    hop.write(trailer)
                digest = check_hash(frame_object(trailer).get("h")) if trailer else None
            if left or digest is None:
                if sink is not None:
                    sink.abort()
                broken = "the stream ended inside a chunk (the sender or a previous hop was lost)"
                break
            mine["bytes"] += size
            if sink is not None:
                problem = sink.check()
                if problem:
                    mine["failed"][digest] = problem
                else:
                    mine["stored"] += batch.add(sink, size)
            elif hasher is not None and not mine["error"]:
                if hasher.hexdigest() != digest:
                    mine["failed"][digest] = "hash mismatch"
                else:
                    try:
                        if held is not None:
                            files.write_verified(targets, held, digest)
                        else:
                            files.commit(targets, digest, size)
                        mine["stored"].append(digest)
                    except OSError as exc:  # as above: keep forwarding, store no more
                        mine["error"] = "cannot store: %s" % exc
        if hop is not None and broken is None:
            hop.write(END_FRAME)
    except (ValueError, KeyError, TypeError, BadRequest) as exc:
        broken = "malformed stream: %s" % exc
    except OSError as exc:
        mine["error"] = "cannot store: %s" % exc
    finally:
        try:
            mine["stored"] += batch.flush()
        except OSError as exc:
            batch.abort()
            mine["error"] = mine["error"] or "cannot store: %s" % exc
        downstream = hop.finish() if hop is not None else []
        if files is not None:
            try:
                mine["files_done"] = files.finish()
            except OSError as exc:
                mine["error"] = mine["error"] or "cannot finish files: %s" % exc
            if out_of_space(mine["error"]):  # give the space back: a rerun would fail too
                files.discard(mine.get("files_done") or [])
                mine["error"] += "; the partial files were removed"
                mine["no_space"] = True
        fsync_dir(os.path.join(data_dir, "chunks"))
        revoke(data_dir, transfer_id)
    mine["error"] = broken or mine["error"]
    if hop is not None and hop.error and downstream and not downstream[0].get("error"):
        downstream[0]["error"] = hop.error
    sys.stdout.write("\n" + json_line({"schema": SCHEMA, "hops": [mine, *downstream]}))
    sys.stdout.flush()
    return 0


def skip(stream, size):
    while size > 0:
        block = stream.read(min(size, IO_BLOCK))
        if not block:
            raise ValueError("the stream ended inside a frame")
        size -= len(block)


def item_segments(data_dir, item):
    """The (path, offset, length) pieces whose concatenation is a send item's bytes: a stored
    chunk, a range of one file, or a packed item's "s" segments (checked here)."""
    size = int(item["n"])
    if item.get("s") is not None:
        segments, total = [], 0
        for seg in item["s"]:
            good = isinstance(seg, list) and len(seg) == 3 and isinstance(seg[0], str)
            good = good and all(type(v) is int and v >= 0 for v in seg[1:])
            if not good:
                raise BadRequest("a segment must be [path, offset, length], got %.100r" % (seg,))
            segments.append((seg[0], seg[1], seg[2]))
            total += seg[2]
        if total != size:
            raise BadRequest("an item's segments add up to %d bytes, not %d" % (total, size))
        return segments
    if item.get("path"):
        return [(item["path"], int(item.get("o") or 0), size)]
    return [(chunk_path(data_dir, check_hash(item["h"])), 0, size)]


def read_segments(segments, follow, failed):
    """The bytes of segments in blocks of at most IO_BLOCK. A segment that cannot be opened
    or is shorter than announced reads as zeros (the item's hash check fails at the receiver)
    and calls failed(why) once per segment. Segments of a packed item are opened without
    following a symbolic link (follow: a single file range, opened as named)."""
    pending = bytearray()
    for path, offset, length in segments:
        try:
            fd = os.open(path, os.O_RDONLY | (0 if follow else os.O_NOFOLLOW))
        except OSError as exc:
            failed("cannot read %s: %s" % (path, exc))
            fd = None
        try:
            at, left = offset, length
            while left:
                block = os.pread(fd, min(left, IO_BLOCK), at) if fd is not None else b""
                if not block:
                    if fd is not None:
                        failed("source %s is shorter than expected" % path)
                        os.close(fd)
                        fd = None
                    block = bytes(min(left, IO_BLOCK))
                pending += block
                at, left = at + len(block), left - len(block)
                if len(pending) >= IO_BLOCK:
                    yield bytes(pending)
                    pending = bytearray()
        finally:
            if fd is not None:
                os.close(fd)
    if pending:
        yield bytes(pending)


def send(data_dir, spec):
    """Send frames of spec["items"] to spec["next"] (an ssh hop, or stdout for the operator).
    An item is {"h", "n"} (from this host's chunk store), {"h", "n", "path", "o"} (a range of
    a file) or {"h", "n", "s": [[path, offset, length], ...]} (a packed item: the
    concatenation of the segments), with "t" targets in files mode. An item without "h" (a
    file range nobody hashed yet) is hashed while it is read and sent: its frame has no "h"
    and a trailer line {"h": hash} follows the bytes. With "store": true the sender also keeps
    a copy of every item in its own chunk store (a `put host:/path` whose source host is a
    replica)."""
    import gc
    import hashlib

    gc.disable()  # a process of its own (see receive)

    transfer_id = check_transfer_id(spec.get("transfer"))
    if not isinstance(spec.get("next"), dict):
        raise BadRequest("send needs a next hop")
    items = spec.get("items") or []
    pieces = [item_segments(data_dir, item) for item in items]  # all checked before sending
    to_stdout = spec["next"].get("kind") == "stdout"
    hop = NextHop(data_dir, transfer_id, spec["next"])
    if to_stdout:
        widen_pipe(sys.stdout.fileno())
    rate = spec.get("rate_bps") or 0
    started = last = time.monotonic()
    mine = {"name": spec.get("name"), "stored": [], "failed": {}, "error": None, "bytes": 0}
    try:
        for item, segments in zip(items, pieces):
            if hop.out is None:
                break
            size = int(item["n"])
            packed = item.get("s") is not None
            streaming = item.get("h") is None and (item.get("path") or packed)
            digest = None if streaming else check_hash(item["h"])
            first = segments[0][0] if segments else ""
            name = digest or "%s@%s" % (first, segments[0][1] if segments else 0)
            if not packed:  # a single file: nothing is sent when it cannot be opened
                try:
                    os.close(os.open(first, os.O_RDONLY))
                except OSError as exc:
                    mine["failed"][name] = "cannot read %s: %s" % (first, exc)
                    continue
            keep = None
            if spec.get("store") and (item.get("path") or packed) and not streaming:
                keep = ChunkSink(data_dir, digest)
            hasher = hashlib.sha256() if streaming else None
            frame = {"n": size} if streaming else {"h": digest, "n": size}
            if item.get("t"):
                frame["t"] = item["t"]
            hop.write(encode_frame(frame))

            def failed(why, name=name):
                mine["failed"].setdefault(name, why)

            left = size
            for block in read_segments(segments, not packed, failed):
                if hop.out is None:
                    break
                hop.write(block)
                if hasher is not None:
                    hasher.update(block)
                if keep is not None:
                    keep.write(block)
                left -= len(block)
                mine["bytes"] += len(block)
                now = time.monotonic()
                if rate and mine["bytes"] / rate > now - started:
                    time.sleep(min(1.0, mine["bytes"] / rate - (now - started)))
                if not to_stdout and now - last >= PROGRESS_EVERY_S:
                    sys.stdout.write(json_line({"progress": mine["bytes"]}))
                    sys.stdout.flush()
                    last = now
            if hasher is not None and not left:
                trailer = {"h": hasher.hexdigest()}
                if name in mine["failed"]:
                    trailer["h"] = "0" * 64  # a short read: make sure it does not verify
                hop.write(encode_frame(trailer))
            if keep is not None:
                problem = None if left or name in mine["failed"] else keep.commit()
                keep.abort()
                if not left and problem is None and name not in mine["failed"]:
                    mine["stored"].append(digest)
        if hop.out is not None:
            hop.write(END_FRAME)
    finally:
        downstream = hop.finish()
        if not to_stdout:
            revoke(data_dir, transfer_id)
    mine["error"] = hop.error
    doc = {"schema": SCHEMA, "seconds": round(time.monotonic() - started, 6)}
    doc["hops"] = [mine, *downstream]
    if to_stdout:
        sys.stderr.write(json_line(doc))
    else:
        sys.stdout.write(json_line(doc))
    return 0
