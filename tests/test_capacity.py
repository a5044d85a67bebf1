"""Declared capacity limits what a probe reports, and stands alone without one."""

from __future__ import annotations

from leptonctl.core.capacity import effective_capacity
from leptonctl.inventory.model import DeclaredCapacity
from tests.helpers import gpu_facts


def test_probe_alone_offers_everything_it_found() -> None:
    cap = effective_capacity(gpu_facts(), None)
    assert (cap.cpus, cap.fpgas, cap.source) == (224, 1, "probe")
    assert [g.index for g in cap.gpus] == [0, 1]
    assert cap.gpus[0].memory_bytes == 85520809984


def test_declared_numbers_reserve_part_of_a_probed_machine() -> None:
    declared = DeclaredCapacity(cpus=64, memory_bytes=2**40, gpus=1, fpgas=0)
    cap = effective_capacity(gpu_facts(), declared)
    assert cap.cpus == 64 and cap.memory_bytes == 2**40
    assert [g.index for g in cap.gpus] == [0] and cap.fpgas == 0
    assert cap.source == "probe+declared"


def test_declared_numbers_never_exceed_what_the_machine_has() -> None:
    cap = effective_capacity(gpu_facts(), DeclaredCapacity(cpus=10_000, gpus=8))
    assert cap.cpus == 224 and len(cap.gpus) == 2


def test_declared_gpu_model_filters_probed_gpus() -> None:
    assert effective_capacity(gpu_facts(), DeclaredCapacity(gpu_model="a100")).gpus == ()
    assert len(effective_capacity(gpu_facts(), DeclaredCapacity(gpu_model="h100")).gpus) == 2


def test_declaration_without_probe_is_enough_to_plan() -> None:
    cap = effective_capacity(
        None, DeclaredCapacity(cpus=32, gpus=4, gpu_model="L40S", gpu_memory_bytes=48 * 2**30)
    )
    assert cap.source == "declared" and cap.cpus == 32
    assert [(g.index, g.model) for g in cap.gpus] == [(i, "L40S") for i in range(4)]


def test_nothing_known_is_unknown() -> None:
    cap = effective_capacity(None, None)
    assert cap.source == "unknown" and cap.cpus is None and cap.gpus == ()
