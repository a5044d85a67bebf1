"""Files-mode destinations: a transfer (or file-status) writing into a tree without following
links it did not create.
"""

from __future__ import annotations

import contextlib
import os

from . import fsutil
from .chunks import SYNC_BATCH_BYTES, hash_range, write_behind
from .fsutil import make_dirs
from .wire import SCHEMA, BadRequest


def check_dest(path):
    if not isinstance(path, str) or not os.path.isabs(path):
        raise BadRequest("destination must be an absolute path, got %r" % (path,))
    return os.path.normpath(path)


# Files mode writes where the operator said, into directories that others may have touched: a
# symbolic link planted at DEST/sub must never carry a write, chmod or rename elsewhere. The
# destination's parent is opened as named (the operator chose it, links and all); below it every
# directory is opened O_NOFOLLOW relative to its parent's fd, and every file relative to its
# directory's fd.
PART, JOURNAL = ".lepton-part", ".lepton-part.done"


DEST_TREE_FDS = 64


PART_FDS = 256


# A frame of at most this many bytes that holds whole files is kept in memory until its hash
# checks out, then its files are written and renamed into place (see commit_whole): a packed
# frame of small files costs no journal, no part file left open and no sync per file.
BUFFERED_FRAME_BYTES = 64 * 1024 * 1024


def open_subdir(parent, name, create, shown):
    """fd of directory name in directory fd parent, made when missing (None when missing and
    create is false). A symbolic link there is replaced by a directory (only the link goes, as
    rsync does) or, without create, treated as missing: never followed."""
    import errno
    import stat

    for _ in range(3):
        try:
            return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                return None
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            if not stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                raise OSError(errno.ENOTDIR, "exists and is not a directory", shown) from None
            if not create:
                return None
            os.unlink(name, dir_fd=parent)
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:
            continue
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
        os.fchmod(fd, 0o777 & ~fsutil.USER_UMASK)  # as mkdir -p in the user's shell (see make_dirs)
        return fd
    raise OSError(errno.EAGAIN, "cannot make a directory (it keeps changing)", shown)


def open_nofollow(parent, name, flags):
    """os.open of our own file name (a part file, journal, sidecar, empty file) in directory fd
    parent: a symbolic link in its place is removed, never followed."""
    import errno

    try:
        return os.open(name, flags | os.O_NOFOLLOW, 0o600, dir_fd=parent)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
    os.unlink(name, dir_fd=parent)
    return os.open(name, flags | os.O_NOFOLLOW, 0o600, dir_fd=parent)


def sync_filesystem(fd):
    """Write back everything of the filesystem that holds fd (syncfs(2); sync(2) where the C
    library has no syncfs)."""
    try:
        import ctypes

        if ctypes.CDLL(None, use_errno=True).syncfs(fd) == 0:
            return
    except (OSError, AttributeError):
        pass
    os.sync()


def create_fresh(parent, name):
    """A new file of ours in directory fd parent, write-only: whatever was at name (a link,
    a leftover, a hard link to some other file) is unlinked first, never written through."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        return os.open(name, flags, 0o600, dir_fd=parent)
    except FileExistsError:
        os.unlink(name, dir_fd=parent)
    return os.open(name, flags, 0o600, dir_fd=parent)


def lstat_at(parent, name):
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None


def is_file_at(parent, name):
    import stat

    st = lstat_at(parent, name)
    return st is not None and stat.S_ISREG(st.st_mode)


def first_link_above(path, links):
    """The nearest ancestor of a normalised path that is in links, or None."""
    parent = os.path.dirname(path)
    while parent and parent not in links:
        up = os.path.dirname(parent)
        if up == parent:
            return None
        parent = up
    return parent or None


def dest_paths_base(paths, dest=None):
    """Check the absolute paths of a files-mode spec; the directory they are written under
    without following links: dest's parent, or the parent of what they have in common."""
    for path in paths:
        if not isinstance(path, str) or not os.path.isabs(path) or os.path.normpath(path) != path:
            raise BadRequest("a destination path must be absolute and normalised, got %r" % (path,))
        if path == "/":
            raise BadRequest("a destination cannot be /")
    if dest is not None:
        dest = check_dest(dest)
        outside = [p for p in paths if p != dest and not p.startswith(dest.rstrip("/") + "/")]
        if outside:
            raise BadRequest("%r is not under the destination %s" % (outside[0], dest))
        return os.path.dirname(dest)
    return os.path.commonpath([os.path.dirname(p) for p in paths]) if paths else "/"


class DestTree:
    """The directories under base, opened as described above. The most recently used
    DEST_TREE_FDS stay open; one closed since is opened again from base, with the same checks.
    An fd it returns is valid until the next dir_fd/where call."""

    def __init__(self, base, create=True):
        import collections

        self.base, self.create, self.fds = base, create, collections.OrderedDict()

    def rel(self, path):
        if path.startswith(self.base) and path[len(self.base) : len(self.base) + 1] == "/":
            rel = path[len(self.base) + 1 :]  # the common case, without relpath's cost
            if rel and "/./" not in "/" + rel + "/" and "/../" not in "/" + rel + "/":
                return rel
        rel = os.path.relpath(path, self.base)
        if rel == ".." or rel.startswith("../") or os.path.isabs(rel):
            raise BadRequest("%s is not under %s" % (path, self.base))
        return "" if rel == "." else rel

    def dir_fd(self, rel):
        """fd of directory rel ("" = base); None where it is missing (or a link) and the tree
        does not create."""
        if rel in self.fds:
            self.fds.move_to_end(rel)
            return self.fds[rel]
        if rel == "":
            if self.create:
                make_dirs(self.base)
            try:
                fd = os.open(self.base, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                if self.create:
                    raise
                fd = None
        else:
            parent = self.dir_fd(os.path.dirname(rel))
            shown = os.path.join(self.base, rel)
            name = os.path.basename(rel)
            fd = None if parent is None else open_subdir(parent, name, self.create, shown)
        self.fds[rel] = fd
        while len(self.fds) > DEST_TREE_FDS:
            old = self.fds.popitem(last=False)[1]
            if old is not None:
                os.close(old)
        return fd

    def where(self, path):
        """(fd of path's directory or None, path's name)."""
        rel = self.rel(path)
        if not rel:
            raise BadRequest("%s cannot be written under itself" % path)
        return self.dir_fd(os.path.dirname(rel)), os.path.basename(rel)

    def close(self):
        for fd in self.fds.values():
            if fd is not None:
                os.close(fd)
        self.fds.clear()


class FilesSink:
    """Files mode: frames land at (file, offset) in DEST.lepton-part files as they arrive. A
    journal next to each part file lists the verified chunks ("offset hash" lines, appended
    after the bytes are synced), so a rerun sends only what is missing; a complete file is
    renamed into place with its mode. Nothing is reached through a symbolic link (see DestTree),
    and a spec with a path under one of its own links is refused."""

    def __init__(self, spec):
        self.files = spec.get("files") or []
        dirs, links = spec.get("dirs") or [], spec.get("links") or []
        paths = [entry.get("path") for entry in self.files + dirs + links]
        self.tree = DestTree(dest_paths_base(paths, spec.get("dest")))
        link_paths = {entry["path"] for entry in links}
        for path in paths:
            above = first_link_above(path, link_paths)
            if above is not None:
                raise BadRequest("%s is under %s, a symbolic link of the same copy" % (path, above))
        import collections

        self.fds, self.opened, self.done = collections.OrderedDict(), set(), {}
        self.pending, self.pending_bytes = [], 0
        self.whole_done = set()  # files committed whole (commit_whole)
        for entry in dirs:
            os.fchmod(self.tree.dir_fd(self.tree.rel(entry["path"])), entry["mode"] & 0o7777)
        for entry in links:
            parent, name = self.tree.where(entry["path"])
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=parent)
            os.symlink(entry["target"], name, dir_fd=parent)

    def check_targets(self, targets, size):
        """A frame's targets, [file index, offset] (the whole frame there) or [file index, file
        offset, frame offset, length] (a slice of it): inside the frame and the spec's files,
        or ValueError. Returned as (index, file offset, frame offset, length) tuples."""
        checked = []
        for target in targets or []:
            good = isinstance(target, list) and len(target) in (2, 4)
            good = good and all(type(v) is int and v >= 0 for v in target)
            if good:
                index, offset = target[0], target[1]
                at, length = (target[2], target[3]) if len(target) == 4 else (0, size)
                good = index < len(self.files) and at + length <= size
                good = good and offset + length <= self.files[index]["size"]
            if not good:
                raise ValueError("a frame target %.100r is not inside the files" % (target,))
            checked.append((index, offset, at, length))
        return checked

    def whole(self, target):
        """The target is all of a (non-empty) file."""
        index, offset, _, length = target
        return offset == 0 and 0 < length == self.files[index]["size"]

    def buffers(self, targets, size):
        """Keep the frame in memory until it is verified, then write it: a small frame that
        holds whole files (they are committed together, without part files or journals)."""
        return size <= BUFFERED_FRAME_BYTES and any(self.whole(t) for t in targets)

    def place(self, index):
        """(directory fd, name) of file index: the fd is good until the next place()."""
        return self.tree.where(self.files[index]["path"])

    def part(self, index):
        """fd of file index's part file, good until the next part(): the PART_FDS most recently
        used stay open (a tree of many files must not run out of file descriptors)."""
        if index in self.fds:
            self.fds.move_to_end(index)
            return self.fds[index]
        parent, name = self.place(index)
        if index not in self.opened:
            self.opened.add(index)
            if journal_stale(self.files[index], parent, name):  # a copy of another version
                for leftover in (name + PART, name + JOURNAL):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(leftover, dir_fd=parent)
        fd = self.fds[index] = open_nofollow(parent, name + PART, os.O_RDWR | os.O_CREAT)
        while len(self.fds) > PART_FDS:
            os.close(self.fds.popitem(last=False)[1])
        return fd

    def verified(self, index):
        """offset -> hashes that the journal of file ``index`` lists (read once)."""
        if index not in self.done:
            self.part(index)
            done = {}
            for offset, digest in journal_entries(*self.place(index)):
                done.setdefault(offset, set()).add(digest)
            self.done[index] = done
        return self.done[index]

    def write(self, targets, position, block, digest):
        """Unverified bytes at their places (nothing counts until journaled); a place the
        journal already lists as verified is never written again (a streamed frame, whose
        hash comes after its bytes, is matched by offset: its journal is of this source)."""
        end = position + len(block)
        for index, offset, at, length in targets:
            lo, hi = max(position, at), min(end, at + length)
            if lo >= hi:
                continue
            hashes = self.verified(index).get(offset)
            if hashes and (digest is None or digest in hashes):
                continue
            fd, view = self.part(index), memoryview(block)[lo - position : hi - position]
            where = offset + lo - at
            while view:
                n = os.pwrite(fd, view, where)
                view, where = view[n:], where + n

    def commit(self, targets, digest, size):
        """A verified frame: journaled once its bytes are synced (in batches, see above)."""
        for index, offset, _, length in targets:
            write_behind(self.part(index), offset, length)
        self.pending += [(index, offset, digest) for index, offset, _, _ in targets]
        self.pending_bytes += sum(t[3] for t in targets)
        if self.pending_bytes >= SYNC_BATCH_BYTES:
            self.flush()

    def write_verified(self, targets, frame, digest):
        """A buffered frame (see buffers) whose hash checked out: its whole files are
        committed together, any other slices are written and journaled as streamed ones."""
        view = memoryview(frame)
        rest = [t for t in targets if not self.whole(t)]
        if rest:
            self.write(rest, 0, view, digest)
            self.commit(rest, digest, len(frame))
        self.commit_whole([(t[0], view[t[2] : t[2] + t[3]]) for t in targets if self.whole(t)])

    def commit_whole(self, pieces):
        """Whole files ((index, bytes), ...) into place: each written to a fresh part file with
        its mode and mtime, then renamed over its name. Nothing is synced per file (as rsync,
        tar and cp(1)): finish() syncs the destination's filesystem once, before any file is
        reported complete. A crash before that leaves such a file short (ext4 and XFS allocate
        its blocks when they write it back), never with the source's size and wrong bytes, so
        the quick check of the next copy sends it again."""
        for index, data in pieces:
            if index in self.fds:  # a part file of an earlier, chunked attempt
                os.close(self.fds.pop(index))
            parent, name = self.place(index)
            fd = create_fresh(parent, name + PART)
            try:
                while data:
                    data = data[os.write(fd, data) :]
                entry = self.files[index]
                os.fchmod(fd, entry["mode"] & 0o7777)
                if entry.get("mtime_ns") is not None:  # the source's: cp's quick check
                    os.utime(fd, ns=(entry["mtime_ns"], entry["mtime_ns"]))
            finally:
                os.close(fd)
            os.rename(name + PART, name, src_dir_fd=parent, dst_dir_fd=parent)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name + JOURNAL, dir_fd=parent)
            self.whole_done.add(index)

    def flush(self):
        for index in sorted({index for index, _, _ in self.pending}):
            os.fdatasync(self.part(index))
        lines = {}
        for index, offset, digest in self.pending:
            lines.setdefault(index, []).append("%d %s\n" % (offset, digest))
        for index in sorted(lines):  # one journal open at a time
            parent, name = self.place(index)
            fd = open_nofollow(parent, name + JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            with os.fdopen(fd, "a") as journal:
                if not os.fstat(fd).st_size:
                    journal.write("# source %s\n" % (self.files[index].get("source_id") or ""))
                journal.write("".join(lines[index]))
        self.pending, self.pending_bytes = [], 0

    def finish(self):
        """Rename every complete file into place; the paths that are complete."""
        self.flush()
        if self.whole_done:
            sync_filesystem(self.tree.dir_fd(""))
        done = []
        for index, entry in enumerate(self.files):
            path = entry["path"]
            if index in self.whole_done:
                done.append(path)
                continue
            parent, name = self.place(index)
            if not is_file_at(parent, name + PART):
                st = lstat_at(parent, name)
                if entry["size"] == 0 and not (is_file_at(parent, name) and not st.st_size):
                    fd = open_nofollow(parent, name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                    os.fchmod(fd, entry["mode"] & 0o7777)
                    if entry.get("mtime_ns") is not None:
                        os.utime(fd, ns=(entry["mtime_ns"], entry["mtime_ns"]))
                    os.close(fd)
                if is_file_at(parent, name):
                    done.append(path)
                continue
            if len(journal_done(entry, parent, name)) < len(entry.get("chunks") or []):
                continue
            fd = self.part(index)
            os.ftruncate(fd, entry["size"])
            os.fsync(fd)
            os.fchmod(fd, entry["mode"] & 0o7777)
            if entry.get("mtime_ns") is not None:  # the source's: a later cp's quick check
                os.utime(fd, ns=(entry["mtime_ns"], entry["mtime_ns"]))
            try:
                os.rename(name + PART, name, src_dir_fd=parent, dst_dir_fd=parent)
                os.unlink(name + JOURNAL, dir_fd=parent)
            except FileNotFoundError:  # a parallel stream finished the same file first
                if not is_file_at(parent, name):
                    raise
            done.append(path)
        self.close()
        return done

    def close(self):
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
        self.tree.close()

    def discard(self, done):
        """Remove the part files and journals of the files not in ``done`` (the disk is
        full: what was written of them goes, so that the space comes back)."""
        for index, entry in enumerate(self.files):
            if entry["path"] not in done and index not in self.whole_done:
                parent, name = self.place(index)
                for leftover in (name + PART, name + JOURNAL):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(leftover, dir_fd=parent)
        self.close()


def out_of_space(error):
    """The error text of a full disk or an exhausted quota."""
    import errno

    return any(os.strerror(code) in (error or "") for code in (errno.ENOSPC, errno.EDQUOT))


def open_at(parent, name):
    """Binary file object of our file name in directory fd parent (None: missing, or a link)."""
    if parent is None:
        return None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=parent)
    except OSError:
        return None
    return os.fdopen(fd, "rb")


def journal_entries(parent, name):
    """The (offset, hash) lines of the journal of file name (none when it is missing)."""
    fh = open_at(parent, name + JOURNAL)
    if fh is None:
        return []
    with fh:
        lines = fh.read().decode("ascii", "replace").splitlines()
    entries = []
    for line in lines:
        offset, _, digest = line.partition(" ")
        if offset.isdigit():
            entries.append((int(offset), digest))
    return entries


def journal_stale(entry, parent, name):
    """The journal was written for another version of the source (size:mtime differs)."""
    fh = open_at(parent, name + JOURNAL)
    if fh is None:
        return False
    with fh:
        first = fh.readline(4096).decode("utf-8", "replace").rstrip("\n")
    source = first[len("# source ") :] if first.startswith("# source ") else ""
    return source != (entry.get("source_id") or "")


def journal_done(entry, parent, name):
    """Offsets of the entry's chunks that its journal lists as verified. A chunk whose
    hash is not known in advance (streamed) counts by offset."""
    if journal_stale(entry, parent, name):
        return []
    done = set(journal_entries(parent, name))
    offsets = {offset for offset, _ in done}
    return [
        c[0]
        for c in entry.get("chunks") or []
        if (c[0], c[2]) in done or (c[2] is None and c[0] in offsets)
    ]


def file_state(entry, tree):
    """Which chunks ([offset, size, hash]) of a files-mode entry are at the destination (a
    path reached through a symbolic link below the tree's base has none)."""
    import stat

    path, chunks = entry["path"], entry.get("chunks") or []
    parent, name = tree.where(path)
    st = lstat_at(parent, name) if parent is not None else None
    if parent is not None and is_file_at(parent, name + PART):
        have = journal_done(entry, parent, name)
    elif st is not None and stat.S_ISREG(st.st_mode) and st.st_size == entry["size"]:
        if any(c[2] is None for c in chunks):  # a streamed copy: size and mtime, like rsync
            have = [c[0] for c in chunks] if st.st_mtime_ns == entry.get("mtime_ns") else []
        else:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=parent)
            try:  # hash_range closes what it opens: a copy of the fd each time
                have = [c[0] for c in chunks if hash_range(os.dup(fd), c[0], c[1])[0] == c[2]]
            finally:
                os.close(fd)
    else:
        have = []
    if not chunks:  # an empty file: there when a regular empty file is
        have, complete = [], st is not None and stat.S_ISREG(st.st_mode) and not st.st_size
    else:
        complete = len(have) == len(chunks)
    return {"path": path, "done": have, "complete": complete}


def file_status(files, dest=None, dirs=None, links=None):
    """file_state of every entry; dest (optional) is the copy's destination: nothing under it
    is reached through a symbolic link (without it: nothing under the files' common parent).
    tree_ok: every directory of dirs is there with its mode, every symlink of links with its
    target (a copy with nothing to send then has nothing to make either)."""
    if not all(isinstance(v, list) for v in (files, dirs or [], links or [])):
        raise BadRequest("files, dirs and links must be lists")
    for entry in (dirs or []) + (links or []):
        if not isinstance(entry, dict):
            raise BadRequest("a dir or link must be an object")
    import gc

    collecting = gc.isenabled()
    gc.disable()  # many small acyclic objects: nothing to collect, much to scan (see cp)
    paths = [entry.get("path") for entry in files + (dirs or []) + (links or [])]
    tree = DestTree(dest_paths_base(paths, dest), create=False)
    try:
        states = [file_state(entry, tree) for entry in files]
        ok = all(dir_ok(entry, tree) for entry in dirs or [])
        ok = ok and all(link_ok(entry, tree) for entry in links or [])
        return {"schema": SCHEMA, "files": states, "tree_ok": ok}
    finally:
        tree.close()
        if collecting:
            gc.enable()


def dir_ok(entry, tree):
    """Directory entry["path"] is there (not through a link) with mode entry["mode"]."""
    fd = tree.dir_fd(tree.rel(entry["path"]))
    return fd is not None and os.fstat(fd).st_mode & 0o7777 == entry.get("mode", -1) & 0o7777


def link_ok(entry, tree):
    """Symbolic link entry["path"] is there and points at entry["target"]."""
    parent, name = tree.where(entry["path"])
    if parent is None:
        return False
    try:
        return os.readlink(name, dir_fd=parent) == entry.get("target")
    except OSError:
        return False
