"""Chunk refs: which chunks each state store needs here (chunk-pin, -unpin, -gc, -drop)."""

from __future__ import annotations

import contextlib
import json
import os
import re

from .chunks import chunk_path, chunk_rm, chunk_verify, stored_chunks
from .fsutil import fsync_dir, open_locked, read_json, real_dir, write_json_atomic
from .wire import (
    HASH_PATTERN,
    SCHEMA,
    BadRequest,
    check_hashes,
    check_ref,
)

# DATA/refs/<store id>/<ref>: which chunks one state store needs on this host. Chunks are shared
# by every state store that uses the host, and each store only knows its own datasets, so a chunk
# is deleted only when no ref file of any store names it. A ref is a JSON file {"schema", "store",
# "name" (e.g. "llama@3"), "hashes"}, private, written atomically. Every change to refs and every
# deletion decision happens under the flock on DATA/refs/.lock (opened O_RDWR: flock on NFS needs
# a writable fd), so a pin racing a gc is safe. The chunks already here when DATA/refs is set up
# (an upgrade) are pinned by the "legacy" ref, which only `chunk-gc` with release_legacy drops.
LEGACY_STORE = "legacy"


LEGACY_REF = "0" * 64


REFS_LOCK_WAIT_S = 300.0


REFS_READY = ".initialized"


def check_pins(values):
    """[{"ref", "name", "hashes"}] of a chunk-pin request."""
    if not isinstance(values, list):
        raise BadRequest("refs must be a list of {ref, name, hashes}")
    pins = []
    for item in values:
        if not isinstance(item, dict):
            raise BadRequest("refs must be a list of {ref, name, hashes}")
        name = item.get("name")
        if not isinstance(name, str) or len(name) > 1024:
            raise BadRequest("a ref's name must be a string of at most 1024 characters")
        hashes = sorted(set(check_hashes(item.get("hashes"))))
        pins.append((check_ref(item.get("ref")), name, hashes))
    return pins


@contextlib.contextmanager
def refs_locked(data_dir):
    """Hold the host's refs lock; on first use, pin the chunks already here as 'legacy'."""
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    root = real_dir(os.path.join(data_dir, "refs"), create=True)
    fd = open_locked(os.path.join(root, ".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW,
                     REFS_LOCK_WAIT_S)  # fmt: skip
    if fd is None:
        raise BadRequest("another process held %s/.lock for %d s" % (root, REFS_LOCK_WAIT_S))
    try:
        ready = os.path.join(root, REFS_READY)
        if not os.path.exists(ready):
            present = sorted(stored_chunks(data_dir))
            if present:
                legacy = real_dir(os.path.join(root, LEGACY_STORE), create=True)
                write_ref(legacy, LEGACY_REF, LEGACY_STORE, "chunks stored before refs", present)
            os.close(os.open(ready, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
            fsync_dir(root)
        yield root
    finally:
        os.close(fd)


def read_ref(path):
    """The hashes a ref file names; BadRequest if it cannot be read (then nothing is deleted:
    a guess could delete what another store needs)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "r") as fh:
            doc = json.loads(fh.read())
        hashes = doc["hashes"]
        if not isinstance(hashes, list) or not all(
            isinstance(h, str) and re.fullmatch(HASH_PATTERN, h) for h in hashes
        ):
            raise ValueError("hashes is not a list of chunk hashes")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadRequest("unreadable ref %s (%s): nothing was deleted" % (path, exc)) from exc
    return set(hashes)


def write_ref(store_dir, ref, store, name, hashes):
    """Write a ref (unless it already says exactly this); True if it changed."""
    path = os.path.join(store_dir, ref)
    doc = {"schema": SCHEMA, "store": store, "name": name, "hashes": list(hashes)}
    if read_json(path) == doc and not os.path.islink(path):
        return False
    write_json_atomic(path, doc)
    return True


def all_refs(root):
    """(store, ref) -> hashes, for every ref file of every store on this host."""
    refs = {}
    for store in sorted(os.listdir(root)):
        if store.startswith("."):
            continue
        store_dir = real_dir(os.path.join(root, store), create=False)
        for name in sorted(os.listdir(store_dir)):
            if re.fullmatch(HASH_PATTERN, name):  # temp files of a write are not refs
                refs[(store, name)] = read_ref(os.path.join(store_dir, name))
    return refs


def named_by(refs, skip=()):
    """Every hash some ref names, leaving out the (store, ref) keys in skip."""
    named = set()
    for key, hashes in refs.items():
        if key not in skip:
            named |= hashes
    return named


def unlink_ref(root, store, ref):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(root, store, ref))
        return True
    return False


def chunk_pin(data_dir, store, pins):
    """Write (or keep) this store's refs; which of their chunks are here, asked under the lock
    (a chunk present now cannot be deleted by anyone before this store unpins it)."""
    with refs_locked(data_dir) as root:
        store_dir = real_dir(os.path.join(root, store), create=True)
        wanted = set()
        for ref, name, hashes in pins:
            write_ref(store_dir, ref, store, name, hashes)
            wanted.update(hashes)
        fsync_dir(store_dir)
        present = {}
        for digest in sorted(wanted):
            with contextlib.suppress(OSError):
                present[digest] = os.stat(chunk_path(data_dir, digest)).st_size
    return {"schema": SCHEMA, "pinned": [p[0] for p in pins], "present": present}


def chunk_unpin(data_dir, store, refs, candidates):
    """Remove this store's refs, then delete their chunks (and the candidates: chunks the store
    stopped using) that no remaining ref of any store names."""
    with refs_locked(data_dir) as root:
        before = all_refs(root)
        doomed = set(candidates)
        for ref in refs:
            doomed |= before.get((store, ref), set())
        gone = [r for r in refs if unlink_ref(root, store, r)]
        fsync_dir(os.path.join(root, store))
        still = named_by(before, skip={(store, r) for r in refs})
        removed = chunk_rm(data_dir, sorted(doomed - still))
        kept = sorted(h for h in doomed & still if os.path.exists(chunk_path(data_dir, h)))
    return {"schema": SCHEMA, "unpinned": gone, "removed": removed["removed"],
            "freed_bytes": removed["freed_bytes"], "kept": kept}  # fmt: skip


def chunk_gc(data_dir, store, keep, release_legacy, check):
    """Drop this store's refs not in keep (and, when asked, the legacy ref), then delete every
    chunk no ref names. Under check, change nothing and say what would go."""
    with refs_locked(data_dir) as root:
        refs = all_refs(root)
        stale = sorted(r for s, r in refs if s == store and r not in keep)
        dropped = {(store, r) for r in stale}
        legacy = refs.get((LEGACY_STORE, LEGACY_REF))
        if release_legacy and legacy is not None:
            dropped.add((LEGACY_STORE, LEGACY_REF))
        present = stored_chunks(data_dir)
        doomed = sorted(set(present) - named_by(refs, skip=dropped))
        if check:
            removed = {"removed": doomed, "freed_bytes": sum(present[h] for h in doomed)}
        else:
            for key in sorted(dropped):
                unlink_ref(root, *key)
            removed = chunk_rm(data_dir, doomed)
        kept_legacy = None
        if legacy is not None and not release_legacy:
            kept_legacy = len(legacy.intersection(present))
    return {"schema": SCHEMA, "stale_refs": stale, "removed": removed["removed"],
            "freed_bytes": removed["freed_bytes"], "legacy": kept_legacy,
            "released_legacy": bool(release_legacy and legacy is not None)}  # fmt: skip


def chunk_drop(data_dir, store, hashes, corrupt, check=False):
    """Delete copies this store no longer wants here. A plain copy is kept while a ref of
    another store (or the legacy ref) names it; a copy said to be corrupt is re-hashed and
    deleted only if it really is (it is useless to every store then): "others" lists the
    deleted ones other stores pin, which the caller should copy back. Under check, nothing
    is deleted: "kept" says which copies other stores hold on to."""
    with refs_locked(data_dir) as root:
        refs = all_refs(root)
        others = named_by({k: v for k, v in refs.items() if k[0] != store})
        if corrupt:
            checked = chunk_verify(data_dir, hashes)
            doomed, intact = checked["corrupt"], checked["ok"]
        else:
            doomed = [h for h in hashes if h not in others]
            intact = [h for h in hashes if h in others]
        removed = {"removed": [], "freed_bytes": 0} if check else chunk_rm(data_dir, doomed)
    return {"schema": SCHEMA, "removed": removed["removed"], "freed_bytes": removed["freed_bytes"],
            "kept": sorted(h for h in intact if os.path.exists(chunk_path(data_dir, h))),
            "others": sorted(h for h in removed["removed"] if h in others)}  # fmt: skip
