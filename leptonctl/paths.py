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


def ssh_config_file() -> Path:
    """The user's OpenSSH client configuration, ``~/.ssh/config``."""
    return Path(os.path.expanduser("~")) / ".ssh" / "config"


def user_known_hosts() -> Path:
    return Path(os.path.expanduser("~")) / ".ssh" / "known_hosts"


DEFAULT_USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
"""OpenSSH's ``UserKnownHostsFile`` when ``~/.ssh/config`` names none (new keys: the first)."""

DEFAULT_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
"""OpenSSH's ``GlobalKnownHostsFile`` when ``~/.ssh/config`` names none."""
