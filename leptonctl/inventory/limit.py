"""``--limit`` host selectors, with Ansible's pattern semantics.

A limit is a list of patterns separated by ``,`` (or by ``:`` when there is no
comma and it does not look like an IPv6 address; ``:`` inside ``[...]`` never
separates).  Each pattern is an atom with an optional modifier:

* ``all`` or ``*``: every host
* a host name, or a group name (all hosts of the group and its children)
* a glob over host and group names: ``gpu*``, ``web-?[0-9]`` (``fnmatch``,
  case-sensitive)
* ``~regex``: a regular expression matched at the start of host and group
  names (``re.match``, as Ansible does)
* a host range such as ``gpu[01:04]`` or a folded list ``gpu[01:03,07]``
  (every named host must exist)
* a subscript of any of the above: ``gpu[0]``, ``gpu[-1]``, ``gpu[1:3]``,
  ``gpu[2:]``, ``gpu[:1]`` - positions in the matched hosts (inventory order);
  as in Ansible **the end of a slice is inclusive** (``gpu[0:1]`` is two hosts)
* ``!pattern`` removes hosts, ``&pattern`` keeps only hosts also matched.

Plain patterns are applied first (union), then ``&`` ones, then ``!`` ones
(Ansible's ``order_patterns``); with no plain pattern the start is ``all``.
The result keeps inventory order.

Unlike Ansible, nothing is silently ignored: a pattern that matches no host
and no group name, a plain or ``&`` pattern that names only empty groups, and
a limit that selects no host at all each raise :class:`LimitError`.  So does a
plain or ``&`` pattern that names only hosts the inventory leaves out (reached by
another connection than SSH: ``network_cli``, ``winrm``, ...), naming them and
their connection; a ``!`` pattern may name them (it removes nothing).
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from leptonctl.errors import InventoryError, LimitError
from leptonctl.inventory.model import Host, Inventory, describe_left_out
from leptonctl.inventory.ranges import RangeTooLarge, expand_host_list, split_top_level

__all__ = ["select_hosts", "split_limit"]

_SUBSCRIPT = re.compile(
    r"^(?P<base>.+)\[(?:(?P<index>-?[0-9]{1,18})|(?P<start>-?[0-9]{0,18}):(?P<end>-?[0-9]{0,18}))\]$"
)
_COLON_SPLIT = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")
_GLOB_CHARS = set("*?[")
_RANGE_LIKE = re.compile(r"\[[^\]]*[:,][^\]]*\]")


def split_limit(limit: str) -> list[str]:
    """The patterns of a limit string, in the order given."""
    if "," in limit:
        parts = split_top_level(limit, ",")
    elif _looks_ipv6(limit):
        parts = [limit]
    else:
        parts = _COLON_SPLIT.findall(limit)
    return [p.strip() for p in parts if p.strip()]


def _looks_ipv6(text: str) -> bool:
    bare = text.lstrip("!&")
    if re.fullmatch(r"[0-9a-fA-F:.]+", bare) is None:
        return False
    return "::" in bare or bare.count(":") == 7


def select_hosts(inv: Inventory, limit: str | None) -> tuple[Host, ...]:
    """The hosts of ``inv`` selected by ``limit`` (``None``/empty: all hosts)."""
    if limit is None or not limit.strip():
        return inv.hosts
    patterns = split_limit(limit)
    regular = [p for p in patterns if p[0] not in "!&"]
    intersect = [p for p in patterns if p[0] == "&"]
    exclude = [p for p in patterns if p[0] == "!"]
    if not regular:
        regular = ["all"]

    selected: set[str] = set()
    for pattern in regular:
        selected |= _resolve(inv, pattern, pattern)
    for pattern in intersect:
        selected &= _resolve(inv, pattern[1:].strip(), pattern)
    for pattern in exclude:
        selected -= _resolve(inv, pattern[1:].strip(), pattern, allow_empty=True)
    result = tuple(h for h in inv.hosts if h.name in selected)
    if not result:
        raise LimitError(
            f"--limit {limit!r} selects no hosts",
            hint="check the exclusions (!) and intersections (&) of the limit",
        )
    return result


def _resolve(inv: Inventory, atom: str, written: str, *, allow_empty: bool = False) -> set[str]:
    if not atom:
        raise LimitError(f"empty pattern {written!r} in --limit")
    found = _match(_Names.of(inv), atom, written)
    if not found and inv.left_out:
        left = _match(_Names.left_out(inv), atom, written)
        if left and not allow_empty:
            hosts = [h for h in inv.left_out if h.name in left]
            raise LimitError(
                f"--limit pattern {written!r} names only hosts that leptonctl leaves out: "
                f"{describe_left_out(hosts)}",
                hint="leptonctl reaches hosts over SSH (or runs locally); Ansible reaches "
                "these over another connection",
            )
        if left is not None:
            found = found or set()
    if found is None:
        raise _unknown(inv, atom, written)
    if not found and not allow_empty:
        raise LimitError(
            f"--limit pattern {written!r} names only empty groups",
            hint="those groups exist in the inventory but have no hosts",
        )
    return found


@dataclass(frozen=True)
class _Names:
    """What a pattern is matched against: host names in inventory order, and groups."""

    hosts: tuple[str, ...]
    groups: Mapping[str, tuple[str, ...]]

    @classmethod
    def of(cls, inv: Inventory) -> _Names:
        return cls(inv.host_names, inv.groups)

    @classmethod
    def left_out(cls, inv: Inventory) -> _Names:
        """The hosts the inventory leaves out, in the groups they were written in."""
        groups: dict[str, list[str]] = {}
        for host in inv.left_out:
            for group in host.groups:
                groups.setdefault(group, []).append(host.name)
        names = tuple(h.name for h in inv.left_out)
        return cls(names, {g: tuple(members) for g, members in groups.items()})


def _match(inv: _Names, atom: str, written: str) -> set[str] | None:
    """Hosts of ``atom``; ``None`` if it matches no host or group name at all."""
    if atom in ("all", "*"):
        return set(inv.groups.get("all", inv.hosts))
    if atom.startswith("~"):
        try:
            regex = re.compile(atom[1:])
        except re.error as exc:
            raise LimitError(f"bad regular expression in --limit {written!r}: {exc}") from None
        return _by_names(inv, lambda name: regex.match(name) is not None)

    sub = _SUBSCRIPT.match(atom)
    if sub:
        base = _match(inv, sub["base"], written)
        if base is not None:
            ordered = [h for h in inv.hosts if h in base]
            return set(_subscript(ordered, sub["index"], sub["start"], sub["end"], written))
    if _RANGE_LIKE.search(atom):
        found = _by_range(inv, atom, written)
        if found is not None:
            return found
    if _GLOB_CHARS & set(atom):
        return _by_names(inv, lambda name: fnmatch.fnmatchcase(name, atom))
    return _by_names(inv, lambda name: name == atom)


def _by_names(inv: _Names, test: Callable[[str], bool]) -> set[str] | None:
    matched = False
    hosts: set[str] = set()
    for group, members in inv.groups.items():
        if test(group):
            matched = True
            hosts.update(members)
    for name in inv.hosts:
        if test(name):
            matched = True
            hosts.add(name)
    return hosts if matched else None


def _by_range(inv: _Names, atom: str, written: str) -> set[str] | None:
    try:
        names = expand_host_list(atom, source="--limit")
    except RangeTooLarge as exc:
        raise LimitError(f"--limit pattern {written!r}: {exc.detail}", hint=exc.hint) from None
    except InventoryError:
        return None
    known = set(inv.hosts)
    missing = [n for n in names if n not in known]
    if len(missing) == len(names):
        return None
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise LimitError(f"--limit pattern {written!r} names hosts not in the inventory: {shown}")
    return set(names)


def _subscript(
    hosts: list[str], index: str | None, start: str | None, end: str | None, written: str
) -> list[str]:
    if index is not None:
        i = int(index)
        if not -len(hosts) <= i < len(hosts):
            raise LimitError(
                f"--limit pattern {written!r}: index {i} is out of range "
                f"(it matches {len(hosts)} host{'s' if len(hosts) != 1 else ''})"
            )
        return [hosts[i]]
    lo = int(start) if start else 0
    if not end:
        return hosts[lo:]
    hi = int(end)
    if hi < 0:
        hi += len(hosts)
    return hosts[lo : hi + 1]


def _unknown(inv: Inventory, atom: str, written: str) -> LimitError:
    groups = [g for g in inv.groups if g not in ("all", "ungrouped")]
    close = difflib.get_close_matches(atom, list(inv.groups) + list(inv.host_names), n=3)
    shown = ", ".join(groups[:8]) + (", ..." if len(groups) > 8 else "")
    hint = f"did you mean {', '.join(close)}? " if close else ""
    hint += f"known groups: {shown}" if groups else "the inventory has no groups besides all"
    return LimitError(
        f"--limit pattern {written!r} matches no host or group in {inv.source}", hint=hint
    )
