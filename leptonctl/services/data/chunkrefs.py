"""Chunk refs: which chunks this state store needs on which host, kept on the host itself.

A host's chunks are shared by every state store that uses it (two operators, or a cron
store next to a laptop's), and each store knows only its own datasets.  So a store never
decides alone that a chunk is garbage: it *pins* a dataset version on a host
(``DATA/refs/<store id>/<ref>``, the version's chunk hashes) before it sends or adopts
chunks there, and *unpins* it only after it forgot the version.  The agent deletes a
chunk only when no ref of any store names it, deciding under a host-side lock, so a pin
racing a gc of another store is safe.  See the agent's ``chunk-pin``, ``chunk-unpin``,
``chunk-gc`` and ``chunk-drop``.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from leptonctl.errors import AgentError, HostError, UsageError
from leptonctl.inventory.model import Host
from leptonctl.remote.agent import AgentSessions, wire
from leptonctl.services.data.replication import Replicator, Survey
from leptonctl.store.data import DatasetRecord
from leptonctl.store.interface import Store
from leptonctl.store.jobs import ACTIVE


def version_ref(record: DatasetRecord) -> str:
    """The ref of one dataset version on the hosts: a name safe as a file name.  The
    creation time is part of it: a name that is removed and put again restarts at version 1,
    and a stale ref of the old version 1 must not pass for the new one."""
    key = f"{record.name}@{record.version}@{record.created:.6f}"
    return hashlib.sha256(key.encode()).hexdigest()


def pin_request(store: Store, records: Iterable[DatasetRecord]) -> wire.ChunkPin:
    refs = [
        {
            "ref": version_ref(r),
            "name": f"{r.name}@{r.version}",
            "hashes": sorted(r.manifest.chunk_sizes()),
        }
        for r in records
    ]
    return wire.ChunkPin(store=store.store_id(), refs=refs)


async def pin(
    replicator: Replicator,
    store: Store,
    records: Mapping[str, Sequence[DatasetRecord]],
) -> dict[str, dict[str, int]]:
    """Pin versions on hosts (host name -> versions); host -> the pinned chunks present
    there.  A host where the pin failed is marked dead: nothing may be sent to it."""
    replies = await replicator.request_all(
        {name: pin_request(store, rs) for name, rs in records.items() if rs}
    )
    present: dict[str, dict[str, int]] = {}
    for name, reply in replies.items():
        if isinstance(reply, HostError):
            replicator.dead.setdefault(name, reply)
        else:
            present[name] = {str(h): int(n) for h, n in dict(reply["present"]).items()}
    return present


async def pin_for_put(
    replicator: Replicator,
    store: Store,
    record: DatasetRecord,
    surveys: Mapping[str, Survey],
) -> dict[str, Survey]:
    """Pin a version being put on every surveyed host before any chunk is sent or adopted.
    The surveys that come back say what each host holds *after* pinning (a chunk deleted by
    another store's gc in between is not counted), without the hosts where pinning failed."""
    present = await pin(replicator, store, {name: [record] for name in surveys})
    return {
        name: replace(survey, present=present[name])
        for name, survey in surveys.items()
        if name in present
    }


async def pin_on(
    sessions: AgentSessions, store: Store, host: Host, records: Sequence[DatasetRecord]
) -> str | None:
    """Pin versions on one host (job input staging): None, or why the host refused."""
    try:
        await sessions.request(host, pin_request(store, records))
    except AgentError as exc:
        if exc.operation is None:
            raise
        return exc.message
    return None


async def unpin(
    sessions: AgentSessions,
    store: Store,
    hosts: Sequence[Host],
    records: Sequence[DatasetRecord],
    candidates: list[str],
) -> tuple[list[str], int, dict[str, str], list[str]]:
    """After ``store`` removed ``records`` (``candidates``: the hashes they used that no
    version of this store references now): forget what nothing references, then unpin the
    versions on every selected host, which deletes the chunks no ref of any store names.
    Returns (freed hashes, their bytes, host -> why refs or copies were left there,
    notes on copies kept because another state store uses them)."""
    sizes = store.data.chunk_sizes(candidates)
    holders = {h: set(v) for h, v in store.data.replicas(candidates).items()}
    freed = store.data.forget_chunks(candidates)
    by_host: dict[str, list[str]] = defaultdict(list)
    for digest in freed:
        for host in holders.get(digest, ()):
            by_host[host].append(digest)
    refs = [version_ref(r) for r in records]
    store_id = store.store_id()
    replicator = Replicator(sessions, hosts)
    replies = await replicator.request_all(
        {
            h.name: wire.ChunkUnpin(
                store=store_id, refs=refs, hashes=sorted(by_host.get(h.name, ()))
            )
            for h in hosts
        }
    )
    left: dict[str, str] = {}
    notes: list[str] = []
    for host, reply in sorted(replies.items()):
        if isinstance(reply, HostError):
            left[host] = reply.message
        elif reply.get("kept"):
            notes.append(
                f"{host}: {len(reply['kept'])} chunk(s) kept: another state store uses them"
            )
    selected = {h.name for h in hosts}
    for host in by_host:
        if host not in selected:
            left[host] = "not in the selected inventory"
    return freed, sum(sizes.get(h, 0) for h in freed), left, notes


def jobs_needing(store: Store, name: str) -> dict[int, list[tuple[int, str]]]:
    """version of ``name`` -> (job id, state) of the active jobs whose --input pins it.
    A running job counts: it is staged again if it is requeued."""
    needed: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for job in store.jobs.in_states(ACTIVE):
        for item in job.spec.get("inputs") or []:
            if item.get("name") == name and isinstance(item.get("version"), int):
                needed[int(item["version"])].append((job.id, job.state))
    return dict(needed)


def refuse_needed(name: str, doomed: Collection[int], needed: Mapping[int, Any]) -> None:
    """Refuse to remove versions that active jobs still need as input (``--force`` skips)."""
    blocking = sorted(v for v in doomed if v in needed)
    if not blocking:
        return
    jobs = sorted({job for v in blocking for job in needed[v]})
    listed = ", ".join(f"{job_id} ({state})" for job_id, state in jobs)
    versions = ", ".join(f"{name}@{v}" for v in blocking)
    raise UsageError(
        f"{versions} is the input of job(s) {listed}: they would fail when staged",
        hint="cancel those jobs first, or pass --force to remove it anyway",
    )
