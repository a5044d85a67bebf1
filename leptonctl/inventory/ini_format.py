"""Ansible's INI inventory format.

::

    bastion ansible_host=203.0.113.10        # before any section: ungrouped

    [gpu]
    gpu[01:04] capacity='{"gpus": 8}'
    gpu05:2222 ansible_user=admin

    [accel:children]
    gpu
    fpga

    [accel:vars]
    lepton_data_dir=/scratch/lepton

Rules (Ansible's, with the noted leniencies):

* ``[group]`` (or ``[group:hosts]``) lists hosts, ``[group:children]`` lists
  child groups one per line, ``[group:vars]`` holds ``key=value`` lines; any
  other suffix is an error.  Lines before the first section are ungrouped hosts.
* Whole-line comments start with ``#`` or ``;``.  On host and children lines a
  ``#`` that starts a word begins a comment; in ``[x:vars]`` values a ``#`` or
  ``;`` after whitespace (outside quotes) does too.
* Host lines: ``pattern [key=value ...]``; the pattern may be ``name:port`` and
  contain ranges.  Tokens are split like a shell (quotes removed) except that
  whitespace inside ``{...}``/``[...]``/``(...)`` does not split, so
  ``capacity={"cpus": 8, "gpus": 2}`` is one token.  Each value is read as a
  Python literal where possible (``ast.literal_eval``: ``8`` is an int,
  ``'{"cpus": 8}'`` a dict), else kept as a string - Ansible's rule.
* ``[x:vars]`` values are strings (one pair of surrounding quotes is removed);
  leptonctl gives the typed keys their types later: ``port`` becomes an int
  and ``capacity`` is read as a YAML flow mapping (``capacity={cpus: 8}``).
* A child group that is never defined is an empty group (Ansible tolerates
  it); ``[x:vars]`` for a group that is never defined is an error, as is a
  cycle of children.
"""

from __future__ import annotations

import ast
import re
import warnings
from typing import Any

from leptonctl.errors import InventoryError
from leptonctl.inventory.ranges import expand_host_pattern, split_host_port
from leptonctl.inventory.raw import RawInventory, VarSet

__all__ = ["parse_ini_inventory", "parse_ini_value", "split_ini_tokens"]

_SECTION = re.compile(r"^\[([^\[\]]*)\]\s*(?:[#;].*)?$")
_SUFFIXES = ("hosts", "children", "vars")


def parse_ini_value(text: str) -> Any:
    """A host-line value: a Python literal where possible, else the string."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def split_ini_tokens(line: str) -> list[str]:
    """Split a host line into words, shell style (see the module doc).

    Raises :class:`ValueError` for an unclosed quote.
    """
    tokens: list[str] = []
    cur: list[str] = []
    in_token = False
    quote: str | None = None
    depth = 0
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if quote == "'":
            if ch == "'":
                quote = None
            else:
                cur.append(ch)
        elif quote == '"':
            if ch == '"':
                quote = None
            elif ch == "\\" and i + 1 < n and line[i + 1] in '"\\$`':
                i += 1
                cur.append(line[i])
            else:
                cur.append(ch)
        elif ch in "'\"":
            quote = ch
            in_token = True
        elif ch == "\\" and i + 1 < n:
            i += 1
            cur.append(line[i])
            in_token = True
        elif ch.isspace() and depth == 0:
            if in_token:
                tokens.append("".join(cur))
                cur, in_token = [], False
        elif ch == "#" and not in_token and depth == 0:
            break
        else:
            if ch in "{[(":
                depth += 1
            elif ch in "}])":
                depth = max(0, depth - 1)
            cur.append(ch)
            in_token = True
        i += 1
    if quote is not None:
        raise ValueError(f"unclosed {quote} quote")
    if in_token:
        tokens.append("".join(cur))
    return tokens


def _strip_value_comment(value: str) -> str:
    quote: str | None = None
    for i, ch in enumerate(value):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "#;" and i > 0 and value[i - 1].isspace():
            return value[:i].rstrip()
    return value


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.raw = RawInventory(source)

    def error(
        self, line: int, message: str, key: str | None = None, hint: str | None = None
    ) -> InventoryError:
        return InventoryError(message, source=self.source, line=line, key=key, hint=hint)

    def parse(self) -> RawInventory:
        group, state = "ungrouped", "hosts"
        for lineno, text in enumerate(self.text.splitlines(), 1):
            line = text.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                group, state = self.section(line, lineno)
            elif state == "hosts":
                self.host_line(group, line, lineno)
            elif state == "children":
                self.child_line(group, line, lineno)
            else:
                self.vars_line(group, line, lineno)
        for name, grp in self.raw.groups.items():
            if not grp.defined and grp.vars_line is not None:
                raise self.error(
                    grp.vars_line,
                    f"[{name}:vars] for a group that is never defined",
                    hint=f"add a [{name}] or [{name}:children] section, or fix the name",
                )
        return self.raw

    def section(self, line: str, lineno: int) -> tuple[str, str]:
        match = _SECTION.match(line)
        if not match:
            raise self.error(
                lineno,
                f"malformed section header {line!r}",
                hint="sections look like [group], [group:children], [group:vars]",
            )
        name, sep, suffix = match.group(1).strip().partition(":")
        name, suffix = name.strip(), suffix.strip()
        if not name or any(ch.isspace() for ch in name):
            raise self.error(lineno, f"bad group name {name!r} in {line!r}")
        if sep and suffix not in _SUFFIXES:
            raise self.error(
                lineno,
                f"unknown section suffix ':{suffix}' in {line!r}",
                hint=f"use [{name}], [{name}:children] or [{name}:vars]",
            )
        state = suffix if sep else "hosts"
        grp = self.raw.group(name, lineno)
        if state == "vars":
            if grp.vars_line is None:
                grp.vars_line = lineno
        else:
            grp.defined = True
        return name, state

    def host_line(self, group: str, line: str, lineno: int) -> None:
        try:
            tokens = split_ini_tokens(line)
        except ValueError as exc:
            raise self.error(lineno, f"cannot read host line: {exc}") from None
        if not tokens:
            return
        pattern_text, assignments = tokens[0], tokens[1:]
        if "=" in pattern_text:
            raise self.error(
                lineno,
                f"expected a host name, got {pattern_text!r}",
                hint=f"variables belong after a host name, or in a [{group}:vars] section",
            )
        pattern, port = split_host_port(pattern_text, source=self.source, line=lineno)
        names = expand_host_pattern(pattern, source=self.source, line=lineno)
        host_vars = VarSet(self.source)
        if port is not None:
            host_vars.set("ansible_port", port, lineno)
        for token in assignments:
            key, eq, value = token.partition("=")
            if not eq or not key or not key.replace("_", "a").replace("-", "a").isalnum():
                raise self.error(
                    lineno,
                    f"malformed host variable {token!r} for {pattern_text}: expected key=value",
                    hint="quote values that contain spaces: key='a value'",
                )
            host_vars.set(key, parse_ini_value(value), lineno)
        for name in names:
            self.raw.add_host(name, group, lineno).vars.update(host_vars)

    def child_line(self, group: str, line: str, lineno: int) -> None:
        try:
            tokens = split_ini_tokens(line)
        except ValueError as exc:
            raise self.error(lineno, f"cannot read child group line: {exc}") from None
        if any("=" in token for token in tokens):
            raise self.error(
                lineno,
                f"a variable ({line!r}) under [{group}:children]",
                hint=f"[{group}:children] lists group names; put variables in [{group}:vars]",
            )
        if len(tokens) != 1:
            raise self.error(lineno, f"expected one group name per line, got {line!r}")
        child = tokens[0]
        if child == "all":
            raise self.error(lineno, f"group 'all' cannot be a child of {group!r}")
        self.raw.add_child(group, child, lineno)

    def vars_line(self, group: str, line: str, lineno: int) -> None:
        key, eq, value = line.partition("=")
        key = key.strip()
        if not eq or not key or any(ch.isspace() for ch in key):
            raise self.error(
                lineno,
                f"expected key=value in [{group}:vars], got {line!r}",
            )
        self.raw.group(group).vars.set(key, _unquote(_strip_value_comment(value.strip())), lineno)


def parse_ini_inventory(text: str, source: str) -> RawInventory:
    """Parse INI inventory text (``source`` names it in errors)."""
    return _Parser(text, source).parse()
