"""The data dir's storage identity: a random id stamped into DATA/storage-id on first use
(as an HDFS DataNode stamps its storage ID), and the filesystem the data dir lives on.

Hosts whose data dirs are one directory (an NFS home, a bind mount, a cluster filesystem)
read the same stamp, so the operator can tell that their "copies" are one copy. The stamp
is created O_EXCL|O_NOFOLLOW, mode 0600; a planted symbolic link, FIFO or anything but a
regular file holding one id is refused, never followed or overwritten. Two agents racing
to stamp a shared directory agree: the loser reads the winner's id.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time

from .fsutil import fsync_dir

STAMP_NAME = "storage-id"


STORAGE_ID_PATTERN = r"ls-[0-9a-f]{32}"


STAMP_WAIT_S = 2.0  # how long an empty stamp (another agent is writing it) is waited for


# Filesystem types whose files other machines see too (statfs magic names as mountinfo
# spells them); FUSE mounts are "fuse.<subtype>" and count when the subtype is one of these.
NETWORK_FS_TYPES = frozenset((
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "coda", "9p", "virtiofs",
    "lustre", "gpfs", "beegfs", "ceph", "cephfs", "glusterfs", "panfs", "pvfs2", "orangefs",
    "ocfs2", "gfs2", "wekafs", "cvfs", "quobyte", "moosefs", "mfs", "lizardfs", "juicefs",
    "sshfs", "s3fs", "gcsfuse", "rclone", "ceph-fuse", "davfs", "xtreemfs", "seaweedfs",
))  # fmt: skip


class StorageIdError(Exception):
    """The stamp is there but cannot be trusted (a link, not a regular file, not an id)."""


def read_stamp(path):
    """The id in the stamp at path; None when there is no stamp; "" while it is empty (being
    written). Never follows a symbolic link and never blocks on a planted FIFO."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StorageIdError("%s is a symbolic link: refused" % path) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StorageIdError("%s is not a regular file: refused" % path)
        if st.st_mode & 0o022:
            raise StorageIdError("%s is writable by others: refused" % path)
        data = os.read(fd, 256)
    finally:
        os.close(fd)
    text = data.decode("ascii", "replace").strip()
    if text and not re.fullmatch(STORAGE_ID_PATTERN, text):
        raise StorageIdError("%s does not hold a storage id (remove it to get a new one)" % path)
    return text


def write_stamp(path):
    """Create the stamp with a new random id; None if another agent created it first."""
    storage_id = "ls-" + os.urandom(16).hex()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        return None  # another agent (another host sharing this dir), or a planted link
    try:
        os.write(fd, (storage_id + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(os.path.dirname(path) or ".")  # the new name itself durable
    return storage_id


def storage_id(data_dir, wait_s=STAMP_WAIT_S):
    """The data dir's storage id, stamped on first use (the dir is created 0700 if missing).
    Raises StorageIdError for a stamp that cannot be trusted, OSError when it cannot be read
    or written."""
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    path = os.path.join(data_dir, STAMP_NAME)
    deadline = time.monotonic() + wait_s
    while True:
        found = read_stamp(path)
        if found:
            return found
        if found is None:
            created = write_stamp(path)
            if created is not None:
                return created
            continue  # lost the race: read the winner's id (or refuse what is there)
        if time.monotonic() >= deadline:
            raise StorageIdError("%s stays empty (remove it to get a new id)" % path)
        time.sleep(0.05)


def try_storage_id(data_dir):
    """(storage id, None) or (None, why there is none)."""
    try:
        return storage_id(data_dir), None
    except (StorageIdError, OSError) as exc:
        return None, str(exc)


def unescape_mount(text):
    """/proc/self/mountinfo writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def parse_mountinfo(text):
    """/proc/self/mountinfo -> [(mount point, fs type, source)], in the file's order."""
    mounts = []
    for line in (text or "").splitlines():
        fields = line.split(" ")
        if "-" not in fields[6:]:
            continue
        dash = fields.index("-", 6)
        if len(fields) < dash + 3 or len(fields) < 5:
            continue
        mounts.append(
            (unescape_mount(fields[4]), fields[dash + 1], unescape_mount(fields[dash + 2]))
        )
    return mounts


def filesystem_of(mountinfo_text, path):
    """{"mount", "fs_type", "source", "network"} of the mount that holds path (the longest
    mount point containing it; of equal ones the last, which hides the others), or None."""
    best = None
    for mount, fs_type, source in parse_mountinfo(mountinfo_text):
        inside = path == mount or path.startswith(mount.rstrip("/") + "/")
        if inside and (best is None or len(mount) >= len(best[0])):
            best = (mount, fs_type, source)
    if best is None:
        return None
    mount, fs_type, source = best
    return {"mount": mount, "fs_type": fs_type, "source": source, "network": is_network(fs_type)}


def is_network(fs_type):
    """Whether a filesystem of this type is (usually) seen by other machines too."""
    name = fs_type[len("fuse.") :] if fs_type.startswith("fuse.") else fs_type
    return name in NETWORK_FS_TYPES
