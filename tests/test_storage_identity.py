"""Storage identity: hosts whose data dirs are one directory hold one copy, not several.

Agent side: the stamp (created once, private, never through a planted link, agreed on by
racing agents), the filesystem read from mountinfo text, and both reported (probe,
chunk-have).  Operator side: the facts, placement over shared storages, one recorded
replica per storage, and `data put` refusing K copies on fewer than K storages.  The
services run against fake hosts whose data dirs are real directories: two fake hosts given
the same directory share it exactly as two NFS clients do (the real agent code reads one
stamp).  The lab proof is tests/test_lab_shared_storage.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from agent.lepton_agent import chunks, storage
from leptonctl.core.datasets import ChunkRef
from leptonctl.core.facts import parse_facts
from leptonctl.core.placement import Target, eligible_count, plan_rebalance, plan_replicas
from leptonctl.core.reports import HostStatus
from leptonctl.core.storages import SharedStorage, dedupe_holders, shared_from_facts
from leptonctl.inventory import parse_inventory
from leptonctl.render.documents import status_document
from leptonctl.render.status import sharing_lines
from leptonctl.services.context import ServiceContext
from leptonctl.services.data import datasets, replicas
from leptonctl.services.data.datasets import DataError
from leptonctl.store.sqlite import SqliteStore
from leptonctl.testing.fake_agent import OPERATOR, FakeCluster
from tests.test_agent_probe import build_host_tree, probe_json

MIB = 1 << 20
CHUNK = 64 << 10
SID = "ls-" + "ab" * 16
SID2 = "ls-" + "cd" * 16

# -- the stamp ------------------------------------------------------------------------


def test_the_stamp_is_created_once_private_and_read_back_by_every_later_use(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data" / "leptonctl"  # missing: created 0700 on first use
    first = storage.storage_id(str(data_dir))
    assert first == storage.storage_id(str(data_dir)) == storage.storage_id(str(data_dir) + "/")
    stamp = data_dir / storage.STAMP_NAME
    assert stamp.read_text() == first + "\n"
    assert stat.S_IMODE(stamp.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert first != storage.storage_id(str(tmp_path / "other"))  # random, per directory


def test_agents_racing_to_stamp_one_shared_directory_agree_on_its_id(tmp_path: Path) -> None:
    shared = str(tmp_path / "nfs-home")
    found: list[str] = []
    start = threading.Barrier(8)

    def stamp() -> None:
        start.wait()
        found.append(storage.storage_id(shared))

    threads = [threading.Thread(target=stamp) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 8 and len(set(found)) == 1


@pytest.mark.parametrize("points_to", ["missing", "a file holding an id"])
def test_a_planted_symlink_is_refused_never_followed_nor_replaced(
    tmp_path: Path, points_to: str
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    target = tmp_path / "elsewhere"
    if points_to != "missing":
        target.write_text(SID + "\n")
    (data_dir / storage.STAMP_NAME).symlink_to(target)
    with pytest.raises(storage.StorageIdError, match="symbolic link"):
        storage.storage_id(str(data_dir))
    assert target.exists() == (points_to != "missing")  # nothing was created through it
    assert (data_dir / storage.STAMP_NAME).is_symlink()
    found, why = storage.try_storage_id(str(data_dir))
    assert found is None and why is not None and "symbolic link" in why


def test_a_fifo_or_garbage_in_place_of_the_stamp_is_refused_without_blocking(
    tmp_path: Path,
) -> None:
    fifo_dir = tmp_path / "fifo"
    fifo_dir.mkdir()
    os.mkfifo(fifo_dir / storage.STAMP_NAME)
    with pytest.raises(storage.StorageIdError, match="not a regular file"):
        storage.storage_id(str(fifo_dir))
    junk_dir = tmp_path / "junk"
    junk_dir.mkdir()
    (junk_dir / storage.STAMP_NAME).write_text("../../etc/passwd\n")
    with pytest.raises(storage.StorageIdError, match="does not hold a storage id"):
        storage.storage_id(str(junk_dir))
    writable = tmp_path / "writable"
    writable.mkdir()
    (writable / storage.STAMP_NAME).write_text(SID + "\n")
    (writable / storage.STAMP_NAME).chmod(0o666)
    with pytest.raises(storage.StorageIdError, match="writable by others"):
        storage.storage_id(str(writable))


def test_an_empty_stamp_is_waited_for_then_refused(tmp_path: Path) -> None:
    (tmp_path / storage.STAMP_NAME).touch(mode=0o600)
    with pytest.raises(storage.StorageIdError, match="stays empty"):
        storage.storage_id(str(tmp_path), wait_s=0.1)


# -- the filesystem, from mountinfo text --------------------------------------------

MOUNTINFO = """\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
25 22 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw
40 22 0:45 / /home rw,relatime shared:30 - nfs4 fs1:/export/home rw,vers=4.2
41 40 0:46 / /home/u/my\\040data rw,relatime - fuse.sshfs u@box:/d rw,user_id=1000
42 22 259:3 / /scratch rw,relatime - xfs /dev/md0 rw
43 22 259:4 / /scratch rw,relatime - ext4 /dev/md1 rw
44 22 0:50 / /mnt/enc rw - fuse.gocryptfs /enc rw
45 22 0:51 / /lustre rw - lustre 10.0.0.1@o2ib:/fs rw
"""


@pytest.mark.parametrize(
    ("path", "mount", "fs_type", "network"),
    [
        ("/home/u/.local/share/leptonctl", "/home", "nfs4", True),
        ("/home/u/my data/leptonctl", "/home/u/my data", "fuse.sshfs", True),  # \040: a space
        ("/home/u/my datax", "/home", "nfs4", True),  # a prefix of a mount point is not in it
        ("/scratch/lepton", "/scratch", "ext4", False),  # the later mount hides the earlier
        ("/mnt/enc/x", "/mnt/enc", "fuse.gocryptfs", False),  # FUSE over a local disk
        ("/lustre/proj", "/lustre", "lustre", True),
        ("/var/tmp/leptonctl", "/", "ext4", False),
    ],
)
def test_the_data_dirs_filesystem_and_whether_it_is_network_mounted_come_from_mountinfo(
    path: str, mount: str, fs_type: str, network: bool
) -> None:
    fs = storage.filesystem_of(MOUNTINFO, path)
    assert fs is not None
    assert (fs["mount"], fs["fs_type"], fs["network"]) == (mount, fs_type, network)


def test_mountinfo_without_a_matching_or_well_formed_line_gives_nothing() -> None:
    assert storage.filesystem_of("garbage\n\n1 2 3\n", "/home/u") is None
    assert storage.filesystem_of("", "/home/u") is None


# -- reported by the agent --------------------------------------------------------


def test_every_probe_reports_the_stamped_id_and_the_filesystem(tmp_path: Path) -> None:
    root, data_dir = tmp_path / "root", tmp_path / "home" / "leptonctl"
    build_host_tree(root, data_dir)
    mountinfo = f"22 1 8:1 / / rw - ext4 /dev/sda1 rw\n40 22 0:45 / {tmp_path} rw - nfs4 f:/x rw\n"
    (root / "proc" / "self").mkdir(parents=True)
    (root / "proc" / "self" / "mountinfo").write_text(mountinfo)
    args = ["--root", str(root), "--data-dir", str(data_dir)]
    [disk] = probe_json(tmp_path, *args)["disks"]
    stamp = (data_dir / storage.STAMP_NAME).read_text().strip()
    assert (disk["storage_id"], disk["fs_type"], disk["network"]) == (stamp, "nfs4", True)
    assert probe_json(tmp_path, *args)["disks"][0]["storage_id"] == stamp  # the same, later
    facts = parse_facts(probe_json(tmp_path, *args)).data_disk
    assert facts is not None and (facts.storage_id, facts.fs_type, facts.network) == (
        stamp,
        "nfs4",
        True,
    )


def test_a_probe_says_why_there_is_no_storage_id_when_the_stamp_is_refused(
    tmp_path: Path,
) -> None:
    root, data_dir = tmp_path / "root", tmp_path / "data"
    build_host_tree(root, data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / storage.STAMP_NAME).symlink_to(tmp_path / "planted")
    doc = probe_json(tmp_path, "--root", str(root), "--data-dir", str(data_dir))
    assert doc["disks"][0]["storage_id"] is None
    assert "symbolic link" in doc["unavailable"]["storage_id"]
    assert not (tmp_path / "planted").exists()


def test_chunk_have_reports_the_storage_id_hosts_sharing_a_dir_report_the_same(
    tmp_path: Path,
) -> None:
    shared, own = str(tmp_path / "home"), str(tmp_path / "scratch")
    first = chunks.chunk_have(shared, [])["storage"]
    assert first == chunks.chunk_have(shared, None)["storage"] == storage.storage_id(shared)
    assert chunks.chunk_have(own, [])["storage"] not in (None, first)


def test_the_operator_reads_only_well_formed_storage_ids_and_fs_types() -> None:
    doc: dict[str, Any] = {
        "schema": 1,
        "hostname": "h",
        "cpu": {"threads": 1},
        "memory": {"total_bytes": 1, "available_bytes": 1},
    }
    disk = {"path": "/d", "total_bytes": 1, "free_bytes": 1}
    good = parse_facts(doc | {"disks": [disk | {"storage_id": SID, "fs_type": "fuse.sshfs"}]})
    assert good.disks[0].storage_id == SID and good.disks[0].fs_type == "fuse.sshfs"
    bad = {"storage_id": "ls-../../x", "fs_type": "nfs\x1b[31m", "network": "yes"}
    odd = parse_facts(doc | {"disks": [disk | bad]}).disks[0]
    assert (odd.storage_id, odd.fs_type, odd.network) == (None, None, None)
    old = parse_facts(doc | {"disks": [disk]}).disks[0]  # an agent from before storage ids
    assert (old.storage_id, old.fs_type, old.network) == (None, None, None)


# -- placement over shared storages ----------------------------------------------------


def chunk(i: int, size: int = 64 * MIB) -> ChunkRef:
    return ChunkRef(f"{i:064x}", size)


def targets(storages: dict[str, str | None], free: int = 10**12) -> list[Target]:
    return [Target(name, None, free, storage=sid) for name, sid in storages.items()]


def test_hosts_sharing_one_storage_are_one_replica_and_the_shortfall_names_them() -> None:
    shared = targets({"h1": SID, "h2": SID, "h3": SID, "h4": SID})
    plan = plan_replicas([chunk(1)], shared, k=3)
    assert len(plan.placements[chunk(1).hash]) == 1  # one copy: a second would be the same file
    assert plan.shortfalls[chunk(1).hash] == (
        "only 1 independent storage for 3 replicas (h1,h2,h3,h4 share one storage)"
    )
    assert eligible_count(shared) == 1


def test_a_chunk_held_through_one_host_is_held_by_every_host_of_that_storage() -> None:
    mixed = targets({"h1": SID, "h2": SID, "h3": None, "h4": SID2})
    plan = plan_replicas([chunk(1)], mixed, k=3, existing={chunk(1).hash: ["h2"]})
    assert sorted(plan.placements[chunk(1).hash]) == ["h3", "h4"]
    assert plan.complete
    for i in range(2, 30):  # whatever the rotation, never two copies into one storage
        placed = plan_replicas([chunk(i)], mixed, k=3).placements[chunk(i).hash]
        assert len(placed) == 3 and len({"h1", "h2"} & set(placed)) == 1


def test_shared_free_space_is_counted_once() -> None:
    # h1 and h2 see one 100 MiB filesystem: two 64 MiB chunks do not both fit in it
    mixed = targets({"h1": SID, "h2": SID}, free=100 * MIB) + targets({"h3": None})
    plan = plan_replicas([chunk(1), chunk(2)], mixed, k=2)
    on_shared = [h for hs in plan.placements.values() for h in hs if h in ("h1", "h2")]
    assert len(on_shared) == 1 and not plan.complete


def test_rebalance_never_moves_a_copy_into_a_storage_that_already_holds_it() -> None:
    sizes = {chunk(i).hash: 64 * MIB for i in range(6)}
    holders = {chunk(i).hash: {"full", "h1"} for i in range(6)}
    ts = [
        Target("full", None, 0, 6 * 64 * MIB),
        Target("h1", None, 10**12, 0, storage=SID),
        Target("h2", None, 10**12, 0, storage=SID),
        Target("empty", None, 6 * 64 * MIB, 0),
    ]
    moves = plan_rebalance(holders, sizes, ts, k=2)
    assert moves and all(m.src == "full" and m.dst == "empty" for m in moves)


def test_recording_keeps_one_host_per_storage_and_forgets_the_others() -> None:
    a, b = chunk(1).hash, chunk(2).hash
    storage_of = {"h1": SID, "h2": SID, "h3": None, "gone": SID}
    chosen, forget = dedupe_holders(
        {a: {"h1", "h2", "h3"}, b: {"h2", "h1"}},
        storage_of,
        recorded={a: {"gone", "h3"}, b: {"h2"}},
    )
    # a recorded holder stays the one (b: h2); a host that is down now gives way to one
    # that holds the chunk now, and its row of the same storage is forgotten
    assert chosen == {a: {"h1", "h3"}, b: {"h2"}}
    assert forget == [(a, "gone")]
    chosen, forget = dedupe_holders({a: {"h1", "h2"}}, storage_of, {a: {"h1", "h2", "h3"}})
    assert chosen == {a: {"h1"}} and forget == [(a, "h2")]  # h3 is not a holder: not judged


# -- status ------------------------------------------------------------------------------


def facts_doc(storage_id: str | None, fs_type: str = "nfs4") -> dict[str, Any]:
    return {
        "schema": 1,
        "hostname": "h",
        "cpu": {"threads": 1},
        "memory": {"total_bytes": 1, "available_bytes": 1},
        "disks": [
            {
                "path": "/home/lepu/.local/share/leptonctl",
                "role": "data",
                "total_bytes": 10,
                "free_bytes": 5,
                "storage_id": storage_id,
                "fs_type": fs_type,
                "network": fs_type == "nfs4",
            }
        ],
    }


def test_status_shows_which_hosts_share_a_data_dir_in_the_table_and_the_json() -> None:
    inventory = parse_inventory("h1\nh2\nh3\nh4\n", "hosts.ini", fmt="ini")
    ids = {"h1": SID, "h2": None, "h3": SID, "h4": SID2}
    rows = [HostStatus(h, parse_facts(facts_doc(ids[h.name])), 1.0) for h in inventory.hosts]
    lines = sharing_lines(rows)
    assert lines is not None
    assert "h1,h3 share /home/lepu/.local/share/leptonctl (nfs4, network)" in lines.plain
    doc = status_document(rows, 1.0)
    assert doc["shared_storages"] == [
        {
            "storage_id": SID,
            "hosts": ["h1", "h3"],
            "path": "/home/lepu/.local/share/leptonctl",
            "fs_type": "nfs4",
            "network": True,
        }
    ]
    assert doc["hosts"][0]["disks"][0]["storage_id"] == SID
    assert shared_from_facts({}) == []
    alone = [HostStatus(h, parse_facts(facts_doc(None)), 1.0) for h in inventory.hosts]
    assert sharing_lines(alone) is None


def test_a_shared_storage_describes_itself_literally() -> None:
    storage_ = SharedStorage(SID, ("h1", "h2"), "/home/u/x", "ext4", False)
    assert storage_.describe() == "h1,h2 share /home/u/x (ext4)"
    assert SharedStorage(SID, ("h1", "h2")).describe() == (
        "h1,h2 share one data dir (filesystem unknown)"
    )


# -- the data services on fake hosts whose data dirs are shared --------------------------


class Bed:
    """Fake hosts (the agent's real chunk store on real dirs), a store, a file to put."""

    def __init__(self, tmp_path: Path, shared: tuple[str, ...], names: tuple[str, ...]):
        self.inventory = parse_inventory("".join(f"{n}\n" for n in names), "h.ini", fmt="ini")
        self.cluster = FakeCluster(tmp_path / "hosts")
        home = tmp_path / "nfs-home" / "leptonctl"
        home.mkdir(parents=True)
        for name in names:
            fake = self.cluster.add(name)
            if name in shared:
                fake.data_dir = home  # one directory for all of them, as an NFS home is
        self.home = home
        self.store = SqliteStore(tmp_path / "state.db")
        self.source = tmp_path / "data.bin"
        self.source.write_bytes(random.Random(7).randbytes(3 * CHUNK + 11))

    async def _run(self, work: Any) -> Any:
        async with (
            self.cluster.pool() as pool,
            ServiceContext(self.inventory, store=self.store, pool=pool) as ctx,
        ):
            return await work(ctx)

    def put(self, k: int, name: str = "ds") -> Any:
        return asyncio.run(
            self._run(
                lambda c: datasets.put(c, str(self.source), name, replicas=k, chunk_size=CHUNK)
            )
        )

    def run(self, work: Any) -> Any:
        return asyncio.run(self._run(work))

    def files(self) -> dict[str, int]:
        """Chunk files per distinct data dir (what is physically on disk)."""
        dirs = {str(h.data_dir) for n, h in self.cluster.hosts.items() if n != OPERATOR}
        return {d: len(chunks.stored_chunks(d)) for d in sorted(dirs)}


@pytest.fixture
def shared_bed(tmp_path: Path) -> Any:
    beds: list[Bed] = []

    def make(shared: tuple[str, ...], names: tuple[str, ...] = ("h1", "h2", "h3", "h4")) -> Bed:
        beds.append(Bed(tmp_path, shared, names))
        return beds[-1]

    yield make
    for bed in beds:
        bed.store.close()


def test_put_k3_on_one_shared_storage_is_refused_naming_it_and_writes_nothing(
    shared_bed: Any,
) -> None:
    bed = shared_bed(("h1", "h2", "h3", "h4"))
    with pytest.raises(DataError) as caught:
        bed.put(3)
    error = caught.value
    assert "3 replicas need 3 independent storages" in error.message
    assert "the 4 reachable hosts have 1: h1,h2,h3,h4 share" in error.message
    assert error.hint is not None and "lepton_data_dir" in error.hint and "/scratch" in error.hint
    assert bed.files() == {str(bed.home): 0}
    assert bed.store.data.datasets() == [] and bed.store.data.replicas() == {}


def test_put_k1_on_a_shared_storage_works_and_says_so(shared_bed: Any) -> None:
    bed = shared_bed(("h1", "h2", "h3", "h4"))
    report = bed.put(1)
    assert report.replicas == 1
    assert any("1 replica, on a storage that hosts share: h1,h2,h3,h4" in n for n in report.notes)
    rows = bed.store.data.replicas()
    assert len(rows) == 4 and all(len(hosts) == 1 for hosts in rows.values())  # one per chunk
    assert bed.files() == {str(bed.home): 4}


def test_put_k3_with_two_hosts_sharing_puts_one_copy_per_storage(shared_bed: Any) -> None:
    bed = shared_bed(("h1", "h2"))
    report = bed.put(3)
    assert report.replicas == 3
    assert any("h1,h2 share" in n and "counted as one replica" in n for n in report.notes)
    for hosts in bed.store.data.replicas().values():
        assert len(hosts) == 3 and len({"h1", "h2"} & set(hosts)) == 1
    assert set(bed.files().values()) == {4}  # the shared dir, h3's and h4's: 4 chunks each
    verify = bed.run(lambda c: replicas.verify(c, "ds"))
    assert verify.replicas_checked == 12 and not verify.under_replicated


def test_verify_and_repair_count_replicas_recorded_under_two_hosts_of_one_storage_once(
    shared_bed: Any,
) -> None:
    bed = shared_bed(("h1", "h2"), ("h1", "h2", "h3"))
    bed.put(2)  # two storages: the shared dir and h3's
    for digest, hosts in bed.store.data.replicas().items():
        assert sorted(hosts) in (["h1", "h3"], ["h2", "h3"])
        # as an older leptonctl recorded it: the shared copy under both hosts that see it
        bed.store.data.set_replicas([(digest, "h1", "ok"), (digest, "h2", "ok")], 1.0)
        bed.cluster["h3"].remove(digest)  # and the independent copy is lost
    verify = bed.run(lambda c: replicas.verify(c, "ds"))
    assert len(verify.under_replicated) == 4  # one copy each, whatever two host names say
    assert all(len(hosts) == 1 for hosts in bed.store.data.replicas().values())
    report = bed.run(lambda c: replicas.repair(c, "ds"))
    assert report.copies_made == 4 and not report.short
    for digest, hosts in bed.store.data.replicas().items():
        assert len(hosts) == 2 and "h3" in hosts and digest in bed.cluster["h3"].chunks()


def test_rebalance_moves_out_of_a_shared_storage_without_losing_a_copy(shared_bed: Any) -> None:
    bed = shared_bed(("h1", "h2"))
    hosts = {h.name: h for h in bed.inventory.hosts}
    three = [hosts["h1"], hosts["h2"], hosts["h3"]]
    bed.run(
        lambda c: datasets.put(c.among(three), str(bed.source), "ds", replicas=2, chunk_size=CHUNK)
    )
    report = bed.run(lambda c: replicas.rebalance(c, tolerance=0.0))  # h4 is empty
    assert report.moves_done > 0
    rows = bed.store.data.replicas()
    for digest, states in rows.items():
        assert len(states) == 2 and len({"h1", "h2"} & set(states)) <= 1
        for host in states:  # every recorded copy is really there
            assert digest in bed.cluster[host].chunks(), (digest[:12], host)
    verify = bed.run(lambda c: replicas.verify(c, "ds"))
    assert not verify.problems and not verify.under_replicated


def test_copies_recorded_under_a_host_whose_data_dir_changed_are_forgotten(
    shared_bed: Any, tmp_path: Path
) -> None:
    bed = shared_bed((), ("h1", "h2", "h3"))
    bed.put(3, "a")
    assert all("h1" in hosts for hosts in bed.store.data.replicas().values())
    bed.cluster["h1"].data_dir = tmp_path / "new-scratch"  # lepton_data_dir pointed elsewhere
    bed.cluster["h1"].data_dir.mkdir()
    bed.source.write_bytes(b"another dataset")
    bed.put(1, "b")  # its survey sees h1's new storage id
    a = datasets.find_record(bed.store, "a", None).manifest.hashes()
    rows = bed.store.data.replicas(a)
    assert rows and all(sorted(hosts) == ["h2", "h3"] for hosts in rows.values())


def test_the_refusal_names_path_and_filesystem_from_the_hosts_facts_printed_literally(
    shared_bed: Any,
) -> None:
    bed = shared_bed(("h1", "h2", "h3", "h4"))
    doc = facts_doc(storage.storage_id(str(bed.home)), "nfs4")
    doc["disks"][0]["path"] = "/home/u\x1b[2J/.local/share/leptonctl"  # as a host reported it
    bed.store.save_facts(1.0, {"h2": doc})
    with pytest.raises(DataError) as caught:
        bed.put(2)
    assert "h1,h2,h3,h4 share /home/u\\x1b[2J/.local/share/leptonctl (nfs4, network)" in (
        caught.value.message
    )
    assert "\x1b" not in caught.value.message


def test_verify_checks_a_copy_through_another_host_of_its_storage_when_the_recorded_is_down(
    shared_bed: Any,
) -> None:
    bed = shared_bed(("h1", "h2"), ("h1", "h2", "h3"))
    bed.put(2)
    rows = bed.store.data.replicas()
    [recorded] = {h for hosts in rows.values() for h in hosts if h in ("h1", "h2")}
    bad = sorted(rows)[0]
    bed.cluster[recorded].corrupt(bad)  # in the shared dir: every host of it sees the damage
    bed.cluster[recorded].go_down()
    report = bed.run(lambda c: replicas.verify(c, "ds"))
    assert [(p.hash, p.host, p.problem) for p in report.problems] == [(bad, recorded, "corrupt")]
    assert report.replicas_checked == 8 and report.replicas_ok == 7
    assert bed.store.data.replicas()[bad][recorded] == "corrupt"  # recorded where it was


@pytest.mark.parametrize("recorded_down", [False, True])
def test_repair_replaces_a_corrupt_copy_of_a_shared_storage_whichever_host_sees_it(
    shared_bed: Any, recorded_down: bool
) -> None:
    bed = shared_bed(("h1", "h2"), ("h1", "h2", "h3"))
    bed.put(2)
    rows = bed.store.data.replicas()
    [recorded] = {h for hosts in rows.values() for h in hosts if h in ("h1", "h2")}
    bad = sorted(rows)[0]
    bed.cluster[recorded].corrupt(bad)
    assert bed.run(lambda c: replicas.verify(c, "ds")).problems  # known corrupt, under it
    if recorded_down:
        bed.cluster[recorded].go_down()  # the other host of the storage sees the same file
    report = bed.run(lambda c: replicas.repair(c, "ds"))
    assert report.corrupt_removed == 1 and not report.short, report
    shared_file = Path(chunks.chunk_path(str(bed.home), bad))
    assert hashlib.sha256(shared_file.read_bytes()).hexdigest() == bad  # a good copy again
    for digest, states in bed.store.data.replicas().items():
        assert len(states) == 2 and set(states.values()) == {"ok"}, (digest[:12], states)
        assert len({"h1", "h2"} & set(states)) == 1


def test_a_put_resends_a_chunk_whose_shared_copy_is_known_corrupt_under_another_host(
    shared_bed: Any,
) -> None:
    bed = shared_bed(("h1", "h2"), ("h1", "h2", "h3"))
    bed.put(2)
    rows = bed.store.data.replicas()
    [recorded] = {h for hosts in rows.values() for h in hosts if h in ("h1", "h2")}
    bad = sorted(rows)[0]
    bed.cluster[recorded].corrupt(bad)
    bed.run(lambda c: replicas.verify(c, "ds"))  # recorded corrupt under `recorded` only
    report = bed.put(2, "again")  # the same bytes as a second dataset
    assert report.reused_chunks == 3  # the corrupt one is no copy, through either host
    shared_file = Path(chunks.chunk_path(str(bed.home), bad))
    assert hashlib.sha256(shared_file.read_bytes()).hexdigest() == bad
    assert bed.store.data.replicas([bad])[bad] == {recorded: "ok", "h3": "ok"}
