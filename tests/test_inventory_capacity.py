"""``capacity:`` declarations and size strings."""

from __future__ import annotations

from textwrap import dedent

import pytest

from leptonctl.errors import InventoryError
from leptonctl.inventory import DeclaredCapacity, parse_capacity, parse_inventory, parse_size
from leptonctl.inventory.capacity import CapacityValueError

GiB = 2**30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (4096, 4096),
        ("4096", 4096),
        ("100B", 100),
        ("512M", 512 * 2**20),
        ("512MiB", 512 * 2**20),
        ("512MB", 512 * 2**20),
        ("64GiB", 64 * GiB),
        ("64 GiB", 64 * GiB),
        ("64g", 64 * GiB),
        ("1.5T", 3 * 2**39),
        ("2TiB", 2 * 2**40),
        ("1K", 1024),
        ("0.5k", 512),
        ("1P", 2**50),
    ],
)
def test_sizes_use_binary_units_with_or_without_ib(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "GiB", "12 parsecs", "-1G", "1.2.3G", True, 1.5, -5, None])
def test_bad_sizes_raise_value_error(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


def test_full_capacity_mapping_with_gpu_mapping() -> None:
    cap = parse_capacity(
        {
            "cpus": 8,
            "memory": "64GiB",
            "gpus": {"count": 2, "model": "H100", "memory": "80GiB"},
            "fpgas": 1,
            "disk": "2T",
        }
    )
    assert cap == DeclaredCapacity(
        cpus=8,
        memory_bytes=64 * GiB,
        gpus=2,
        gpu_model="H100",
        gpu_memory_bytes=80 * GiB,
        fpgas=1,
        disk_bytes=2 * 2**40,
    )


def test_gpus_as_a_plain_count_and_long_key_names() -> None:
    cap = parse_capacity(
        {"gpus": 4, "memory_bytes": 1024, "gpu_model": "A100", "gpu_memory_bytes": "40G"}
    )
    assert cap == DeclaredCapacity(
        gpus=4, memory_bytes=1024, gpu_model="A100", gpu_memory_bytes=40 * GiB
    )


def test_capacity_string_is_read_as_a_yaml_flow_mapping() -> None:
    assert parse_capacity("{cpus: 8, memory: 1G}") == DeclaredCapacity(cpus=8, memory_bytes=GiB)


def test_null_capacity_is_none_and_empty_mapping_declares_nothing() -> None:
    assert parse_capacity(None) is None
    assert parse_capacity({}) == DeclaredCapacity()


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ({"ram": "4G"}, "ram"),
        ({"cpus": "eight"}, "cpus"),
        ({"cpus": 0}, "cpus"),
        ({"cpus": True}, "cpus"),
        ({"gpus": -1}, "gpus"),
        ({"gpus": {"count": 2, "vram": "8G"}}, "gpus.vram"),
        ({"gpus": {"count": "2"}}, "gpus.count"),
        ({"memory": "lots"}, "memory"),
        ({"memory": "1G", "memory_bytes": 5}, "memory_bytes"),
        ({"gpu_model": "A", "gpus": {"model": "B"}}, "gpus.model"),
        ([1, 2], None),
        ("{unclosed", None),
    ],
)
def test_bad_capacity_names_the_key(value: object, key: str | None) -> None:
    with pytest.raises(CapacityValueError) as err:
        parse_capacity(value)
    assert err.value.key == key


def test_capacity_from_yaml_host_vars() -> None:
    inv = parse_inventory(
        "all:\n  hosts:\n    g1:\n      capacity: {cpus: 8, memory: 64GiB, "
        "gpus: {count: 2, model: H100, memory: 80GiB}, fpgas: 1}\n",
        "c.yaml",
    )
    cap = inv.host("g1").capacity
    assert cap is not None
    assert (cap.cpus, cap.memory_bytes, cap.gpus, cap.gpu_model, cap.fpgas) == (
        8,
        64 * GiB,
        2,
        "H100",
        1,
    )


def test_host_without_capacity_has_none() -> None:
    inv = parse_inventory("all:\n  hosts:\n    g1:\n", "c.yaml")
    assert inv.host("g1").capacity is None


def test_host_capacity_replaces_group_capacity_whole() -> None:
    text = dedent(
        """\
        all:
          children:
            gpu:
              vars:
                capacity: {cpus: 64, gpus: 8}
              hosts:
                g1:
                g2:
                  capacity: {gpus: 7}
        """
    )
    inv = parse_inventory(text, "c.yaml")
    assert inv.host("g1").capacity == DeclaredCapacity(cpus=64, gpus=8)
    assert inv.host("g2").capacity == DeclaredCapacity(gpus=7)


def test_unknown_capacity_key_error_names_file_line_and_key() -> None:
    text = dedent(
        """\
        all:
          hosts:
            g1:
              capacity:
                cpus: 8
                ram: 64GiB
        """
    )
    with pytest.raises(InventoryError) as err:
        parse_inventory(text, "cap.yaml")
    assert err.value.line == 6
    assert err.value.key == "capacity.ram"
    assert str(err.value).startswith("cap.yaml:6 (capacity.ram): host g1: ")
    assert err.value.hint is not None and "memory" in err.value.hint


def test_bad_nested_gpu_count_points_at_its_own_line_in_group_vars() -> None:
    text = dedent(
        """\
        all:
          children:
            gpu:
              hosts: {g1: }
              vars:
                capacity:
                  gpus:
                    model: H100
                    count: two
        """
    )
    with pytest.raises(InventoryError) as err:
        parse_inventory(text, "cap.yaml")
    assert err.value.line == 9
    assert err.value.key == "capacity.gpus.count"


def test_bad_size_in_ini_inline_capacity_points_at_the_host_line() -> None:
    text = '[gpu]\ng1\ng2 capacity=\'{"memory": "huge"}\'\n'
    with pytest.raises(InventoryError) as err:
        parse_inventory(text, "cap.ini")
    assert err.value.line == 3
    assert err.value.key == "capacity.memory"
    assert "host g2" in err.value.detail


def test_capacity_that_is_a_list_is_an_error() -> None:
    with pytest.raises(InventoryError) as err:
        parse_inventory("all:\n  hosts:\n    g1:\n      capacity: [8]\n", "cap.yaml")
    assert err.value.line == 4
    assert err.value.key == "capacity"
