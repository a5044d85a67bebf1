"""What ``~/.ssh/config`` says about host keys for one destination, read as OpenSSH reads it.

asyncssh evaluates the config (``Host``/``Match`` blocks, ``Include``, first value wins)
but leaves out what decides host-key trust: it neither expands ``%`` tokens nor ``~`` in
``UserKnownHostsFile``/``GlobalKnownHostsFile``, and ignores ``StrictHostKeyChecking`` and
``HashKnownHosts``.  :func:`host_key_settings` reads those for one destination with
asyncssh's own evaluator, taught these options; :func:`load_known_hosts` reads the files
and :func:`known_host_entry` writes a line as OpenSSH would (hashed when the file is).
"""

from __future__ import annotations

import base64
import functools
import getpass
import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh.config import ConfigParseError, SSHClientConfig, SSHConfig

from leptonctl.errors import UsageError
from leptonctl.paths import DEFAULT_GLOBAL_KNOWN_HOSTS, DEFAULT_USER_KNOWN_HOSTS, ssh_config_file

__all__ = [
    "HostKeySettings",
    "host_key_settings",
    "known_host_entry",
    "load_known_hosts",
    "uses_hashed_names",
]

_STRICT_YES = ("yes", "true")
_HASH_MARK = "|1|"


@dataclass(frozen=True)
class HostKeySettings:
    """Host-key settings of one destination.  ``strict`` is ``StrictHostKeyChecking`` as
    written (lower case; None when unset); ``proxy_jump`` is the config's ``ProxyJump``
    (None when unset or ``none``)."""

    user_files: tuple[Path, ...]  # UserKnownHostsFile, expanded: new keys go to the first
    global_files: tuple[Path, ...]  # GlobalKnownHostsFile, expanded
    strict: str | None = None
    hash_names: bool = False  # HashKnownHosts yes
    proxy_jump: str | None = None

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file whose keys are trusted, user files first."""
        return self.user_files + self.global_files

    @property
    def refuses_new_keys(self) -> bool:
        """``StrictHostKeyChecking yes``: a key not in the files is never accepted.  The
        looser values (``no``, ``off``, ``accept-new``, ``ask``) change nothing: leptonctl
        accepts a new key only when asked to, whatever the config says."""
        return self.strict in _STRICT_YES


class _HostKeyConfig(SSHClientConfig):
    """asyncssh's client config evaluator, taught the host-key options it leaves out."""

    _percent_expand = SSHClientConfig._percent_expand | {
        "UserKnownHostsFile",
        "GlobalKnownHostsFile",
    }
    _handlers = {  # noqa: RUF012 (asyncssh's own table, extended)
        **SSHClientConfig._handlers,
        "stricthostkeychecking": ("StrictHostKeyChecking", SSHConfig._set_string),
        "hashknownhosts": ("HashKnownHosts", SSHConfig._set_bool),
    }

    def _set_tokens(self) -> None:
        super()._set_tokens()
        # %k: the host key alias if set, else the host name as given (OpenSSH's TOKENS)
        self._tokens["k"] = str(self._options.get("HostKeyAlias") or self._orig_host)


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _evaluate(path: Path, destination: str, user: str | None, port: int | None) -> Any:
    args = (_local_user(), user if user is not None else (), destination, port or ())
    config = _HostKeyConfig.load(None, [path], False, False, False, *args)
    if config.has_match_final():  # a second pass, as asyncssh and OpenSSH make
        config = _HostKeyConfig.load(config, [path], True, False, True, *args)
    return config


def host_key_settings(
    destination: str, user: str | None = None, port: int | None = None, path: Path | None = None
) -> HostKeySettings:
    """The host-key settings ``~/.ssh/config`` (or ``path``) gives ``destination`` (a name
    or alias as ssh is handed it), reached as ``user`` on ``port`` (None: not given)."""
    path = path or ssh_config_file()
    if not os.access(path, os.R_OK):
        return _settings({})
    try:
        config = _evaluate(path, destination, user, port)
    except (ConfigParseError, asyncssh.Error, ValueError, OSError) as exc:
        raise UsageError(
            f"cannot read the SSH client config {path}: {exc}",
            hint="fix the file (`ssh -G HOST` shows how OpenSSH reads it)",
        ) from None
    return _settings(
        {
            key: config.get(key)
            for key in (
                "UserKnownHostsFile",
                "GlobalKnownHostsFile",
                "StrictHostKeyChecking",
                "HashKnownHosts",
                "ProxyJump",
            )
        }
    )


def _settings(options: dict[str, Any]) -> HostKeySettings:
    def files(value: object, default: Sequence[str]) -> tuple[Path, ...]:
        names = default if value is None else value
        assert isinstance(names, (list, tuple))
        return tuple(Path(os.path.expanduser(str(name))) for name in names)

    strict = options.get("StrictHostKeyChecking")
    jump = options.get("ProxyJump")
    return HostKeySettings(
        user_files=files(options.get("UserKnownHostsFile"), DEFAULT_USER_KNOWN_HOSTS),
        global_files=files(options.get("GlobalKnownHostsFile"), DEFAULT_GLOBAL_KNOWN_HOSTS),
        strict=str(strict).lower() if strict is not None else None,
        hash_names=bool(options.get("HashKnownHosts")),
        proxy_jump=str(jump) if jump else None,
    )


def load_known_hosts(files: Sequence[Path]) -> asyncssh.SSHKnownHosts:
    """The keys of every existing file of ``files`` (missing ones are skipped, as OpenSSH
    does); a file that cannot be read or parsed is a ``UsageError`` naming it.  Files
    unchanged since the last call are not read again (a thousand hosts, one big file)."""
    stamps: list[tuple[str, int, int, int]] = []
    for path in files:
        try:
            st = path.stat()
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            stamps.append((str(path), st.st_ino, st.st_size, st.st_mtime_ns))
    return _load_known_hosts(tuple(stamps))


@functools.lru_cache(maxsize=16)
def _load_known_hosts(stamps: tuple[tuple[str, int, int, int], ...]) -> asyncssh.SSHKnownHosts:
    texts: list[str] = []
    for name, *_ in stamps:
        path = Path(name)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
            asyncssh.import_known_hosts(text)
        except OSError as exc:
            raise UsageError(f"cannot read the known_hosts file {path}: {exc.strerror}") from None
        except (ValueError, asyncssh.Error) as exc:
            raise UsageError(
                f"the known_hosts file {path} has a line leptonctl cannot read: {exc}",
                hint="`ssh-keygen -F HOST -f FILE` finds a host's lines; remove the broken one",
            ) from None
        texts.append(text if text.endswith("\n") or not text else text + "\n")
    return asyncssh.import_known_hosts("".join(texts))


def uses_hashed_names(path: Path) -> bool:
    """Whether ``path`` already holds hashed host names (``ssh-keygen -H``, HashKnownHosts)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return any(line.lstrip().startswith(_HASH_MARK) for line in handle)
    except OSError:
        return False


def known_host_entry(name: str, key: str, *, hashed: bool, salt: bytes | None = None) -> str:
    """A known_hosts line for ``name`` (``host`` or ``[host]:port``) and ``key`` (``type
    base64``); ``hashed``: the name as HMAC-SHA1 under a random salt, OpenSSH's ``|1|``."""
    if not hashed:
        return f"{name} {key}"
    salt = salt if salt is not None else secrets.token_bytes(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    encoded = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"{_HASH_MARK}{encoded[0]}|{encoded[1]} {key}"
