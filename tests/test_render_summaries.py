"""Text summaries and JSON documents of the data, copy and probe commands, pure."""

from __future__ import annotations

import json

from leptonctl.core.netgraph import LinkMeasurement
from leptonctl.core.reports import (
    CopyReport,
    GarbageReport,
    ProbeReport,
    PutReport,
    RemoveReport,
    RepairReport,
)
from leptonctl.render import documents, summaries


def test_a_put_that_pruned_old_versions_says_both_and_keeps_notes_on_stderr() -> None:
    put = PutReport("ds", 3, 2048, 1, 2, 2, 4096, 0, 1.25, ("slow host h2",))
    pruned = RemoveReport("ds", (1,), 4, 8192, {"h3": "unreachable"})
    out, err = summaries.put_summary(put, pruned)
    assert out == [
        "ds@3: 2 KiB in 1 chunk(s), 2 replicas, 4 KiB sent in 1.2 s",
        "removed ds version(s) 1: 4 chunk(s), 8 KiB freed",
    ]
    assert err == [
        "  note: slow host h2",
        "  note: h3: copies or refs left (unreachable); `leptonctl data gc` removes them",
    ]
    doc = documents.put_document(put, pruned)
    assert doc["version"] == 3 and doc["pruned"]["versions"] == (1,)
    assert documents.put_document(put, None)["pruned"] is None


def test_a_repair_that_lost_chunks_says_so_on_stderr_and_in_its_document() -> None:
    report = RepairReport("ds", 5, copies_made=1, lost=["a" * 64], problems={"h1": "down"})
    out, err = summaries.repair_summary(report)
    assert out[0].startswith("repair: 5 chunk(s) checked, 1 copies made")
    assert err == ["  LOST (no healthy copy anywhere): 1 chunk(s)", "  note: h1: down"]
    assert documents.repair_document(report)["healthy"] is False


def test_gc_under_check_says_what_it_would_delete() -> None:
    report = GarbageReport(removed={"h1": 2, "h2": 1}, freed_bytes=3 * 1024**2)
    assert summaries.gc_summary(report, check=True)[0] == [
        "gc: would delete 3 unreferenced chunk(s), 3 MiB"
    ]
    assert summaries.gc_summary(report, check=False)[0][0].startswith("gc: deleted 3")


def test_a_copy_document_leads_with_route_bytes_and_seconds() -> None:
    report = CopyReport(["a", "b"], 10, 2.34567, 10, 0, notes=["x\x1by"])
    doc = documents.copy_document(report)
    assert list(doc)[:3] == ["route", "bytes", "seconds"] and doc["seconds"] == 2.346
    assert doc["total_bytes"] == 10
    out, err = summaries.copy_summary(report)
    assert out == ["a -> b: 10 bytes in 2.3 s (0.0 MB/s)"]
    assert "\x1b" not in err[0]  # a host-supplied note is printed literally, not obeyed


def test_a_probe_document_lists_every_pair_and_what_was_unreachable() -> None:
    report = ProbeReport(
        [LinkMeasurement("a", "b", 1.0, 1e9, 0.001, None)], 2, {"c": "refused"}, 1.23456
    )
    doc = documents.probe_document(report)
    json.dumps(doc)
    assert doc == {
        "measured": [{"src": "a", "dst": "b", "bandwidth_bps": 1e9, "rtt_s": 0.001, "error": None}],
        "unreachable_hosts": {"c": "refused"},
        "relayed": [],
        "skipped_pairs": 2,
        "seconds": 1.235,
    }
