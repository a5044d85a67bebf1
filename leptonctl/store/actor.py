"""Who is using the store: the user and the machine a leptonctl runs as and on.

Jobs, dataset versions and events record it, so a team sharing one store can tell
whose job it is (``jobs --mine``) and who accepted a host key or drained a host.
``LEPTONCTL_USER`` overrides the login name (a shared service account run by a
person, say); the machine is the host name.
"""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    user: str
    machine: str

    def __str__(self) -> str:
        return f"{self.user}@{self.machine}"


def current_actor() -> Actor:
    """This process's actor."""
    user = os.environ.get("LEPTONCTL_USER", "").strip()
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no name for our uid (a container, say)
            user = f"uid{os.getuid()}"
    return Actor(user=user, machine=socket.gethostname() or "localhost")
