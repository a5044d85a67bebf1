"""What a host says its files are: the ``scan`` reply, checked before anything uses it.

A scan comes from the host that holds a source (``cp``, ``data put``).  That host chooses
every path in it, so a compromised host could name ``../../.ssh/authorized_keys`` or an
absolute path and have the receiver write outside the destination (the class of OpenSSH
scp's CVE-2019-6111), or list a file under a symlink it also lists.  ``read_scan`` is the
one gate every scan passes on the operator: it refuses the whole scan, naming the entry,
unless every path is relative and normalised, printable, listed once, inside a directory of
the same scan, of a known type, with sane sizes and modes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from leptonctl.core.datasets import (
    ENTRY_TYPES,
    MAX_SIZE,
    ChunkRef,
    Manifest,
    ManifestEntry,
    check_layout,
    check_path,
    manifest_shape,
)

_HASH = re.compile(r"^[0-9a-f]{64}$")


class UnsafeScan(ValueError):
    """A scan that cannot be trusted; the message names the entry (its path as repr)."""


@dataclass(frozen=True)
class ScanEntry:
    path: str  # relative POSIX path, "" for a single file
    type: str  # "file" | "dir" | "symlink"
    mode: int
    size: int = 0
    chunks: tuple[tuple[str | None, int], ...] = ()  # (sha256 or None: not hashed, size)
    target: str | None = None
    mtime_ns: int | None = None


@dataclass(frozen=True)
class Scan:
    kind: str  # "file" | "dir"
    entries: tuple[ScanEntry, ...]

    def to_manifest(self) -> Manifest:
        """The dataset manifest of a hashed scan."""
        return Manifest(
            kind=self.kind,
            entries=tuple(
                ManifestEntry(
                    path=e.path,
                    type=e.type,
                    mode=e.mode,
                    size=e.size,
                    chunks=tuple(ChunkRef(str(h), n) for h, n in e.chunks),
                    target=e.target,
                )
                for e in self.entries
            ),
        )


def printable(text: object) -> str:
    """``text`` with control characters escaped: what a host said, shown literally (an
    escape sequence in a path or an error never reaches a terminal as one)."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(text))


def read_scan(doc: object, *, chunk_size: int, hashed: bool) -> Scan:
    """Check a scan reply (``{"kind", "entries": [...]}``); ``UnsafeScan`` says why not.

    ``hashed``: every chunk carries its sha256 (a put) or none does (a copy hashes while it
    sends).  No chunk is larger than ``chunk_size``."""
    try:
        kind, raw = manifest_shape(doc)
        entries = tuple(_entry(i, e, chunk_size, hashed) for i, e in enumerate(raw))
        check_layout(kind, [(e.path, e.type) for e in entries])
    except ValueError as exc:
        raise UnsafeScan(str(exc).removeprefix("manifest: ")) from None
    return Scan(kind, entries)


def _entry(index: int, raw: object, chunk_size: int, hashed: bool) -> ScanEntry:
    where = f"entry {index}"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(raw).__name__}")
    path = raw.get("path")
    if not isinstance(path, str):
        raise ValueError(f"{where}: the path must be a string, got {path!r}")
    where = repr(path)
    check_path(where, path)
    type_ = raw.get("type")
    if type_ not in ENTRY_TYPES:
        raise ValueError(
            f"{where}: the type must be one of {', '.join(ENTRY_TYPES)}, got {type_!r}"
        )
    mode = _number(where, "mode", raw.get("mode"), 0o7777)
    if type_ == "symlink":
        target = raw.get("target")
        if not isinstance(target, str) or not target or "\0" in target:
            raise ValueError(f"{where}: a symlink needs a target without NUL, got {target!r}")
        return ScanEntry(path, "symlink", mode, target=target)
    if type_ == "dir":
        return ScanEntry(path, "dir", mode)
    size = _number(where, "size", raw.get("size"), MAX_SIZE)
    mtime = raw.get("mtime_ns")
    if not isinstance(mtime, int) or isinstance(mtime, bool) or abs(mtime) > MAX_SIZE:
        raise ValueError(f"{where}: mtime_ns must be an integer, got {mtime!r}")
    raw_chunks = raw.get("chunks")
    if not isinstance(raw_chunks, list):
        raise ValueError(f"{where}: 'chunks' must be a list")
    chunks = tuple(_chunk(where, c, chunk_size, hashed) for c in raw_chunks)
    total = sum(n for _, n in chunks)
    if total != size:
        raise ValueError(f"{where}: its chunks add up to {total} bytes, its size says {size}")
    return ScanEntry(path, "file", mode, size, chunks, mtime_ns=mtime)


def _chunk(where: str, raw: object, chunk_size: int, hashed: bool) -> tuple[str | None, int]:
    if not isinstance(raw, list) or len(raw) != 2:
        raise ValueError(f"{where}: a chunk must be [hash, size], got {raw!r}")
    digest, size = raw
    if hashed and not (isinstance(digest, str) and _HASH.match(digest)):
        raise ValueError(f"{where}: a chunk hash must be 64 lowercase hex digits, got {digest!r}")
    if not hashed and digest is not None:
        raise ValueError(f"{where}: an unhashed scan has no chunk hashes, got {digest!r}")
    return digest, _number(where, "chunk size", size, chunk_size, minimum=1)


def _number(where: str, key: str, value: object, maximum: int, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise ValueError(
            f"{where}: {key} must be an integer in {minimum}..{maximum}, got {value!r}"
        )
    return value
