"""Renderers for ``leptonctl data``: datasets, one dataset's chunks, a scrub report."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from rich.table import Table
from rich.text import Text

from leptonctl.core.datasets import VerifyReport
from leptonctl.core.records import DatasetRecord
from leptonctl.core.scan import printable
from leptonctl.render.text import add_row
from leptonctl.render.units import human_bytes

Replicas = Mapping[str, Mapping[str, str]]  # hash -> host -> "ok" | "corrupt"


def datasets_table(records: Sequence[DatasetRecord], replicas: Replicas) -> Table:
    table = _table()
    for column in ("NAME", "VERSION", "STATE", "SIZE", "FILES", "CHUNKS", "K", "HEALTH"):
        table.add_column(column, justify="right" if column in _NUMERIC else "left")
    table.add_column("CREATED")
    for record in records:
        hashes = record.manifest.hashes()
        add_row(
            table,
            record.name,
            str(record.version),
            _state(record.state),
            human_bytes(record.size),
            str(_files(record)),
            str(len(hashes)),
            str(record.replicas),
            _health(_healthy_min(hashes, replicas, record.replicas), record.replicas),
            _when(record.created),
        )
    return table


def dataset_table(record: DatasetRecord, replicas: Replicas) -> Table:
    """One row per chunk: where its copies are and how many are healthy."""
    table = _table()
    table.title = _line(
        f"{record.name}@{record.version}  {record.state}  {human_bytes(record.size)} in "
        f"{_files(record)} files  K={record.replicas}  from {record.source}"
    )
    table.title_justify = "left"
    table.add_column("CHUNK")
    table.add_column("SIZE", justify="right")
    table.add_column("REPLICAS")
    table.add_column("COPIES", justify="right")
    sizes = record.manifest.chunk_sizes()
    for digest, size in sizes.items():
        states = replicas.get(digest, {})
        hosts = Text()
        for host in sorted(states):
            if hosts:
                hosts.append(" ")
            if states[host] == "ok":
                hosts.append(host)
            else:
                hosts.append(f"{host}({states[host]})", style="red")
        ok = sum(1 for s in states.values() if s == "ok")
        add_row(table, digest[:12], human_bytes(size), hosts, _health(ok, record.replicas))
    return table


def verify_table(report: VerifyReport) -> Table:
    """One row per problem found; the totals are the caption."""
    table = _table()
    for column in ("CHUNK", "HOST", "PROBLEM", "DETAIL"):
        table.add_column(column)
    for problem in report.problems:
        add_row(
            table,
            problem.hash[:12],
            problem.host,
            Text(problem.problem, style="red" if problem.problem == "corrupt" else "yellow"),
            problem.detail,
        )
    scope = "all datasets" if report.dataset is None else report.dataset
    caption = (
        f"{scope}: {report.replicas_ok}/{report.replicas_checked} replicas ok, "
        f"{human_bytes(report.bytes_hashed)} hashed in {report.seconds:.1f}s"
    )
    if report.under_replicated:
        count = len(report.under_replicated)
        caption += f"; {count} chunk{'' if count == 1 else 's'} under-replicated"
    table.caption = _line(caption)
    table.caption_justify = "left"
    return table


_NUMERIC = {"VERSION", "SIZE", "FILES", "CHUNKS", "K", "HEALTH"}


def _table() -> Table:
    return Table(box=None, header_style="bold", pad_edge=False, collapse_padding=True)


def _line(text: str) -> Text:
    """A title or caption as wide as the console, not wrapped to the table's width."""
    return Text(printable(text), no_wrap=True, overflow="ignore")


def _state(state: str) -> Text:
    return Text(state, style="green" if state == "ready" else "yellow")


def _files(record: DatasetRecord) -> int:
    return record.manifest.file_count


def _healthy_min(hashes: Sequence[str], replicas: Replicas, k: int) -> int:
    """The fewest healthy copies any chunk has (k for a dataset without chunks)."""
    counts = [sum(1 for s in replicas.get(h, {}).values() if s == "ok") for h in hashes]
    return min(counts, default=k)


def _health(ok: int, k: int) -> Text:
    style = "green" if ok >= k else "red" if ok == 0 else "yellow"
    return Text(f"{ok}/{k}", style=style)


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at))
