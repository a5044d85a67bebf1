"""Datasets on a host: scan a tree into chunk entries, materialize a manifest from local chunks,
path-info.
"""

from __future__ import annotations

import os

from .chunks import chunk_path, hash_range
from .files import DestTree, check_dest, first_link_above, is_file_at, open_nofollow
from .fsutil import IO_BLOCK, free_bytes, open_locked
from .packing import PackedScan, manifest_entries, manifest_hashes
from .sysinfo import read_text
from .wire import SCHEMA, BadRequest


def path_info(paths):
    """What each absolute path is ("dir", "file", "other", "none"; symlinks followed, as cp
    does), its permission bits (None when there is nothing), and the free bytes of the
    filesystem that holds, or would hold, it."""
    if not isinstance(paths, list) or not all(isinstance(p, str) and p.startswith("/")
                                              for p in paths):  # fmt: skip
        raise BadRequest("paths must be a list of absolute paths")
    infos = []
    for path in paths:
        kind = "dir" if os.path.isdir(path) else "file" if os.path.isfile(path) else None
        kind = kind or ("other" if os.path.lexists(path) else "none")
        mode = os.stat(path).st_mode & 0o7777 if kind in ("dir", "file") else None
        infos.append({"path": path, "kind": kind, "mode": mode, "free_bytes": free_bytes(path)})
    return {"schema": SCHEMA, "paths": infos}


def scan_tree(path, chunk_size, hashed=True, pack=False):
    """Manifest of a local file or tree: {"kind", "entries": [{"path", "type", "mode", "size",
    "mtime_ns", "chunks": [[hash, size]...], "target"}]}. Paths are relative POSIX paths ("" =
    the file). With hashed false nothing is read: chunks are [null, size] (a copy that hashes
    while it sends). With pack (and hashed) the reply is a packed format-2 manifest (see
    packing.py): small files share chunks."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        raise BadRequest("no such file or directory: %s" % path)
    if not isinstance(chunk_size, int) or chunk_size < 4096:
        raise BadRequest("chunk_size must be an integer >= 4096")
    packed = PackedScan(chunk_size) if pack and hashed else None
    if os.path.isfile(path):
        if packed is not None:
            packed.add_file(path, "")
            return dict(packed.finish("file"), schema=SCHEMA)
        entry = scan_file(path, "", chunk_size, hashed)
        return {"schema": SCHEMA, "kind": "file", "entries": [entry]}
    entries = []
    for top, dirs, files in os.walk(path):
        dirs.sort()
        rel_top = os.path.relpath(top, path)
        rel_top = "" if rel_top == "." else rel_top
        if rel_top:
            mode = os.stat(top).st_mode & 0o7777
            if packed is not None:
                packed.add_dir(rel_top, mode)
            else:
                entries.append({"path": rel_top, "type": "dir", "mode": mode, "size": 0,
                                "chunks": [], "target": None})  # fmt: skip
        for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(top, d))]):
            full, rel = os.path.join(top, name), os.path.join(rel_top, name)
            if os.path.islink(full):
                if packed is not None:
                    packed.add_link(rel, os.readlink(full))
                    continue
                entries.append({"path": rel, "type": "symlink", "mode": 0o777, "size": 0,
                                "chunks": [], "target": os.readlink(full)})  # fmt: skip
            elif os.path.isfile(full):
                if packed is not None:
                    packed.add_file(full, rel)
                    continue
                entries.append(scan_file(full, rel, chunk_size, hashed))
    if packed is not None:
        return dict(packed.finish("dir"), schema=SCHEMA)
    return {"schema": SCHEMA, "kind": "dir", "entries": entries}


def scan_file(full, rel, chunk_size, hashed=True):
    st = os.stat(full)
    chunks, offset = [], 0
    while offset < st.st_size:
        want = min(chunk_size, st.st_size - offset)
        digest, got = hash_range(full, offset, want) if hashed else (None, want)
        if not got:
            break
        chunks.append([digest, got])
        offset += got
    return {"path": rel, "type": "file", "mode": st.st_mode & 0o7777, "size": st.st_size,
            "mtime_ns": st.st_mtime_ns, "chunks": chunks, "target": None}  # fmt: skip


def entry_path(dest, kind, rel):
    if rel == "" and kind in ("file", "dir"):  # the file, or the top directory
        return dest
    if not isinstance(rel, str) or not rel or rel.startswith("/") or ".." in rel.split("/"):
        raise BadRequest("manifest path escapes the destination: %r" % (rel,))
    return os.path.join(dest, rel)


def check_manifest_entries(kind, entries):
    """Refuse a manifest with an entry under one of its own symbolic links (sub -> /etc, then
    sub/x): built, it would write outside the dataset. entries: manifest_entries tuples."""
    links = {os.path.normpath(e[0] or "") for e in entries if e[1] == "symlink"}
    for entry in entries:
        path = entry[0]
        above = first_link_above(os.path.normpath(path or ""), links) if links else None
        if kind == "dir" and above is not None:
            raise BadRequest("manifest path %r is under its symbolic link %r" % (path, above))


def materialize(data_dir, dest, manifest, label=None):
    """Build a dataset at dest from the chunks stored here. Every file is a copy of its chunks
    (copy_file_range: a reflink where the filesystem can), never a hard link: a job that writes
    to its input cannot change a chunk. Nothing is written unless every chunk is here; it is
    built next to dest and renamed into place; nothing under dest's parent is reached through a
    symbolic link (see DestTree). A relative dest is under the data dir. dest is only ever
    replaced when a sidecar (.NAME.lepton-dataset, a regular file of this user) says leptonctl
    made it: never an operator's files."""
    import shutil

    if isinstance(dest, str) and dest and not os.path.isabs(dest):
        dest = os.path.join(data_dir, dest)
    dest = check_dest(dest)
    kind, entries = manifest.get("kind"), manifest_entries(manifest)
    check_manifest_entries(kind, entries)
    label = str(label or "")
    parent, name = os.path.dirname(dest), os.path.basename(dest)
    sidecar = os.path.join(parent, ".%s.lepton-dataset" % name)
    reused = {"schema": SCHEMA, "done": True, "missing": [], "path": dest, "reused": True}
    if built_here(dest, sidecar, label):
        return reused
    needed = manifest_hashes(manifest)
    missing = sorted(h for h in needed if not os.path.exists(chunk_path(data_dir, h)))
    if missing:
        return {"schema": SCHEMA, "done": False, "missing": missing, "path": dest}
    os.makedirs(parent, mode=0o755, exist_ok=True)
    # Hosts that share this directory (an NFS home) build one dataset at a time: the second
    # finds the first one's tree and uses it, never replacing a tree a job may be reading.
    lock = lock_build(data_dir, parent, name)
    if built_here(dest, sidecar, label):
        release(lock)
        return reused
    tree = DestTree(parent)
    unique = "%s.%d.%s" % (os.uname().nodename, os.getpid(), os.urandom(4).hex())
    build = os.path.join(parent, ".%s.lepton-build.%s" % (name, unique))
    copied, chunks = 0, OpenChunks(data_dir)
    try:
        if kind == "dir":
            os.mkdir(build, 0o755)
        for path, type_, mode, _, pieces, link in entries:
            target = entry_path(build, kind, path or "")
            if type_ == "dir":
                os.fchmod(tree.dir_fd(tree.rel(target)), mode & 0o7777)
            elif type_ == "symlink":
                where, base = tree.where(target)
                os.symlink(link, base, dir_fd=where)
            else:
                concatenate(data_dir, pieces, tree.where(target), mode, chunks)
                copied += 1
        sync_tree(tree.dir_fd(""))  # one sync for the whole tree, not one per file
        fd = open_nofollow(tree.dir_fd(""), os.path.basename(sidecar),
                           os.O_WRONLY | os.O_CREAT | os.O_TRUNC)  # fmt: skip
        with os.fdopen(fd, "w") as fh:
            fh.write(label + "\n")
        if os.path.isdir(dest) and not os.path.islink(dest):
            shutil.rmtree(dest)
        elif os.path.lexists(dest):
            os.unlink(dest)
        os.replace(build, dest)
    finally:
        chunks.close()
        tree.close()
        release(lock)
        if os.path.lexists(build):
            shutil.rmtree(build, ignore_errors=True) if os.path.isdir(build) else os.unlink(build)
    return {"schema": SCHEMA, "done": True, "missing": [], "path": dest, "copied": copied}


MATERIALIZE_WAIT_S = 3600.0  # how long a host waits for another one building the same dest


def built_here(dest, sidecar, label):
    """Whether dest is leptonctl's build of this label (raises for a dest that is not ours)."""
    ours = is_file_at(None, sidecar) and os.lstat(sidecar).st_uid == os.getuid()
    if os.path.lexists(dest) and not ours:
        raise BadRequest("%s exists and was not made by leptonctl: not replacing it" % dest)
    return bool(ours and os.path.lexists(dest) and label
                and (read_text(sidecar) or "").strip() == label)  # fmt: skip


def lock_build(data_dir, parent, name):
    """The flock on building parent/name: a file DATA/locks/build-<key>, the key made of the
    parent's inode number and the name (the same from every host, wherever each mounts the
    directory). None where the filesystem has no locks."""
    import errno
    import hashlib

    from .fsutil import real_dir

    key = hashlib.sha256(("%d/%s" % (os.stat(parent).st_ino, name)).encode()).hexdigest()
    locks = real_dir(os.path.join(data_dir, "locks"), create=True)
    path = os.path.join(locks, "build-" + key[:32])
    try:
        fd = open_locked(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, MATERIALIZE_WAIT_S)
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP):
            return None  # as before locks: one host at a time is then up to the operator
        raise
    if fd is None:
        raise BadRequest("another agent has been building %s for %d s" % (path, MATERIALIZE_WAIT_S))
    return fd


def release(fd):
    if fd is not None:
        os.close(fd)


def sync_tree(fd):
    """Make what was written on fd's filesystem durable: syncfs(2) where libc has it (one
    call for a tree of a million files), else sync(2)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) == 0:
            return
    except (OSError, AttributeError):
        pass
    os.sync()


def concatenate(data_dir, pieces, place, mode, chunks=None):
    """Write the pieces (chunk hash, offset in the chunk, length), in order, as a new file at
    place (directory fd, name); not synced (the caller syncs the tree once). chunks: an
    OpenChunks that keeps the chunk of the last piece open for the next file."""
    where, name = place
    own = chunks is None
    chunks = OpenChunks(data_dir) if own else chunks
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=where)
    try:
        for digest, offset, length in pieces:
            copy_range(chunks.fd(digest), fd, offset, length, digest)
        os.fchmod(fd, mode & 0o7777)  # synced with the whole tree (sync_tree)
    finally:
        os.close(fd)
        if own:
            chunks.close()


class OpenChunks:
    """The chunk file read last, kept open: the files of one pack follow each other."""

    def __init__(self, data_dir):
        self.data_dir, self.digest, self.open = data_dir, None, None

    def fd(self, digest):
        if digest != self.digest:
            self.close()
            self.open = os.open(chunk_path(self.data_dir, digest), os.O_RDONLY)
            self.digest = digest
        return self.open

    def close(self):
        if self.open is not None:
            os.close(self.open)
        self.digest, self.open = None, None


def copy_range(src, fd, offset, length, digest):
    """length bytes of src from offset to fd at its position (copy_file_range: a reflink
    where the filesystem can)."""
    copy = getattr(os, "copy_file_range", None)
    left = length
    while left:
        try:
            got = copy(src, fd, left, offset) if copy else 0
        except OSError:
            got, copy = 0, None
        if not got:
            block = os.pread(src, min(left, IO_BLOCK), offset)
            if not block:
                raise OSError("chunk %s is shorter than its manifest says" % digest)
            view = memoryview(block)
            while view:
                view = view[os.write(fd, view) :]
            got = len(block)
        left -= got
        offset += got
