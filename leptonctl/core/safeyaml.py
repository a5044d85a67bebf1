"""One bounded, safe YAML loader for everything people write or copy: inventories,
playbooks and batch files.

PyYAML's ``SafeLoader`` runs no code, but it happily builds a billion-node
document from a kilobyte of aliases (``a: &a [x, x]``, ``b: &b [*a, *a]``, ...),
recurses once per nesting level (a few thousand ``[`` end in ``RecursionError``)
and lets a bad date or a 5,000-digit number escape as a bare ``ValueError``.
:class:`BoundedLoader` refuses all three before any of it is built:

* the input is at most :data:`MAX_YAML_BYTES` bytes (:func:`read_bounded_text`);
* nodes nest at most :data:`MAX_DEPTH` levels;
* the document, with every alias expanded, has at most :data:`MAX_NODES` nodes
  (an alias costs the size of what it points at, so sharing a mapping between a
  thousand hosts is fine and an alias bomb is refused at once); an alias inside
  the node it names (a recursive document) is refused too;
* a value the safe constructor cannot build (``2026-13-45``, a huge integer) is a
  :class:`yaml.constructor.ConstructorError` with its line, like every other error.

Every refusal is a :class:`yaml.MarkedYAMLError`, so callers report it with the
file and line the way they report a syntax error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent
from yaml.nodes import Node

from leptonctl.errors import UsageError

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_YAML_BYTES",
    "BoundedLoader",
    "YamlLimitError",
    "compose_yaml",
    "construct_yaml",
    "load_yaml",
    "read_bounded_text",
    "read_source",
]

MAX_YAML_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 1_000_000


class YamlLimitError(yaml.MarkedYAMLError):
    """The document is too big, too deep, or its aliases expand too far."""


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with the limits of the module doc."""

    def __init__(self, stream: str) -> None:
        if len(stream) > MAX_YAML_BYTES:  # characters: at least as many bytes
            raise YamlLimitError(
                problem=f"the file is larger than {MAX_YAML_BYTES // (1024 * 1024)} MiB"
            )
        super().__init__(stream)
        self._depth = 0
        self._expanded = 0  # nodes of the document with every alias expanded
        self._weight: dict[int, int] = {}  # id(node) -> its expanded size, once composed

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            node = super().compose_node(parent, index)
            weight = self._weight.get(id(node))
            if weight is None:
                raise YamlLimitError(
                    problem=f"the alias *{event.anchor} refers to a node that contains it "
                    "(a recursive document)",
                    problem_mark=event.start_mark,
                )
            self._count(weight, event.start_mark)
            return node
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise YamlLimitError(
                problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=mark
            )
        before = self._expanded
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._count(1, mark)
        self._weight[id(node)] = self._expanded - before
        return node

    def _count(self, nodes: int, mark: Any) -> None:
        self._expanded += nodes
        if self._expanded > MAX_NODES:
            raise YamlLimitError(
                problem=f"more than {MAX_NODES:,} values once its aliases are expanded "
                "(an alias bomb?)",
                problem_mark=mark,
                note="write the values out, or share fewer and smaller anchors",
            )

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError, TypeError) as exc:
            raise ConstructorError(problem=str(exc), problem_mark=node.start_mark) from None


def compose_yaml(text: str, loader: type[BoundedLoader] = BoundedLoader) -> Node | None:
    """The node tree of one YAML document (``None`` for an empty one), within the limits."""
    instance = loader(text)
    try:
        return instance.get_single_node()
    finally:
        instance.dispose()


def construct_yaml(node: Node | None, loader: type[BoundedLoader] = BoundedLoader) -> Any:
    """Python values of a tree from :func:`compose_yaml`."""
    if node is None:
        return None
    instance = loader("")
    try:
        return instance.construct_document(node)
    finally:
        instance.dispose()


def load_yaml(text: str, loader: type[BoundedLoader] = BoundedLoader) -> Any:
    """``yaml.safe_load`` within the limits of the module doc."""
    return construct_yaml(compose_yaml(text, loader), loader)


def read_bounded_text(path: str | os.PathLike[str]) -> str:
    """The text of an inventory, playbook or batch file: ``OSError`` if unreadable,
    ``UnicodeDecodeError`` if not UTF-8, :class:`YamlLimitError` if larger than
    :data:`MAX_YAML_BYTES`."""
    with Path(path).open("rb") as handle:
        data = handle.read(MAX_YAML_BYTES + 1)
    if len(data) > MAX_YAML_BYTES:
        raise YamlLimitError(
            problem=f"the file is larger than {MAX_YAML_BYTES // (1024 * 1024)} MiB"
        )
    return data.decode("utf-8")


def read_source(path: str | os.PathLike[str], what: str) -> str:
    """:func:`read_bounded_text`, with every failure a ``UsageError`` naming ``what``
    (``playbook``, ``batch file``), the file and, for bad UTF-8, the line."""
    try:
        return read_bounded_text(path)
    except YamlLimitError as exc:
        raise UsageError(f"{path}: {exc.problem}", hint=f"is this the {what} you meant?") from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise UsageError(
            f"{path}:{line}: the {what} is not UTF-8 text ({exc.reason})",
            hint="save the file as UTF-8",
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
