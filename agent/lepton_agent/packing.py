"""Packed datasets: small files packed into chunks at content-defined boundaries, and the
compact manifest (format 2) that both ends read.

A dataset's chunks follow its bytes, not its file count. A file below ``pack_below`` bytes
is appended to the open *pack*; a pack is closed after a file whose content draws a
boundary (the file's CRC-32 below size / PACK_TARGET of its range: a pack holds about
``chunk_size / 2`` bytes on average), or before a file that would take it over
``chunk_size``. The boundary depends only on each file's own bytes, so changing one file
changes its own pack (and at most merges it with, or splits it from, the next one): a put
after a one-file change sends about one chunk, not every later pack. A larger file is cut
into chunks of ``chunk_size`` of its own, as before packing.

Format 2 (a packed scan reply, the operator's stored manifest, a materialize request) is a
set of columns, one value per entry, instead of an object per file::

    {"format": 2, "kind": "file" | "dir",
     "chunks": [[sha256, size], ...],          # the chunks, a pack as one chunk
     "paths": [relative path, ...],            # "" is the file of a "file" dataset
     "types": "fdl...",                        # file, dir, link: one letter per entry
     "modes": [...], "sizes": [...],
     "pieces": [[chunk index, offset in chunk, length, ...], ...],  # a file's bytes in order
     "links": [[entry index, target], ...],
     "mtimes": [...]}                          # a scan reply only

Format 1 (``{"kind", "entries": [{"path", "type", "mode", "size", "chunks", "target"}]}``)
is what versions before packing stored; it is still read everywhere.
"""

from __future__ import annotations

import hashlib
import os
import zlib

from .chunks import hash_range
from .wire import MIB, BadRequest

FORMAT = 2
PACK_BELOW_MAX = 4 * MIB  # a file this large or larger has chunks of its own
TYPE_LETTERS = {"file": "f", "dir": "d", "symlink": "l"}
LETTER_TYPES = {v: k for k, v in TYPE_LETTERS.items()}


def pack_below(chunk_size):
    """Files smaller than this are packed (a quarter of a chunk, at most 4 MiB)."""
    return min(PACK_BELOW_MAX, chunk_size // 4)


def pack_target(chunk_size):
    """The average bytes of a pack."""
    return max(1, chunk_size // 2)


def closes_pack(data, chunk_size):
    """Whether a pack ends after this file: with probability len(data) / pack_target,
    drawn from the file's own bytes (the same content decides the same way anywhere)."""
    draw = zlib.crc32(data) & 0xFFFFFFFF
    return draw * pack_target(chunk_size) < len(data) << 32


class PackedScan:
    """Builds a format-2 manifest entry by entry (the order of the walk)."""

    def __init__(self, chunk_size):
        self.chunk_size, self.small = chunk_size, pack_below(chunk_size)
        self.chunks, self.known = [], {}  # [hash, size] (a pack's slot filled at close)
        self.paths, self.types, self.modes, self.sizes, self.mtimes = [], [], [], [], []
        self.pieces, self.links = [], []
        self.pack = None  # [slot, sha256, size] of the open pack

    def entry(self, rel, kind, mode, size=0, mtime=None, pieces=()):
        self.paths.append(rel)
        self.types.append(TYPE_LETTERS[kind])
        self.modes.append(mode & 0o7777)
        self.sizes.append(size)
        self.mtimes.append(mtime)
        self.pieces.append(list(pieces))

    def add_dir(self, rel, mode):
        self.entry(rel, "dir", mode)

    def add_link(self, rel, target):
        self.links.append([len(self.paths), target])
        self.entry(rel, "symlink", 0o777)

    def add_file(self, full, rel):
        """Scan one regular file: packed when small, chunks of its own when not (a file in
        a tree is opened without following a symbolic link; the file of a one-file dataset
        may be one, as before)."""
        fd = os.open(full, os.O_RDONLY | (os.O_NOFOLLOW if rel else 0))
        try:
            st = os.fstat(fd)
            data = b""
            if st.st_size < self.small:
                data = read_upto(fd, self.small)
        finally:
            os.close(fd)
        if st.st_size < self.small and len(data) < self.small:
            pieces = self.add_small(data) if data else []
            self.entry(rel, "file", st.st_mode, len(data), st.st_mtime_ns, pieces)
            return
        pieces, offset = [], 0
        while offset < st.st_size:
            digest, got = hash_range(full, offset, min(self.chunk_size, st.st_size - offset))
            if not got:
                break
            pieces += [self.chunk_index(digest, got), 0, got]
            offset += got
        self.entry(rel, "file", st.st_mode, offset, st.st_mtime_ns, pieces)

    def chunk_index(self, digest, size):
        if digest not in self.known:
            self.known[digest] = len(self.chunks)
            self.chunks.append([digest, size])
        return self.known[digest]

    def add_small(self, data):
        if self.pack is not None and self.pack[2] + len(data) > self.chunk_size:
            self.close_pack()
        if self.pack is None:
            self.pack = [len(self.chunks), hashlib.sha256(), 0]
            self.chunks.append(None)
        slot, hasher, at = self.pack
        hasher.update(data)
        self.pack[2] = at + len(data)
        if closes_pack(data, self.chunk_size):
            self.close_pack()
        return [slot, at, len(data)]

    def close_pack(self):
        slot, hasher, size = self.pack
        self.chunks[slot] = [hasher.hexdigest(), size]
        self.pack = None

    def finish(self, kind):
        if self.pack is not None:
            self.close_pack()
        return {"format": FORMAT, "kind": kind, "chunks": self.chunks, "paths": self.paths,
                "types": "".join(self.types), "modes": self.modes, "sizes": self.sizes,
                "pieces": self.pieces, "links": self.links, "mtimes": self.mtimes}  # fmt: skip


def read_upto(fd, limit):
    """At most limit + 1 bytes of fd from where it is (more than limit: it grew)."""
    parts, size = [], 0
    while size <= limit:
        part = os.read(fd, limit + 1 - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def manifest_entries(manifest):
    """(path, type, mode, size, pieces, target) of every entry of a format 1 or 2 manifest;
    pieces are (chunk hash, offset in chunk, length), in file order."""
    if not isinstance(manifest, dict):
        raise BadRequest("a manifest must be an object")
    if manifest.get("format") == FORMAT:
        return format2_entries(manifest)
    entries = []
    for entry in manifest.get("entries") or []:
        if not isinstance(entry, dict):
            raise BadRequest("a manifest entry must be an object")
        pieces = []
        for chunk in entry.get("chunks") or []:
            digest, size = (chunk["hash"], chunk["size"]) if isinstance(chunk, dict) else chunk
            pieces.append((digest, 0, size))
        entries.append((entry.get("path"), entry.get("type"), entry.get("mode") or 0,
                        entry.get("size") or 0, pieces, entry.get("target")))  # fmt: skip
    return entries


def format2_entries(manifest):
    try:
        chunks = [(str(h), int(n)) for h, n in manifest["chunks"]]
        paths, types = manifest["paths"], manifest["types"]
        modes, sizes, raw = manifest["modes"], manifest["sizes"], manifest["pieces"]
        links = {int(i): t for i, t in manifest.get("links") or []}
        count = len(paths)
        if not (len(types) == len(modes) == len(sizes) == len(raw) == count):
            raise BadRequest("the manifest's columns differ in length")
        entries = []
        for i in range(count):
            flat, pieces = raw[i], []
            for at in range(0, len(flat) - 2, 3):
                digest, size = chunks[flat[at]]
                offset, length = int(flat[at + 1]), int(flat[at + 2])
                if offset < 0 or length < 0 or offset + length > size:
                    raise BadRequest("a piece of %r lies outside its chunk" % (paths[i],))
                pieces.append((digest, offset, length))
            kind = LETTER_TYPES.get(types[i])
            if kind is None:
                raise BadRequest("unknown entry type %r" % (types[i],))
            entries.append((paths[i], kind, int(modes[i]), int(sizes[i]), pieces, links.get(i)))
        return entries
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        if isinstance(exc, BadRequest):
            raise
        raise BadRequest("a malformed format-2 manifest: %s" % exc) from None


def manifest_hashes(manifest):
    """Every chunk hash a format 1 or 2 manifest needs."""
    if isinstance(manifest, dict) and manifest.get("format") == FORMAT:
        return {str(chunk[0]) for chunk in manifest.get("chunks") or []}
    return {piece[0] for entry in manifest_entries(manifest) for piece in entry[4]}
