"""Health checks, drain decisions and hardware changes on plain facts (no hosts)."""

from __future__ import annotations

from dataclasses import replace

from leptonctl.core.facts import HostFacts
from leptonctl.core.health import (
    HEALTH_DRAIN_PREFIX,
    HealthThresholds,
    check_health,
    drain_decisions,
    hardware_changes,
    hardware_signature,
)
from tests.helpers import gpu_facts

OK = HealthThresholds(agent_version="0.1.0")


def with_gpu(facts: HostFacts, index: int, **changes: object) -> HostFacts:
    gpus = list(facts.gpus)
    gpus[index] = replace(gpus[index], **changes)  # type: ignore[arg-type]
    return replace(facts, gpus=tuple(gpus))


def test_a_healthy_gpu_host_has_no_problems() -> None:
    assert check_health(gpu_facts(), OK, declared_gpus=2) == []


def test_each_gpu_check_names_the_gpu_and_the_number() -> None:
    facts = with_gpu(gpu_facts(), 0, ecc_uncorrected=3, temperature_c=97.0, power_w=760.0)
    problems = check_health(facts, OK)
    assert problems == [
        "GPU 0: 3 uncorrected ECC errors",
        "GPU 0: 97 °C, over 90 °C",
        "GPU 0: drawing 760 W, 109% of its 700 W limit",
    ]
    loose = HealthThresholds(
        max_gpu_temperature_c=100, max_power_pct=110, max_ecc_uncorrected=5, agent_version=None
    )
    assert check_health(facts, loose) == []


def test_nvml_unreachable_is_a_problem_only_where_gpus_are_expected() -> None:
    no_driver = replace(
        gpu_facts(),
        gpus=(),
        unavailable={"gpus": "nvidia-smi failed (x); 2 NVIDIA PCI device(s) present without a "
                     "usable driver"},
    )  # fmt: skip
    assert check_health(no_driver, OK)[0].startswith("NVML unreachable: nvidia-smi failed")
    cpu_box = replace(gpu_facts(), gpus=(), unavailable={"gpus": "nvidia-smi not on PATH"})
    assert check_health(cpu_box, OK) == []
    assert check_health(cpu_box, OK, declared_gpus=4) == [
        "NVML unreachable: nvidia-smi not on PATH"
    ]
    one_lost = replace(gpu_facts(), unavailable={"gpus[1]": "NVML cannot open GPU 1"})
    assert check_health(one_lost, OK) == ["gpus[1]: NVML cannot open GPU 1"]


def test_fewer_gpus_than_declared_is_a_problem() -> None:
    facts = replace(gpu_facts(), gpus=gpu_facts().gpus[:1])
    assert check_health(facts, OK, declared_gpus=2) == ["1 of 2 declared GPUs found"]


def test_disk_space_and_agent_version_are_checked() -> None:
    facts = gpu_facts()
    tight = replace(OK, min_disk_free_bytes=3 * 10**12)
    assert check_health(facts, tight) == [
        "data disk /home/ops/.local/share/leptonctl: 2700.8 GiB free, under 2794.0 GiB"
    ]
    no_disk = replace(facts, disks=(), unavailable={"data_dir": "cannot create data dir /x"})
    assert check_health(no_disk, OK) == ["no data disk: cannot create data dir /x"]
    assert check_health(facts, replace(OK, agent_version="0.2.0")) == [
        "agent version 0.1.0, expected 0.2.0"
    ]


# -- drain and resume -----------------------------------------------------------------


def test_failing_hosts_are_drained_and_only_health_drains_are_resumed() -> None:
    drained = {
        "ops": "fan swap",  # an operator's drain: never touched
        "was_sick": HEALTH_DRAIN_PREFIX + "GPU 0: 95 °C, over 90 °C",
        "still_sick": HEALTH_DRAIN_PREFIX + "old reason",
    }
    problems = {
        "fine": [],
        "new_sick": ["no data disk: x"],
        "ops": ["GPU 1: 2 uncorrected ECC errors"],
        "was_sick": [],
        "still_sick": ["data disk /d: 0.1 GiB free, under 1.0 GiB"],
    }
    decisions = drain_decisions(problems, drained)
    assert decisions.drain == {
        "new_sick": "health: no data disk: x",
        "still_sick": "health: data disk /d: 0.1 GiB free, under 1.0 GiB",
    }
    assert decisions.resume == ("was_sick",)
    assert drain_decisions({"ops": []}, drained).resume == ()  # not ours to resume


def test_an_unchanged_health_drain_is_left_alone() -> None:
    drained = {"h": HEALTH_DRAIN_PREFIX + "no data disk: x"}
    decisions = drain_decisions({"h": ["no data disk: x"]}, drained)
    assert decisions.drain == {} and decisions.resume == ()


# -- hardware changes --------------------------------------------------------------------


def test_identical_hardware_has_no_changes() -> None:
    signature = hardware_signature(gpu_facts())
    assert hardware_changes(signature, signature) == []


def test_a_gpu_gone_and_one_added_are_told_apart_by_uuid() -> None:
    old = hardware_signature(gpu_facts())
    swapped = with_gpu(gpu_facts(), 1, uuid="GPU-new")
    changes = hardware_changes(old, hardware_signature(swapped))
    assert [c.change for c in changes] == ["gpu_gone", "gpu_added"]
    assert changes[0].detail["gpu"]["uuid"] == "GPU-9a8b7c6d-0000-1111-2222-333344445555"
    assert changes[1].message == "GPU 1 (NVIDIA H100 80GB HBM3) was added"


def test_gpus_lost_with_nvml_carry_the_reason() -> None:
    broken = replace(gpu_facts(), gpus=(), unavailable={"gpus": "NVML: driver not loaded"})
    changes = hardware_changes(hardware_signature(gpu_facts()), hardware_signature(broken))
    assert [c.change for c in changes] == ["gpu_gone", "gpu_gone"]
    assert changes[0].message == "GPU 0 (NVIDIA H100 80GB HBM3) is gone: NVML: driver not loaded"


def test_memory_changes_beyond_the_tolerance_are_reported() -> None:
    facts = gpu_facts()
    total = facts.memory.total_bytes
    small = replace(facts, memory=replace(facts.memory, total_bytes=int(total * 0.995)))
    big = replace(facts, memory=replace(facts.memory, total_bytes=int(total * 0.9)))
    old = hardware_signature(facts)
    assert hardware_changes(old, hardware_signature(small), memory_tolerance_pct=1.0) == []
    (change,) = hardware_changes(old, hardware_signature(big), memory_tolerance_pct=1.0)
    assert change.change == "memory_changed" and change.detail["before"] == total


def test_cpu_and_fpga_changes_are_reported() -> None:
    facts = gpu_facts()
    changed = replace(facts, cpu=replace(facts.cpu, threads=facts.cpu.threads // 2), fpgas=())
    kinds = [
        c.change for c in hardware_changes(hardware_signature(facts), hardware_signature(changed))
    ]
    assert kinds == ["cpus_changed", "fpga_gone"]
    back = [
        c.change for c in hardware_changes(hardware_signature(changed), hardware_signature(facts))
    ]
    assert back == ["cpus_changed", "fpga_added"]


def test_sizes_a_probe_could_not_read_are_unknown_not_changed_to_zero() -> None:
    old = hardware_signature(gpu_facts())
    unread = {**old, "memory_bytes": None, "cpu_threads": None}
    assert hardware_changes(old, unread) == []
    halved = {**old, "memory_bytes": old["memory_bytes"] // 2, "cpu_threads": 1}
    assert [c.change for c in hardware_changes(old, halved)] == [
        "memory_changed",
        "cpus_changed",
    ]
