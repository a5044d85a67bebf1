"""Replicated datasets as plain data: manifests, chunk references, scrub reports.

A dataset is one file or one directory tree, cut into content-addressed chunks
(sha256 hex) that live as K replicas on distinct hosts.  Its manifest says how
to put the tree back together.  These types travel between the state store, the
services and the renderers; nothing here touches a socket, a file or a clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
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


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """A chunk (its sha256 hex and length in bytes), or, in a file's ``chunks``, one piece
    of one: ``size`` bytes of chunk ``hash`` from ``offset`` (a file packed with others
    into one chunk has a piece of it; a large file's chunks are whole, offset 0)."""

    hash: str
    size: int
    offset: int = 0


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


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One file, directory or symlink of a dataset.

    ``path`` is relative and POSIX-style ("" for a single-file dataset); a file's
    ``chunks`` (pieces of chunks, see ``ChunkRef``) concatenated in order are its content;
    a symlink has a ``target``.
    """

    path: str
    type: str
    mode: int
    size: int = 0
    chunks: tuple[ChunkRef, ...] = ()
    target: str | None = None


class Manifest:
    """How a dataset version is put back together: its entries, and the chunks they are
    pieces of.  A manifest read from the state store may be *lazy*: its entries are read
    and decoded only when something asks for them (``data ls`` never does)."""

    __slots__ = ("_entries", "_files", "_kind", "_load", "_reader", "_table", "defect")

    def __init__(
        self,
        kind: str = "dir",
        entries: tuple[ManifestEntry, ...] = (),
        defect: str | None = None,
        chunks: Mapping[str, int] | None = None,
    ) -> None:
        """``chunks``: hash -> size of every chunk (None: the entries' pieces are whole
        chunks, as in a manifest written before packing)."""
        self._kind, self._entries, self.defect = kind, tuple(entries), defect
        self._table = None if chunks is None else dict(chunks)
        self._load: Callable[[], Manifest] | None = None
        self._reader: Callable[[], Mapping[str, int]] | None = None
        self._files: int | None = None

    @classmethod
    def damaged(cls, why: str) -> Manifest:
        return cls(kind="dir", entries=(), defect=why)

    @classmethod
    def lazy(
        cls,
        load: Callable[[], Manifest],
        files: int | None = None,
        chunks: Callable[[], Mapping[str, int]] | None = None,
    ) -> Manifest:
        """A manifest read by ``load`` when first needed; ``files`` and ``chunks`` (a
        cheaper reader of the chunk table) answer what a listing asks without it."""
        manifest = cls()
        manifest._load, manifest._reader, manifest._files = load, chunks, files
        return manifest

    def _loaded(self) -> None:
        if self._load is not None:
            full, self._load = self._load(), None
            self._kind, self._entries, self.defect = full._kind, full._entries, full.defect
            self._table = full._table

    @property
    def kind(self) -> str:
        self._loaded()
        return self._kind

    @property
    def entries(self) -> tuple[ManifestEntry, ...]:
        self._loaded()
        return self._entries

    @property
    def size(self) -> int:
        """Bytes of file content (a chunk shared by two files counts twice)."""
        return sum(e.size for e in self.entries if e.type == "file")

    @property
    def file_count(self) -> int:
        if self._files is not None:
            return self._files
        return sum(1 for e in self.entries if e.type == "file")

    def chunk_sizes(self) -> dict[str, int]:
        """Hash -> size of every chunk the dataset needs."""
        if self._load is not None and self._reader is not None:
            return dict(self._reader())
        self._loaded()
        if self._table is not None:
            return dict(self._table)
        return {c.hash: c.size for e in self._entries for c in e.chunks}

    def hashes(self) -> list[str]:
        """Unique chunk hashes, in the order they first appear."""
        return list(self.chunk_sizes())

    @property
    def packed(self) -> bool:
        """Whether some file is a piece of a larger chunk (a pack of small files)."""
        sizes = self.chunk_sizes()
        return any(c.offset or c.size != sizes[c.hash] for e in self.entries for c in e.chunks)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Manifest):
            return NotImplemented
        return (self.kind, self.entries, self.defect, self.chunk_sizes()) == (
            other.kind,
            other.entries,
            other.defect,
            other.chunk_sizes(),
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Manifest(kind={self.kind!r}, entries={len(self.entries)}, defect={self.defect!r})"

    def to_dict(self) -> dict[str, Any]:
        """The compact form (format 2: one list per column, see the agent's packing.py),
        what the state store keeps and a host's materialize reads."""
        if self.defect is not None:
            raise StateError(self.defect, hint=DAMAGED_HINT)
        return encode_manifest(self)

    @classmethod
    def from_dict(cls, doc: object, chunk_limit: int = MAX_SIZE) -> Manifest:
        """Read (and check) a manifest of either format; ``ValueError`` says what is wrong
        and where.  ``chunk_limit``: no chunk may be larger (a scan's chunk size)."""
        if isinstance(doc, Mapping) and doc.get("format") == FORMAT:
            return decode_manifest(doc, chunk_limit)
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


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_BAD_PART = re.compile(r"(?:^|/)\.{0,2}(?:/|$)")  # an empty, '.' or '..' part
_UNSAFE = re.compile(_CONTROL.pattern + "|" + _BAD_PART.pattern)  # either (or a leading /)


def check_path(where: str, path: str) -> None:
    """A path inside a dataset or a copied tree: relative, normalised, printable ("" is the
    top).  ``ValueError`` names ``where`` and says what is wrong."""
    if path == "":
        return
    if _CONTROL.search(path):
        raise ValueError(f"{where}: a path cannot contain NUL or control characters")
    if path.startswith("/"):
        raise ValueError(f"{where}: the path must be relative")
    if _BAD_PART.search(path):
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


# ---------------------------------------------------------------- format 2 (columns)

FORMAT = 2  # the compact manifest: see agent/lepton_agent/packing.py
_LETTERS = {"file": "f", "dir": "d", "symlink": "l"}
_TYPES = {v: k for k, v in _LETTERS.items()}


def encode_manifest(manifest: Manifest) -> dict[str, Any]:
    """Format 2: a list per column, chunks by index (a hash is written once)."""
    sizes = manifest.chunk_sizes()
    index = {digest: i for i, digest in enumerate(sizes)}
    entries = manifest.entries
    pieces: list[list[int]] = []
    for entry in entries:
        flat: list[int] = []
        for piece in entry.chunks:
            flat += (index[piece.hash], piece.offset, piece.size)
        pieces.append(flat)
    return {
        "format": FORMAT,
        "kind": manifest.kind,
        "chunks": [[digest, size] for digest, size in sizes.items()],
        "paths": [e.path for e in entries],
        "types": "".join(_LETTERS[e.type] for e in entries),
        "modes": [e.mode for e in entries],
        "sizes": [e.size for e in entries],
        "pieces": pieces,
        "links": [[i, e.target] for i, e in enumerate(entries) if e.target is not None],
    }


def decode_manifest(doc: Mapping[str, Any], chunk_limit: int = MAX_SIZE) -> Manifest:
    """Read and check a format-2 manifest (a stored one, or a host's packed scan: every
    path relative, normalised and printable, in a directory of the tree, every piece inside
    its chunk, a file's pieces adding up to its size); ``ValueError`` says where."""
    kind = doc.get("kind")
    if kind not in MANIFEST_KINDS:
        raise ValueError(f"manifest: kind must be 'file' or 'dir', got {kind!r}")
    paths, types, modes = doc.get("paths"), doc.get("types"), doc.get("modes")
    sizes, pieces = doc.get("sizes"), doc.get("pieces")
    if not (
        isinstance(paths, list)
        and isinstance(types, str)
        and isinstance(modes, list)
        and isinstance(sizes, list)
        and isinstance(pieces, list)
    ):
        raise ValueError("manifest: paths, modes, sizes and pieces must be lists, types a string")
    if not len(paths) == len(types) == len(modes) == len(sizes) == len(pieces):
        raise ValueError("manifest: its columns have different lengths")
    table = _chunk_table(doc.get("chunks"), chunk_limit)
    links = _links(doc.get("links"), len(paths))
    entries = [
        _column_entry(i, path, types[i], modes[i], sizes[i], pieces[i], links.get(i), table)
        for i, path in enumerate(paths)
    ]
    check_layout(str(kind), [(e.path, e.type) for e in entries])
    return Manifest(str(kind), tuple(entries), chunks=dict(table))


def _chunk_table(raw: object, limit: int) -> list[tuple[str, int]]:
    if not isinstance(raw, list):
        raise ValueError("manifest: 'chunks' must be a list of [hash, size]")
    table: list[tuple[str, int]] = []
    seen: dict[str, int] = {}
    for i, chunk in enumerate(raw):
        where = f"manifest chunk {i}"
        if not isinstance(chunk, list) or len(chunk) != 2:
            raise ValueError(f"{where}: expected [hash, size], got {chunk!r:.100}")
        digest, size = chunk
        if not isinstance(digest, str) or not _HASH.match(digest):
            raise ValueError(f"{where}: hash must be 64 lowercase hex digits, got {digest!r:.100}")
        size = _int(where, "size", size)
        if not 0 < size <= limit:
            raise ValueError(f"{where}: its size must be 1..{limit}, got {size}")
        if seen.setdefault(digest, size) != size:
            raise ValueError(f"{where}: {digest[:12]} listed twice with different sizes")
        table.append((digest, size))
    return table


def _links(raw: object, count: int) -> dict[int, str]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise ValueError("manifest: 'links' must be a list of [entry index, target]")
    links: dict[int, str] = {}
    for item in raw:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], int)
            or isinstance(item[0], bool)
            or not 0 <= item[0] < count
            or not isinstance(item[1], str)
            or not item[1]
            or "\0" in item[1]
        ):
            raise ValueError(
                f"manifest: a link must be [entry index, non-empty target], got {item!r:.100}"
            )
        links[item[0]] = item[1]
    return links


def _column_entry(
    index: int,
    path: object,
    letter: str,
    mode: object,
    size: object,
    flat: object,
    target: str | None,
    table: Sequence[tuple[str, int]],
) -> ManifestEntry:
    if not isinstance(path, str):
        raise ValueError(f"manifest entry {index}: 'path' must be a string")
    if path and _UNSAFE.search(path):
        check_path(f"manifest entry {index} ({path!r})", path)  # raises, saying why
    kind = _TYPES.get(letter)
    if (
        kind is None
        or type(mode) is not int
        or not 0 <= mode <= 0o7777
        or type(size) is not int
        or not 0 <= size <= MAX_SIZE
        or not isinstance(flat, list)
        or len(flat) % 3
    ):
        return _refuse_entry(index, path, letter, mode, size, flat)
    pieces = []
    for at in range(0, len(flat), 3):
        ci, offset, length = flat if len(flat) == 3 else flat[at : at + 3]
        if type(ci) is not int or not 0 <= ci < len(table):
            raise ValueError(
                f"manifest entry {index} ({path!r}): a piece names chunk {ci!r}, not in the "
                "chunk table"
            )
        digest, chunk_size = table[ci]
        if type(offset) is not int or type(length) is not int or offset < 0 or length < 1:
            raise ValueError(f"manifest entry {index} ({path!r}): a piece must be 3 integers")
        if offset + length > chunk_size:
            raise ValueError(
                f"manifest entry {index} ({path!r}): a piece of {length} bytes at {offset} is "
                "outside its chunk"
            )
        pieces.append(ChunkRef(digest, length, offset))
    where = f"manifest entry {index} ({path!r})"
    if kind == "file":
        total = sum(p.size for p in pieces)
        if total != size:
            raise ValueError(f"{where}: chunks add up to {total} bytes, the size says {size}")
        if target is not None:
            raise ValueError(f"{where}: a file has no target")
    else:
        if pieces:
            raise ValueError(f"{where}: a {kind} has no chunks")
        if kind == "symlink" and target is None:
            raise ValueError(f"{where}: a symlink needs a non-empty string target")
        if kind == "dir" and target is not None:
            raise ValueError(f"{where}: a dir has no target")
    return ManifestEntry(path, kind, mode, size, tuple(pieces), target)


def _refuse_entry(
    index: int, path: str, letter: str, mode: object, size: object, flat: object
) -> ManifestEntry:
    """Raise the ``ValueError`` that says what is wrong with an entry's columns."""
    where = f"manifest entry {index} ({path!r})"
    if letter not in _TYPES:
        raise ValueError(f"{where}: type must be one of f, d, l, got {letter!r}")
    checked = _int(where, "mode", mode)
    if checked > 0o7777:
        raise ValueError(f"{where}: mode {checked:o} has bits beyond the permission bits")
    _int(where, "size", size)
    raise ValueError(f"{where}: 'pieces' must be a list of [chunk, offset, length] triples")
