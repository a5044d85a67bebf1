"""put, verify, repair and rebalance as tables: fake cluster state in, outcomes out.

The services run for real (placement, chains, the store, the agent's own chunk-store
handlers) against ``leptonctl.testing.fake_agent`` hosts behind ``HostPool``'s connector;
each row asserts what the hosts hold afterwards and what the store and the report say,
never which calls were made.  No root and no lab: the lab tests keep the transport and
the end-to-end behaviour (tests/test_lab_data.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from leptonctl.core.reports import PutReport
from leptonctl.errors import LeptonError
from leptonctl.inventory import Inventory, parse_inventory
from leptonctl.services.context import ServiceContext
from leptonctl.services.data import datasets, replicas
from leptonctl.services.data.datasets import DataError
from leptonctl.store.interface import Store
from leptonctl.store.open import open_store
from leptonctl.testing.fake_agent import GIB, FakeCluster

CHUNK = 64 << 10
MIB = 1 << 20
ROOM = 256 * MIB  # replication keeps this much free on every host (RESERVE_BYTES)


@dataclass
class Bed:
    """A fake cluster, its inventory, a real state store, and a dataset file to put."""

    cluster: FakeCluster
    inventory: Inventory
    store: Store
    source: Path

    def chunk_hashes(self) -> list[str]:
        data = self.source.read_bytes()
        return sorted({sha(data[i : i + CHUNK]) for i in range(0, len(data), CHUNK)})

    def holders(self) -> dict[str, set[str]]:
        """What the hosts really hold (not what the store believes)."""
        return {h: self.cluster.holders(h) for h in self.chunk_hashes()}

    def domains(self, names: set[str]) -> set[str]:
        return {str(self.inventory.host(n).vars.get("rack", n)) for n in names}

    async def run(self, work: Callable[[ServiceContext], Any]) -> Any:
        """One command: a service context with a pool and sessions of its own, closed
        after."""
        async with (
            self.cluster.pool() as pool,
            ServiceContext(self.inventory, store=self.store, pool=pool) as ctx,
        ):
            return await work(ctx)

    def put(self, k: int, name: str = "ds", on: str | None = None) -> PutReport:
        """``data put`` of the source file (``on``: as ``host:/path`` of that host)."""
        hosts = self.inventory.hosts
        source = f"{on}:{self.source}" if on else str(self.source)
        report: PutReport = asyncio.run(
            self.run(
                lambda c: datasets.put(
                    c.among(hosts),
                    source,
                    name,
                    replicas=k,
                    chunk_size=CHUNK,
                )
            )
        )
        return report


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def bed_factory(tmp_path: Path, state_backend: str) -> Any:
    stores: list[Store] = []

    def make(lines: str, size: int = 5 * CHUNK + 123, **hosts: dict[str, Any]) -> Bed:
        inventory = parse_inventory(lines, "hosts.ini", fmt="ini")
        cluster = FakeCluster(tmp_path / "hosts")
        for host in inventory.hosts:
            fake = cluster.add(host.name)
            for attr, value in hosts.get(host.name, {}).items():
                setattr(fake, attr, value)
        source = tmp_path / "data.bin"
        source.write_bytes(random.Random(size).randbytes(size))  # the same every run
        store = open_store(state_backend)
        stores.append(store)
        return Bed(cluster, inventory, store, source)

    yield make
    for store in stores:
        store.close()


# -- put ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PutRow:
    id: str
    inventory: str
    k: int
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)  # FakeHost attributes
    replicas: int = 0  # copies per chunk expected on the hosts
    domains: int = 0  # distinct racks per chunk expected (0: not checked)
    never_on: frozenset[str] = frozenset()  # hosts that must end up holding nothing
    note: str = ""  # a substring of the report's notes
    fails: bool = False
    extra_ok: bool = False  # a chunk may keep one more copy (stored before its host ran full)
    source_on: str | None = None  # put host:/path from this host, not from the operator


FOUR = "h1\nh2\nh3\nh4\n"
PUT_ROWS = [
    PutRow("k-distinct-hosts", FOUR, 3, replicas=3),
    PutRow(
        "k-distinct-racks",
        "h1 rack=a\nh2 rack=a\nh3 rack=b\nh4 rack=c\n",
        3,
        replicas=3,
        domains=3,
    ),
    PutRow("full-host-skipped", FOUR, 3, {"h2": {"free_bytes": ROOM}}, 3, never_on={"h2"}),
    PutRow(
        "unreachable-host-skipped",
        FOUR,
        3,
        {"h3": {"up": False}},
        3,
        never_on={"h3"},
        note="h3: skipped",
    ),
    PutRow(
        "fewer-hosts-than-k",
        "h1\nh2\nh3\n",
        3,
        {"h1": {"up": False}},
        2,
        never_on={"h1"},
        note="storing 2 replica(s), not 3",
    ),
    PutRow(
        "host-dies-mid-put-is-replaced",
        FOUR,
        3,
        {"h2": {"die_after_chunks": 2}},
        3,
        note="h2",
    ),
    PutRow(  # a quota: statvfs says 10 GiB, the first chunk fills it
        "disk-full-mid-put-is-routed-around",
        FOUR,
        3,
        {"h4": {"free_bytes": CHUNK, "claims_free_bytes": 10 * GIB}},
        3,
        note="No space left on device",
        extra_ok=True,
    ),
    PutRow("source-on-a-host", FOUR, 2, replicas=2, source_on="h2"),
    PutRow(  # h3 refuses SSH from the other hosts: it gets its copies through the operator
        "firewalled-host-fed-through-the-operator",
        FOUR,
        4,
        {"h3": {"blocks": {"h1", "h2", "h4"}}},
        4,
    ),
    PutRow(
        "no-host-reachable", "h1\nh2\n", 2, {"h1": {"up": False}, "h2": {"up": False}}, fails=True
    ),
]


def _rows(rows: list[Any]) -> list[Any]:
    return [pytest.param(r, id=r.id) for r in rows]


@pytest.mark.parametrize("row", _rows(PUT_ROWS))
def test_put(bed_factory: Any, row: PutRow) -> None:
    bed = bed_factory(row.inventory, **row.hosts)
    if row.fails:
        with pytest.raises(DataError):
            bed.put(row.k)
        assert not any(bed.holders().values())
        assert [r.state for r in bed.store.data.all_records()] in ([], ["writing"])
        return
    report = bed.put(row.k, on=row.source_on)
    up = {n for n, h in bed.cluster.hosts.items() if h.up}
    holders = {h: names & up for h, names in bed.holders().items()}  # a dead host's copies
    counts = {len(names) for names in holders.values()}
    allowed = {row.replicas, row.replicas + 1} if row.extra_ok else {row.replicas}
    assert row.replicas in counts and counts <= allowed, holders
    assert report.chunks == len(holders) and report.replicas == row.replicas
    for names in holders.values():
        assert not names & row.never_on
        if row.domains:
            assert len(bed.domains(names)) == row.domains
    assert row.note in " ".join(report.notes)
    # the store believes what the hosts hold, and the version is visible
    known = bed.store.data.replicas(list(holders))
    assert {h: {n for n, s in by.items() if s == "ok"} for h, by in known.items()} == holders
    assert datasets.find_record(bed.store, "ds", None).state == "ready"
    # every transfer key and spec revoked (a host that went down keeps its until they expire)
    assert not any(h.keys or h.specs for h in bed.cluster.hosts.values() if h.up)


def test_put_cut_by_a_dying_host_stays_invisible_then_resumes(bed_factory: Any) -> None:
    bed = bed_factory("h1\nh2\nh3\n", size=8 * CHUNK, h3={"die_after_chunks": 3})
    with pytest.raises(DataError, match="stays invisible"):
        bed.put(3)
    with pytest.raises(LeptonError):
        datasets.find_record(bed.store, "ds", None)  # no ready version to read
    partial = sum(len(n) for n in bed.holders().values())
    assert 0 < partial < 3 * 8
    bed.cluster["h3"].come_up()
    report = bed.put(3)
    assert {len(n) for n in bed.holders().values()} == {3}
    assert report.version == 1  # the same version, resumed
    assert report.reused_chunks > 0 and report.sent_bytes < 8 * CHUNK * 3
    assert datasets.find_record(bed.store, "ds", None).state == "ready"


# -- verify --------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyRow:
    id: str
    damage: tuple[tuple[str, str], ...]  # (host, "corrupt" | "remove"), each on another chunk
    ok: int
    corrupt: int
    missing: int
    down: str | None = None  # this host is unreachable
    stalls: str | None = None  # this host's agent never answers chunk-verify


VERIFY_ROWS = [
    VerifyRow("healthy", (), ok=8, corrupt=0, missing=0),
    VerifyRow("one-corrupt", (("h1", "corrupt"),), ok=7, corrupt=1, missing=0),
    VerifyRow("one-missing", (("h2", "remove"),), ok=7, corrupt=0, missing=1),
    VerifyRow(
        "corrupt-and-missing-on-two-hosts",
        (("h1", "corrupt"), ("h1", "remove"), ("h3", "corrupt")),
        ok=5,
        corrupt=2,
        missing=1,
    ),
    VerifyRow("host-down-is-not-judged", (), ok=-1, corrupt=0, missing=0, down="h2"),
    VerifyRow("host-timing-out-is-not-judged", (), ok=-1, corrupt=0, missing=0, stalls="h3"),
]


@pytest.mark.parametrize("row", _rows(VERIFY_ROWS))
def test_verify(bed_factory: Any, row: VerifyRow) -> None:
    bed = bed_factory("h1\nh2\nh3\n", size=4 * CHUNK)  # 4 chunks x 2 replicas
    bed.put(2)
    damaged: set[str] = set()
    removed: list[tuple[str, str]] = []
    for name, action in row.damage:
        digest = min(h for h, names in bed.holders().items() if name in names and h not in damaged)
        getattr(bed.cluster[name], action)(digest)
        damaged.add(digest)
        if action == "remove":
            removed.append((digest, name))
    if row.down:
        bed.cluster[row.down].go_down()
    if row.stalls:
        bed.cluster[row.stalls].stall.add("chunk-verify")
    hosts = bed.inventory.hosts
    report = asyncio.run(bed.run(lambda c: replicas.verify(c.among(hosts), None)))
    kinds = [p.problem for p in report.problems]
    away = row.down or row.stalls
    if away:  # its replicas are reported unreachable, not corrupt, not missing
        on_down = sum(1 for names in bed.holders().values() if away in names)
        assert kinds == ["unreachable"] * on_down and report.replicas_ok == 8 - on_down
        return
    assert report.replicas_ok == row.ok
    assert (kinds.count("corrupt"), kinds.count("missing")) == (row.corrupt, row.missing)
    assert set(report.under_replicated) == damaged
    states = bed.store.data.replicas(bed.chunk_hashes())
    assert sum(s == "corrupt" for by in states.values() for s in by.values()) == row.corrupt
    assert not any(name in states.get(digest, {}) for digest, name in removed)  # forgotten


# -- repair --------------------------------------------------------------------------


@dataclass(frozen=True)
class RepairRow:
    id: str
    damage: str  # what happens to chunk 0's replicas before verify + repair
    healthy: bool
    copies_min: int = 0
    corrupt_removed: int = 0


REPAIR_ROWS = [
    RepairRow("corrupt-healed-from-good-replica", "corrupt-one", True, 1, 1),
    RepairRow("missing-recopied", "remove-one", True, 1, 0),
    RepairRow("holder-down-recopied-on-live-hosts", "host-down", True, 1, 0),
    RepairRow("every-replica-corrupt-is-lost", "corrupt-all", False, 0, 2),
]


@pytest.mark.parametrize("row", REPAIR_ROWS, ids=[r.id for r in REPAIR_ROWS])
def test_repair(bed_factory: Any, row: RepairRow) -> None:
    bed = bed_factory("h1\nh2\nh3\nh4\n", size=3 * CHUNK)
    bed.put(2)
    target = bed.chunk_hashes()[0]
    first, second = sorted(bed.holders()[target])
    down = None
    if row.damage == "corrupt-one":
        bed.cluster[first].corrupt(target)
    elif row.damage == "remove-one":
        bed.cluster[first].remove(target)
    elif row.damage == "corrupt-all":
        bed.cluster[first].corrupt(target)
        bed.cluster[second].corrupt(target)
    elif row.damage == "host-down":
        down = first
        bed.cluster[first].go_down()
    hosts = bed.inventory.hosts
    asyncio.run(bed.run(lambda c: replicas.verify(c.among(hosts), None)))
    report = asyncio.run(bed.run(lambda c: replicas.repair(c.among(hosts), None)))
    assert report.healthy is row.healthy
    assert report.copies_made >= row.copies_min
    assert report.corrupt_removed == row.corrupt_removed
    for digest, names in bed.holders().items():
        live = {n for n in names if n != down}
        good = {n for n in live if _intact(bed, n, digest)}
        if digest == target and not row.healthy:
            assert target in report.lost and not good
        else:
            assert len(good) >= 2, (digest, names)
            assert good == live  # no corrupt copy left behind
    after = asyncio.run(bed.run(lambda c: replicas.verify(c.among(hosts), None)))
    assert bool(after.under_replicated) is not row.healthy


def _intact(bed: Bed, host: str, digest: str) -> bool:
    root = bed.cluster[host].data_dir / "chunks" / digest[:2] / digest
    return sha(root.read_bytes()) == digest


# -- rebalance -----------------------------------------------------------------------


@pytest.mark.parametrize("check", [False, True], ids=["moves", "check-only"])
def test_rebalance_moves_onto_new_hosts_and_never_below_k(bed_factory: Any, check: bool) -> None:
    small = {"free_bytes": ROOM + 2 * MIB}
    bed = bed_factory("h1\nh2\nh3\nh4\n", size=16 * CHUNK, h1=small, h2=small, h3=small, h4=small)
    bed.cluster["h3"].go_down()
    bed.cluster["h4"].go_down()
    bed.put(2)  # everything on h1 and h2
    bed.cluster["h3"].come_up()
    bed.cluster["h4"].come_up()
    before = bed.holders()
    hosts = bed.inventory.hosts
    report = asyncio.run(
        bed.run(lambda c: replicas.rebalance(c.among(hosts), tolerance=0.1, check=check))
    )
    after = bed.holders()
    assert report.moves_planned > 0
    if check:
        assert after == before and report.moves_done == 0
        return
    assert all(len(names) >= 2 for names in after.values())
    assert any("h3" in n for n in after.values()) and any("h4" in n for n in after.values())
    assert report.moves_done > 0 and report.spread_after < report.spread_before
    known = bed.store.data.replicas(list(after))
    assert {h: set(by) for h, by in known.items()} == after  # the store follows the hosts
