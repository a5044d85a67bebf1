"""The chunk store: DATA/chunks/<2 hex>/<sha256>, verified, read-only, written via
DATA/chunks/.tmp.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time

from .fsutil import IO_BLOCK, file_size, free_bytes
from .storage import try_storage_id
from .wire import HASH_PATTERN, MIB, SCHEMA, BadRequest, check_hash


# DATA/chunks/<first two hex digits>/<sha256>: one verified chunk, read-only (0400). A chunk is
# written under DATA/chunks/.tmp/ and renamed into place only after its hash matched and its
# bytes were fsync'ed, so a crash never leaves a half chunk under a final name. Identical chunks
# are stored once per host (the name is the content).
def chunk_path(data_dir, digest):
    return os.path.join(data_dir, "chunks", digest[:2], digest)


def stored_chunks(data_dir):
    """Every chunk on this host: hash -> size."""
    found = {}
    root = os.path.join(data_dir, "chunks")
    for sub in sorted(os.listdir(root)) if os.path.isdir(root) else ():
        if len(sub) != 2:
            continue
        for name in os.listdir(os.path.join(root, sub)):
            if re.fullmatch(HASH_PATTERN, name):
                found[name] = file_size(os.path.join(root, sub, name))
    return found


def chunk_have(data_dir, hashes):
    """Which chunks are here (no hashing: a chunk is verified when it is written)."""
    if hashes is None:
        present = stored_chunks(data_dir)
    else:
        present = {}
        for digest in hashes:
            with contextlib.suppress(OSError):
                present[digest] = os.stat(chunk_path(data_dir, digest)).st_size
    used = sum(present.values()) if hashes is None else None
    storage = try_storage_id(data_dir)[0]  # hosts that share this directory say the same
    return {"schema": SCHEMA, "present": present, "free_bytes": free_bytes(data_dir),
            "used_bytes": used, "storage": storage}  # fmt: skip


def hash_range(path, offset=0, length=None):
    """sha256 hex of length bytes of path from offset (to the end when length is None)."""
    import hashlib

    digest, total = hashlib.sha256(), 0
    with open(path, "rb", buffering=0) as fh:
        fh.seek(offset)
        buf = bytearray(IO_BLOCK)
        view = memoryview(buf)
        while length is None or total < length:
            want = IO_BLOCK if length is None else min(IO_BLOCK, length - total)
            got = fh.readinto(view[:want])
            if not got:
                break
            digest.update(view[:got])
            total += got
    return digest.hexdigest(), total


def chunk_verify(data_dir, hashes):
    """Re-hash the named chunks: which are ok, missing or corrupt."""
    started = time.monotonic()
    ok, missing, corrupt, hashed = [], [], [], 0
    for digest in hashes:
        path = chunk_path(data_dir, digest)
        try:
            actual, size = hash_range(path)
        except FileNotFoundError:
            missing.append(digest)
            continue
        except OSError as exc:
            corrupt.append(digest)
            sys.stderr.write("%s: %s\n" % (digest, exc))
            continue
        hashed += size
        (ok if actual == digest else corrupt).append(digest)
    return {"schema": SCHEMA, "ok": ok, "missing": missing, "corrupt": corrupt, "bytes": hashed,
            "seconds": round(time.monotonic() - started, 6)}  # fmt: skip


def chunk_rm(data_dir, hashes):
    removed, freed = [], 0
    for digest in hashes:
        path = chunk_path(data_dir, digest)
        try:
            size = os.stat(path).st_size
            os.unlink(path)
        except FileNotFoundError:
            continue
        removed.append(digest)
        freed += size
    return {"schema": SCHEMA, "removed": removed, "freed_bytes": freed}


class ChunkSink:
    """Receives one chunk's bytes into a temp file; commit() renames it into the store."""

    def __init__(self, data_dir, digest):
        import hashlib

        self.final = chunk_path(data_dir, digest)
        self.digest = digest
        tmp_dir = os.path.join(data_dir, "chunks", ".tmp")
        os.makedirs(tmp_dir, mode=0o700, exist_ok=True)
        name = "%s.%d.%s" % (digest[:16], os.getpid(), os.urandom(4).hex())
        self.tmp = os.path.join(tmp_dir, name)
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.hash = hashlib.sha256()

    def write(self, block):
        self.hash.update(block)
        view = memoryview(block)
        while view:
            view = view[os.write(self.fd, view) :]

    def check(self):
        """None if the bytes hash to the chunk's name, else why not (and the temp is gone)."""
        if self.hash.hexdigest() == self.digest:
            write_behind(self.fd, 0, 0)
            return None
        self.abort()
        return "hash mismatch: received bytes hash to %s" % self.hash.hexdigest()

    def seal(self):
        """fsync, make read-only, rename into the store (after check())."""
        try:
            os.fsync(self.fd)
            os.fchmod(self.fd, 0o400)
            os.makedirs(os.path.dirname(self.final), mode=0o700, exist_ok=True)
            os.replace(self.tmp, self.final)
            self.tmp = None
        finally:
            self.abort()

    def commit(self):
        """check() then seal(): None when the chunk is in the store, else why not."""
        problem = self.check()
        if problem is None:
            self.seal()
        return problem

    def abort(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            self.tmp = None


def widen_pipe(fd):
    """1 MiB pipe buffers between the agent and ssh: fewer wake-ups per megabyte moved."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), IO_BLOCK)
    except OSError:
        pass  # not a pipe, or above /proc/sys/fs/pipe-max-size: the default works too


def write_behind(fd, offset, length):
    """Start writing these bytes back to disk now, without waiting (the later fsync then
    finds them clean) and without keeping them cached: a transfer streams, it does not fill
    the page cache with data nobody reads back."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        with contextlib.suppress(OSError):
            advise(fd, offset, length, os.POSIX_FADV_DONTNEED)


# Durability is paid per batch, not per chunk: verified chunks wait (open, unsynced) until
# SYNC_BATCH_BYTES of them are pending, then they are synced and made visible together; the
# kernel has written most of them back by then. A crash loses at most one batch of work,
# never correctness: nothing counts as stored before its bytes are on disk.
SYNC_BATCH_BYTES = 256 * MIB


SYNC_BATCH_FILES = 64


class ChunkBatch:
    def __init__(self):
        self.pending, self.bytes = [], 0

    def add(self, sink, size):
        """Queue a checked sink; the digests sealed now (when the batch was full)."""
        self.pending.append(sink)
        self.bytes += size
        full = self.bytes >= SYNC_BATCH_BYTES or len(self.pending) >= SYNC_BATCH_FILES
        return self.flush() if full else []

    def flush(self):
        sealed, pending = [], self.pending
        self.pending, self.bytes = [], 0
        for sink in pending:
            sink.seal()
            sealed.append(sink.digest)
        return sealed

    def abort(self):
        for sink in self.pending:
            sink.abort()
        self.pending, self.bytes = [], 0


def chunk_import(data_dir, items):
    """Copy file ranges of this host into its own chunk store, verifying each hash. An item
    is one range ({"h", "n", "path", "o"}) or the segments of a pack ({"h", "n", "s":
    [[path, offset, length], ...]}, files opened without following a symbolic link)."""
    if not isinstance(items, list):
        raise BadRequest("items must be a list")
    stored, failed = [], {}
    for item in items:
        digest, size = check_hash(item.get("h")), int(item.get("n", -1))
        sink = ChunkSink(data_dir, digest)
        try:
            left = size
            follow = item.get("s") is None  # one range: its path as given, as before packs
            for path, offset, length in import_segments(item):
                left -= copy_segment(path, offset, min(length, left), sink, follow)
            problem = sink.commit() if not left else "the file is shorter than expected"
        except (OSError, KeyError, ValueError, TypeError) as exc:
            problem = "cannot read: %s" % exc
        finally:
            sink.abort()
        if problem:
            failed[digest] = problem
        else:
            stored.append(digest)
    return {"schema": SCHEMA, "stored": stored, "failed": failed}


def import_segments(item):
    """(path, offset, length) ranges of a chunk-import item, in order."""
    if item.get("s") is not None:
        return [(str(p), int(o), int(n)) for p, o, n in item["s"]]
    return [(item["path"], int(item.get("o") or 0), int(item.get("n", -1)))]


def copy_segment(path, offset, length, sink, follow=False):
    """Copy length bytes of path from offset into sink: the bytes copied (fewer: it is
    shorter)."""
    fd = os.open(path, os.O_RDONLY | (0 if follow else os.O_NOFOLLOW))
    done = 0
    try:
        while done < length:
            block = os.pread(fd, min(length - done, IO_BLOCK), offset + done)
            if not block:
                break
            sink.write(block)
            done += len(block)
    finally:
        os.close(fd)
    return done
