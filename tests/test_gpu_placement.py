"""Scheduling on real GPUs, the operator's half (pure core, probe documents in): NVLink- and
NUMA-aware sets, MIG devices by profile, GPUs busy with other users' processes, unhealthy
GPUs, jobs told their GPUs by UUID, and probes of older agents read as they are."""

from __future__ import annotations

import copy
import json
from types import MappingProxyType
from typing import Any

import pytest

from leptonctl.core.facts import parse_facts
from leptonctl.core.health import gpu_problems
from leptonctl.core.jobviews import agent_spec, allocation_record, nodes_from, running_view
from leptonctl.core.records import JobRecord
from leptonctl.core.reports import DryRun
from leptonctl.core.scheduler import Job, Node, Request, dispatch, plan
from leptonctl.core.scheduler.devices import gpu_condition
from leptonctl.render.documents import dry_run_document
from leptonctl.render.jobs import devices, gpus_text, plan_table
from leptonctl.store.jobs import held_devices
from leptonctl.store.open import open_store
from tests.helpers import make_host

GiB = 2**30
H100 = "NVIDIA H100 80GB HBM3"


def uuid(i: int) -> str:
    return f"GPU-{i:08x}-0000-4000-8000-00000000000{i}"


def h100_box(
    *, nvlink_pairs: bool = True, numa: tuple[int, ...] = (0, 0, 0, 0, 1, 1, 1, 1)
) -> dict[str, Any]:
    """A probe document of an 8x H100 host (contract of gpu_facts.md): GPUs 2k and 2k+1
    joined by 18 NVLinks, the rest over PCIe (NODE within a NUMA node, SYS across)."""
    gpus = []
    for i in range(8):
        topology = {}
        for j in range(8):
            if j == i:
                continue
            paired = nvlink_pairs and j // 2 == i // 2
            path = "NV" if paired else ("NODE" if numa[i] == numa[j] else "SYS")
            topology[uuid(j)] = {"nvlink": 18 if paired else 0, "path": path}
        gpus.append(
            {
                "index": i,
                "uuid": uuid(i),
                "name": H100,
                "pci_bus_id": f"00000000:{0x18 + i:02x}:00.0",
                "memory_total_bytes": 80 * GiB,
                "memory_used_bytes": 0,
                "mig_mode": "disabled",
                "ecc_uncorrected": 0,
                "processes": [],
                "numa_node": numa[i],
                "mig_devices": [],
                "topology": topology,
                "health": {
                    "ecc_uncorrected_volatile": 0,
                    "retired_pages": 0,
                    "retired_pages_pending": False,
                    "remapped_rows_pending": False,
                    "remapped_rows_failed": False,
                    "xid": [],
                },
            }
        )
    return {
        "schema": 1,
        "agent_version": "test",
        "time": 1000.0,
        "hostname": "gpu01",
        "cpu": {"threads": 16, "ids": list(range(16)),
                "numa_nodes": {str(c): c // 8 for c in range(16)}},
        "memory": {"total_bytes": 512 * GiB, "available_bytes": 500 * GiB},
        "disks": [],
        "gpus": gpus,
        "gpu_driver": {"driver_version": "550.54", "cuda_version": "12.4", "source": "nvml"},
        "fpgas": [],
    }  # fmt: skip


def with_mig(doc: dict[str, Any], gpu: int = 0) -> dict[str, Any]:
    """GPU ``gpu`` in MIG mode with two 1g.10gb devices and one 3g.40gb device."""
    doc = copy.deepcopy(doc)
    entry = doc["gpus"][gpu]
    entry["mig_mode"] = "enabled"
    entry["mig_devices"] = [
        {"uuid": f"MIG-{gpu}-{k}-aaaa", "index": k, "profile": profile,
         "gpu_instance_id": 7 + k, "compute_instance_id": 0,
         "memory_total_bytes": size * GiB, "memory_used_bytes": 0, "processes": []}
        for k, (profile, size) in enumerate((("1g.10gb", 10), ("1g.10gb", 10), ("3g.40gb", 40)))
    ]  # fmt: skip
    return doc


def foreign(pid: int = 4242, **extra: Any) -> dict[str, Any]:
    return {"pid": pid, "name": "python", "used_memory_bytes": GiB, "uid": 1001,
            "user": "bob", **extra}  # fmt: skip


def node_of(doc: dict[str, Any], **host_vars: Any) -> Node:
    host = make_host("gpu01", vars=MappingProxyType(host_vars))
    (node,) = nodes_from([host], {"gpu01": parse_facts(doc)}, {"gpu01"})
    return node


def start(node: Node, request: Request, running: tuple[Any, ...] = ()) -> Any:
    decision = dispatch([Job("1", request)], [node], list(running), {}, 0.0)
    return decision


def held(job_id: str, gpu_ids: tuple[str, ...]) -> Any:
    """A running job of ours holding ``gpu_ids`` on gpu01 (as the store records it)."""
    alloc = {
        "cpus": 1,
        "memory_bytes": 0,
        "gpus": sorted({int(i.split("/")[0]) for i in gpu_ids}),
        "fpgas": [],
        "cores": [],
        "gpu_devices": [{"id": i, "uuid": None} for i in gpu_ids],
    }
    return running_view(record(int(job_id), alloc))  # fmt: skip


def record(job_id: int, allocation: dict[str, Any] | None) -> JobRecord:
    return JobRecord(
        id=job_id, name="j", spec={"command": "true", "uid": "u"}, state="RUNNING", priority=0,
        submitted=0.0, started=1.0, ended=None, host="gpu01", allocation=allocation,
        exit_code=None, reason=None, attempt=0, retries=0, lost_since=None,
        cancel_requested=False, peak_rss_bytes=None,
    )  # fmt: skip


# -- topology ----------------------------------------------------------------------------


def test_a_two_gpu_job_gets_an_nvlink_pair_not_the_two_lowest_free_indexes() -> None:
    node = node_of(h100_box())
    (alloc,) = start(node, Request(gpus=2), (held("9", ("0",)),)).start
    # GPU 0 is held: 1 and 2 are the lowest free, but 2 and 3 are joined by NVLink
    assert alloc.gpus == (2, 3)
    assert alloc.gpu_note == "GPUs 2,3: NVLink x18, NUMA node 0"
    assert alloc.gpu_uuids == (uuid(2), uuid(3))


def test_with_no_nvlink_the_set_stays_on_one_numa_node_with_cpus_near_it() -> None:
    node = node_of(h100_box(nvlink_pairs=False, numa=(0, 0, 1, 1, 1, 1, 1, 1)))
    (alloc,) = start(node, Request(gpus=2, cpus=2), (held("9", ("0",)),)).start
    assert alloc.gpus == (2, 3)  # 1 and 2 would span two NUMA nodes
    assert alloc.cores == (8, 9)  # CPUs of NUMA node 1, the GPUs' node
    assert "NUMA node 1" in (alloc.gpu_note or "")


def test_with_one_numa_node_the_better_pcie_path_wins() -> None:
    doc = h100_box(nvlink_pairs=False, numa=(0,) * 8)
    for a, b in ((5, 6), (6, 5)):
        doc["gpus"][a]["topology"][uuid(b)]["path"] = "PIX"
    (alloc,) = start(node_of(doc), Request(gpus=2)).start
    assert alloc.gpus == (5, 6)
    assert alloc.gpu_note == "GPUs 5,6: PCIe PIX, NUMA node 0"


def test_a_four_gpu_job_takes_two_whole_nvlink_pairs() -> None:
    node = node_of(h100_box())
    (alloc,) = start(node, Request(gpus=4), (held("9", ("1",)),)).start
    # by index: 0,2,3,4; two whole pairs: 36 links, and 4-7 are on one NUMA node too
    assert alloc.gpus == (4, 5, 6, 7)
    assert alloc.gpu_note == "GPUs 4,5,6,7: NVLink x36, some pairs PCIe NODE, NUMA node 1"


# -- MIG ---------------------------------------------------------------------------------


def test_a_mig_gpu_is_no_device_itself_its_mig_devices_are_by_profile() -> None:
    node = node_of(with_mig(h100_box()))
    ids = [g.id for g in node.gpus]
    assert "0" not in ids and ids[:3] == ["0/mig0", "0/mig1", "0/mig2"]
    (alloc,) = start(node, Request(gpus=1, gpu_type="1g.10gb")).start
    assert alloc.gpu_ids == ("0/mig0",) and alloc.gpu_uuids == ("MIG-0-0-aaaa",)
    assert alloc.gpus == (0,)
    # the second 1g.10gb job gets the other slice of the same GPU
    (second,) = start(node, Request(gpus=1, gpu_type="1g.10gb"), (held("9", ("0/mig0",)),)).start
    assert second.gpu_ids == ("0/mig1",)
    # --gpu-mem applies to the MIG device's own memory
    (big,) = start(node, Request(gpus=1, gpu_type="3g.40gb", gpu_memory_bytes=20 * GiB)).start
    assert big.gpu_ids == ("0/mig2",)
    assert not start(node, Request(gpus=1, gpu_type="1g.10gb", gpu_memory_bytes=20 * GiB)).start


def test_a_model_type_prefers_whole_gpus_and_a_profile_never_matches_a_whole_gpu() -> None:
    node = node_of(with_mig(h100_box()))
    (alloc,) = start(node, Request(gpus=1, gpu_type="h100")).start
    assert alloc.gpu_ids == ("1",)
    held_all = held("9", tuple(str(i) for i in range(1, 8)))
    (mig,) = start(node, Request(gpus=1, gpu_type="h100"), (held_all,)).start
    assert mig.gpu_ids == ("0/mig0",)  # by the parent's model, once no whole H100 is left
    blocked = start(node, Request(gpus=1, gpu_type="3g.40gb"), (held("8", ("0/mig2",)),))
    assert not blocked.start and not blocked.doomed


def test_mig_devices_are_held_by_their_own_ids_in_the_store(state_backend: str) -> None:
    first = {"cpus": 1, "memory_bytes": 0, "gpus": [0], "fpgas": [],
             "gpu_devices": [{"id": "0/mig0", "uuid": "MIG-0-0-aaaa"}]}  # fmt: skip
    second = {**first, "gpu_devices": [{"id": "0/mig1", "uuid": "MIG-0-1-aaaa"}]}
    assert held_devices(first) == ["gpu:0/mig0"]
    assert held_devices({"gpus": [3]}) == ["gpu:3"]  # recorded before devices had ids
    with open_store(state_backend) as store:
        a, b = store.jobs.add([(f"j{i}", {"request": {}}, 0, 0) for i in range(2)], 1.0)
        store.jobs.update(a, state="STARTING", host="gpu01", allocation=first)
        store.jobs.update(b, state="STARTING", host="gpu01", allocation=second)
        assert store.jobs.device_holders() == {
            ("gpu01", "gpu:0/mig0"): a, ("gpu01", "gpu:0/mig1"): b,
        }  # fmt: skip


# -- foreign processes -------------------------------------------------------------------


def test_a_gpu_with_another_users_process_is_busy_and_the_reason_names_it() -> None:
    doc = h100_box()
    for gpu in doc["gpus"][1:]:
        gpu["processes"] = [foreign(4000 + gpu["index"])]
    doc["gpus"][0]["processes"] = [foreign()]
    node = node_of(doc)
    assert node.gpus[0].busy == "used by bob pid 4242 (python)"
    decision = start(node, Request(gpus=1))
    assert not decision.start and not decision.doomed  # busy for now, not impossible
    (blocked,) = decision.blocked
    assert "0 free" in blocked.reason and "GPU 0: used by bob pid 4242 (python)" in blocked.reason


def test_a_busy_gpu_is_skipped_and_the_allocation_says_why() -> None:
    doc = h100_box()
    doc["gpus"][0]["processes"] = [foreign(77, user=None, uid=1002, name=None)]
    (alloc,) = start(node_of(doc), Request(gpus=1)).start
    assert alloc.gpus == (1,)
    assert alloc.gpu_note == "not used: GPU 0: used by uid 1002 pid 77"


def test_lepton_gpu_foreign_ignore_hands_out_a_gpu_with_others_processes() -> None:
    doc = h100_box()
    doc["gpus"][0]["processes"] = [foreign()]
    (alloc,) = start(node_of(doc, lepton_gpu_foreign="ignore"), Request(gpus=1)).start
    assert alloc.gpus == (0,)
    kind, words = gpu_condition(parse_facts(doc).gpus[0], foreign_ignored=True)
    assert kind == "free" and "ignored" in words


def test_a_leptonctl_jobs_process_does_not_make_its_gpu_busy() -> None:
    doc = h100_box()
    doc["gpus"][0]["processes"] = [foreign(job="12.0.abcd")]
    node = node_of(doc)
    assert node.gpus[0].busy is None
    assert gpu_condition(parse_facts(doc).gpus[0]) == ("job", "leptonctl job 12")


def test_a_mig_device_with_a_foreign_process_is_busy_its_sibling_is_not() -> None:
    doc = with_mig(h100_box())
    doc["gpus"][0]["mig_devices"][0]["processes"] = [foreign()]
    (alloc,) = start(node_of(doc), Request(gpus=1, gpu_type="1g.10gb")).start
    assert alloc.gpu_ids == ("0/mig1",)
    kind, words = gpu_condition(parse_facts(doc).gpus[0])
    assert kind == "mig" and "2x 1g.10gb" in words and "mig0 used by bob pid 4242" in words


# -- health ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("health", "words"),
    [
        ({"ecc_uncorrected_volatile": 2}, "2 uncorrected ECC errors"),
        ({"retired_pages_pending": True}, "retired pages pending (needs a GPU reset)"),
        ({"remapped_rows_pending": True}, "remapped rows pending (needs a GPU reset)"),
        ({"remapped_rows_failed": True}, "row remapping failed"),
        (
            {"xid": [{"code": 79, "age_s": 600.0, "text": "fallen off the bus"}]},
            "Xid 79 10 min ago",
        ),
    ],
)
def test_an_unhealthy_gpu_is_not_handed_out_and_status_says_why(
    health: dict[str, Any], words: str
) -> None:
    doc = h100_box()
    doc["gpus"][0]["health"].update(health)
    node = node_of(doc)
    assert node.gpus[0].unhealthy == words
    (alloc,) = start(node, Request(gpus=1)).start
    assert alloc.gpus == (1,) and f"GPU 0: unhealthy: {words}" in (alloc.gpu_note or "")
    assert gpu_condition(parse_facts(doc).gpus[0]) == ("unhealthy", f"unhealthy: {words}")


def test_application_xids_old_xids_and_unreadable_health_are_not_problems() -> None:
    doc = h100_box()
    doc["gpus"][0]["health"]["xid"] = [
        {"code": 13, "age_s": 5.0, "text": "graphics engine exception"},
        {"code": 43, "age_s": 5.0, "text": "reset channel"},
        {"code": 79, "age_s": 7200.0, "text": "fallen off the bus, yesterday"},
        {"code": 48, "age_s": None, "text": "age unknown"},
    ]
    doc["gpus"][1]["health"] = {"ecc_uncorrected_volatile": None, "xid": None}
    facts = parse_facts(doc)
    assert gpu_problems(facts.gpus[0]) == [] and gpu_problems(facts.gpus[1]) == []


# -- what the job is told ----------------------------------------------------------------


def test_jobs_get_their_gpus_by_uuid_and_mig_devices_by_mig_uuid() -> None:
    node = node_of(with_mig(h100_box()))
    (pair,) = start(node, Request(gpus=2)).start
    env = agent_spec(record(1, allocation_record(pair)))["env"]
    assert env["CUDA_VISIBLE_DEVICES"] == f"{uuid(2)},{uuid(3)}"
    assert env["NVIDIA_VISIBLE_DEVICES"] == env["CUDA_VISIBLE_DEVICES"]
    (mig,) = start(node, Request(gpus=1, gpu_type="1g.10gb")).start
    env = agent_spec(record(2, allocation_record(mig)))["env"]
    assert env["CUDA_VISIBLE_DEVICES"] == "MIG-0-0-aaaa"


def test_without_uuids_jobs_get_indexes_as_before() -> None:
    doc = h100_box()
    doc["gpus"][3]["uuid"] = None  # and its NVLinks to GPU 2 cannot be told either
    (alloc,) = start(
        node_of(doc), Request(gpus=2), (held("9", ("0", "1", "4", "5", "6", "7")),)
    ).start
    assert alloc.gpus == (2, 3)
    env = agent_spec(record(1, allocation_record(alloc)))["env"]
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3"
    old = {"cpus": 1, "memory_bytes": 0, "gpus": [4, 5], "fpgas": []}  # stored by an old leptonctl
    assert agent_spec(record(2, old))["env"]["CUDA_VISIBLE_DEVICES"] == "4,5"
    assert running_view(record(2, old)).allocation.devices == ("4", "5")


def test_show_lists_the_gpu_devices_with_uuids_and_why() -> None:
    node = node_of(with_mig(h100_box()))
    (pair,) = start(node, Request(gpus=2)).start
    shown = record(1, allocation_record(pair))
    assert devices(shown) == "gpu2,gpu3,cpu0"
    assert gpus_text(shown) == f"2 {uuid(2)}, 3 {uuid(3)} (GPUs 2,3: NVLink x18, NUMA node 0)"
    (mig,) = start(node, Request(gpus=1, gpu_type="1g.10gb")).start
    assert devices(record(2, allocation_record(mig))) == "gpu0/mig0,cpu0"
    assert gpus_text(record(3, {"gpus": []})) == "-"


# -- dry run -----------------------------------------------------------------------------


def test_the_dry_run_plan_shows_gpu_ids_uuids_cpu_ids_and_why() -> None:
    doc = h100_box()
    doc["gpus"][0]["processes"] = [foreign()]
    node = node_of(doc)
    result = plan([Job("0", Request(gpus=2, cpus=2))], [node], now=0.0, rounds=10)
    (placement,) = result.placements
    assert placement.allocation is not None and placement.allocation.gpu_ids == ("2", "3")
    dry = DryRun(result, {"0": "train"}, ())
    (entry,) = dry_run_document(dry)["placements"]
    assert entry["gpu_devices"] == [{"id": "2", "uuid": uuid(2)}, {"id": "3", "uuid": uuid(3)}]
    assert entry["cpus"] == [0, 1]
    assert entry["why"] == (
        "GPUs 2,3: NVLink x18, NUMA node 0; not used: GPU 0: used by bob pid 4242 (python)"
    )
    from rich.console import Console

    console = Console(width=250, record=True)
    console.print(plan_table(dry))
    text = console.export_text()
    assert "gpu2,gpu3,cpu0-1" in text and "NVLink x18" in text


def test_a_dry_run_whose_gpus_are_all_busy_says_whose() -> None:
    doc = h100_box()
    for gpu in doc["gpus"]:
        gpu["processes"] = [foreign(100 + gpu["index"])]
    result = plan([Job("0", Request(gpus=1))], [node_of(doc)], now=0.0, rounds=10)
    (unplaced,) = result.unplaceable
    assert unplaced.reason.startswith("not planned: needs 1 GPU")
    assert "GPU 0: used by bob pid 100 (python)" in unplaced.reason


# -- what the probe says, read safely ----------------------------------------------------


def test_the_new_gpu_facts_are_read() -> None:
    doc = with_mig(h100_box())
    doc["gpus"][1]["processes"] = [foreign(job="3.1.xyz")]
    doc["gpus"][1]["health"]["xid"] = [{"code": 79, "age_s": 12.5, "text": "off the bus"}]
    gpus = parse_facts(doc).gpus
    assert gpus[0].mig_enabled and [m.profile for m in gpus[0].mig_devices] == [
        "1g.10gb", "1g.10gb", "3g.40gb",
    ]  # fmt: skip
    assert gpus[0].mig_devices[2].memory_total_bytes == 40 * GiB
    (proc,) = gpus[1].processes
    assert (proc.pid, proc.uid, proc.user, proc.job) == (4242, 1001, "bob", "3.1.xyz")
    link = next(t for t in gpus[1].topology if t.peer == uuid(0))
    assert (link.nvlink, link.path) == (18, "NV")
    health = gpus[1].health
    assert health is not None and health.xid is not None and health.xid[0].age_s == 12.5


def test_what_a_host_says_is_validated_and_a_bad_part_is_unknown_not_fatal() -> None:
    doc = h100_box()
    gpu = doc["gpus"][0]
    gpu["uuid"] = "GPU-1,GPU-2"  # would name two devices in CUDA_VISIBLE_DEVICES
    gpu["name"] = "H100\x1b[2J"
    gpu["processes"] = [
        {"pid": "12", "name": "x"},  # not an int
        {"pid": True, "name": "x"},  # a bool is no pid
        {"pid": 5, "name": "a" * 1000, "uid": -1, "user": "bob\n", "job": "rm -rf"},
    ]
    gpu["mig_devices"] = [{"index": "zero"}, "junk"]
    gpu["topology"] = {"GPU-x": {"nvlink": "many", "path": "WORMHOLE"}, "bad,peer": {}}
    gpu["health"] = {"ecc_uncorrected_volatile": -3, "retired_pages_pending": "yes", "xid": [7]}
    facts = parse_facts(doc).gpus[0]
    assert facts.uuid is None and facts.name is None
    (proc,) = facts.processes
    assert (proc.pid, proc.name, proc.uid, proc.user, proc.job) == (5, None, None, None, None)
    assert facts.mig_devices == ()
    (link,) = facts.topology
    assert (link.peer, link.nvlink, link.path) == ("GPU-x", 0, None)
    assert facts.health is not None
    assert facts.health.ecc_uncorrected_volatile is None
    assert facts.health.retired_pages_pending is None and facts.health.xid == ()


def test_a_probe_from_an_older_agent_schedules_by_index_as_before() -> None:
    doc = h100_box()
    for gpu in doc["gpus"]:
        for key in ("mig_devices", "topology", "health"):
            del gpu[key]
        gpu["processes"] = [{"pid": 1, "name": "Xorg", "used_memory_bytes": 0}]  # old shape
    facts = parse_facts(json.loads(json.dumps(doc)))
    assert facts.gpus[0].health is None and facts.gpus[0].topology == ()
    node = node_of(doc, lepton_gpu_foreign="ignore")
    (alloc,) = start(node, Request(gpus=2)).start
    assert alloc.gpus == (0, 1) and alloc.gpu_note == "GPUs 0,1: NUMA node 0"
    busy = node_of(doc)  # the old shape names no user: a process is still someone's
    assert busy.gpus[0].busy == "used by pid 1 (Xorg)"


def test_a_gpu_fact_the_probe_could_not_read_is_no_host_problem() -> None:
    from dataclasses import replace

    from leptonctl.core.health import HealthThresholds, check_health
    from tests.helpers import gpu_facts

    unreadable = {
        "gpus[0].xid": "cannot read /dev/kmsg (Operation not permitted)",
        "gpus[0].retired_pages": "nvmlDeviceGetRetiredPages: Not Supported",
    }
    assert check_health(replace(gpu_facts(), unavailable=unreadable), HealthThresholds()) == []
    lost = replace(gpu_facts(), unavailable={**unreadable, "gpus[1]": "NVML cannot open GPU 1"})
    assert check_health(lost, HealthThresholds()) == ["gpus[1]: NVML cannot open GPU 1"]


def test_an_estimate_keyed_by_a_mig_profile_applies_to_a_job_asking_that_profile() -> None:
    from leptonctl.core.scheduler import estimate_for

    node = node_of(with_mig(h100_box()))
    job = Job("1", Request(gpus=1, gpu_type="1g.10gb"), estimates={"1g.10gb": 90.0, "gpu": 10.0})
    assert estimate_for(job, node) == 90.0
    whole = Job("2", Request(gpus=1, gpu_type="h100"), estimates={"h100": 30.0, "gpu": 10.0})
    assert estimate_for(whole, node) == 30.0


def test_status_counts_busy_and_unhealthy_gpus_and_names_whose_and_why() -> None:
    from rich.console import Console

    from leptonctl.core.reports import HostStatus
    from leptonctl.render.status import gpu_table, hosts_table

    doc = h100_box()
    doc["gpus"][0]["processes"] = [foreign()]
    doc["gpus"][1]["health"]["remapped_rows_failed"] = True
    facts = parse_facts(doc)
    rows = []
    for ignore in (False, True):
        host = make_host(
            "gpu01", vars=MappingProxyType({"lepton_gpu_foreign": "ignore"} if ignore else {})
        )
        rows.append(HostStatus(host=host, facts=facts, probed_at=1000.0))
    console = Console(width=300, record=True)
    console.print(hosts_table(rows[:1], 1000.0))
    console.print(gpu_table(rows[:1]))
    text = console.export_text()
    assert "(1 busy, 1 unhealthy)" in text
    assert "used by bob pid 4242 (python)" in text and "unhealthy: row remapping failed" in text
    console = Console(width=300, record=True)
    console.print(hosts_table(rows[1:], 1000.0))
    assert "(1 unhealthy)" in console.export_text()


def test_a_process_of_another_state_stores_job_makes_the_gpu_busy_ours_does_not() -> None:
    from leptonctl.core.jobviews import owned_job_tags

    doc = h100_box()
    doc["gpus"][0]["processes"] = [foreign(10, job="12.0.aaaa")]  # our job 12 (uid aaaa)
    doc["gpus"][1]["processes"] = [foreign(11, job="12.0.bbbb")]  # another store's job 12
    doc["gpus"][2]["processes"] = [foreign(12, job="99.0.cccc")]  # a job this store never had
    facts = parse_facts(doc)
    ours = {12: replace_spec(record(12, None), uid="aaaa")}
    owned = owned_job_tags([facts, None], ours.get)
    assert owned == frozenset({"12.0.aaaa"})
    host = make_host("gpu01")
    (node,) = nodes_from([host], {"gpu01": facts}, {"gpu01"}, ours=owned)
    assert node.gpus[0].busy is None
    assert node.gpus[1].busy == (
        "used by bob pid 11 (python), leptonctl job 12 of another state store"
    )
    assert node.gpus[2].busy is not None
    (alloc,) = start(node, Request(gpus=1)).start
    assert alloc.gpus == (0,)
    (trusting,) = nodes_from([host], {"gpu01": facts}, {"gpu01"})  # no store asked
    assert [g.busy for g in trusting.gpus[:3]] == [None, None, None]


def replace_spec(r: JobRecord, **spec: Any) -> JobRecord:
    from dataclasses import replace

    return replace(r, spec={**r.spec, **spec})


def test_the_dashboards_gpu_detail_says_why_a_gpu_is_passed_over() -> None:
    from rich.console import Console

    from leptonctl.core.dashboard import cluster_frame
    from leptonctl.core.reports import HostStatus
    from leptonctl.render.dashboard import gpu_detail

    doc = h100_box()
    doc["gpus"][5]["processes"] = [foreign()]
    doc["gpus"][6]["health"]["ecc_uncorrected_volatile"] = 1
    rows = [HostStatus(make_host("gpu01"), parse_facts(doc), 1000.0)]
    table = gpu_detail(cluster_frame(rows, {}, {}, [], 1000.0), 200)
    console = Console(width=200, record=True)
    console.print(table)
    lines = {line.split()[1]: line for line in console.export_text().splitlines()[1:]}
    assert "used by bob pid 4242 (python)" in lines["5"]
    assert "unhealthy: 1 uncorrected ECC error" in lines["6"]
    assert lines["4"].rstrip().endswith("-")


def test_a_job_without_a_type_takes_a_whole_gpu_on_another_host_before_a_mig_device() -> None:
    sliced = with_mig(h100_box())
    for gpu in sliced["gpus"][1:]:
        gpu["processes"] = [foreign()]  # only the MIG devices of GPU 0 are free there
    (mig_host,) = nodes_from(
        [make_host("mig01")], {"mig01": parse_facts(sliced)}, {"mig01"}
    )  # fmt: skip
    (whole,) = nodes_from([make_host("gpu01")], {"gpu01": parse_facts(h100_box())}, {"gpu01"})
    decision = dispatch([Job("1", Request(gpus=1))], [mig_host, whole], [], {}, 0.0)
    (alloc,) = decision.start
    assert (alloc.host, alloc.gpu_ids) == ("gpu01", ("0",))
    typed = dispatch(
        [Job("2", Request(gpus=1, gpu_type="1g.10gb"))], [mig_host, whole], [], {}, 0.0
    )
    assert [(a.host, a.gpu_ids) for a in typed.start] == [("mig01", ("0/mig0",))]
