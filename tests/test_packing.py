"""Packed datasets without hosts: where packs end, what one changed file costs, the compact
manifest both ends read, and manifests written before packing (issue 17, item 2)."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pytest

from agent.lepton_agent import chunks as agent_chunks
from agent.lepton_agent import datasets as agent_datasets
from agent.lepton_agent.packing import closes_pack, pack_below, pack_target
from leptonctl.core.datasets import ChunkRef, Manifest, ManifestEntry
from leptonctl.core.scan import UnsafeScan
from leptonctl.services.data.datasets import chunk_ranges, manifest_from_scan

CHUNK = 64 * 1024  # packs of about 32 KiB: a few hundred of them in a small tree


def make_tree(root: Path, files: int = 2000, seed: int = 7) -> Path:
    rng = random.Random(seed)
    for i in range(files):
        sub = root / f"d{i // 100:02}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:05}.bin").write_bytes(rng.randbytes(rng.randint(1, 4096)))
    return root


def scan(root: Path, chunk_size: int = CHUNK) -> Manifest:
    doc = agent_datasets.scan_tree(str(root), chunk_size, True, True)
    return manifest_from_scan(json.loads(json.dumps(doc)), chunk_size)


def test_small_files_share_chunks_of_about_half_the_chunk_size(tmp_path: Path) -> None:
    manifest = scan(make_tree(tmp_path / "t"))
    sizes = manifest.chunk_sizes()
    files = [e for e in manifest.entries if e.type == "file"]
    assert len(files) == 2000 and len(sizes) < len(files) / 4  # not a chunk per file
    assert max(sizes.values()) <= CHUNK
    mean = sum(sizes.values()) / len(sizes)
    assert pack_target(CHUNK) / 3 < mean < CHUNK  # about the target, bounded by the chunk size
    assert manifest.packed


def test_pack_boundaries_depend_only_on_the_files(tmp_path: Path) -> None:
    first = scan(make_tree(tmp_path / "a"))
    again = scan(tmp_path / "a")
    elsewhere = scan(make_tree(tmp_path / "b"))  # the same files under another root
    assert first == again
    assert first.chunk_sizes() == elsewhere.chunk_sizes()


def test_one_changed_file_changes_about_one_chunk(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "t")
    before = set(scan(root).chunk_sizes())
    rng = random.Random(1)
    new_counts = []
    for i in rng.sample(range(2000), 12):
        path = root / f"d{i // 100:02}" / f"f{i:05}.bin"
        path.write_bytes(os.urandom(rng.randint(1, 4096)))
        after = set(scan(root).chunk_sizes())
        new_counts.append(len(after - before))
        before = after
    assert max(new_counts) <= 3 and sum(new_counts) <= 2 * len(new_counts)


def test_a_boundary_is_drawn_from_the_content_with_probability_size_over_target() -> None:
    rng = random.Random(3)
    draws = [rng.randbytes(1024) for _ in range(4000)]
    closed = sum(closes_pack(d, CHUNK) for d in draws)
    expected = len(draws) * 1024 / pack_target(CHUNK)  # 125
    assert expected / 2 < closed < expected * 2
    assert all(closes_pack(d, CHUNK) == closes_pack(bytes(d), CHUNK) for d in draws[:50])


def test_large_files_keep_chunks_of_their_own(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    big = os.urandom(3 * CHUNK + 5)
    (root / "big.bin").write_bytes(big)
    (root / "small.txt").write_bytes(b"x" * 10)
    (root / "empty").write_bytes(b"")
    manifest = scan(root)
    entry = {e.path: e for e in manifest.entries}
    assert [c.size for c in entry["big.bin"].chunks] == [CHUNK, CHUNK, CHUNK, 5]
    assert all(c.offset == 0 for c in entry["big.bin"].chunks)
    assert entry["empty"].chunks == () and entry["small.txt"].chunks[0].size == 10
    assert pack_below(CHUNK) == CHUNK // 4 and pack_below(1 << 30) == 4 << 20


def test_the_compact_manifest_round_trips_with_pieces(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "t", files=300)
    (root / "sub").mkdir()
    (root / "sub" / "link").symlink_to("../d00/f00000.bin")
    (root / "naïve name with spaces").write_bytes(b"hello")
    manifest = scan(root)
    doc = manifest.to_dict()
    assert doc["format"] == 2 and isinstance(doc["types"], str)
    back = Manifest.from_dict(json.loads(json.dumps(doc)))
    assert back == manifest
    entry = {e.path: e for e in back.entries}
    assert entry["sub/link"].target == "../d00/f00000.bin"
    # compact: a hash is written once, not once per file
    assert len(json.dumps(doc)) < 60 * len(manifest.entries) + 100 * len(doc["chunks"])


def test_manifests_written_before_packing_still_read() -> None:
    a, b = "a" * 64, "b" * 64
    old = {
        "kind": "dir",
        "entries": [
            {"path": "x", "type": "dir", "mode": 0o755, "size": 0},
            {"path": "x/f", "type": "file", "mode": 0o644, "size": 25,
             "chunks": [{"hash": a, "size": 10}, {"hash": b, "size": 15}]},
            {"path": "l", "type": "symlink", "mode": 0o777, "size": 0, "target": "x/f"},
        ],
    }  # fmt: skip
    manifest = Manifest.from_dict(old)
    assert manifest.chunk_sizes() == {a: 10, b: 15} and not manifest.packed
    assert Manifest.from_dict(manifest.to_dict()) == manifest  # stored again: format 2
    entries = agent_datasets.manifest_entries(old)  # and the agent reads the old form too
    assert entries[1][4] == [(a, 0, 10), (b, 0, 15)]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda d: d["paths"].__setitem__(1, "../escape"), "empty, '.' or '..'"),
        (lambda d: d["paths"].__setitem__(1, "/etc/passwd"), "relative"),
        (lambda d: d["pieces"][1].__setitem__(1, 10**9), "outside its chunk"),
        (lambda d: d["pieces"][1].__setitem__(0, 99), "not in the chunk table"),
        (lambda d: d["sizes"].__setitem__(1, 1), "add up to"),
        (lambda d: d["chunks"][0].__setitem__(1, 10**9), "size must be"),
        (lambda d: d.__setitem__("types", "ldf"), "symlink needs"),
        (lambda d: d["modes"].pop(), "different lengths"),
    ],
)
def test_a_rigged_packed_scan_is_refused(change: object, error: str) -> None:
    digest = hashlib.sha256(b"hello world").hexdigest()
    doc = {
        "format": 2, "kind": "dir", "chunks": [[digest, 11]], "paths": ["d", "d/a", "d/b"],
        "types": "dff", "modes": [0o755, 0o644, 0o644], "sizes": [0, 5, 6],
        "pieces": [[], [0, 0, 5], [0, 5, 6]], "links": [], "mtimes": [None, 1, 1],
    }  # fmt: skip
    assert manifest_from_scan(json.loads(json.dumps(doc)), CHUNK).packed
    change(doc)  # type: ignore[operator]
    with pytest.raises(UnsafeScan, match=error):
        manifest_from_scan(doc, CHUNK)


def test_a_file_under_a_symlink_of_a_packed_scan_is_refused() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    doc = {
        "format": 2, "kind": "dir", "chunks": [[digest, 1]], "paths": ["l", "l/f"],
        "types": "lf", "modes": [0o777, 0o644], "sizes": [0, 1], "pieces": [[], [0, 0, 1]],
        "links": [[0, "/etc"]],
    }  # fmt: skip
    with pytest.raises(UnsafeScan, match="lies under 'l', which is a symlink"):
        manifest_from_scan(doc, CHUNK)


def test_chunk_ranges_read_a_pack_from_its_files_in_order(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "t", files=200)
    manifest = scan(root)
    ranges = chunk_ranges(manifest, str(root))
    assert set(ranges) == set(manifest.chunk_sizes())
    for digest, segments in ranges.items():
        data = b"".join(Path(p).read_bytes()[o : o + n] for p, o, n in segments)
        assert hashlib.sha256(data).hexdigest() == digest


def test_chunk_import_stores_a_pack_from_its_segments_and_materialize_rebuilds_the_tree(
    tmp_path: Path,
) -> None:
    root = make_tree(tmp_path / "t", files=300)
    (root / "empty").write_bytes(b"")
    (root / "d01" / "up").symlink_to("../d00")
    os.chmod(root / "d00" / "f00001.bin", 0o600)
    manifest = scan(root)
    data_dir = tmp_path / "data"
    items = [
        {"h": h, "n": manifest.chunk_sizes()[h], "s": [list(s) for s in segments]}
        for h, segments in chunk_ranges(manifest, str(root)).items()
    ]
    reply = agent_chunks.chunk_import(str(data_dir), items)
    assert reply["failed"] == {} and len(reply["stored"]) == len(items)
    built = agent_datasets.materialize(str(data_dir), str(tmp_path / "out"), manifest.to_dict())
    assert built["done"], built
    for path in root.rglob("*"):
        copy = tmp_path / "out" / path.relative_to(root)
        if path.is_symlink():
            assert os.readlink(copy) == os.readlink(path)
        elif path.is_file():
            assert copy.read_bytes() == path.read_bytes()
            assert copy.stat().st_mode & 0o777 == path.stat().st_mode & 0o777


def test_a_pack_whose_file_changed_since_the_scan_is_not_stored(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "t", files=50)
    manifest = scan(root)
    ranges = chunk_ranges(manifest, str(root))
    digest, segments = next(iter(ranges.items()))
    Path(segments[0][0]).write_bytes(b"changed")  # shorter, and other bytes
    item = {"h": digest, "n": manifest.chunk_sizes()[digest], "s": [list(s) for s in segments]}
    reply = agent_chunks.chunk_import(str(tmp_path / "data"), [item])
    assert reply["stored"] == [] and digest in reply["failed"]


def test_a_listing_reads_no_manifest() -> None:
    loads = []

    def load() -> Manifest:
        loads.append(1)
        return Manifest("dir", (ManifestEntry("f", "file", 0o644, 3, (ChunkRef("a" * 64, 3),)),))

    lazy = Manifest.lazy(load, files=1, chunks=lambda: {"a" * 64: 3})
    assert lazy.file_count == 1 and lazy.hashes() == ["a" * 64] and not loads
    assert lazy.entries[0].path == "f" and loads == [1]
