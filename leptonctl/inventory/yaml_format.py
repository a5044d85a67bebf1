"""Ansible's YAML inventory format (JSON too: it is a YAML subset).

::

    all:
      vars: {ansible_user: ops}
      hosts:
        bastion: {ansible_host: 203.0.113.10}
      children:
        gpu:
          hosts:
            gpu[01:04]:
              capacity: {gpus: 8}
          vars: {lepton_data_dir: /scratch/lepton}

The top level is a mapping of groups (usually just ``all``); a group body is
null or a mapping with ``hosts`` (host pattern -> vars mapping or null),
``children`` (group -> group body or null) and ``vars``.  A group that appears
in several places is merged.  The file is walked as YAML nodes so every error
carries its line; values are built with PyYAML's safe constructor (plus
Ansible's ``!unsafe``, read as a plain string, and ``!vault``, kept as an
opaque :class:`EncryptedValue`).  Duplicate keys in a mapping are an error;
``<<`` merge keys work.
"""

from __future__ import annotations

import difflib
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from leptonctl.core.safeyaml import BoundedLoader, YamlLimitError
from leptonctl.errors import InventoryError
from leptonctl.inventory.ranges import expand_host_pattern, split_host_port
from leptonctl.inventory.raw import EncryptedValue, RawGroup, RawInventory, VarSet

__all__ = ["parse_yaml_inventory", "parse_yaml_vars"]

_GROUP_KEYS = ("hosts", "children", "vars")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NULL_TAG = "tag:yaml.org,2002:null"


class _Loader(BoundedLoader):
    """The bounded safe loader (:mod:`leptonctl.core.safeyaml`) that also knows Ansible's
    ``!unsafe`` and ``!vault`` tags."""


def _construct_unsafe(loader: yaml.SafeLoader, node: Node) -> Any:
    if isinstance(node, ScalarNode):
        return loader.construct_scalar(node)
    return loader.construct_object(node, deep=True)


def _construct_vault(loader: yaml.SafeLoader, node: Node) -> EncryptedValue:
    text = loader.construct_scalar(node) if isinstance(node, ScalarNode) else ""
    return EncryptedValue(str(text))


_Loader.add_constructor("!unsafe", _construct_unsafe)
_Loader.add_constructor("!vault", _construct_vault)


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == _NULL_TAG:
        return "nothing (null)"
    return f"the scalar {node.value!r}"


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


class _Walker:
    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.text = text
        self.loader = _Loader("")
        self.checked: set[int] = set()

    def compose(self) -> Node | None:
        try:
            self.loader = _Loader(self.text)
            return self.loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = None if mark is None else mark.line + 1
            what = ": ".join(str(p) for p in (exc.context, exc.problem) if p)
            kind = "refused" if isinstance(exc, YamlLimitError) else "YAML syntax error"
            raise InventoryError(
                f"{kind}: {what or exc}", source=self.source, line=line, hint=exc.note
            ) from None
        except yaml.YAMLError as exc:
            raise InventoryError(f"YAML error: {exc}", source=self.source) from None
        finally:
            self.loader.dispose()

    def error(self, node: Node, message: str, key: str, hint: str | None = None) -> InventoryError:
        return InventoryError(
            message, source=self.source, line=_line(node), key=key or None, hint=hint
        )

    def is_null(self, node: Node) -> bool:
        return isinstance(node, ScalarNode) and node.tag == _NULL_TAG

    def pairs(self, node: MappingNode, path: str) -> list[tuple[ScalarNode, Node]]:
        """Key/value nodes of a mapping: duplicate keys rejected, ``<<`` merged."""
        if id(node) not in self.checked:
            self.checked.add(id(node))
            seen: dict[str, int] = {}
            for key, _ in node.value:
                if key.tag == _MERGE_TAG:
                    continue
                if not isinstance(key, ScalarNode):
                    raise self.error(key, "keys must be plain names, not lists or mappings", path)
                if key.value in seen:
                    raise self.error(
                        key,
                        f"duplicate key {key.value!r} (first on line {seen[key.value]})",
                        f"{path}.{key.value}" if path else key.value,
                    )
                seen[key.value] = _line(key)
            try:
                self.loader.flatten_mapping(node)
            except yaml.MarkedYAMLError as exc:
                raise self.error(node, f"bad merge key: {exc.problem}", path) from None
        merged: dict[str, tuple[ScalarNode, Node]] = {}
        for key, value in node.value:
            if not isinstance(key, ScalarNode):
                raise self.error(key, "keys must be plain names, not lists or mappings", path)
            merged[key.value] = (key, value)
        return list(merged.values())

    def construct(self, node: Node, key: str) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = _line(node) if mark is None else mark.line + 1
            raise InventoryError(
                f"cannot read this value: {exc.problem or exc}",
                source=self.source,
                line=line,
                key=key,
            ) from None

    # -- vars --------------------------------------------------------------

    def vars(self, node: Node, into: VarSet, path: str) -> None:
        if self.is_null(node):
            return
        if not isinstance(node, MappingNode):
            raise self.error(
                node,
                f"expected a mapping of variables, got {_kind(node)}",
                path,
                hint="write variables as `name: value` lines",
            )
        for key, value in self.pairs(node, path):
            where = f"{path}.{key.value}" if path else str(key.value)
            into.set(key.value, self.construct(value, where), _line(key))
            self.nested_lines(value, key.value, into)

    def nested_lines(self, node: Node, prefix: str, into: VarSet) -> None:
        if isinstance(node, MappingNode):
            for key, value in node.value:
                if isinstance(key, ScalarNode) and key.tag != _MERGE_TAG:
                    path = f"{prefix}.{key.value}"
                    into.lines.setdefault(path, _line(key))
                    self.nested_lines(value, path, into)

    # -- groups and hosts --------------------------------------------------

    def group(self, raw: RawInventory, name: str, body: Node, path: str, line: int) -> None:
        grp = raw.group(name, line)
        grp.defined = True
        if self.is_null(body):
            return
        if not isinstance(body, MappingNode):
            raise self.error(
                body,
                f"expected a group body (a mapping with hosts, children or vars), "
                f"got {_kind(body)}",
                path,
            )
        for key, value in self.pairs(body, path):
            word = key.value
            if word == "hosts":
                self.hosts(raw, grp, value, f"{path}.hosts")
            elif word == "children":
                self.children(raw, grp, value, f"{path}.children")
            elif word == "vars":
                self.vars(value, grp.vars, f"{path}.vars")
            else:
                close = difflib.get_close_matches(str(word), _GROUP_KEYS, n=1, cutoff=0.5)
                hint = (
                    f"did you mean `{close[0]}`?"
                    if close
                    else "put hosts under `hosts:` and sub-groups under `children:`"
                )
                raise self.error(
                    key,
                    f"unknown key {word!r} in group {name!r}: "
                    "a group has only hosts, children and vars",
                    f"{path}.{word}",
                    hint=hint,
                )

    def hosts(self, raw: RawInventory, grp: RawGroup, node: Node, path: str) -> None:
        if self.is_null(node):
            return
        if not isinstance(node, MappingNode):
            raise self.error(
                node,
                f"expected a mapping of host names, got {_kind(node)}",
                path,
                hint="write each host as a key: `gpu01:` (followed by its vars, or nothing)",
            )
        for key, value in self.pairs(node, path):
            line = _line(key)
            pattern, port = split_host_port(str(key.value), source=self.source, line=line)
            names = expand_host_pattern(pattern, source=self.source, line=line)
            host_vars = VarSet(self.source)
            if port is not None:
                host_vars.set("ansible_port", port, line)
            self.vars(value, host_vars, f"{path}.{key.value}")
            for name in names:
                host = raw.add_host(name, grp.name, line)
                host.vars.update(host_vars)

    def children(self, raw: RawInventory, grp: RawGroup, node: Node, path: str) -> None:
        if self.is_null(node):
            return
        if not isinstance(node, MappingNode):
            raise self.error(
                node,
                f"expected a mapping of group names, got {_kind(node)}",
                path,
                hint="write each child group as a key: `gpu:` (followed by its body, or nothing)",
            )
        for key, value in self.pairs(node, path):
            name = str(key.value)
            if name == "all":
                raise self.error(key, f"group 'all' cannot be a child of {grp.name!r}", path)
            raw.add_child(grp.name, name, _line(key))
            self.group(raw, name, value, f"{path}.{name}", _line(key))


def parse_yaml_inventory(text: str, source: str) -> RawInventory:
    """Parse YAML inventory text (``source`` names it in errors)."""
    walker = _Walker(text, source)
    root = walker.compose()
    raw = RawInventory(source)
    if root is None or walker.is_null(root):
        return raw
    if not isinstance(root, MappingNode):
        raise walker.error(
            root,
            f"expected a mapping of groups (usually `all:`), got {_kind(root)}",
            "<top level>",
        )
    for key, body in walker.pairs(root, ""):
        walker.group(raw, str(key.value), body, str(key.value), _line(key))
    return raw


def parse_yaml_vars(text: str, source: str) -> VarSet:
    """Parse a group_vars/host_vars file: a mapping of variables (or empty)."""
    walker = _Walker(text, source)
    root = walker.compose()
    into = VarSet(source)
    if root is not None:
        walker.vars(root, into, "")
    return into
