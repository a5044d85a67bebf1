"""Dataset renderers: JSON documents keep their contract, tables show what an operator reads."""

from __future__ import annotations

import json
import time

from rich.console import Console

from leptonctl.core.datasets import ChunkRef, Manifest, ManifestEntry, ReplicaProblem, VerifyReport
from leptonctl.render.data import dataset_table, datasets_table, verify_table
from leptonctl.render.documents import dataset_document, datasets_document, verify_document
from leptonctl.store.data import DatasetRecord

A, B = "a" * 64, "b" * 64
MiB = 2**20
CREATED = 1795370100.0


def rendered(renderable: object) -> str:
    console = Console(record=True, width=120, color_system=None)
    console.print(renderable)
    return console.export_text()


def record(name: str = "imgs", state: str = "ready", k: int = 3) -> DatasetRecord:
    manifest = Manifest(
        "dir",
        (
            ManifestEntry("", "dir", 0o755),
            ManifestEntry(
                "x.bin", "file", 0o644, 96 * MiB, (ChunkRef(A, 64 * MiB), ChunkRef(B, 32 * MiB))
            ),
            ManifestEntry("y.bin", "file", 0o600, 64 * MiB, (ChunkRef(A, 64 * MiB),)),
            ManifestEntry("link", "symlink", 0o777, 5, target="x.bin"),
        ),
    )  # fmt: skip
    return DatasetRecord(
        name=name,
        version=2,
        state=state,
        created=CREATED,
        completed=CREATED + 60 if state == "ready" else None,
        replicas=k,
        chunk_size=64 * MiB,
        size=manifest.size,
        source="gpu01:/data/imgs",
        manifest=manifest,
    )


REPLICAS = {
    A: {"h1": "ok", "h2": "ok", "h3": "ok"},
    B: {"h3": "ok", "h1": "ok", "h2": "corrupt"},
}

REPORT = VerifyReport(
    dataset="imgs",
    replicas_checked=6,
    replicas_ok=4,
    bytes_hashed=256 * MiB,
    seconds=2.5,
    problems=(
        ReplicaProblem(B, "h2", "corrupt", "sha256 mismatch"),
        ReplicaProblem(A, "h4", "unreachable", "connection refused"),
    ),
    under_replicated=(B,),
)


def test_dataset_document_lists_files_and_healthy_holders_sorted() -> None:
    doc = dataset_document(record(), REPLICAS)
    assert {"name", "version", "state", "size", "replicas", "files", "chunks"} <= set(doc)
    assert (doc["name"], doc["version"], doc["state"], doc["replicas"]) == ("imgs", 2, "ready", 3)
    assert doc["size"] == 160 * MiB
    assert [f["path"] for f in doc["files"]] == ["", "x.bin", "y.bin", "link"]
    assert doc["files"][1] == {
        "path": "x.bin", "type": "file", "mode": 0o644, "size": 96 * MiB, "chunks": [A, B]
    }  # fmt: skip
    assert doc["files"][3]["target"] == "x.bin"
    assert doc["chunks"] == [
        {"hash": A, "size": 64 * MiB, "replicas": ["h1", "h2", "h3"], "corrupt": []},
        {"hash": B, "size": 32 * MiB, "replicas": ["h1", "h3"], "corrupt": ["h2"]},
    ]
    assert doc["healthy_min"] == 2
    json.dumps(doc)  # a JSON document, nothing else


def test_datasets_document_counts_chunks_and_the_weakest_chunk() -> None:
    doc = datasets_document([record(), record("empty-ish", "writing")], {A: REPLICAS[A]})
    first, second = doc["datasets"]
    assert {"name", "version", "state", "size", "replicas", "chunks", "healthy_min"} <= set(first)
    assert (first["chunks"], first["healthy_min"], first["replicas"]) == (2, 0, 3)
    assert (second["name"], second["state"]) == ("empty-ish", "writing")


def test_dataset_without_chunks_counts_as_fully_healthy() -> None:
    empty = record()
    empty = DatasetRecord(**{**empty.__dict__, "manifest": Manifest("dir", ())})
    assert datasets_document([empty], {})["datasets"][0]["healthy_min"] == 3


def test_verify_document_carries_problems_and_totals() -> None:
    doc = verify_document(REPORT)
    assert doc["healthy"] is False
    assert doc["problems"][0] == {
        "hash": B, "host": "h2", "problem": "corrupt", "detail": "sha256 mismatch"
    }  # fmt: skip
    assert doc["under_replicated"] == [B]
    assert (doc["replicas_checked"], doc["replicas_ok"], doc["bytes_hashed"]) == (6, 4, 256 * MiB)
    clean = VerifyReport(None, 3, 3, 10, 0.1, (), ())
    assert verify_document(clean)["healthy"] is True


def test_datasets_table_shows_health_as_weakest_over_k() -> None:
    text = rendered(datasets_table([record()], REPLICAS))
    header, row = text.splitlines()[:2]
    for column in ("NAME", "VERSION", "STATE", "SIZE", "FILES", "CHUNKS", "K", "HEALTH", "CREATED"):
        assert column in header
    assert row.split()[:8] == ["imgs", "2", "ready", "160", "MiB", "2", "2", "3"]
    assert "2/3" in row
    assert time.strftime("%Y-%m-%d %H:%M", time.localtime(CREATED)) in row


def test_dataset_table_has_one_row_per_chunk_with_its_hosts() -> None:
    text = rendered(dataset_table(record(), REPLICAS))
    assert "imgs@2  ready  160 MiB in 2 files  K=3  from gpu01:/data/imgs" in text
    rows = [line for line in text.splitlines() if line.startswith(("aaaaaaaaaaaa", "bbbbbbbbbbbb"))]
    assert len(rows) == 2
    assert "h1 h2 h3" in rows[0] and "3/3" in rows[0] and "64 MiB" in rows[0]
    assert "h2(corrupt)" in rows[1] and "2/3" in rows[1]


def test_verify_table_lists_problems_and_sums_up_in_the_caption() -> None:
    text = rendered(verify_table(REPORT))
    assert "sha256 mismatch" in text and "unreachable" in text and "h4" in text
    assert "4/6 replicas ok" in text
    assert "256 MiB hashed in 2.5s" in text
    assert "1 chunk under-replicated" in text
