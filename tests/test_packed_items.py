"""Packed send items (issue 17, items 2 and 4): one frame carries the bytes of many files.

A sender reads an item's "s" segments in order (a packed item) and a files-mode receiver
writes slices of a frame ([file index, file offset, frame offset, length] targets) to their
files. Each test runs a real sender and receiver joined by a pipe (no SSH), as in
tests/test_agent_data.py: mixed packed and unpacked items, a file split over two packed items,
a stored chunk written out as files, a hash mismatch that fails only its own files, a source
that shrank, and links planted where the receiver writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.lepton_agent import wire
from tests.test_agent_data import (
    KEYS_VAR,
    AgentHost,
    agent_argv,
    agent_env,
    agent_host,
    distinct_bytes,
    grant,
    mode_of,
    pipe_transfer,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux")


@pytest.fixture(autouse=True)
def keys_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ssh" / "authorized_keys"
    path.parent.mkdir(mode=0o700)
    monkeypatch.setenv(KEYS_VAR, str(path))
    return path


@pytest.fixture
def src(tmp_path: Path) -> Iterator[AgentHost]:
    yield from agent_host(tmp_path, "src-data")


@pytest.fixture
def dst(tmp_path: Path) -> Iterator[AgentHost]:
    yield from agent_host(tmp_path, "dst-data")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_files(root: Path, sizes: dict[str, int]) -> dict[str, bytes]:
    """Files of distinct bytes under root (modes 0640, a fixed mtime): rel path -> bytes."""
    out = {}
    for seed, (rel, size) in enumerate(sorted(sizes.items())):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = distinct_bytes(size, seed=100 + seed)
        path.write_bytes(data)
        path.chmod(0o640)
        os.utime(path, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789 + seed))
        out[rel] = data
    return out


def spec_for(root: Path, dest: Path, rels: list[str]) -> dict[str, Any]:
    """The files-mode receiver spec of rels (as cp builds it: one streamed chunk per file)."""
    files = []
    for rel in rels:
        st = os.stat(root / rel)
        files.append(
            {
                "path": str(dest / rel),
                "size": st.st_size,
                "mode": st.st_mode & 0o7777,
                "mtime_ns": st.st_mtime_ns,
                "source_id": f"{st.st_size}:{st.st_mtime_ns}",
                "chunks": [[0, st.st_size, None]] if st.st_size else [],
            }
        )
    return {"store": "files", "name": "dst", "dest": str(dest), "files": files}


def packed(root: Path, spec: dict[str, Any], picks: list[tuple[int, int, int]]) -> dict[str, Any]:
    """A packed item of (file index, file offset, length) picks, hashed while sent."""
    segments, targets, at = [], [], 0
    dest = spec["dest"]
    for index, offset, length in picks:
        rel = os.path.relpath(spec["files"][index]["path"], dest)
        segments.append([str(root / rel), offset, length])
        targets.append([index, offset, at, length])
        at += length
    return {"n": at, "s": segments, "t": targets}


def leftovers(dest: Path) -> list[Path]:
    return sorted(p for p in dest.parent.rglob("*") if ".lepton-part" in p.name)


def test_mixed_packed_and_unpacked_items_rebuild_the_files_with_modes_and_mtimes(
    tmp_path: Path, src: AgentHost, dst: AgentHost
) -> None:
    root, dest = tmp_path / "tree", tmp_path / "out" / "tree"
    data = make_files(
        root, {"a": 4096, "b": 1, "sub/c": 5000, "sub/deep/d": 12288, "split": 9000, "big": 20000}
    )
    (root / "empty").write_bytes(b"")
    rels = ["a", "b", "sub/c", "sub/deep/d", "split", "big", "empty"]
    spec = spec_for(root, dest, rels)
    spec["files"][5]["chunks"] = [[0, 8192, None], [8192, 11808, None]]  # big: two chunks
    first = packed(root, spec, [(0, 0, 4096), (1, 0, 1), (4, 0, 3000)])
    second = packed(root, spec, [(2, 0, 5000), (4, 3000, 6000), (3, 0, 12288)])
    second["h"] = sha(data["sub/c"] + data["split"][3000:] + data["sub/deep/d"])  # hash known
    plain = [
        {"n": 8192, "path": str(root / "big"), "o": 0, "t": [[5, 0]]},
        {"n": 11808, "path": str(root / "big"), "o": 8192, "t": [[5, 8192]]},
    ]
    grant(dst, "xfer-packed-1", spec)
    sent, received = pipe_transfer(src, dst, "xfer-packed-1", [first, plain[0], second, plain[1]])
    [mine] = received["hops"]
    assert (mine["error"], mine["failed"], sent["hops"][0]["failed"]) == (None, {}, {})
    assert sorted(mine["files_done"]) == sorted(str(dest / rel) for rel in rels)
    assert mine["bytes"] == sent["hops"][0]["bytes"] == sum(len(d) for d in data.values())
    for rel in rels:
        copy, original = dest / rel, root / rel
        assert copy.read_bytes() == original.read_bytes(), rel
        assert mode_of(copy) == mode_of(original), rel
        if rel != "empty":
            assert copy.stat().st_mtime_ns == original.stat().st_mtime_ns, rel
    assert leftovers(dest) == []
    status = dst.have("file-status", files=spec["files"], dest=str(dest))
    assert all(f["complete"] for f in status["files"])


def test_a_stored_chunk_with_slice_targets_writes_the_files_it_packs(
    tmp_path: Path, src: AgentHost, dst: AgentHost
) -> None:
    root, dest = tmp_path / "tree", tmp_path / "out"
    data = make_files(root, {"x": 100, "y": 7000, "z": 4096})
    blob = data["x"] + data["y"] + data["z"]
    (tmp_path / "blob").write_bytes(blob)
    [(digest, _)] = src.import_file(tmp_path / "blob", chunk_size=1 << 20)
    spec = spec_for(root, dest, ["x", "y", "z"])
    targets = [[0, 0, 0, 100], [1, 0, 100, 7000], [2, 0, 7100, 4096]]
    grant(dst, "xfer-packed-chunk", spec)
    _, received = pipe_transfer(
        src, dst, "xfer-packed-chunk", [{"h": digest, "n": len(blob), "t": targets}]
    )
    [mine] = received["hops"]
    assert (mine["error"], mine["failed"], mine["stored"]) == (None, {}, [digest])
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == data


def test_a_packed_item_whose_hash_does_not_match_fails_only_its_own_files(
    tmp_path: Path, src: AgentHost, dst: AgentHost
) -> None:
    root, dest = tmp_path / "tree", tmp_path / "out"
    data = make_files(root, {"p": 4096, "q": 4096, "r": 4096, "s": 4096})
    (dest).mkdir()
    (dest / "q").write_bytes(b"the old q")
    spec = spec_for(root, dest, ["p", "q", "r", "s"])
    bad = packed(root, spec, [(0, 0, 4096), (1, 0, 4096)])
    bad["h"] = sha(b"something else")
    good = packed(root, spec, [(2, 0, 4096), (3, 0, 4096)])
    grant(dst, "xfer-packed-bad", spec)
    _, received = pipe_transfer(src, dst, "xfer-packed-bad", [bad, good])
    [mine] = received["hops"]
    assert mine["failed"] == {bad["h"]: "hash mismatch"}
    assert (dest / "r").read_bytes() == data["r"] and (dest / "s").read_bytes() == data["s"]
    assert not (dest / "p").exists() and (dest / "q").read_bytes() == b"the old q"
    assert leftovers(dest / "x") == []
    status = dst.have("file-status", files=spec["files"], dest=str(dest))
    assert [f["complete"] for f in status["files"]] == [False, False, True, True]


@pytest.mark.parametrize("hashed", [False, True], ids=["streamed", "hash-known"])
def test_a_source_file_that_shrank_is_an_error_of_its_item_only(
    tmp_path: Path, src: AgentHost, dst: AgentHost, hashed: bool
) -> None:
    root, dest = tmp_path / "tree", tmp_path / "out"
    data = make_files(root, {"a": 4096, "b": 4096, "c": 4096})
    spec = spec_for(root, dest, ["a", "b", "c"])
    first = packed(root, spec, [(0, 0, 4096), (1, 0, 4096)])
    if hashed:
        first["h"] = sha(data["a"] + data["b"])
    second = packed(root, spec, [(2, 0, 4096)])
    (root / "b").write_bytes(data["b"][:1000])  # shrank after the listing
    grant(dst, "xfer-shrunk", spec)
    sent, received = pipe_transfer(src, dst, "xfer-shrunk", [first, second])
    [source] = sent["hops"][:1]
    [(_, why)] = source["failed"].items()
    assert "shorter than expected" in why and str(root / "b") in why
    [mine] = received["hops"]
    assert list(mine["failed"].values()) == ["hash mismatch"]
    assert sorted(os.listdir(dest)) == ["c"] and (dest / "c").read_bytes() == data["c"]


def test_links_planted_at_the_targets_are_replaced_never_written_through(
    tmp_path: Path, src: AgentHost, dst: AgentHost
) -> None:
    root, dest = tmp_path / "tree", tmp_path / "out"
    data = make_files(root, {"f1": 4096, "f2": 4096, "sub/f3": 4096})
    outside = tmp_path / "precious"
    outside.mkdir()
    for name in ("one", "two", "three"):
        (outside / name).write_bytes(b"keep me")
    (dest / "sub").mkdir(parents=True)
    (dest / "f1").symlink_to(outside / "one")  # a link where a file goes
    (dest / "f2.lepton-part").symlink_to(outside / "two")  # and where its part file goes
    os.link(outside / "three", dest / "sub" / "f3.lepton-part")  # a hard link, too
    spec = spec_for(root, dest, ["f1", "f2", "sub/f3"])
    item = packed(root, spec, [(0, 0, 4096), (1, 0, 4096), (2, 0, 4096)])
    grant(dst, "xfer-links", spec)
    _, received = pipe_transfer(src, dst, "xfer-links", [item])
    [mine] = received["hops"]
    assert (mine["error"], mine["failed"]) == (None, {})
    for name in ("one", "two", "three"):
        assert (outside / name).read_bytes() == b"keep me"
    for rel in ("f1", "f2", "sub/f3"):
        assert not (dest / rel).is_symlink() and (dest / rel).read_bytes() == data[rel]
    assert leftovers(dest / "x") == []


def test_a_directory_link_on_the_way_is_never_followed(
    tmp_path: Path, src: AgentHost, dst: AgentHost
) -> None:
    root, dest = tmp_path / "tree", tmp_path / "out"
    make_files(root, {"sub/f": 4096})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dest.mkdir()
    (dest / "sub").symlink_to(elsewhere)
    spec = spec_for(root, dest, ["sub/f"])
    grant(dst, "xfer-dirlink", spec)
    _, received = pipe_transfer(src, dst, "xfer-dirlink", [packed(root, spec, [(0, 0, 4096)])])
    [mine] = received["hops"]
    assert mine["error"] is None
    assert os.listdir(elsewhere) == [] and not (dest / "sub").is_symlink()
    assert (dest / "sub" / "f").read_bytes() == (root / "sub" / "f").read_bytes()


def test_a_packed_source_that_is_a_symlink_is_not_read_through(
    tmp_path: Path, src: AgentHost, dst: AgentHost
) -> None:
    root, dest = tmp_path / "tree", tmp_path / "out"
    make_files(root, {"a": 4096})
    (tmp_path / "secret").write_bytes(b"s" * 4096)
    spec = spec_for(root, dest, ["a"])
    item = packed(root, spec, [(0, 0, 4096)])
    (root / "a").unlink()
    (root / "a").symlink_to(tmp_path / "secret")  # swapped after the listing
    grant(dst, "xfer-srclink", spec)
    sent, _ = pipe_transfer(src, dst, "xfer-srclink", [item])
    assert "cannot read" in next(iter(sent["hops"][0]["failed"].values()))
    assert not (dest / "a").exists()


def test_targets_outside_the_frame_or_the_file_and_bad_segments_are_refused(
    tmp_path: Path, src: AgentHost, dst: AgentHost
) -> None:
    root, dest = tmp_path / "tree", tmp_path / "out"
    make_files(root, {"a": 4096})
    spec = spec_for(root, dest, ["a"])
    item = packed(root, spec, [(0, 0, 4096)])
    for n, bad in enumerate([[0, 0, 1, 4096], [0, 1, 0, 4096], [0, 0, 0], [0, -1, 0, 5]]):
        grant(dst, f"xfer-badtarget{n}", spec)
        _, received = pipe_transfer(src, dst, f"xfer-badtarget{n}", [{**item, "t": [bad]}])
        assert "not inside the files" in received["hops"][0]["error"], bad
    wrong_total = {**item, "s": [[str(root / "a"), 0, 100]]}
    for bad_items in ([item, wrong_total], [{**item, "s": [[str(root / "a"), -1, 4096]]}]):
        spec = {"transfer": "xfer-badseg", "next": {"kind": "stdout"}, "items": bad_items}
        proc = subprocess.run(
            agent_argv("send", src.data),
            input=json.dumps(spec).encode() + b"\n",
            capture_output=True,
            env=agent_env(),
            timeout=60,
        )
        assert proc.returncode == 2  # refused before a frame is sent
        [reply] = proc.stdout.splitlines()
        assert "segment" in json.loads(reply)["error"]
    assert not (dest / "a").exists()


def test_send_item_wire_form_keeps_segments_and_both_target_shapes() -> None:
    item = wire.SendItem(12, None, None, 0, ((0, 0), (1, 4, 2, 8)), (("/a", 0, 4), ("/b", 2, 8)))
    assert item.to_wire() == {
        "n": 12,
        "s": [["/a", 0, 4], ["/b", 2, 8]],
        "t": [[0, 0], [1, 4, 2, 8]],
    }
    assert wire.SendItem(3, "h", "/p", 5, ((0, 0),)).to_wire() == {
        "n": 3, "h": "h", "path": "/p", "o": 5, "t": [[0, 0]]
    }  # fmt: skip


def test_cp_packs_small_missing_files_in_listing_order_and_sends_big_ones_by_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from leptonctl.services.net import copy as cp

    monkeypatch.setattr(cp, "PACK_BYTES", 10_000)
    monkeypatch.setattr(cp, "PACK_FILES", 3)

    def entry(name: str, size: int, chunks: list[int]) -> dict[str, Any]:
        at, out = 0, []
        for n in chunks:
            out.append([at, n, None])
            at += n
        return {"path": f"/d/t/{name}", "size": size, "chunks": out}

    files = [
        entry("a", 4000, [4000]),
        entry("b", 5000, [5000]),
        entry("empty", 0, []),
        entry("there", 100, [100]),  # up to date
        entry("c", 2000, [2000]),  # would pass PACK_BYTES: a new pack
        entry("big", (1 << 20) + 5, [1 << 20, 5]),  # half there
        entry("d", 1, [1]),
        entry("e", 1, [1]),
        entry("f", 1, [1]),  # PACK_FILES reached
    ]
    states = [{"done": [], "complete": False} for _ in files]
    states[2]["complete"] = True
    states[3] = {"done": [0], "complete": True}
    states[5] = {"done": [0], "complete": False}
    items, total, reused = cp._items({"files": files}, states, "/s/t", "/d/t")
    assert (total, reused) == (sum(f["size"] for f in files), 100 + (1 << 20))
    shapes = [(i.size, i.path, i.offset, i.targets, i.segments) for i in items]
    assert shapes == [
        (9000, None, 0, ((0, 0, 0, 4000), (1, 0, 4000, 5000)),
         (("/s/t/a", 0, 4000), ("/s/t/b", 0, 5000))),
        (5, "/s/t/big", 1 << 20, ((5, 1 << 20),), ()),
        (2002, None, 0, ((4, 0, 0, 2000), (6, 0, 2000, 1), (7, 0, 2001, 1)),
         (("/s/t/c", 0, 2000), ("/s/t/d", 0, 1), ("/s/t/e", 0, 1))),
        (1, None, 0, ((8, 0, 0, 1),), (("/s/t/f", 0, 1),)),
    ]  # fmt: skip
    assert all(i.hash is None for i in items)


def test_a_no_op_copy_says_how_many_files_are_up_to_date() -> None:
    from leptonctl.core.reports import CopyReport
    from leptonctl.render.summaries import copy_summary

    report = CopyReport(["h1", "h2"], 0, 0.42, 4096, 4096, files=3, files_up_to_date=3)
    assert copy_summary(report)[0] == ["h1 -> h2: 0 bytes sent, 3 files up to date (0.4 s)"]
    report = CopyReport(["h1", "h2"], 10, 2.0, 20, 10, files=3, files_sent=1, files_up_to_date=2)
    assert copy_summary(report)[0] == [
        "h1 -> h2: 10 bytes in 2.0 s (0.0 MB/s), 1 files sent, 2 files up to date, "
        "10 bytes were already there"
    ]


def test_file_status_says_whether_the_dirs_and_links_are_there_as_asked(
    tmp_path: Path, src: AgentHost
) -> None:
    dest = tmp_path / "out"
    (dest / "sub").mkdir(parents=True)
    (dest / "sub").chmod(0o750)
    (dest / "link").symlink_to("sub")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "inner").mkdir(parents=True)
    dirs = [{"path": str(dest / "sub"), "mode": 0o750}]
    links = [{"path": str(dest / "link"), "target": "sub"}]

    def tree_ok(dirs: list[dict[str, Any]], links: list[dict[str, Any]]) -> bool:
        reply = src.ok("file-status", files=[], dest=str(dest), dirs=dirs, links=links)
        assert reply["files"] == []
        return bool(reply["tree_ok"])

    assert tree_ok(dirs, links)
    assert not tree_ok([{"path": str(dest / "sub"), "mode": 0o755}], links)  # another mode
    assert not tree_ok(dirs, [{"path": str(dest / "link"), "target": "else"}])
    assert not tree_ok([*dirs, {"path": str(dest / "missing"), "mode": 0o755}], links)
    (dest / "via").symlink_to(elsewhere)  # a directory reached through a link is not there
    assert not tree_ok([{"path": str(dest / "via" / "inner"), "mode": 0o755}], [])
    assert src.ok("file-status", files=[], dest=str(dest))["tree_ok"] is True


def test_the_receiver_is_told_only_the_files_that_frames_go_to() -> None:
    from leptonctl.services.net import copy as cp

    spec = {
        "files": [{"path": f"/d/t/f{i}", "size": 10, "chunks": [[0, 10, None]]} for i in range(5)],
        "dirs": [{"path": "/d/t", "mode": 0o755}],
        "links": [{"path": "/d/t/l", "target": "f0"}],
    }
    items = [
        wire.SendItem(20, None, None, 0, ((1, 0, 0, 10), (3, 0, 10, 10)), (("/s/f1", 0, 10),) * 2),
        wire.SendItem(10, None, "/s/f4", 0, ((4, 0),)),
    ]
    sending, renumbered = cp._receiver_spec(spec, items, "/d/t", tree_ok=True)
    assert [f["path"] for f in sending["files"]] == ["/d/t/f1", "/d/t/f3", "/d/t/f4"]
    assert (sending["dirs"], sending["links"], sending["dest"]) == ([], [], "/d/t")
    assert [i.targets for i in renumbered] == [((0, 0, 0, 10), (1, 0, 10, 10)), ((2, 0),)]
    assert [i.segments for i in renumbered] == [i.segments for i in items]
    sending, _ = cp._receiver_spec(spec, items, "/d/t", tree_ok=False)
    assert (sending["dirs"], sending["links"]) == (spec["dirs"], spec["links"])
