"""The parsed-but-unresolved inventory that both file formats produce.

The YAML and INI parsers fill a :class:`RawInventory`; :mod:`.build` resolves
it (group tree, variable precedence, typed fields) into a frozen
:class:`~leptonctl.inventory.model.Inventory`.  Every variable keeps the line
it came from so that errors found late (a bad port, a bad capacity) still
point at the right line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from leptonctl.errors import InventoryError
from leptonctl.inventory.ranges import MAX_HOSTS

__all__ = ["EncryptedValue", "RawGroup", "RawHost", "RawInventory", "VarSet"]


@dataclass(frozen=True)
class EncryptedValue:
    """An ``!vault`` value from an Ansible inventory; leptonctl cannot decrypt it.

    It is kept as an opaque value so that inventories holding vaulted
    variables still load; a field leptonctl needs (user, port, ...) that is
    encrypted is an error.
    """

    ciphertext: str

    def __repr__(self) -> str:
        return "EncryptedValue(<vault>)"


@dataclass
class VarSet:
    """Variables from one place (an inventory group, host, or a vars file).

    ``lines`` maps a variable name, or a dotted path into a mapping value
    (``capacity.gpus.count``), to the line it was written on.
    """

    source: str
    values: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)

    def set(self, key: str, value: Any, line: int | None) -> None:
        self.values[key] = value
        stale = [k for k in self.lines if k == key or k.startswith(key + ".")]
        for k in stale:
            del self.lines[k]
        if line is not None:
            self.lines[key] = line

    def update(self, other: VarSet) -> None:
        for key, value in other.values.items():
            self.set(key, value, None)
            self.lines.update(
                {k: v for k, v in other.lines.items() if k == key or k.startswith(key + ".")}
            )

    def line_of(self, path: str) -> int | None:
        """The line of ``path`` or of its nearest enclosing key."""
        parts = path.split(".")
        while parts:
            line = self.lines.get(".".join(parts))
            if line is not None:
                return line
            parts.pop()
        return None


@dataclass
class RawHost:
    name: str
    line: int | None
    vars: VarSet


@dataclass
class RawGroup:
    name: str
    vars: VarSet
    line: int | None = None
    hosts: list[str] = field(default_factory=list)
    host_set: set[str] = field(default_factory=set, repr=False)  # ``hosts``, for lookups
    children: list[str] = field(default_factory=list)
    child_lines: dict[str, int | None] = field(default_factory=dict)
    defined: bool = False  # declared with hosts/children, or named as a child
    vars_line: int | None = None  # where a vars-only declaration was made (INI)


@dataclass
class RawInventory:
    source: str
    groups: dict[str, RawGroup] = field(default_factory=dict)
    hosts: dict[str, RawHost] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("all", "ungrouped"):
            self.group(name).defined = True

    def group(self, name: str, line: int | None = None) -> RawGroup:
        grp = self.groups.get(name)
        if grp is None:
            grp = RawGroup(name=name, vars=VarSet(self.source), line=line)
            self.groups[name] = grp
        elif grp.line is None:
            grp.line = line
        return grp

    def add_host(self, name: str, group: str, line: int | None) -> RawHost:
        host = self.hosts.get(name)
        if host is None:
            if len(self.hosts) >= MAX_HOSTS:
                raise InventoryError(
                    f"more than {MAX_HOSTS:,} hosts",
                    source=self.source,
                    line=line,
                    hint="split the cluster into several inventories",
                )
            host = RawHost(name=name, line=line, vars=VarSet(self.source))
            self.hosts[name] = host
        grp = self.group(group)
        if name not in grp.host_set:
            grp.host_set.add(name)
            grp.hosts.append(name)
        return host

    def add_child(self, parent: str, child: str, line: int | None) -> RawGroup:
        grp = self.group(parent)
        kid = self.group(child, line)
        kid.defined = True
        if child not in grp.children:
            grp.children.append(child)
            grp.child_lines[child] = line
        return kid
