"""Who holds a claim: a name that says which process on which machine, so that a claim
whose holder died on THIS machine can be taken over at once instead of after its lease.

A claimant is ``HOSTNAME:PID:RANDOM@SPACE``, where SPACE names the process-id space the pid
belongs to: the kernel's boot id and the pid namespace.  Two containers on one host share
the boot id but not the pid namespace; a reboot changes the boot id.  Only a claimant from
the same space whose pid is gone is known dead; any other claim waits for its lease (pid
reuse can only make a dead holder look alive, never the other way round).
"""

from __future__ import annotations

import os
import secrets
import socket
from functools import cache


@cache
def process_space() -> str:
    """This process's pid space: boot id and pid-namespace inode ("" where unknown)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            boot = handle.read().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    return f"{boot}/{namespace}"


def new_claimant() -> str:
    """A claimant's name: this machine, this process, a random part, and the pid space."""
    name = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    space = process_space()
    return f"{name}@{space}" if space else name


def claimant_is_dead(owner: str) -> bool:
    """True when ``owner`` was a process in this very pid space that no longer exists."""
    head, sep, space = owner.rpartition("@")
    if not sep or not space or space != process_space():
        return False
    parts = head.split(":")
    if len(parts) < 3 or not parts[-2].isdigit():
        return False
    pid = int(parts[-2])
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists (another user's) or we may not ask: alive
    return False
