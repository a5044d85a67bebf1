"""Resolve a :class:`RawInventory` into a frozen :class:`Inventory`.

Group tree: every group that is nobody's child is a child of ``all``; a host
that belongs to no group but ``all`` is in ``ungrouped``.  A cycle of children
is an error.  The depth of a group is the length of the longest path from
``all`` (``all`` is 0, top-level groups are 1).

Variable precedence, lowest first (Ansible's default ``VARIABLE_PRECEDENCE``)::

    1. vars of group ``all`` written in the inventory file
    2. vars of the host's other groups written in the inventory file, sorted
       by (depth, ansible_group_priority, name): parents before children,
       same depth alphabetical, later wins
    3. group_vars/all files next to the inventory
    4. group_vars/<group> files, same order as 2
    5. host vars written in the inventory file
    6. host_vars/<host> files

Values replace each other whole (Ansible's ``hash_behaviour=replace``).

Connection fields and their names (the ``ansible_*`` spellings and
leptonctl's short names both work; if both are set, the one from the higher
precedence place wins, and in the same place the ``ansible_*`` name wins):

    address        ansible_host, ansible_ssh_host, host
    port           ansible_port, ansible_ssh_port, port     (1..65535)
    user           ansible_user, ansible_ssh_user, user
    identity_file  ansible_ssh_private_key_file, ansible_private_key_file,
                   identity_file                            (kept as written)
    connection     ansible_connection, connection           (ssh | local;
                   Ansible's ``smart``, ``paramiko`` and the ``ansible.builtin.*``
                   spellings too.  A host reached by another connection plugin
                   (``network_cli``, ``winrm``, ``docker``, any ``namespace.collection.
                   plugin`` name, ...) is *left out*: in no group, listed in
                   ``Inventory.left_out``; an unknown short name is an error)
    python         ansible_python_interpreter, python       (default python3;
                   Ansible's ``auto*`` values mean python3)
    data_dir       lepton_data_dir, data_dir
    proxy_jump     lepton_proxy_jump, proxy_jump, or ``-J HOST`` / ``-o ProxyJump=HOST``
                   inside ansible_ssh_common_args / ansible_ssh_extra_args (the
                   only ssh option read from there; the rest belongs in ~/.ssh/config)
    capacity       capacity

Passwords (``ansible_password``, ``ansible_ssh_pass``, ``ansible_become_pass``, any
``ansible_*pass``/``*password`` variable) are never kept: leptonctl logs in with keys
only.  Their values are dropped from ``Host.vars``; their names are in
``Host.password_vars`` so that a failed login can say so.
"""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from leptonctl.errors import InventoryError
from leptonctl.inventory.capacity import CapacityValueError, parse_capacity
from leptonctl.inventory.model import (
    DeclaredCapacity,
    Host,
    Inventory,
    LeftOutHost,
    describe_left_out,
)
from leptonctl.inventory.raw import EncryptedValue, RawInventory, VarSet

__all__ = ["FIELD_NAMES", "build_inventory", "ssh_word_problem"]

FIELD_NAMES: dict[str, tuple[str, ...]] = {
    "address": ("ansible_host", "ansible_ssh_host", "host"),
    "port": ("ansible_port", "ansible_ssh_port", "port"),
    "user": ("ansible_user", "ansible_ssh_user", "user"),
    "identity_file": (
        "ansible_ssh_private_key_file",
        "ansible_private_key_file",
        "identity_file",
    ),
    "connection": ("ansible_connection", "connection"),
    "python": ("ansible_python_interpreter", "python"),
    "data_dir": ("lepton_data_dir", "data_dir"),
    "proxy_jump": ("lepton_proxy_jump", "proxy_jump"),
    "ssh_args": ("ansible_ssh_extra_args", "ansible_ssh_common_args"),
    "capacity": ("capacity",),
}


def ssh_word_problem(value: str) -> str | None:
    """Why ``value`` cannot be handed to ssh as a host, user or jump host; None if it can."""
    if not value:
        return "is empty"
    if value.startswith("-"):
        return "starts with '-' (ssh would read it as an option)"
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return "contains whitespace or control characters"
    return None


CONNECTIONS = {
    "ssh": "ssh",
    "local": "local",
    "smart": "ssh",
    "paramiko": "ssh",
    "paramiko_ssh": "ssh",
    "ansible.builtin.ssh": "ssh",
    "ansible.builtin.local": "local",
    "ansible.builtin.paramiko_ssh": "ssh",
}
OTHER_CONNECTIONS = frozenset(
    {
        "network_cli",  # switches and routers (ansible.netcommon)
        "netconf",
        "httpapi",
        "libssh",
        "persistent",
        "napalm",
        "winrm",  # Windows
        "psrp",
        "docker",  # containers and jails
        "docker_api",
        "podman",
        "buildah",
        "lxc",
        "lxd",
        "incus",
        "kubectl",
        "oc",
        "chroot",
        "jail",
        "iocage",
        "zone",
        "qubes",
        "saltstack",
        "funcd",
        "aws_ssm",
        "vmware_tools",
    }
)
"""Connection plugins of Ansible that are not SSH: hosts using them are left out."""
_PLUGIN_NAME = re.compile(r"[a-z0-9_]+\.[a-z0-9_]+\.[a-z0-9_]+")  # namespace.collection.plugin
DEFAULT_PYTHON = "python3"
_PASSWORD_VARS = re.compile(r"ansible_\w*(pass|password|passwd|passphrase)")
_LOGIN_PASSWORDS = ("ansible_password", "ansible_ssh_pass", "ansible_ssh_password")


def build_inventory(
    raw: RawInventory,
    *,
    group_vars: Mapping[str, Sequence[VarSet]] | None = None,
    host_vars: Mapping[str, Sequence[VarSet]] | None = None,
) -> Inventory:
    """Resolve groups and variables; raise :class:`InventoryError` on any problem."""
    group_vars = group_vars or {}
    host_vars = host_vars or {}
    if not raw.hosts:
        raise InventoryError(
            "the inventory defines no hosts",
            source=raw.source,
            hint="add hosts under `all: hosts:` (YAML) or a [group] section (INI)",
        )

    parents = _parents(raw)
    _check_cycles(raw)
    depth = _depths(raw, parents)
    priority = {name: _priority(raw, name) for name in raw.groups}
    members = _members(raw)

    def order(name: str) -> tuple[int, int, str]:
        return (depth[name], priority[name], name)

    host_groups: dict[str, list[str]] = {h: [] for h in raw.hosts}
    for name in sorted(raw.groups, key=order):
        if name in ("all", "ungrouped"):
            continue
        for host in members[name]:
            host_groups[host].append(name)

    groups: dict[str, list[str]] = {name: [] for name in raw.groups}
    hosts: list[Host] = []
    left_out: list[LeftOutHost] = []
    for name, raw_host in raw.hosts.items():
        mine = ["all"] + host_groups[name]
        if len(mine) == 1:
            mine.append("ungrouped")
        layers: list[VarSet] = [raw.groups["all"].vars]
        layers += [raw.groups[g].vars for g in mine[1:]]
        layers += list(group_vars.get("all", ()))
        for g in mine[1:]:
            layers += list(group_vars.get(g, ()))
        layers.append(raw_host.vars)
        layers += list(host_vars.get(name, ()))
        where = raw.source if raw_host.line is None else f"{raw.source}:{raw_host.line}"
        resolver = _Resolver(name, layers)
        other = resolver.other_connection()
        if other is not None:
            left_out.append(LeftOutHost(name, other, tuple(mine), where))
            continue
        for g in mine:
            groups[g].append(name)
        problem = ssh_word_problem(name)
        if problem is not None:  # without an address, ssh is handed the name
            raise InventoryError(
                f"host name {name!r} {problem}",
                source=raw.source,
                line=raw_host.line,
                hint="name hosts with letters, digits, '.', '_' and '-' (not first)",
            )
        hosts.append(resolver.host(tuple(mine), where))

    if not hosts:
        raise InventoryError(
            "every host of the inventory is reached by a connection leptonctl does not use: "
            + describe_left_out(left_out),
            source=raw.source,
            hint="leptonctl manages hosts over SSH (ansible_connection ssh, the default) "
            "or this machine (local)",
        )
    return Inventory(
        source=raw.source,
        hosts=tuple(hosts),
        groups=MappingProxyType({name: tuple(names) for name, names in groups.items()}),
        left_out=tuple(left_out),
    )


# --------------------------------------------------------------------------
# The group tree


def _parents(raw: RawInventory) -> dict[str, list[str]]:
    parents: dict[str, list[str]] = {name: [] for name in raw.groups}
    for name, grp in raw.groups.items():
        for child in grp.children:
            if child == "all":
                raise InventoryError(
                    f"group 'all' cannot be a child of {name!r}",
                    source=raw.source,
                    line=grp.child_lines.get(child),
                    key=f"{name}.children",
                )
            parents[child].append(name)
    for name, ups in parents.items():
        if name != "all" and not ups:
            ups.append("all")
    return parents


def _check_cycles(raw: RawInventory) -> None:
    """A depth-first walk with an explicit stack: a chain of thousands of groups is fine."""
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    for root in raw.groups:
        if root in state:
            continue
        state[root] = 1
        path = [root]
        stack = [iter(raw.groups[root].children)]
        while stack:
            name = path[-1]
            child = next(stack[-1], None)
            if child is None:
                stack.pop()
                path.pop()
                state[name] = 2
                continue
            if state.get(child) == 1:
                cycle = [*path[path.index(child) :], child]
                raise InventoryError(
                    f"groups form a cycle: {' -> '.join(cycle)}",
                    source=raw.source,
                    line=raw.groups[name].child_lines.get(child),
                    key=f"{name}.children",
                    hint="a group cannot (indirectly) be its own child",
                )
            if child not in state:
                state[child] = 1
                path.append(child)
                stack.append(iter(raw.groups[child].children))


def _topological(raw: RawInventory) -> list[str]:
    """Groups with every parent before its children (the tree has no cycle)."""
    waiting = {name: 0 for name in raw.groups}
    for grp in raw.groups.values():
        for child in grp.children:
            waiting[child] += 1
    ready = [name for name, count in waiting.items() if count == 0]
    order: list[str] = []
    while ready:
        name = ready.pop()
        order.append(name)
        for child in raw.groups[name].children:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    return order


def _depths(raw: RawInventory, parents: Mapping[str, list[str]]) -> dict[str, int]:
    depth: dict[str, int] = {"all": 0}
    for name in _topological(raw):
        if name != "all":
            depth[name] = 1 + max(depth[p] for p in parents[name])
    return depth


def _priority(raw: RawInventory, name: str) -> int:
    grp = raw.groups[name]
    value = grp.vars.values.get("ansible_group_priority", 1)
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,18}", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InventoryError(
            f"ansible_group_priority must be an integer, got {value!r}",
            source=grp.vars.source,
            line=grp.vars.line_of("ansible_group_priority"),
            key=f"{name}.vars.ansible_group_priority",
        )
    return value


def _members(raw: RawInventory) -> dict[str, list[str]]:
    """Group -> every host in it or its descendants, in inventory order."""
    found: dict[str, set[str]] = {}
    for name in reversed(_topological(raw)):  # children first
        grp = raw.groups[name]
        hosts = set(grp.hosts)
        for child in grp.children:
            hosts |= found[child]
        found[name] = hosts
    order = list(raw.hosts)
    return {name: [h for h in order if h in found[name]] for name in raw.groups}


# --------------------------------------------------------------------------
# Variables and typed fields


class _Resolver:
    def __init__(self, host: str, layers: Sequence[VarSet]) -> None:
        self.name = host
        self.values: dict[str, Any] = {}
        self.origin: dict[str, tuple[int, VarSet]] = {}
        for index, layer in enumerate(layers):
            for key, value in layer.values.items():
                self.values[key] = value
                self.origin[key] = (index, layer)

    def error(self, path: str, message: str, hint: str | None = None) -> InventoryError:
        top = path.split(".")[0]
        layer = self.origin[top][1]
        return InventoryError(
            f"host {self.name}: {message}",
            source=layer.source,
            line=layer.line_of(path),
            key=path,
            hint=hint,
        )

    def pick(self, field: str) -> tuple[str, Any] | None:
        names = FIELD_NAMES[field]
        best: tuple[int, int] | None = None
        found: tuple[str, Any] | None = None
        for rank, key in enumerate(names):
            if key not in self.values or self.values[key] is None:
                continue
            score = (self.origin[key][0], -rank)
            if best is None or score > best:
                best, found = score, (key, self.values[key])
        return found

    def text(self, field: str) -> str | None:
        found = self.pick(field)
        if found is None:
            return None
        key, value = found
        if isinstance(value, EncryptedValue):
            raise self.error(key, f"{key} is vault-encrypted; leptonctl cannot decrypt it")
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"{key} must be a non-empty string, got {value!r}")
        return value.strip()

    def port(self) -> int | None:
        found = self.pick("port")
        if found is None:
            return None
        key, value = found
        if isinstance(value, str) and re.fullmatch(r"[0-9]{1,6}", value.strip()):
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise self.error(key, f"{key} must be a port number in 1..65535, got {value!r}")
        return value

    def connection(self) -> str:
        found = self.pick("connection")
        if found is None:
            return "ssh"
        value = self.text("connection") or ""
        mapped = CONNECTIONS.get(value.lower())
        if mapped is None:
            raise self.error(
                found[0],
                f"unsupported connection {value!r}",
                hint="leptonctl connects with `ssh` (default) or `local`; hosts of another "
                "Ansible connection plugin (network_cli, winrm, docker, ...) are left out",
            )
        return mapped

    def other_connection(self) -> str | None:
        """The connection as written when it is an Ansible plugin other than SSH or local
        (the host is then left out); None otherwise."""
        found = self.pick("connection")
        if found is None or not isinstance(found[1], str):
            return None
        value = found[1].strip()
        lowered = value.lower()
        if lowered in CONNECTIONS:
            return None
        if lowered in OTHER_CONNECTIONS or _PLUGIN_NAME.fullmatch(lowered):
            return value
        return None

    def password_vars(self) -> tuple[str, ...]:
        """The names of the password variables set for this host (their values are
        dropped: leptonctl never logs in with a password)."""
        found = [k for k, v in self.values.items() if _PASSWORD_VARS.fullmatch(k) and v != ""]
        return tuple(sorted(found, key=lambda k: (k not in _LOGIN_PASSWORDS, k)))

    def python(self) -> str:
        value = self.text("python")
        if value is None or value.startswith("auto"):
            return DEFAULT_PYTHON
        return value

    def proxy_jump(self) -> str | None:
        direct = self.text("proxy_jump")
        if direct is not None:
            return direct
        found = self.pick("ssh_args")
        if found is None:
            return None
        key, value = found
        try:
            words = shlex.split(str(value))
        except ValueError as exc:
            raise self.error(key, f"{key} is not valid shell words: {exc}") from None
        for i, word in enumerate(words):
            option = word[2:] if word.startswith("-o") else None
            if option == "" and i + 1 < len(words):
                option = words[i + 1]
            if option is not None and option.lower().startswith("proxyjump"):
                return option.split("=", 1)[1].strip() if "=" in option else None
            if word == "-J" and i + 1 < len(words):
                return words[i + 1]
            if word.startswith("-J") and len(word) > 2:
                return word[2:]
        return None

    def capacity(self) -> DeclaredCapacity | None:
        found = self.pick("capacity")
        if found is None:
            return None
        key, value = found
        try:
            return parse_capacity(value)
        except CapacityValueError as exc:
            path = key if exc.key is None else f"{key}.{exc.key}"
            raise self.error(path, exc.message, hint=exc.hint) from None

    def ssh_word(self, field: str, value: str | None, key: str | None = None) -> str | None:
        """``value`` if it is safe where ssh reads it (a destination, a user, a jump host):
        not an option (a leading ``-``) and no whitespace or control characters."""
        if value is None:
            return None
        problem = ssh_word_problem(value)
        if problem is not None:
            found = None if key is not None else self.pick(field)
            where = key or (found[0] if found else field)
            raise self.error(
                where,
                f"{where} {value!r} {problem}",
                hint="write a plain host name, address or user name; "
                "a value that starts with '-' would be read by ssh as an option",
            )
        return value

    def data_address(self) -> None:
        value = self.values.get("data_address")
        if value is None:
            return
        if not isinstance(value, str) or not value.strip():
            raise self.error(
                "data_address", f"data_address must be a non-empty string, got {value!r}"
            )
        self.ssh_word("data_address", value, "data_address")

    def gpu_foreign(self) -> None:
        value = self.values.get("lepton_gpu_foreign")
        if value is None:
            return
        if not isinstance(value, str) or value.strip().lower() not in ("ignore", "busy"):
            raise self.error(
                "lepton_gpu_foreign",
                f"lepton_gpu_foreign must be 'ignore' or 'busy', got {value!r}",
                hint="'ignore': GPUs with other users' processes are still handed out; "
                "'busy' (the default): they are not",
            )

    def jumps(self) -> str | None:
        value = self.proxy_jump()
        if value is None:
            return None
        key = "proxy_jump" if self.text("proxy_jump") is not None else "ssh_args"
        for hop in value.split(","):
            self.ssh_word(key, hop)
            self.ssh_word(key, hop.rpartition("@")[2])
        return value

    def host(self, groups: tuple[str, ...], source: str) -> Host:
        self.data_address()
        self.gpu_foreign()
        passwords = self.password_vars()
        kept = {k: v for k, v in self.values.items() if not _PASSWORD_VARS.fullmatch(k)}
        return Host(
            name=self.name,
            address=self.ssh_word("address", self.text("address")),
            port=self.port(),
            user=self.ssh_word("user", self.text("user")),
            identity_file=self.text("identity_file"),
            connection=self.connection(),
            python=self.python(),
            data_dir=self.text("data_dir"),
            proxy_jump=self.jumps(),
            groups=groups,
            vars=MappingProxyType(copy.deepcopy(kept)),
            capacity=self.capacity(),
            source=source,
            password_vars=passwords,
        )
