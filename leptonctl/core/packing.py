"""Packed datasets as plain data: a host's scan read as a manifest, the file ranges a pack
is read from, and where a files-mode receiver writes each piece (issue 17, item 2).

A dataset's small files are packed into chunks by the host that scans them (see the agent's
``packing.py``): a file is then a *piece* of a chunk (``ChunkRef`` with an offset), and a
chunk is read from the segments of several files.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from leptonctl.core.datasets import FORMAT, MAX_SIZE, ChunkRef, Manifest
from leptonctl.core.scan import UnsafeScan, read_scan


def manifest_from_scan(doc: Mapping[str, Any], chunk_size: int = MAX_SIZE) -> Manifest:
    """The manifest of a hashed scan reply (packed, format 2, or one entry per file),
    checked (``UnsafeScan`` names the bad entry)."""
    if doc.get("format") == FORMAT:
        try:
            return Manifest.from_dict(doc, chunk_limit=chunk_size)
        except ValueError as exc:
            raise UnsafeScan(str(exc).removeprefix("manifest: ")) from None
    return read_scan(doc, chunk_size=chunk_size, hashed=True).to_manifest()


Segments = tuple[tuple[str, int, int], ...]  # (path, offset, length) read in order


def chunk_ranges(manifest: Manifest, root: str) -> dict[str, Segments]:
    """hash -> the ranges of files under ``root`` whose concatenation is that chunk (a
    large file's chunk: one range of it; a pack: its small files).  A chunk whose pieces do
    not cover it end to end has no ranges (it cannot be read from the source)."""
    sizes = manifest.chunk_sizes()
    found: dict[str, dict[int, tuple[str, int, int]]] = defaultdict(dict)
    for entry in manifest.entries:
        at = 0
        path = os.path.join(root, entry.path) if entry.path else root
        for piece in entry.chunks:
            found[piece.hash].setdefault(piece.offset, (path, at, piece.size))
            at += piece.size
    ranges: dict[str, Segments] = {}
    for digest, by_offset in found.items():
        segments, covered = [], 0
        for offset in sorted(by_offset):
            if offset != covered:
                break
            segments.append(by_offset[offset])
            covered += by_offset[offset][2]
        if covered == sizes.get(digest):
            ranges[digest] = tuple(segments)
    return ranges


def files_spec(manifest: Manifest, dest: str, root_mode: int | None = 0o755) -> dict[str, Any]:
    """The files-mode receiver spec that rebuilds ``manifest`` at ``dest``; a tree's top
    directory gets ``root_mode`` (None: it exists, and keeps its own).  A file's "chunks"
    are [offset in the file, length, hash]; the hash is None for a slice of a pack (the
    receiver journals it by offset; a finished file is not re-hashed against it)."""
    spec: dict[str, Any] = {"files": [], "dirs": [], "links": []}
    sizes = manifest.chunk_sizes()
    if manifest.kind == "dir" and root_mode is not None:
        spec["dirs"].append({"path": dest, "mode": root_mode})
    for entry in manifest.entries:
        path = os.path.join(dest, entry.path) if entry.path else dest
        if entry.type == "dir" and not entry.path and root_mode is None:
            continue
        if entry.type == "dir":
            spec["dirs"].append({"path": path, "mode": entry.mode})
        elif entry.type == "symlink":
            spec["links"].append({"path": path, "target": entry.target})
        else:
            offsets, at = [], 0
            for chunk in entry.chunks:  # a slice of a pack: its frame's hash is no file's
                whole = not chunk.offset and chunk.size == sizes.get(chunk.hash)
                offsets.append([at, chunk.size, chunk.hash if whole else None])
                at += chunk.size
            spec["files"].append(
                {"path": path, "size": entry.size, "mode": entry.mode, "chunks": offsets}
            )
    return spec


def slice_target(index: int, at: int, piece: ChunkRef, chunk_size: int) -> tuple[int, ...]:
    """Where a files-mode receiver writes a piece of a stored chunk: the whole chunk at
    ``at`` of file ``index`` (index, at), or its bytes [offset, offset + size) there (index,
    at, offset, size: a file packed with others)."""
    if piece.offset == 0 and piece.size == chunk_size:
        return (index, at)
    return (index, at, piece.offset, piece.size)
