"""Data-aware jobs: where a job's input datasets already are, and staging them.

``submit --input NAME[:/mount]`` pins the dataset's version in the job spec.
The scheduler prefers hosts holding more of the input bytes (``locality``);
before the job starts, the missing chunks are copied into that host's chunk
store from healthy replicas, and the dataset is materialised from the local
chunks (each file a copy of its pieces: a packed chunk holds many small files).
A hop that the operator had to relay (central keys, no connection) is recorded as
a ``hop_relayed`` event with the job's id.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence

from leptonctl.core.jobspec import input_env_name
from leptonctl.errors import AgentError, HostError
from leptonctl.inventory.model import Host
from leptonctl.remote.agent import AgentSessions, wire
from leptonctl.remote.transfer import Hop, Transfers
from leptonctl.services.data import chunkrefs
from leptonctl.services.data.datasets import DATA_OP_TIMEOUT, DataError
from leptonctl.store.interface import Store
from leptonctl.store.jobs import JobRecord


def input_locality(store: Store, records: Sequence[JobRecord]) -> dict[int, dict[str, float]]:
    """job id -> host -> share of its input bytes with an ok replica on that host."""
    locality: dict[int, dict[str, float]] = {}
    for record in records:
        inputs = record.spec.get("inputs") or []
        if not inputs:
            continue
        sizes: dict[str, int] = {}
        for item in inputs:
            dataset = store.data.get(item["name"], item["version"])
            if dataset is not None:
                sizes.update(dataset.manifest.chunk_sizes())
        total = sum(sizes.values())
        if not total:
            continue
        held: dict[str, int] = defaultdict(int)
        for digest, hosts in store.data.replicas(list(sizes)).items():
            for host, state in hosts.items():
                if state == "ok":
                    held[host] += sizes[digest]
        locality[record.id] = {host: n / total for host, n in held.items()}
    return locality


async def stage_inputs(
    sessions: AgentSessions,
    store: Store,
    hosts: Mapping[str, Host],
    host: Host,
    record: JobRecord,
) -> dict[str, str]:
    """Make every input of ``record`` present on ``host``; the env vars naming their paths.

    Raises ``DataError`` when an input cannot be staged (no healthy replica reachable)."""
    env: dict[str, str] = {}
    for item in record.spec.get("inputs") or []:
        dataset = store.data.get(item["name"], item["version"])
        if dataset is None:
            raise DataError(f"input {item['name']}@{item['version']} no longer exists")
        sizes = dataset.manifest.chunk_sizes()
        refused = await chunkrefs.pin_on(sessions, store, host, [dataset])  # before staging
        if refused:
            raise DataError(f"{host.name}: {refused}")
        await _fetch_missing(sessions, store, hosts, host, sizes, record.id)
        mount = item.get("mount") or f"inputs/{item['name']}@{item['version']}"
        label = f"{item['name']}@{item['version']}"
        request = wire.Materialize(dest=mount, manifest=dataset.manifest.to_dict(), label=label)
        try:
            reply = await sessions.request(host, request, DATA_OP_TIMEOUT)
            missing = len(reply.get("missing") or [])
            why = None if reply.get("done") else f"{missing} chunk(s) missing"
        except AgentError as exc:
            if exc.operation is None:
                raise
            why = exc.reason
        if why is not None:
            raise DataError(f"cannot materialise input {item['name']} on {host.name}: {why}")
        env[input_env_name(item["name"])] = str(reply["path"])
    return env


async def _fetch_missing(
    sessions: AgentSessions,
    store: Store,
    hosts: Mapping[str, Host],
    host: Host,
    sizes: Mapping[str, int],
    job_id: int,
) -> None:
    try:
        have = await sessions.request(host, wire.ChunkHave(hashes=sorted(sizes)))
    except AgentError as exc:
        if exc.operation is None:
            raise
        raise DataError(f"{host.name}: {exc.message}") from None
    missing = [h for h in sizes if h not in have["present"]]
    if not missing:
        return
    holders = store.data.replicas(missing)
    tried: dict[str, set[str]] = defaultdict(set)
    transfers = Transfers(sessions, store)  # hops it cannot make are relayed by us
    while missing:
        by_source: dict[str, list[str]] = defaultdict(list)
        for digest in missing:
            options = sorted(
                n
                for n, state in holders.get(digest, {}).items()
                if state == "ok" and n in hosts and n != host.name and n not in tried[digest]
            )
            if options:
                by_source[min(options, key=lambda n: len(by_source[n]))].append(digest)
        if not by_source:
            raise DataError(
                f"{len(missing)} input chunk(s) have no reachable healthy replica for {host.name}",
                hint="run `leptonctl data verify` and `leptonctl data repair`",
            )
        for source, hashes in by_source.items():
            for digest in hashes:
                tried[digest].add(source)
            items = [wire.SendItem(sizes[h], hash=h) for h in hashes]
            try:
                outcome = await transfers.run(hosts[source], items, [Hop(host)])
            except HostError:
                continue
            stored = set(outcome.hops[-1].stored)
            missing = [h for h in missing if h not in stored]
            for relayed in outcome.relayed:  # said where the job's history is kept
                detail = {**relayed.to_dict(), "job": job_id}
                store.record_event(time.time(), "hop_relayed", host.name, detail)
