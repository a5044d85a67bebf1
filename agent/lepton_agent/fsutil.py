"""File helpers shared by jobs, chunks, refs and transfers: private atomic JSON records,
locks, mkdir -p with the user's umask, fsync, free space.

USER_UMASK is the umask the agent was started with (cli.main records it; the agent's own is
077): jobs and copied directories get it back. Read it as ``fsutil.USER_UMASK``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

from .common import json_line  # not wire: the probe path imports this module


def default_data_dir():
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = xdg if os.path.isabs(xdg) else os.path.expanduser("~/.local/share")
    return os.path.join(base, "leptonctl")


USER_UMASK = 0o022  # the umask the agent was started with (main() records it): jobs get it back


def read_file_bounded(path, limit):
    """The bytes of path, read whole, or None when it is larger than limit.  The size is
    checked first: ``read(limit)`` would allocate the whole limit even for a small file.
    OSError (a missing file, ...) is the caller's."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            return None
        data = fh.read(size + 1)  # one byte more: a file that grew meanwhile is seen
    return data if len(data) <= limit else None


def read_json(path):
    """The JSON object in path (a file the agent wrote: a job's spec or state, a transfer's
    spec), or None if it is missing, not a JSON object, or larger than a message may be.
    Read whole: a spec cut at some buffer size would read as missing."""
    from .wire import MAX_MESSAGE_BYTES

    try:
        data = read_file_bounded(path, MAX_MESSAGE_BYTES)
    except (OSError, ValueError):
        return None
    if data is None:
        return None
    try:
        doc = json.loads(data.decode("utf-8"))
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def write_json_atomic(path, doc):
    """Write doc to a temp file in the same dir, fsync it, rename it over path (mode 0600)."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json_line(doc))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path))  # make the rename itself durable


def open_locked(path, flags, wait_s=0.0):
    """An fd of path holding an exclusive flock, or None if another process holds it (after
    trying for wait_s). Raises OSError when path cannot be opened."""
    import fcntl

    fd = os.open(path, flags, 0o600)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:  # someone else holds it
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.02)
        except OSError:  # no locking here at all (e.g. ENOLCK on NFS): say so, do not guess
            os.close(fd)
            raise


def lock_held(path):
    """Whether a live process holds the flock on path (a missing file is not held). Opened
    read-write: NFS refuses an exclusive flock on a read-only fd (EBADF), which would read as
    "nobody holds it" and make a running job look LOST."""
    try:
        fd = open_locked(path, os.O_RDWR)
    except OSError:
        return False
    if fd is None:
        return True
    os.close(fd)
    return False


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


IO_BLOCK = 1 << 20


def existing_parent(path):
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def free_bytes(path):
    st = os.statvfs(existing_parent(path))
    return st.f_bavail * st.f_frsize


def make_dirs(path):
    """mkdir -p with the user's umask (the agent's own is 077): the directories a copy
    creates get 0o777 & ~umask, as mkdir -p in the user's shell would make them."""
    missing = []
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        missing.append(path)
        path = os.path.dirname(path)
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not os.path.isdir(path):
                raise
            continue
        os.chmod(path, 0o777 & ~USER_UMASK)


def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def real_dir(path, create):
    """path as a directory we may use: created 0700 if asked, never a symlink."""
    import stat

    from .wire import BadRequest

    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise BadRequest("%s is not a directory (a symlink is refused)" % path)
    return path
