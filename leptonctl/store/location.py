"""Which state store a command uses.

In order: ``--state`` (or ``LEPTONCTL_STATE``); the ``state:`` setting of the
config file ``$XDG_CONFIG_HOME/leptonctl/config.yaml`` (default
``~/.config/leptonctl/config.yaml``), so every terminal of a team member reaches
the team's PostgreSQL without exporting anything; else the SQLite file
``$XDG_DATA_HOME/leptonctl/state.db``.  A value is a ``postgresql://`` URL or a
path (``~`` expanded).
"""

from __future__ import annotations

import os
from pathlib import Path

from leptonctl.errors import UsageError
from leptonctl.paths import default_state_path
from leptonctl.store.postgres import is_postgres_url

CONFIG_KEYS = ("state",)


def config_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "leptonctl" / "config.yaml"


def configured_state(path: Path | None = None) -> str | None:
    """The ``state:`` setting of the config file, or None (no file, no setting)."""
    path = path or config_file()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"cannot read the config file {path}: {exc}") from exc
    import yaml

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"the config file {path} is not valid YAML: {exc}") from exc
    if document is None:
        return None
    if not isinstance(document, dict):
        raise UsageError(f"the config file {path} must be a mapping (state: ...)")
    unknown = sorted(str(k) for k in document if k not in CONFIG_KEYS)
    if unknown:
        raise UsageError(
            f"the config file {path} has unknown settings: {', '.join(unknown)}",
            hint=f"known: {', '.join(CONFIG_KEYS)}",
        )
    value = document.get("state")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"state: in {path} must be a path or a postgresql:// URL")
    return value.strip()


def state_location(given: str | Path | None) -> str:
    """The store to open: ``given`` (--state), the config file's, or the default file.
    A path is made absolute; a URL is kept as written."""
    text = str(given) if given is not None and str(given) else configured_state()
    if text is None:
        return str(default_state_path())
    if is_postgres_url(text):
        return text
    if "://" in text:
        raise UsageError(
            f"--state: {text.split('://', 1)[0]}:// is not a store leptonctl knows",
            hint="a SQLite file path, or postgresql://user@host:port/db",
        )
    return str(Path(text).expanduser().absolute())


def state_file(location: str) -> Path | None:
    """The SQLite file of a location, or None for a PostgreSQL URL."""
    return None if is_postgres_url(location) else Path(location)
