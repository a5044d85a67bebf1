"""estimate_for(): the most specific estimate wins."""

from __future__ import annotations

from leptonctl.core.scheduler import Gpu, Job, Node, Request, estimate_for

NODE = Node("gpu01", groups=("lab", "gpus"), cpus=8, gpus=(Gpu(0, "NVIDIA H100 80GB HBM3", None),))
ALL = {"gpu01": 1.0, "gpus": 2.0, "lab": 3.0, "h100": 4.0, "gpu": 5.0, "cpu": 6.0}


def est(estimates: dict[str, float], request: Request | None = None) -> float | None:
    return estimate_for(Job("j", request or Request(gpus=1), estimates=estimates), NODE)


def test_host_name_beats_everything() -> None:
    assert est(ALL) == 1.0


def test_first_matching_group_in_node_order_beats_gpu_type() -> None:
    assert est({k: v for k, v in ALL.items() if k != "gpu01"}) == 3.0


def test_gpu_type_matches_node_gpu_model_case_insensitively() -> None:
    assert est({"H100": 4.0, "a100": 9.0, "gpu": 5.0}) == 4.0


def test_longest_matching_gpu_type_wins() -> None:
    assert est({"h100": 4.0, "h100 80gb": 7.0}) == 7.0


def test_resource_kind_is_the_fallback() -> None:
    assert est({"gpu": 5.0, "cpu": 6.0}) == 5.0
    assert est({"gpu": 5.0, "cpu": 6.0}, Request()) == 6.0
    assert est({"fpga": 8.0}, Request(fpgas=1)) == 8.0


def test_gpu_type_estimate_does_not_apply_to_cpu_only_jobs() -> None:
    assert est({"h100": 4.0, "cpu": 6.0}, Request()) == 6.0


def test_none_when_nothing_applies() -> None:
    assert est({"other-host": 1.0, "a100": 2.0}) is None
    assert est({}) is None
