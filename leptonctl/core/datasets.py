"""Replicated datasets as plain data: manifests, chunk references, scrub reports.

A dataset is one file or one directory tree, cut into content-addressed chunks
(sha256 hex) that live as K replicas on distinct hosts.  Its manifest says how
to put the tree back together.  These types travel between the state store, the
services and the renderers; nothing here touches a socket, a file or a clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from leptonctl.errors import StateError, UsageError

ENTRY_TYPES = ("file", "dir", "symlink")
MANIFEST_KINDS = ("file", "dir")
PROBLEMS = ("missing", "corrupt", "unreachable")
DAMAGED_HINT = "remove that version with `leptonctl data rm NAME@VERSION` and put it again"
MAX_SIZE = (1 << 63) - 1  # no file, chunk or count is larger (off_t)

_HASH = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_REF = re.compile(r"^(?P<name>[^@]*)(?:@(?P<version>[^@]*))?$")


@dataclass(frozen=True)
class ChunkRef:
    """One chunk of a file: its sha256 (hex) and its length in bytes."""

    hash: str
    size: int


def manifest_shape(doc: object) -> tuple[str, list[Any]]:
    """The kind and the raw entries of a manifest-shaped document (a stored manifest or a
    host's scan); ``ValueError`` says what is wrong."""
    if not isinstance(doc, Mapping):
        raise ValueError(f"expected an object, got {type(doc).__name__}")
    kind = doc.get("kind")
    if kind not in MANIFEST_KINDS:
        raise ValueError(f"kind must be 'file' or 'dir', got {kind!r}")
    raw = doc.get("entries")
    if not isinstance(raw, list):
        raise ValueError("'entries' must be a list")
    return str(kind), raw


@dataclass(frozen=True)
class ManifestEntry:
    """One file, directory or symlink of a dataset.

    ``path`` is relative and POSIX-style ("" for a single-file dataset); a file's
    ``chunks`` concatenated in order are its content; a symlink has a ``target``.
    """

    path: str
    type: str
    mode: int
    size: int = 0
    chunks: tuple[ChunkRef, ...] = ()
    target: str | None = None


@dataclass(frozen=True)
class Manifest:
    kind: str  # "file" | "dir"
    entries: tuple[ManifestEntry, ...]
    # Why a stored manifest could not be read (it then has no entries, and cannot be used):
    # one damaged dataset version must not make every other one unreadable.
    defect: str | None = None

    @classmethod
    def damaged(cls, why: str) -> Manifest:
        return cls(kind="dir", entries=(), defect=why)

    @property
    def size(self) -> int:
        """Bytes of file content (a chunk shared by two files counts twice)."""
        return sum(e.size for e in self.entries if e.type == "file")

    def chunk_sizes(self) -> dict[str, int]:
        """Hash -> size of every chunk the dataset needs."""
        return {c.hash: c.size for e in self.entries for c in e.chunks}

    def hashes(self) -> list[str]:
        """Unique chunk hashes, in the order they first appear."""
        return list(self.chunk_sizes())

    def to_dict(self) -> dict[str, Any]:
        if self.defect is not None:
            raise StateError(self.defect, hint=DAMAGED_HINT)
        return {"kind": self.kind, "entries": [_entry_to_dict(e) for e in self.entries]}

    @classmethod
    def from_dict(cls, doc: object) -> Manifest:
        """Read (and check) a manifest; ``ValueError`` says what is wrong and where."""
        try:
            kind, raw_entries = manifest_shape(doc)
        except ValueError as exc:
            raise ValueError(f"manifest: {exc}") from None
        entries = tuple(_entry_from_dict(i, raw) for i, raw in enumerate(raw_entries))
        check_layout(kind, [(e.path, e.type) for e in entries])
        return cls(kind=kind, entries=entries)


@dataclass(frozen=True)
class ReplicaProblem:
    hash: str
    host: str
    problem: str  # "missing" | "corrupt" | "unreachable"
    detail: str


@dataclass(frozen=True)
class VerifyReport:
    """What one scrub found.  ``under_replicated``: hashes left with fewer than K healthy
    replicas after the check (including chunks that were short before it)."""

    dataset: str | None  # None: every dataset
    replicas_checked: int
    replicas_ok: int
    bytes_hashed: int
    seconds: float
    problems: tuple[ReplicaProblem, ...]
    under_replicated: tuple[str, ...]

    @property
    def healthy(self) -> bool:
        return not self.problems


def parse_dataset_ref(text: str) -> tuple[str, int | None]:
    """``"name"`` -> ``("name", None)``; ``"name@3"`` -> ``("name", 3)``."""
    match = _REF.match(text.strip())
    if match is None:
        raise UsageError(f"cannot read {text!r} as a dataset", hint=_REF_HINT)
    name, version = match.group("name"), match.group("version")
    if not _NAME.match(name):
        raise UsageError(f"{name!r} is not a valid dataset name", hint=_REF_HINT)
    if version is None:
        return name, None
    if not re.fullmatch(r"[0-9]{1,18}", version) or int(version) < 1:
        raise UsageError(
            f"{text!r}: the version after '@' must be a positive number (at most 18 digits)",
            hint=_REF_HINT,
        )
    return name, int(version)


@dataclass(frozen=True)
class InputRef:
    """``submit --input NAME[@VERSION][:/mount/path]``: a dataset a job needs on its host."""

    name: str
    version: int | None
    mount: str | None  # absolute path on the host; None: under the agent's data dir


def parse_input(text: str) -> InputRef:
    ref, sep, mount = text.partition(":")
    name, version = parse_dataset_ref(ref)
    if sep and not mount.startswith("/"):
        raise UsageError(
            f"--input {text!r}: the mount path must be absolute",
            hint="--input NAME[@VERSION][:/absolute/path], e.g. --input imagenet:/data/imagenet",
        )
    return InputRef(name, version, mount or None)


_REF_HINT = (
    "a dataset is NAME or NAME@VERSION; a name is 1-128 letters, digits, '.', '_' or '-' "
    "and starts with a letter or digit (e.g. imagenet or imagenet@3)"
)


def _entry_to_dict(entry: ManifestEntry) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "path": entry.path,
        "type": entry.type,
        "mode": entry.mode,
        "size": entry.size,
    }
    if entry.type == "file":
        doc["chunks"] = [{"hash": c.hash, "size": c.size} for c in entry.chunks]
    if entry.target is not None:
        doc["target"] = entry.target
    return doc


def _entry_from_dict(index: int, raw: object) -> ManifestEntry:
    where = f"manifest entry {index}"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(raw).__name__}")
    path = raw.get("path")
    if not isinstance(path, str):
        raise ValueError(f"{where}: 'path' must be a string")
    where = f"manifest entry {index} ({path!r})"
    check_path(where, path)
    kind = raw.get("type")
    if kind not in ENTRY_TYPES:
        raise ValueError(f"{where}: type must be one of {', '.join(ENTRY_TYPES)}, got {kind!r}")
    mode = _int(where, "mode", raw.get("mode"))
    if mode > 0o7777:
        raise ValueError(f"{where}: mode {mode:o} has bits beyond the permission bits")
    size = _int(where, "size", raw.get("size", 0))
    raw_chunks = raw.get("chunks", [])
    if not isinstance(raw_chunks, list):
        raise ValueError(f"{where}: 'chunks' must be a list")
    chunks = tuple(_chunk_from_dict(f"{where} chunk {i}", c) for i, c in enumerate(raw_chunks))
    target = raw.get("target")
    if kind == "file":
        total = sum(c.size for c in chunks)
        if total != size:
            raise ValueError(f"{where}: chunks add up to {total} bytes, the size says {size}")
        if target is not None:
            raise ValueError(f"{where}: a file has no target")
    else:
        if chunks:
            raise ValueError(f"{where}: a {kind} has no chunks")
        if kind == "symlink" and (not isinstance(target, str) or not target):
            raise ValueError(f"{where}: a symlink needs a non-empty string target")
        if kind == "dir" and target is not None:
            raise ValueError(f"{where}: a dir has no target")
    return ManifestEntry(path=path, type=kind, mode=mode, size=size, chunks=chunks, target=target)


def _chunk_from_dict(where: str, raw: object) -> ChunkRef:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected an object with hash and size")
    digest = raw.get("hash")
    if not isinstance(digest, str) or not _HASH.match(digest):
        raise ValueError(f"{where}: hash must be 64 lowercase hex digits, got {digest!r}")
    return ChunkRef(hash=digest, size=_int(where, "size", raw.get("size")))


def _int(where: str, key: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SIZE:
        raise ValueError(f"{where}: {key!r} must be a non-negative integer, got {value!r}")
    return value


def check_path(where: str, path: str) -> None:
    """A path inside a dataset or a copied tree: relative, normalised, printable ("" is the
    top).  ``ValueError`` names ``where`` and says what is wrong."""
    if path == "":
        return
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in path):
        raise ValueError(f"{where}: a path cannot contain NUL or control characters")
    if path.startswith("/"):
        raise ValueError(f"{where}: the path must be relative")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError(f"{where}: the path must not have empty, '.' or '..' parts")


def check_layout(kind: str, entries: Sequence[tuple[str, str]]) -> None:
    """The (path, type) entries of a 'file' or 'dir' tree make one tree: no path twice, and
    every entry lies in a directory of the tree (never under a symlink or a file, which
    would make a writer follow a link or fail half way)."""
    if kind == "file":
        if len(entries) != 1 or entries[0] != ("", "file"):
            raise ValueError("manifest: a 'file' dataset has exactly one file entry, path ''")
        return
    types: dict[str, str] = {}
    for path, type_ in entries:
        if path == "" and type_ != "dir":
            raise ValueError("manifest: in a 'dir' dataset only the top directory has path ''")
        if path in types:
            raise ValueError(f"manifest: {path!r} appears twice")
        types[path] = type_
    types[""] = "dir"
    for path, _ in entries:
        parent = path.rpartition("/")[0]
        if path and types.get(parent) != "dir":
            what = types.get(parent)
            why = f"a {what}" if what else "not in the tree"
            raise ValueError(f"manifest: {path!r} lies under {parent!r}, which is {why}")
