"""Host name ranges: expanding ``h[01:16]`` and folding names back into that form.

Expansion syntax (Ansible's, plus comma lists inside brackets):

* ``h[1:3]``          -> ``h1 h2 h3``
* ``h[01:16]``        -> ``h01 .. h16``; a start with a leading zero pads every
  number to the start's width (start and end must then have the same width,
  as in Ansible)
* ``h[1:10:2]``       -> ``h1 h3 h5 h7 h9`` (stride)
* ``db-[a:f]``        -> ``db-a .. db-f`` (single letters; ``a..z`` then ``A..Z``)
* ``r[1:2]n[1:2]``    -> ``r1n1 r1n2 r2n1 r2n2`` (several ranges: cartesian
  product, leftmost varies slowest)
* ``h[01:03,05,x]``   -> ``h01 h02 h03 h05 hx`` (comma lists; a single item is
  kept verbatim - this is what :func:`fold_host_names` writes)

A host name therefore cannot contain ``[`` or ``]`` literally.

Folded display (:func:`fold_host_names`), ClusterShell/clubak style: names are
grouped by everything around their *last* run of digits and written as
``prefix[items]suffix``; items are ``a:b`` for runs of consecutive numbers in
one format and single numbers otherwise; groups are joined with ``,`` and
sorted by prefix, then suffix.  A group of one name is written as the plain
name.  ``expand_host_list(fold_host_names(names))`` gives back exactly the set
of names (sorted as folded), e.g. ``["h01", "h02", "h03", "h05", "db"]`` ->
``"db,h[01:03,05]"``.
"""

from __future__ import annotations

import itertools
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass

from leptonctl.errors import InventoryError

__all__ = [
    "MAX_HOSTS",
    "RangeTooLarge",
    "expand_host_list",
    "expand_host_pattern",
    "fold_host_names",
    "has_range",
    "split_host_port",
]

_HEXISH = set(string.hexdigits + ":.")
MAX_HOSTS = 100_000  # hosts one range, one --limit list, or one inventory may name


class RangeTooLarge(InventoryError):
    """A host range or list that would name more than :data:`MAX_HOSTS` hosts."""


def has_range(pattern: str) -> bool:
    """Whether ``pattern`` contains a bracketed range or list."""
    return "[" in pattern or "]" in pattern


def expand_host_pattern(
    pattern: str, *, source: str = "<pattern>", line: int | None = None
) -> list[str]:
    """Expand every ``[...]`` of ``pattern`` (see the module doc) into host names.

    A pattern without brackets expands to itself.  Errors raise
    :class:`InventoryError` located at ``source``/``line``; a pattern of more
    than :data:`MAX_HOSTS` names raises :class:`RangeTooLarge` before any is built.
    """
    if not pattern:
        raise InventoryError("empty host name", source=source, line=line)
    pieces: list[list[_Item]] = []
    pos = 0
    while pos < len(pattern):
        open_at = pattern.find("[", pos)
        close_at = pattern.find("]", pos)
        if open_at < 0:
            if close_at >= 0:
                raise _range_error(pattern, "']' without a matching '['", source, line)
            pieces.append([_Item.word(pattern[pos:])])
            break
        if 0 <= close_at < open_at:
            raise _range_error(pattern, "']' without a matching '['", source, line)
        end = pattern.find("]", open_at)
        if end < 0:
            raise _range_error(pattern, "unclosed '['", source, line)
        inner = pattern[open_at + 1 : end]
        if "[" in inner:
            raise _range_error(pattern, "nested '['", source, line)
        if open_at > pos:
            pieces.append([_Item.word(pattern[pos:open_at])])
        pieces.append(_parse_items(pattern, inner, source, line))
        pos = end + 1
    total = 1
    for piece in pieces:
        total *= sum(item.count for item in piece)
        if total > MAX_HOSTS:
            raise RangeTooLarge(
                f"the host range {pattern[:80]!r} names more than {MAX_HOSTS:,} hosts",
                source=source,
                line=line,
                hint="an inventory holds at most 100,000 hosts; check the range's bounds",
            )
    expanded = [[name for item in piece for name in item.names()] for piece in pieces]
    return ["".join(combo) for combo in itertools.product(*expanded)]


def expand_host_list(text: str, *, source: str = "<pattern>", line: int | None = None) -> list[str]:
    """Expand a comma separated list of patterns (commas inside brackets belong
    to the bracket), e.g. the output of :func:`fold_host_names`."""
    names: list[str] = []
    seen: set[str] = set()
    for part in split_top_level(text, ","):
        part = part.strip()
        if not part:
            continue
        for name in expand_host_pattern(part, source=source, line=line):
            if name not in seen:
                seen.add(name)
                names.append(name)
        if len(names) > MAX_HOSTS:
            raise RangeTooLarge(
                f"the host list names more than {MAX_HOSTS:,} hosts", source=source, line=line
            )
    return names


def split_top_level(text: str, sep: str) -> list[str]:
    """Split ``text`` on ``sep`` where it is not inside ``[...]``."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _range_error(pattern: str, why: str, source: str, line: int | None) -> InventoryError:
    return InventoryError(
        f"bad host range {pattern!r}: {why}",
        source=source,
        line=line,
        hint="ranges look like h[01:16], h[1:9:2] or db-[a:f]",
    )


@dataclass(frozen=True)
class _Item:
    """One item inside brackets (or a literal piece): its size is known before it is built."""

    start: int
    stop: int  # inclusive
    step: int
    width: int = 0  # zero-padding width of numbers; 0: none
    letters: bool = False
    text: str | None = None  # a literal word

    @staticmethod
    def word(text: str) -> _Item:
        return _Item(0, 0, 1, text=text)

    @property
    def count(self) -> int:
        return 1 if self.text is not None else (self.stop - self.start) // self.step + 1

    def names(self) -> list[str]:
        if self.text is not None:
            return [self.text]
        if self.letters:
            return list(string.ascii_letters[self.start : self.stop + 1 : self.step])
        return [str(n).zfill(self.width) for n in range(self.start, self.stop + 1, self.step)]


_MAX_DIGITS = 18  # a range bound fits in 64 bits


def _parse_items(pattern: str, inner: str, source: str, line: int | None) -> list[_Item]:
    out: list[_Item] = []
    for item in inner.split(","):
        item = item.strip()
        if not item:
            raise _range_error(pattern, "empty item inside brackets", source, line)
        if ":" not in item:
            out.append(_Item.word(item))
            continue
        fields = item.split(":")
        if len(fields) > 3:
            raise _range_error(pattern, f"too many ':' in [{item}]", source, line)
        begin, end = fields[0] or "0", fields[1]
        step_text = fields[2] if len(fields) == 3 else "1"
        if not end:
            raise _range_error(pattern, "the range has no end", source, line)
        if not _is_number(step_text) or int(step_text) < 1:
            raise _range_error(
                pattern, f"the stride {step_text!r} is not a positive integer", source, line
            )
        step = int(step_text)
        if _is_number(begin) and _is_number(end):
            lo, hi = int(begin), int(end)
            if lo > hi:
                raise _range_error(
                    pattern, f"the start {begin} is after the end {end}", source, line
                )
            width = 0
            if begin[0] == "0" and len(begin) > 1:
                width = len(begin)
                if len(end) != width:
                    raise _range_error(
                        pattern,
                        f"a zero-padded start ({begin}) needs an end of the same width",
                        source,
                        line,
                    )
            out.append(_Item(lo, hi, step, width))
        elif (
            len(begin) == 1
            and len(end) == 1
            and begin in string.ascii_letters
            and end in string.ascii_letters
        ):
            lo, hi = string.ascii_letters.index(begin), string.ascii_letters.index(end)
            if lo > hi:
                raise _range_error(
                    pattern, f"the start {begin!r} is after the end {end!r}", source, line
                )
            out.append(_Item(lo, hi, step, letters=True))
        else:
            raise _range_error(
                pattern,
                f"[{item}]: both bounds must be numbers (at most {_MAX_DIGITS} digits), "
                "or both single letters",
                source,
                line,
            )
    return out


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= _MAX_DIGITS


def _looks_ipv6(text: str) -> bool:
    return ("::" in text or text.count(":") == 7) and set(text) <= _HEXISH


def split_host_port(
    text: str, *, source: str = "<pattern>", line: int | None = None
) -> tuple[str, int | None]:
    """Split an inventory host key into (pattern, port).

    Accepts ``name``, ``name:port``, ``h[01:04]:2222``, bare IPv6 addresses
    (``fe80::1``, no port) and ``[IPv6]:port``.
    """
    text = text.strip()
    if text.startswith("["):
        close = text.find("]")
        inner = text[1:close] if close > 0 else ""
        rest = text[close + 1 :] if close > 0 else ""
        if close > 0 and _looks_ipv6(inner) and (not rest or re.fullmatch(r":\d+", rest)):
            return inner, (_port(rest[1:], text, source, line) if rest else None)
    if _looks_ipv6(text) and "[" not in text:
        return text, None
    colons = [i for i, part in enumerate(_outside_brackets(text)) if part == ":"]
    if not colons:
        return text, None
    if len(colons) > 1:
        raise InventoryError(
            f"cannot read host {text!r}: too many ':' (expected name or name:port)",
            source=source,
            line=line,
        )
    at = colons[0]
    name, port = text[:at], text[at + 1 :]
    if not name:
        raise InventoryError(f"cannot read host {text!r}: empty name", source=source, line=line)
    return name, _port(port, text, source, line)


def _outside_brackets(text: str) -> list[str]:
    """``text`` as a list of characters, with those inside brackets blanked."""
    out: list[str] = []
    depth = 0
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        out.append(ch if depth == 0 else " ")
    return out


def _port(text: str, whole: str, source: str, line: int | None) -> int:
    if not _is_number(text) or not 1 <= int(text) <= 65535:
        raise InventoryError(
            f"bad port in {whole!r}: {text!r} is not a number in 1..65535",
            source=source,
            line=line,
        )
    return int(text)


# --------------------------------------------------------------------------
# Folding

_LAST_NUMBER = re.compile(r"^(.*?)(\d+)(\D*)$", re.S)


def _is_padded(digits: str) -> bool:
    return len(digits) > 1 and digits[0] == "0"


def fold_host_names(names: Iterable[str]) -> str:
    """A compact, deterministic display of a set of names (see the module doc).

    Names containing ``[``, ``]`` or ``,`` cannot be folded and are written as
    they are.
    """
    families: dict[tuple[str, str], set[str]] = {}
    plain: set[str] = set()
    for name in set(names):
        match = _LAST_NUMBER.match(name)
        if not match or any(ch in name for ch in "[],"):
            plain.add(name)
            continue
        prefix, digits, suffix = match.groups()
        families.setdefault((prefix, suffix), set()).add(digits)

    entries: list[tuple[tuple[str, str, int], str]] = []
    for name in plain:
        entries.append(((name, "", -1), name))
    for (prefix, suffix), numbers in families.items():
        ordered = sorted(numbers, key=lambda d: (int(d), len(d)))
        if len(ordered) == 1:
            entries.append(((prefix, suffix, int(ordered[0])), prefix + ordered[0] + suffix))
            continue
        items = _fold_numbers(ordered)
        entries.append(((prefix, suffix, int(ordered[0])), f"{prefix}[{','.join(items)}]{suffix}"))
    entries.sort(key=lambda e: e[0])
    return ",".join(text for _, text in entries)


def _fold_numbers(ordered: list[str]) -> list[str]:
    """Fold sorted digit strings into range items that expand back exactly."""
    items: list[str] = []
    i = 0
    while i < len(ordered):
        first = ordered[i]
        width = len(first) if _is_padded(first) else 0
        j = i
        while j + 1 < len(ordered):
            nxt = ordered[j + 1]
            value = int(ordered[j]) + 1
            expected = str(value).zfill(width) if width else str(value)
            if int(nxt) != value or nxt != expected:
                break
            j += 1
        if j > i:
            items.append(f"{first}:{ordered[j]}")
        else:
            items.append(first)
        i = j + 1
    return items
