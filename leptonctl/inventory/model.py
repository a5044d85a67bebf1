"""The inventory as the rest of leptonctl sees it: frozen, fully resolved."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from leptonctl.errors import LimitError

__all__ = ["DeclaredCapacity", "Host", "Inventory"]


@dataclass(frozen=True)
class DeclaredCapacity:
    """The ``capacity:`` host variable: overrides/limits what the agent reports.

    ``None`` means "not declared; use what the agent reports".  Sizes are bytes
    (see :mod:`leptonctl.inventory.capacity` for the accepted spellings).
    """

    cpus: int | None = None
    memory_bytes: int | None = None
    gpus: int | None = None
    gpu_model: str | None = None
    gpu_memory_bytes: int | None = None
    fpgas: int | None = None
    disk_bytes: int | None = None


@dataclass(frozen=True)
class Host:
    """One managed machine.

    ``address`` is ``None`` when the inventory gives none: ``name`` is then
    used as an ``~/.ssh/config`` alias (HostName, User, Port, IdentityFile and
    ProxyJump come from there).  ``groups`` is every group the host belongs to,
    ``"all"`` first, then in variable precedence order (depth, priority, name).
    ``vars`` is every merged variable, read-only.  ``source`` is ``path:line``
    of the first definition.
    """

    name: str
    address: str | None
    port: int | None
    user: str | None
    identity_file: str | None
    connection: str
    python: str
    data_dir: str | None
    groups: tuple[str, ...]
    vars: Mapping[str, Any]
    capacity: DeclaredCapacity | None
    source: str
    proxy_jump: str | None = None  # jump host(s), as ssh's -J takes them

    def __hash__(self) -> int:  # ``vars`` is a mapping, so hash the identity
        return hash((self.name, self.source))

    @property
    def is_local(self) -> bool:
        return self.connection == "local"

    @property
    def ssh_target(self) -> str:
        """What to hand to ``ssh``: the address, or the name as a config alias."""
        return self.address or self.name


@dataclass(frozen=True)
class Inventory:
    """Hosts in order of first appearance, and group name -> host names
    (recursive; always includes ``"all"`` and ``"ungrouped"``)."""

    source: str
    hosts: tuple[Host, ...]
    groups: Mapping[str, tuple[str, ...]]

    def __hash__(self) -> int:
        return hash((self.source, self.hosts))

    @property
    def host_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hosts)

    @cached_property
    def _by_name(self) -> dict[str, Host]:
        return {h.name: h for h in self.hosts}

    def host(self, name: str) -> Host:
        """The host called ``name``; :class:`LimitError` if there is none."""
        found = self._by_name.get(name)
        if found is not None:
            return found
        close = difflib.get_close_matches(name, self.host_names, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else None
        raise LimitError(f"no host {name!r} in the inventory {self.source}", hint=hint)
