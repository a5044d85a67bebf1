"""Plain-text summaries of the data and copy commands, pure.

Each function returns ``(out, err)``: the lines for stdout, and the remarks (notes,
warnings) for stderr.  Stored and host-supplied strings are made printable first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from leptonctl.core.reports import (
    CopyReport,
    GarbageReport,
    GetReport,
    PutReport,
    RebalanceReport,
    RemoveReport,
    RepairReport,
)
from leptonctl.core.scan import printable
from leptonctl.render.units import human_bytes

Lines = tuple[list[str], list[str]]


def notes(texts: Iterable[str]) -> list[str]:
    return [f"  note: {text}" for text in texts]


def put_summary(report: PutReport, pruned: RemoveReport | None) -> Lines:
    line = (
        f"{report.name}@{report.version}: {human_bytes(report.size)} in {report.chunks} "
        f"chunk(s), {report.replicas} replica{'s' if report.replicas != 1 else ''}, "
        f"{human_bytes(report.sent_bytes)} sent in {report.seconds:.1f} s"
        + (
            f" ({report.reused_chunks} chunk(s) were already in place)"
            if report.reused_chunks
            else ""
        )
    )
    out, err = [line], notes(report.notes)
    if pruned is not None and pruned.versions:
        more_out, more_err = removed_summary(pruned)
        out += more_out
        err += more_err
    return out, err


def get_summary(report: GetReport) -> Lines:
    line = (
        f"{report.name}@{report.version} -> {report.dest}: {human_bytes(report.size)}, "
        f"{human_bytes(report.fetched_bytes)} fetched in {report.seconds:.1f} s"
    )
    return [line], notes(printable(note) for note in report.notes)


def removed_summary(report: RemoveReport) -> Lines:
    versions = ", ".join(str(v) for v in report.versions) or "none"
    line = (
        f"removed {report.name} version(s) {versions}: {report.freed_chunks} chunk(s), "
        f"{human_bytes(report.freed_bytes)} freed"
    )
    left = [
        f"{h}: copies or refs left ({why}); `leptonctl data gc` removes them"
        for h, why in report.left_on.items()
    ]
    return [line], notes([*left, *report.notes])


def repair_summary(report: RepairReport) -> Lines:
    line = (
        f"repair: {report.chunks} chunk(s) checked, {report.copies_made} copies made, "
        f"{report.corrupt_removed} corrupt copies removed, "
        f"{human_bytes(report.sent_bytes)} sent"
    )
    err = []
    if report.lost:
        err.append(f"  LOST (no healthy copy anywhere): {len(report.lost)} chunk(s)")
    err += notes(f"{h[:12]}: {why}" for h, why in report.short.items())
    err += notes(f"{host}: {why}" for host, why in report.problems.items())
    err += notes(_relay_note(r) for r in report.relayed)
    return [line], err


def rebalance_summary(report: RebalanceReport) -> Lines:
    line = (
        f"rebalance: {report.moves_done}/{report.moves_planned} move(s), "
        f"{human_bytes(report.bytes_moved)} moved; spread of disk use "
        f"{report.spread_before:.1%} -> {report.spread_after:.1%}"
    )
    err = notes(f"{host}: {why}" for host, why in report.problems.items())
    return [line], err + notes(_relay_note(r) for r in report.relayed)


def _relay_note(relayed: Mapping[str, str]) -> str:
    """A hop relayed by the operator, as ``RelayedHop.note`` says it."""
    return f"{relayed['from']} -> {relayed['to']} relayed by the operator: {relayed['reason']}"


def gc_summary(report: GarbageReport, check: bool) -> Lines:
    verb = "would delete" if check else "deleted"
    total = sum(report.removed.values())
    line = f"gc: {verb} {total} unreferenced chunk(s), {human_bytes(report.freed_bytes)}"
    err = notes(f"{h}: {n} stale ref(s) dropped" for h, n in report.stale_refs.items())
    err += notes(f"{h}: legacy pin released" for h in report.released_legacy)
    err += notes(
        f"{h}: {n} chunk(s) stored before refs existed are kept; once every state store "
        "using these hosts has run `data gc`, run `data gc --release-legacy`"
        for h, n in report.legacy.items()
    )
    err += notes(
        f"{h}: skipped, nothing deleted there ({why})" for h, why in report.problems.items()
    )
    return [line], err


def copy_summary(report: CopyReport) -> Lines:
    rate = report.bytes / report.seconds / 1e6 if report.seconds else 0.0
    route = " -> ".join(report.route)
    if report.files_up_to_date and not report.files_sent and not report.bytes:
        line = f"{route}: 0 bytes sent, {report.files_up_to_date} files up to date"
        return [line + f" ({report.seconds:.1f} s)"], notes(printable(n) for n in report.notes)
    line = (
        f"{route}: {report.bytes} bytes in {report.seconds:.1f} s ({rate:.1f} MB/s)"
        + (f", {report.files_sent} files sent" if report.files_sent else "")
        + (f", {report.files_up_to_date} files up to date" if report.files_up_to_date else "")
        + (f", {report.reused_bytes} bytes were already there" if report.reused_bytes else "")
    )
    return [line], notes(printable(note) for note in report.notes)
