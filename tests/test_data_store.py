"""Datasets, chunks and replicas in the state store, on both backends (a SQLite file and
a real PostgreSQL database); and the manifest and dataset-name formats the store keeps."""

from __future__ import annotations

import pytest

from leptonctl.core.datasets import ChunkRef, Manifest, ManifestEntry, parse_dataset_ref
from leptonctl.errors import StateError, UsageError
from leptonctl.store.data import DataTable
from leptonctl.store.interface import Store
from leptonctl.store.open import open_store
from tests.pg import execute_raw

A, B, C, D = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)


def files(*chunk_lists: tuple[str, ...]) -> Manifest:
    """A dir dataset with one file per list of hashes; a chunk of hash X is 10 bytes."""
    entries = [ManifestEntry("", "dir", 0o755)]
    for i, hashes in enumerate(chunk_lists):
        refs = tuple(ChunkRef(h, 10) for h in hashes)
        entries.append(ManifestEntry(f"f{i}", "file", 0o644, 10 * len(refs), refs))
    return Manifest("dir", tuple(entries))


def begin(data: DataTable, name: str, manifest: Manifest, now: float = 1.0, k: int = 2) -> int:
    record = data.begin_version(
        name, manifest=manifest, replicas=k, chunk_size=10, source=f"/src/{name}", now=now
    )
    return record.version


@pytest.fixture
def store(any_store: Store) -> Store:
    return any_store


def test_begin_records_a_writing_version_with_its_chunks(store: Store) -> None:
    record = store.data.begin_version(
        "imgs", manifest=files((A, B), (B,)), replicas=3, chunk_size=10, source="/d", now=5.0
    )
    assert (record.version, record.state, record.replicas, record.size) == (1, "writing", 3, 30)
    assert store.data.get("imgs", 1) == record
    assert store.data.chunk_sizes() == {A: 10, B: 10}
    assert store.data.referenced_hashes() == {A, B}


def test_writing_version_is_invisible_until_complete(store: Store) -> None:
    begin(store.data, "imgs", files((A,)))
    assert store.data.get("imgs") is None
    store.data.complete("imgs", 1, now=9.0)
    ready = store.data.get("imgs")
    assert ready is not None
    assert (ready.version, ready.state, ready.completed) == (1, "ready", 9.0)


def test_latest_ready_wins_over_a_newer_writing_version(store: Store) -> None:
    begin(store.data, "imgs", files((A,)))
    store.data.complete("imgs", 1, now=2.0)
    assert begin(store.data, "imgs", files((B,))) == 2
    latest = store.data.get("imgs")
    assert latest is not None and latest.version == 1
    assert [r.version for r in store.data.versions("imgs")] == [1, 2]
    assert [(r.name, r.version) for r in store.data.datasets()] == [("imgs", 1)]


def test_datasets_lists_names_with_only_a_writing_version(store: Store) -> None:
    begin(store.data, "zeta", files((A,)))
    begin(store.data, "zeta", files((B,)))
    begin(store.data, "alpha", files((B,)))
    store.data.complete("alpha", 1, now=2.0)
    begin(store.data, "alpha", files((C,)))
    begin(store.data, "alpha", files((D,)))
    shown = [(r.name, r.version, r.state) for r in store.data.datasets()]
    assert shown == [("alpha", 1, "ready"), ("zeta", 2, "writing")]
    assert [(r.name, r.version) for r in store.data.all_records()] == [
        ("alpha", 1),
        ("alpha", 2),
        ("alpha", 3),
        ("zeta", 1),
        ("zeta", 2),
    ]


def test_same_put_again_resumes_the_writing_version(store: Store) -> None:
    assert begin(store.data, "imgs", files((A, B)), now=1.0) == 1
    resumed = store.data.begin_version(
        "imgs", manifest=files((A, B)), replicas=3, chunk_size=10, source="/again", now=7.0
    )
    assert (resumed.version, resumed.created, resumed.replicas) == (1, 1.0, 3)
    assert store.data.get("imgs", 1) == resumed
    assert begin(store.data, "imgs", files((A, C))) == 2  # another manifest: a new version


def test_a_ready_version_is_not_resumed(store: Store) -> None:
    begin(store.data, "imgs", files((A,)))
    store.data.complete("imgs", 1, now=2.0)
    assert begin(store.data, "imgs", files((A,))) == 2


def test_complete_of_an_unknown_version_is_a_state_error(store: Store) -> None:
    with pytest.raises(StateError, match="imgs@4"):
        store.data.complete("imgs", 4, now=1.0)


def test_versions_survive_reopening_the_store(state_backend: str) -> None:
    manifest = files((A, B), (C,))
    with open_store(state_backend) as first:
        begin(first.data, "imgs", manifest)
        first.data.complete("imgs", 1, now=3.0)
    with open_store(state_backend) as second:
        record = second.data.get("imgs")
        assert record is not None and record.manifest == manifest


def test_remove_returns_only_hashes_nothing_else_references(store: Store) -> None:
    begin(store.data, "one", files((A, B)))
    begin(store.data, "two", files((B, C)))
    assert store.data.remove("one") == [A]
    assert store.data.get("one", 1) is None
    assert store.data.referenced_hashes() == {B, C}
    assert store.data.remove("two") == [B, C]
    assert store.data.remove("two") == []


def test_remove_one_version_keeps_hashes_other_versions_use(store: Store) -> None:
    for version, manifest in ((1, files((A, B))), (2, files((B, C)))):
        begin(store.data, "imgs", manifest)
        store.data.complete("imgs", version, now=float(version))
    assert store.data.remove("imgs", 1) == [A]
    assert [r.version for r in store.data.versions("imgs")] == [2]


def test_remove_leaves_replica_rows_until_forget(store: Store) -> None:
    begin(store.data, "one", files((A,)))
    store.data.set_replicas([(A, "h1", "ok")], now=1.0)
    freed = store.data.remove("one")
    assert store.data.replicas([A]) == {A: {"h1": "ok"}}
    assert store.data.forget_chunks(freed) == [A]
    assert store.data.replicas() == {}
    assert store.data.chunk_sizes() == {}


def test_forget_keeps_a_hash_that_is_referenced_again(store: Store) -> None:
    begin(store.data, "one", files((A,)))
    store.data.set_replicas([(A, "h1", "ok")], now=1.0)
    freed = store.data.remove("one")
    begin(store.data, "two", files((A,)))  # another put reused the chunk meanwhile
    assert store.data.forget_chunks(freed) == []
    assert store.data.replicas() == {A: {"h1": "ok"}}


def test_keep_last_removes_old_ready_versions_only(store: Store) -> None:
    manifests = [files((A,)), files((A, B)), files((C,)), files((D,))]
    for version, manifest in enumerate(manifests, start=1):
        begin(store.data, "imgs", manifest)
        if version < 4:
            store.data.complete("imgs", version, now=float(version))
    removed, freed = store.data.keep_last("imgs", 1)
    assert removed == [1, 2]
    assert freed == [A, B]
    assert [(r.version, r.state) for r in store.data.versions("imgs")] == [
        (3, "ready"),
        (4, "writing"),
    ]
    assert store.data.keep_last("imgs", 1) == ([], [])


def test_replicas_upsert_drop_and_host_usage(store: Store) -> None:
    begin(store.data, "one", files((A, B)))
    store.data.set_replicas([(A, "h1", "ok"), (A, "h2", "ok"), (B, "h1", "ok")], now=1.0)
    store.data.set_replicas([(A, "h2", "corrupt")], now=2.0)
    assert store.data.replicas() == {A: {"h1": "ok", "h2": "corrupt"}, B: {"h1": "ok"}}
    assert store.data.host_usage() == {"h1": 20}  # corrupt copies do not count
    store.data.drop_replicas([(A, "h2"), (B, "h1")])
    assert store.data.replicas() == {A: {"h1": "ok"}}
    assert store.data.replicas([B]) == {}
    assert store.data.host_usage() == {"h1": 10}


def test_unknown_replica_state_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="replica state"):
        store.data.set_replicas([(A, "h1", "fine")], now=1.0)


def test_many_hashes_are_read_in_batches(store: Store) -> None:
    hashes = [f"{i:064x}" for i in range(1200)]
    store.data.set_replicas([(h, "h1", "ok") for h in hashes], now=1.0)
    assert len(store.data.replicas(hashes)) == 1200


def test_a_damaged_manifest_is_a_state_error_of_that_version_only(
    store: Store, state_backend: str
) -> None:
    begin(store.data, "imgs", files((A,)))
    begin(store.data, "other", files((B,)))
    execute_raw(
        state_backend, "UPDATE datasets SET manifest = '{\"kind\": \"blob\"}' WHERE name = 'imgs'"
    )
    assert [r.name for r in store.data.all_records()] == ["imgs", "other"]  # still listed
    (damaged,) = store.data.versions("imgs")
    assert damaged.manifest.entries == () and damaged.manifest.hashes() == []
    with pytest.raises(StateError, match="manifest of dataset imgs@1"):
        damaged.manifest.to_dict()  # nothing can use it by mistake
    assert store.data.versions("other")[0].manifest == files((B,))


def test_two_stores_on_one_database_number_versions_in_turn(state_backend: str) -> None:
    with open_store(state_backend) as one, open_store(state_backend) as two:
        assert begin(one.data, "imgs", files((A,))) == 1
        assert begin(two.data, "imgs", files((B,))) == 2


# -- the manifest and name formats ---------------------------------------------------


def test_manifest_round_trips_through_a_dict() -> None:
    manifest = Manifest(
        "dir",
        (
            ManifestEntry("", "dir", 0o755),
            ManifestEntry("data", "dir", 0o700),
            ManifestEntry("data/x.bin", "file", 0o644, 25, (ChunkRef(A, 10), ChunkRef(B, 15))),
            ManifestEntry("data/empty", "file", 0o600, 0),
            ManifestEntry("latest", "symlink", 0o777, 10, target="data/x.bin"),
            ManifestEntry("again.bin", "file", 0o644, 10, (ChunkRef(A, 10),)),
        ),
    )
    assert Manifest.from_dict(manifest.to_dict()) == manifest
    assert manifest.size == 35
    assert manifest.hashes() == [A, B]
    assert manifest.chunk_sizes() == {A: 10, B: 15}


def test_single_file_manifest_has_one_entry_with_an_empty_path() -> None:
    single = Manifest("file", (ManifestEntry("", "file", 0o644, 10, (ChunkRef(A, 10),)),))
    assert Manifest.from_dict(single.to_dict()) == single
    with pytest.raises(ValueError, match="exactly one file entry"):
        Manifest.from_dict({"kind": "file", "entries": []})


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"path": "/etc/passwd", "type": "file", "mode": 420, "size": 0}, "relative"),
        ({"path": "a/../../b", "type": "file", "mode": 420, "size": 0}, r"'\.\.'"),
        ({"path": "a", "type": "fifo", "mode": 420}, "type must be"),
        ({"path": "a", "type": "file", "mode": -1, "size": 0}, "mode"),
        ({"path": "a", "type": "file", "mode": 0o10644, "size": 0}, "permission bits"),
        ({"path": "a", "type": "file", "mode": 420, "size": 3}, "add up to 0"),
        (
            {"path": "a", "type": "file", "mode": 420, "size": 1,
             "chunks": [{"hash": "../../x", "size": 1}]},
            "64 lowercase hex",
        ),
        ({"path": "a", "type": "symlink", "mode": 511}, "target"),
        (
            {"path": "a", "type": "dir", "mode": 493, "chunks": [{"hash": A, "size": 1}]},
            "no chunks",
        ),
    ],
)  # fmt: skip
def test_bad_manifest_entries_are_refused_with_the_reason(
    entry: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Manifest.from_dict({"kind": "dir", "entries": [entry]})


def test_manifest_refuses_duplicate_paths_and_unknown_kinds() -> None:
    entry = {"path": "a", "type": "dir", "mode": 493}
    with pytest.raises(ValueError, match="twice"):
        Manifest.from_dict({"kind": "dir", "entries": [entry, entry]})
    with pytest.raises(ValueError, match="kind"):
        Manifest.from_dict({"kind": "tar", "entries": []})
    with pytest.raises(ValueError, match="expected an object"):
        Manifest.from_dict([])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("imagenet", ("imagenet", None)),
        ("imagenet@3", ("imagenet", 3)),
        ("a.b_c-1@12", ("a.b_c-1", 12)),
    ],
)
def test_dataset_refs_are_parsed(text: str, expected: tuple[str, int | None]) -> None:
    assert parse_dataset_ref(text) == expected


@pytest.mark.parametrize(
    "text", ["", "@3", "-x", "x@", "x@0", "x@-1", "x@v2", "a/b", "x@1@2", "x" * 129]
)
def test_bad_dataset_refs_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_dataset_ref(text)
    assert caught.value.hint and "NAME@VERSION" in caught.value.hint
