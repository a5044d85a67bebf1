"""Storage identities in the data services: which surveyed hosts share a data dir, what the
state store remembers of it, and recording one replica per storage.

Every agent reports its data dir's storage id in each chunk-have reply (``Survey.storage``).
The store remembers the last id seen per host (value ``storage-of:<host>``), so that a copy
recorded under a host that is down now still counts once, and so that the copies recorded
under a host whose data dir changed (a new storage id) are forgotten: they lie in the old
storage, not in the one the host now has.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping

from leptonctl.core.facts import DiskFacts, WireError, parse_facts, storage_id_of
from leptonctl.core.storages import SharedStorage, dedupe_holders, group_hosts, storage_key
from leptonctl.errors import HostError
from leptonctl.remote.agent import wire
from leptonctl.services.context import ServiceContext
from leptonctl.services.data.replication import Survey
from leptonctl.store.interface import Store

STORAGE_OF = "storage-of:"  # + host name -> {"id": storage id, "seen": time}


def surveyed_storages(surveys: Mapping[str, Survey]) -> dict[str, str | None]:
    """host -> the storage id its agent reported (None: unknown, a storage of its own)."""
    return {name: s.storage for name, s in surveys.items()}


def remembered(store: Store, hosts: Collection[str]) -> dict[str, str | None]:
    """host -> the storage id last seen there (None when never seen)."""
    found: dict[str, str | None] = {}
    for host in sorted(hosts):
        try:
            doc = json.loads(store.value(STORAGE_OF + host) or "null")
        except ValueError:
            doc = None
        found[host] = storage_id_of(doc.get("id")) if isinstance(doc, dict) else None
    return found


def remember(store: Store, surveys: Mapping[str, Survey], now: float) -> None:
    """Remember each surveyed host's storage id; when it changed (the host's data dir is
    another directory now), forget the copies recorded under that host."""
    seen = {n: s for n, s in surveyed_storages(surveys).items() if s}
    before = remembered(store, seen)
    moved = {host for host, sid in seen.items() if before.get(host) not in (None, sid)}
    if moved:
        store.data.drop_replicas(
            (digest, host)
            for digest, hosts in store.data.replicas().items()
            for host in hosts
            if host in moved
        )
    for host, sid in seen.items():
        if before.get(host) != sid:
            store.set_value(STORAGE_OF + host, json.dumps({"id": sid, "seen": now}))


def storage_map(
    store: Store, surveys: Mapping[str, Survey], hosts: Collection[str]
) -> dict[str, str | None]:
    """host -> storage id for ``hosts``: as surveyed now, else as remembered."""
    known = remembered(store, [h for h in hosts if h not in surveys])
    known.update({h: s for h, s in surveyed_storages(surveys).items()})
    return known


def through_sharers(
    storage_of: Mapping[str, str | None], surveys: Mapping[str, Survey], hosts: Collection[str]
) -> dict[str, str]:
    """For each of ``hosts`` that was not surveyed (down, not selected): a surveyed host of
    the same storage, through which its copies can be read, checked or deleted."""
    through: dict[str, str] = {}
    for host in sorted(set(hosts) - surveys.keys()):
        sid = storage_of.get(host)
        sharers = sorted(n for n, s in surveys.items() if sid and s.storage == sid)
        if sharers:
            through[host] = sharers[0]
    return through


def corrupt_storages(
    store: Store, known: Mapping[str, Mapping[str, str]], surveys: Mapping[str, Survey]
) -> set[tuple[str, str]]:
    """(hash, storage key) of every copy recorded corrupt: on a shared data dir the file is
    corrupt for every host of that storage, whichever one it is recorded under."""
    hosts = {n for states in known.values() for n, state in states.items() if state == "corrupt"}
    storage_of = storage_map(store, surveys, hosts)
    return {
        (digest, storage_key(n, storage_of.get(n)))
        for digest, states in known.items()
        for n, state in states.items()
        if state == "corrupt"
    }


def record_holders(
    store: Store,
    holders: Mapping[str, Collection[str]],
    surveys: Mapping[str, Survey],
    now: float,
) -> dict[str, set[str]]:
    """Record each chunk's holders as healthy copies, one host per storage; forget rows of
    other hosts of those storages.  Returns what was recorded (hash -> hosts)."""
    recorded = {
        digest: set(states) for digest, states in store.data.replicas(list(holders)).items()
    }
    everyone = {h for hs in holders.values() for h in hs} | {
        h for hs in recorded.values() for h in hs
    }
    storage_of = storage_map(store, surveys, everyone)
    chosen, forget = dedupe_holders(holders, storage_of, recorded)
    store.data.drop_replicas(forget)
    store.data.set_replicas(
        [(digest, host, "ok") for digest, hosts in chosen.items() for host in sorted(hosts)], now
    )
    return chosen


def stand_ins(
    store: Store, holders: Mapping[str, Collection[str]], live: Collection[str]
) -> tuple[dict[str, set[str]], dict[tuple[str, str], str]]:
    """Holders plus the live hosts that share a recorded holder's storage (as last seen):
    the copy is reachable from them too (when the recorded host is down, say).  Also returns
    (hash, stand-in) -> the recorded host it stands in for: what is learnt about the copy
    through a stand-in is recorded under that host."""
    hosts = set(live) | {h for hs in holders.values() for h in hs}
    storage_of = remembered(store, hosts)
    by_storage: dict[str, list[str]] = {}
    for host in sorted(live):
        sid = storage_of.get(host)
        if sid:
            by_storage.setdefault(sid, []).append(host)
    found: dict[str, set[str]] = {}
    via: dict[tuple[str, str], str] = {}
    for digest, recorded in holders.items():
        found[digest] = set(recorded)
        for host in sorted(recorded):
            sid = storage_of.get(host)
            for other in by_storage.get(sid, []) if sid else []:
                if other not in found[digest]:
                    found[digest].add(other)
                    via[(digest, other)] = host
    return found, via


async def shared_storages(
    ctx: ServiceContext, surveys: Mapping[str, Survey]
) -> list[SharedStorage]:
    """The storages that more than one surveyed host shares, with the data dir's path and
    filesystem from the hosts' last probe facts (probing one of them when those are missing
    or older than the storage)."""
    groups = group_hosts(surveyed_storages(surveys))
    if not groups:
        return []
    facts = ctx.store.load_facts([h for hosts in groups.values() for h in hosts])
    shared = []
    for storage_id, hosts in groups.items():
        disk = None
        for host in hosts:
            stored = facts.get(host)
            try:
                disk = parse_facts(stored.document).data_disk if stored is not None else None
            except WireError:
                disk = None
            if disk is not None and disk.storage_id == storage_id:
                break
            disk = None
        if disk is None:
            disk = await _probe_disk(ctx, surveys[hosts[0]])
        if disk is not None and disk.storage_id == storage_id:
            shared.append(SharedStorage(storage_id, hosts, disk.path, disk.fs_type, disk.network))
        else:
            shared.append(SharedStorage(storage_id, hosts))
    return shared


async def _probe_disk(ctx: ServiceContext, survey: Survey) -> DiskFacts | None:
    try:
        doc = await ctx.sessions.request(survey.host, wire.Probe())
        return parse_facts(doc).data_disk
    except (HostError, WireError):
        return None
