"""Where leptonctl keeps things on the operator machine (XDG base directories)."""

from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    """``$XDG_DATA_HOME/leptonctl``, defaulting to ``~/.local/share/leptonctl``."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "leptonctl"


def default_state_path() -> Path:
    """The SQLite state store, unless ``--state``/``LEPTONCTL_STATE`` says otherwise."""
    return data_home() / "state.db"


def user_known_hosts() -> Path:
    return Path(os.path.expanduser("~")) / ".ssh" / "known_hosts"


GLOBAL_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")
