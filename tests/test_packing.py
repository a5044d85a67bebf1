"""Packed datasets without hosts: where packs end, what one changed file costs, the compact
manifest both ends read, and manifests written before packing (issue 17, item 2)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
from pathlib import Path

import pytest

from agent.lepton_agent import chunks as agent_chunks
from agent.lepton_agent import datasets as agent_datasets
from agent.lepton_agent.packing import closes_pack, pack_below, pack_target
from leptonctl.cli.app import run
from leptonctl.core.datasets import ChunkRef, Manifest, ManifestEntry
from leptonctl.core.scan import UnsafeScan
from leptonctl.services.data.datasets import chunk_ranges, manifest_from_scan
from leptonctl.store.interface import Store
from tests.pg import execute_raw

CHUNK = 64 * 1024  # packs of about 32 KiB: a few hundred of them in a small tree


def make_tree(root: Path, files: int = 1000, seed: int = 7) -> Path:
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
    assert len(files) == 1000 and len(sizes) < len(files) / 4  # not a chunk per file
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
    for i in rng.sample(range(1000), 12):
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


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_version_stored_before_packing_still_lists_gets_and_verifies(
    capsys: pytest.CaptureFixture[str], operator_home: Path, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", files=40)
    assert cli(capsys, "data", "put", str(src), "old", "-k", "1")[0] == 0
    # Rewrite its manifest as a version before packing stored it: an object per file and a
    # chunk per file (this machine's chunk store gets those chunks, as that put made them).
    manifest = scan(src, 1 << 20)
    data_dir = operator_home / ".local" / "share" / "leptonctl"
    entries = []
    for entry in manifest.entries:
        doc = {"path": entry.path, "type": entry.type, "mode": entry.mode, "size": entry.size}
        if entry.type == "file":
            data = (src / entry.path).read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            (data_dir / "chunks" / digest[:2]).mkdir(parents=True, exist_ok=True)
            (data_dir / "chunks" / digest[:2] / digest).write_bytes(data)
            doc["chunks"] = [{"hash": digest, "size": len(data)}]
        entries.append(doc)
    old = {"kind": "dir", "entries": entries}
    db = sqlite3.connect(data_dir / "state.db")
    db.execute("UPDATE datasets SET manifest = ?, files = NULL", (json.dumps(old),))
    db.execute("DELETE FROM dataset_chunks")
    rows = [("old", 1, e["chunks"][0]["hash"]) for e in entries if e.get("chunks")]
    db.executemany("INSERT OR IGNORE INTO dataset_chunks VALUES (?, ?, ?)", rows)
    db.executemany(
        "INSERT OR IGNORE INTO chunks VALUES (?, ?)",
        [(e["chunks"][0]["hash"], e["size"]) for e in entries if e.get("chunks")],
    )
    db.executemany(
        "INSERT OR IGNORE INTO replicas VALUES (?, 'localhost', 'ok', 0)",
        [(h,) for _, _, h in rows],
    )
    db.commit()
    db.close()
    code, out, err = cli(capsys, "data", "ls", "--json")
    assert code == 0, err
    (row,) = json.loads(out)["datasets"]
    assert row["files"] == 40 and row["chunks"] == len(rows)
    code, _, err = cli(capsys, "data", "get", "old", str(tmp_path / "out"))
    assert code == 0, err
    for path in src.rglob("*"):
        if path.is_file():
            assert (tmp_path / "out" / path.relative_to(src)).read_bytes() == path.read_bytes()
    code, out, err = cli(capsys, "data", "verify", "old", "--json")
    assert code == 0 and json.loads(out)["healthy"], out + err


def test_a_listing_of_datasets_never_parses_a_manifest(
    any_store: Store, state_backend: str
) -> None:
    """A million-file manifest costs `data ls` nothing: only its files count and chunk rows
    are read (here: a manifest that could not even be parsed still lists)."""
    a, b = "a" * 64, "b" * 64
    for name, digest in (("huge", a), ("small", b)):
        manifest = Manifest(
            "dir", (ManifestEntry("f", "file", 0o644, 10, (ChunkRef(digest, 10, 0),)),)
        )
        record = any_store.data.begin_version(
            name, manifest=manifest, replicas=1, chunk_size=1 << 20, source="/x", now=1.0
        )
        any_store.data.complete(name, record.version, 2.0)
    execute_raw(state_backend, "UPDATE datasets SET manifest = 'not json' WHERE name = 'huge'")
    listed = {r.name: r for r in any_store.data.datasets()}
    assert listed["huge"].manifest.file_count == 1 and listed["huge"].manifest.hashes() == [a]
    assert listed["huge"].manifest.defect is None  # not read, so not found damaged either
    damaged = any_store.data.get("huge")
    assert damaged is not None and damaged.manifest.entries == ()
    assert damaged.manifest.defect is not None and "unreadable" in damaged.manifest.defect
