"""Shared storages: hosts whose data dirs are one directory (one storage id).

A copy in a storage that several hosts share is *one* replica, reachable from each of
them: the state store records it once, under one of those hosts, and every count of
copies counts storages, not hosts.  Pure functions over plain data.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from leptonctl.core.facts import HostFacts

LOCAL_DATA_DIR_HINT = (
    "point `lepton_data_dir` of each host at a node-local disk (e.g. "
    "lepton_data_dir=/scratch/$USER/leptonctl or /var/tmp/leptonctl in the inventory)"
)


@dataclass(frozen=True)
class SharedStorage:
    """One storage (data dir) that more than one host reports."""

    storage_id: str
    hosts: tuple[str, ...]  # sorted
    path: str | None = None  # the data dir, as the first host that reported it names it
    fs_type: str | None = None
    network: bool | None = None

    def describe(self) -> str:
        """'h1,h2,h3 share /home/u/.local/share/leptonctl (nfs4, network)'."""
        where = self.path if self.path is not None else "one data dir"
        kind = [self.fs_type or "filesystem unknown"]
        if self.network:
            kind.append("network")
        return f"{','.join(self.hosts)} share {where} ({', '.join(kind)})"

    def to_dict(self) -> dict[str, object]:
        return {
            "storage_id": self.storage_id,
            "hosts": list(self.hosts),
            "path": self.path,
            "fs_type": self.fs_type,
            "network": self.network,
        }


def storage_key(host: str, storage_id: str | None) -> str:
    """What a copy on ``host`` lies in: its storage id, or (unknown) the host itself."""
    return f"storage:{storage_id}" if storage_id else f"host:{host}"


def group_hosts(storage_of: Mapping[str, str | None]) -> dict[str, tuple[str, ...]]:
    """storage id -> the hosts that report it (sorted), for ids reported by more than one."""
    groups: dict[str, list[str]] = {}
    for host, storage_id in storage_of.items():
        if storage_id:
            groups.setdefault(storage_id, []).append(host)
    return {sid: tuple(sorted(hosts)) for sid, hosts in sorted(groups.items()) if len(hosts) > 1}


def shared_from_facts(facts: Mapping[str, HostFacts]) -> list[SharedStorage]:
    """The shared data dirs among hosts' probe facts, ordered by their first host."""
    disks = {name: f.data_disk for name, f in facts.items()}
    groups = group_hosts({n: d.storage_id if d else None for n, d in disks.items()})
    shared = []
    for storage_id, hosts in groups.items():
        disk = disks[hosts[0]]
        assert disk is not None
        shared.append(SharedStorage(storage_id, hosts, disk.path, disk.fs_type, disk.network))
    return sorted(shared, key=lambda s: s.hosts)


def independent_count(hosts: Iterable[str], storage_of: Mapping[str, str | None]) -> int:
    """How many independent storages ``hosts`` are (a host without an id is its own)."""
    return len({storage_key(h, storage_of.get(h)) for h in hosts})


def dedupe_holders(
    holders: Mapping[str, Collection[str]],
    storage_of: Mapping[str, str | None],
    recorded: Mapping[str, Collection[str]],
) -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    """One host per storage for each chunk's holders: the one already recorded for it if
    any, else the first by name.  Also returns the recorded (hash, host) rows to forget:
    other hosts of a storage that holds the chunk (they would count it twice).
    ``storage_of`` may also know hosts that are not holders now (down, not selected)."""
    chosen: dict[str, set[str]] = {}
    forget: list[tuple[str, str]] = []
    for digest, hosts in holders.items():
        before = set(recorded.get(digest, ()))
        groups: dict[str, list[str]] = {}
        for host in sorted(hosts):
            groups.setdefault(storage_key(host, storage_of.get(host)), []).append(host)
        keep = {min(sorted(set(names) & before) or names) for names in groups.values()}
        chosen[digest] = keep
        for host in sorted(before - keep):
            if storage_key(host, storage_of.get(host)) in groups:
                forget.append((digest, host))
    return chosen, forget
