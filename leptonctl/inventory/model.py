"""The inventory as the rest of leptonctl sees it: frozen, fully resolved."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from leptonctl.errors import LimitError
from leptonctl.inventory.ranges import fold_host_names

__all__ = ["DeclaredCapacity", "Host", "Inventory", "LeftOutHost", "describe_left_out"]


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
    ``vars`` is every merged variable, read-only, but for passwords
    (``ansible_password``, ``ansible_become_pass``, ...): leptonctl logs in with keys
    only, so their values are dropped when the inventory is read and only their names
    are kept, in ``password_vars``.  ``source`` is ``path:line`` of the first definition.
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
    password_vars: tuple[str, ...] = ()  # password variables the inventory sets (values dropped)

    def __hash__(self) -> int:  # ``vars`` is a mapping, so hash the identity
        return hash((self.name, self.source))

    @property
    def is_local(self) -> bool:
        return self.connection == "local"

    @property
    def ssh_target(self) -> str:
        """What to hand to ``ssh``: the address, or the name as a config alias."""
        return self.address or self.name

    @property
    def gpu_foreign_ignored(self) -> bool:
        """``lepton_gpu_foreign: ignore``: processes that are no leptonctl job's do not make
        this host's GPUs busy (a desktop whose display server holds the GPU, say)."""
        value = self.vars.get("lepton_gpu_foreign")
        return isinstance(value, str) and value.strip().lower() == "ignore"


@dataclass(frozen=True)
class LeftOutHost:
    """A host of the inventory that leptonctl leaves out of every command: Ansible reaches
    it by a connection other than SSH (a switch's ``network_cli``, Windows' ``winrm``, a
    container's ``docker``).  ``connection`` is the value as written."""

    name: str
    connection: str
    groups: tuple[str, ...]
    source: str


def describe_left_out(hosts: Sequence[LeftOutHost]) -> str:
    """``sw[1:2] (network_cli), win1 (winrm)``: the hosts, folded, by connection."""
    by_connection: dict[str, list[str]] = {}
    for host in hosts:
        by_connection.setdefault(host.connection, []).append(host.name)
    return ", ".join(
        f"{_literal(fold_host_names(names))} ({_literal(connection)})"
        for connection, names in by_connection.items()
    )


def _literal(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass(frozen=True)
class Inventory:
    """Hosts in order of first appearance, and group name -> host names
    (recursive; always includes ``"all"`` and ``"ungrouped"``).  ``left_out``: the hosts
    reached by another connection than SSH, in no group and no selection."""

    source: str
    hosts: tuple[Host, ...]
    groups: Mapping[str, tuple[str, ...]]
    left_out: tuple[LeftOutHost, ...] = ()

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
        left = [h for h in self.left_out if h.name == name]
        if left:
            raise LimitError(
                f"host {describe_left_out(left)} is left out: leptonctl reaches hosts over "
                "SSH (or runs locally), not over that connection"
            )
        close = difflib.get_close_matches(name, self.host_names, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else None
        raise LimitError(f"no host {name!r} in the inventory {self.source}", hint=hint)
