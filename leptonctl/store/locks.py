"""Store-wide locks of a SQLite store: ``flock`` on a file next to the database.

A lock file covers every process on the machines that see the file; closing the
descriptor (or the process dying) releases it.  The file is opened with
``O_NOFOLLOW``: a planted symlink is refused, not followed.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from leptonctl.errors import StateError


@contextmanager
def file_lock(path: Path, *, shared: bool = False, wait: bool = True) -> Iterator[bool]:
    """Hold ``flock`` on ``path`` (created 0600): yields True while held, or False at once
    when ``wait`` is off and another process holds it."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateError(f"cannot open the lock file {path}: {exc}") from exc
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, mode if wait else mode | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock
