"""What the reading commands show, read from the state store (no host is contacted).

``jobs``, ``show`` and ``data ls`` call these after (for jobs) one reconcile pass; the
commands only parse options and render what comes back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from leptonctl.core.datasets import parse_dataset_ref
from leptonctl.core.records import ACTIVE, DatasetRecord, JobRecord
from leptonctl.errors import UsageError
from leptonctl.store.interface import Store

Holders = Mapping[str, Mapping[str, str]]  # hash -> host -> replica state


@dataclass(frozen=True)
class DatasetListing:
    """``data ls``: the latest version of every dataset, and where their chunks are."""

    records: Sequence[DatasetRecord]
    holders: Holders

    @property
    def defects(self) -> list[str]:
        return [r.manifest.defect for r in self.records if r.manifest.defect is not None]


@dataclass(frozen=True)
class DatasetDetail:
    """``data ls NAME[@V]``: one version, and where each of its chunks is."""

    record: DatasetRecord
    holders: Holders


def dataset_listing(store: Store) -> DatasetListing:
    return DatasetListing(store.data.datasets(), store.data.replicas())


def dataset_detail(store: Store, ref: str) -> DatasetDetail:
    """One version by ``NAME`` or ``NAME@VERSION``: the latest ready one, else the newest
    in any state; the helpful "no dataset" error when there is none, and the "unusable"
    one when its manifest is damaged."""
    from leptonctl.services.data.datasets import find_record, usable  # the data commands only

    name, version = parse_dataset_ref(ref)
    record = store.data.get(name, version)
    if record is None:
        versions = store.data.versions(name)
        record = versions[-1] if versions else None
    if record is None:
        record = find_record(store, name, version)  # raises the helpful "no dataset" error
    usable(record)
    return DatasetDetail(record, store.data.replicas(record.manifest.hashes()))


def dataset_named(store: Store, ref: str | None) -> str | None:
    """The name in a NAME argument that must exist (None: every dataset)."""
    if ref is None:
        return None
    from leptonctl.services.data.datasets import find_record

    name = parse_dataset_ref(ref)[0]
    if not store.data.versions(name):
        find_record(store, name, None)  # raises the helpful "no dataset" error
    return name


def job_list(
    store: Store,
    *,
    all_jobs: bool = False,
    state: str | None = None,
    host: str | None = None,
    name: str | None = None,
    user: str | None = None,
) -> list[JobRecord]:
    """The queue (pending and running jobs), or with ``all_jobs`` or a ``state`` the
    history too, filtered by state, host, a substring of the name and who submitted it."""
    records = store.jobs.all() if all_jobs or state else store.jobs.in_states(ACTIVE)
    return [
        r
        for r in records
        if (state is None or r.state == state.upper())
        and (host is None or r.host == host)
        and (name is None or name in r.name)
        and (user is None or r.submitted_by == user)
    ]


def job_detail(store: Store, job_id: int) -> JobRecord:
    record = store.jobs.get(job_id)
    if record is None:
        raise UsageError(f"no job {job_id}")
    return record
