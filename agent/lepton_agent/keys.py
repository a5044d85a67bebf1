"""Transfer grants: the spec a recv follows and its one-shot forced-command key in
authorized_keys.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time

from .fsutil import read_file_bounded, write_json_atomic
from .wire import (
    MAX_MESSAGE_BYTES,
    SCHEMA,
    TRANSFER_ID_PATTERN,
    BadRequest,
    check_seconds,
    check_transfer_id,
)

# A transfer moves chunk frames down a chain of hosts: source -> r1 -> r2 ... Each hop stores
# what it receives (chunks into its store, or files at their destinations) and forwards every
# byte to the next hop while it receives it, so K replicas cost about one transfer. Hops talk
# over OpenSSH: the operator installs a one-shot key on the receiver (restrict, a forced command
# that runs `recv --transfer ID`, expiry-time a few minutes ahead) and hands the private half to
# the upstream hop inside its spec. recv blanks its own key line when it starts; `revoke`
# blanks whatever a crash left, and expired lines, which every agent start (serve, request,
# send, recv) also does, with the files of transfers that are over. The stream is frames: one
# JSON header line {"h": hash, "n": size, "t": [[file index, offset], ...] (files mode)} then n
# bytes; a final {"end": true} line. Every hop that stores checks the hash before it commits.
KEY_COMMENT = "leptonctl-transfer:"


STALE_TRANSFER_S = 3600.0


def transfer_path(data_dir, transfer_id, suffix):
    return os.path.join(data_dir, "transfers", transfer_id + suffix)


def authorized_keys_path():
    override = os.environ.get("LEPTON_AGENT_AUTHORIZED_KEYS")  # tests: never the real file
    if override:
        return override
    import pwd

    try:
        home = pwd.getpwuid(os.getuid()).pw_dir  # what sshd reads, whatever $HOME says
    except KeyError:  # a uid without a passwd entry (a container, an LDAP outage): sshd
        home = os.path.expanduser("~")  # cannot log it in, but local agents still run
    return os.path.join(home, ".ssh", "authorized_keys")


def payload_dir():
    """The directory that holds this package and the payload's __main__.py: `python DIR`
    runs the agent from it, and imports nothing from anywhere else (sys.path[0] is DIR)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The twin of leptonctl.remote.transport.sh_line (a test keeps the two identical): the line
# that runs an sh script with /bin/sh whatever the user's login shell (sh, bash, zsh, tcsh,
# fish), which sshd runs a forced command with. Between single quotes, those shells agree on
# every printable ASCII character but ' \ and !; anything else goes octal-escaped through
# printf, which /bin/sh decodes.
SH_PLAIN = frozenset(chr(c) for c in range(0x20, 0x7F)) - frozenset("'\\!")
SH_LITERAL = SH_PLAIN - frozenset('"$`%')


def sh_line(script):
    if set(script) <= SH_PLAIN:
        return "exec /bin/sh -c '%s'" % script
    data = script.encode("utf-8", "surrogateescape")
    escaped = "".join(chr(b) if chr(b) in SH_LITERAL else "\\%03o" % b for b in data)
    return 'exec /bin/sh -c \'eval "$(printf "%s")"\'' % escaped


FORCED_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def forced_command(data_dir, transfer_id):
    """sshd runs it through the login shell, and authorized_keys holds it between double
    quotes: its words need no quoting at all, so it is sh_line's plain form."""
    parts = [sys.executable, payload_dir(), "recv", "--transfer", transfer_id, "--data-dir",
             data_dir]  # fmt: skip
    for part in parts:
        if not FORCED_WORD.fullmatch(part):
            raise BadRequest(
                "path not usable in a forced command (only letters, digits and _@%%+=:,./- "
                "are): %r" % (part,)
            )
    return sh_line("exec " + " ".join(parts))


# authorized_keys is shared with the user and every tool they run (ssh-copy-id, Ansible,
# cloud-init, other hosts on a shared home), which append to it without any lock of ours. So
# the agent never rewrites it: a transfer line goes in with one O_APPEND write (or over a free
# slot of its own making), and goes out by overwriting its own bytes in place with a comment of
# the same length (FREE_SLOT and spaces: sshd skips it, a later grant reuses it). Bytes stay
# bytes (lines end at b"\n" only, nothing is decoded), the file is never truncated or renamed,
# and a symlinked file is written through its link (which stays a link). Agents serialise their
# edits with a flock on the file itself, opened read-write (NFS needs that for a lock).
FREE_SLOT = b"#leptonctl-free"


TRANSFER_LINE = re.compile(
    rb'restrict,command="[^"\n]*",expiry-time="(\d{14})Z" ssh-ed25519 [A-Za-z0-9+/=]+ '
    + (KEY_COMMENT + "(" + TRANSFER_ID_PATTERN + ") *").encode()
)


FREE_LINE = re.compile(re.escape(FREE_SLOT) + b" *")


KEY_FILE_AGE_S = 60.0  # ssh reads a hop's .key and .known_hosts within seconds of its start


SPEC_GRACE_S = 2.0  # a spec outlives its key's expiry-time by this much (a recv reads it at once)


def utc_stamp(seconds):
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(seconds))


def same_file(fd, path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)


def keys_fallback_lock(data_dir, why):
    """A lock file in the data dir, for a home where authorized_keys cannot be flocked (NFS
    without lockd): it serialises the agents of this data dir, which is what is left."""
    import fcntl

    directory = os.path.join(data_dir, "transfers")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, ".authorized_keys.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as exc:
        os.close(fd)
        raise OSError("cannot lock authorized_keys (%s) nor %s (%s)" % (why, path, exc)) from exc
    return fd


@contextlib.contextmanager
def authorized_keys_locked(data_dir, create):
    """An fd of authorized_keys, read-write, locked against the edits of other agents (None when
    the file does not exist and create is false). Raises OSError when it cannot be locked at
    all: a transfer line is never left behind without a word."""
    import fcntl

    path = authorized_keys_path()
    if create:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    for _ in range(5):
        try:
            fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
        except FileNotFoundError:
            if create:
                raise
            yield None
            return
        fallback = None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:  # ENOLCK, or EBADF on some NFS servers
                fallback = keys_fallback_lock(data_dir, exc)
            if same_file(fd, path):  # not renamed over by another tool meanwhile
                yield fd
                return
        finally:
            os.close(fd)
            if fallback is not None:
                os.close(fallback)
    raise OSError("%s keeps being replaced while the agent edits it" % path)


def read_all(fd):
    parts, at = [], 0
    while True:
        block = os.pread(fd, 1 << 16, at)
        if not block:
            return b"".join(parts)
        parts.append(block)
        at += len(block)


def write_at(fd, data, offset):
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def complete_lines(data):
    """(offset, end) of every line that has its newline (a last line without one may be a
    write of another tool in progress: it is never touched)."""
    at = 0
    while True:
        end = data.find(b"\n", at)
        if end < 0:
            return
        yield at, end
        at = end + 1


def transfer_lines(data):
    """(offset, length, transfer id, expiry stamp) of every leptonctl transfer line."""
    found = []
    if KEY_COMMENT.encode() in data:
        for at, end in complete_lines(data):
            match = TRANSFER_LINE.fullmatch(data, at, end)
            if match:
                found.append((at, end - at, match.group(2).decode(), match.group(1).decode()))
    return found


def free_slot(length):
    return (FREE_SLOT if length >= len(FREE_SLOT) else b"#")[:length].ljust(length, b" ")


def blank_key_lines(data_dir, doomed):
    """Overwrite every transfer line for which doomed(transfer id, expiry stamp) is true with a
    free slot of its own length, in place: no other byte of the file moves or changes. The file
    is only opened for writing when it holds such a line (it may be read-only, managed by
    someone else, and have none)."""
    try:
        with open(authorized_keys_path(), "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return 0
    if not any(doomed(transfer_id, expiry) for _, _, transfer_id, expiry in transfer_lines(data)):
        return 0
    with authorized_keys_locked(data_dir, create=False) as fd:
        if fd is None:
            return 0
        removed = 0
        for offset, length, transfer_id, expiry in transfer_lines(read_all(fd)):
            if doomed(transfer_id, expiry):
                write_at(fd, free_slot(length), offset)
                removed += 1
        if removed:
            os.fsync(fd)
        return removed


def add_key_line(fd, line):
    """Write line (bytes, no newline) over the smallest free slot that holds it, padded with
    spaces, or else append it in one O_APPEND write."""
    import fcntl

    data = read_all(fd)
    slots = [
        (end - at, at)
        for at, end in complete_lines(data)
        if end - at >= len(line) and FREE_LINE.fullmatch(data, at, end)
    ]
    if slots:
        length, offset = min(slots)
        write_at(fd, line.ljust(length, b" "), offset)
    else:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_APPEND)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # never glue our line onto a last line without a newline
            os.write(fd, line + b"\n")  # one O_APPEND write: never interleaved with another
        finally:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    os.fsync(fd)


def grant(data_dir, request):
    """Write a transfer spec here and, with a public key, authorise it for one recv. The spec's
    mtime is set to the grant's expiry: the next agent start after it removes the spec."""
    transfer_id = check_transfer_id(request.transfer)
    spec = request.spec
    if not isinstance(spec, dict):
        raise BadRequest("grant needs a spec object")
    pubkey = request.pubkey
    if pubkey is not None and (
        not isinstance(pubkey, str) or not re.fullmatch(r"ssh-ed25519 [A-Za-z0-9+/=]+", pubkey)
    ):
        raise BadRequest("pubkey must be one 'ssh-ed25519 BASE64' key")
    ttl = request.ttl_s
    ttl = 300.0 if ttl is None else check_seconds(ttl, "ttl_s", positive=True)
    os.makedirs(os.path.join(data_dir, "transfers"), mode=0o700, exist_ok=True)
    spec_path = transfer_path(data_dir, transfer_id, ".json")
    write_json_atomic(spec_path, spec)
    expires_at = time.time() + ttl
    os.utime(spec_path, (expires_at, expires_at))
    if pubkey is None:
        return {"schema": SCHEMA, "granted": transfer_id, "key": False}
    expiry = utc_stamp(expires_at)
    line = 'restrict,command="%s",expiry-time="%sZ" %s %s%s' % (
        forced_command(data_dir, transfer_id),
        expiry,
        pubkey,
        KEY_COMMENT,
        transfer_id,
    )
    with authorized_keys_locked(data_dir, create=True) as fd:
        add_key_line(fd, line.encode())
    return {"schema": SCHEMA, "granted": transfer_id, "key": True, "expires": expiry + "Z"}


def revoke(data_dir, transfer_id, now=None):
    """Blank the transfer's key line and every expired transfer line; remove the transfer's
    files and those of transfers that are over."""
    transfer_id = check_transfer_id(transfer_id)
    now = time.time() if now is None else now
    stamp = utc_stamp(now)
    removed = blank_key_lines(data_dir, lambda tid, expiry: tid == transfer_id or expiry < stamp)
    for suffix in (".json", ".key", ".known_hosts", ".stderr"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(transfer_path(data_dir, transfer_id, suffix))
    stale = remove_stale_transfers(data_dir, now)
    return {"schema": SCHEMA, "revoked": transfer_id, "key_lines_removed": removed,
            "stale_files_removed": stale}  # fmt: skip


def sweep_transfers(data_dir, now=None):
    """What killed operators and agents left: expired transfer lines and the files of transfers
    that are over. Run at every serve/request/send/recv start; cheap when there is nothing."""
    now = time.time() if now is None else now
    stamp = utc_stamp(now)
    try:
        blank_key_lines(data_dir, lambda other, expiry: expiry < stamp)
    except OSError as exc:  # said on stderr; the op itself still runs (revoke fails loudly)
        sys.stderr.write("lepton_agent: cannot remove expired transfer keys: %s\n" % exc)
    remove_stale_transfers(data_dir, now)


def remove_stale_transfers(data_dir, now):
    """Files of transfers that are over: a spec whose key expired (its mtime is the expiry) more
    than SPEC_GRACE_S ago; a hop's key, known_hosts and stderr files after KEY_FILE_AGE_S (ssh
    has read them long before; NextHop keeps its stderr open); anything else after an hour."""
    directory, removed = os.path.join(data_dir, "transfers"), 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if name.startswith("."):
            continue  # the fallback lock of authorized_keys
        if name.endswith(".json"):
            limit = SPEC_GRACE_S
        elif name.endswith((".key", ".known_hosts", ".stderr")):
            limit = KEY_FILE_AGE_S
        else:
            limit = STALE_TRANSFER_S
        path = os.path.join(directory, name)
        with contextlib.suppress(OSError):
            if now - os.lstat(path).st_mtime > limit:
                os.unlink(path)
                removed += 1
    return removed


def read_transfer_spec(data_dir, transfer_id):
    """The spec a grant wrote: read whole (it came in one message, so it is at most
    MAX_MESSAGE_BYTES; a spec for 10,000 files is a few MiB), never cut at some length."""
    path = transfer_path(data_dir, transfer_id, ".json")
    try:
        data = read_file_bounded(path, MAX_MESSAGE_BYTES)
    except FileNotFoundError:
        raise BadRequest(
            "no spec for transfer %s (expired or already used)" % transfer_id
        ) from None
    if data is None:
        bound = MAX_MESSAGE_BYTES
        raise BadRequest("the spec of transfer %s is over %d bytes" % (transfer_id, bound))
    try:
        spec = json.loads(data)
    except ValueError as exc:
        raise BadRequest("the spec of transfer %s is not JSON: %s" % (transfer_id, exc)) from None
    if not isinstance(spec, dict):
        raise BadRequest("the spec of transfer %s is not a JSON object" % transfer_id)
    return spec
