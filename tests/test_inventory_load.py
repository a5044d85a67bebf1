"""Loading inventory files: detection, adjacent vars, the default, the examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from leptonctl.errors import InventoryError
from leptonctl.inventory import (
    DEFAULT_SOURCE,
    default_inventory,
    detect_format,
    load_inventory,
    select_hosts,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "inventory"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_no_path_gives_the_embedded_local_default() -> None:
    inv = load_inventory(None)
    assert inv == default_inventory()
    assert inv.source == DEFAULT_SOURCE
    (host,) = inv.hosts
    assert host.name == "localhost"
    assert host.connection == "local"
    assert host.groups == ("all", "ungrouped")
    assert dict(inv.groups) == {"all": ("localhost",), "ungrouped": ("localhost",)}
    assert host.source == DEFAULT_SOURCE


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("hosts.yaml", "[g]\nh1\n", "yaml"),
        ("hosts.yml", "", "yaml"),
        ("hosts.json", "{}", "yaml"),
        ("hosts", "# comment\n\n[gpu]\ng1\n", "ini"),
        ("hosts", "g1 ansible_host=10.0.0.1\n", "ini"),
        ("hosts", "g1:2222\n", "ini"),
        ("hosts", "bare-host-name\n", "ini"),
        ("hosts.ini", "; c\nall:\n  hosts:\n", "yaml"),
        ("hosts.cfg", "---\nall:\n", "yaml"),
        ("hosts", '"all":\n  hosts: {}\n', "yaml"),
        ("hosts", "all: {hosts: {h: }}\n", "yaml"),
        ("hosts.ini", "[all]\nh1\n", "ini"),
    ],
)
def test_format_detection(name: str, text: str, expected: str) -> None:
    assert detect_format(name, text) == expected


def test_load_yaml_file_uses_the_path_as_source(tmp_path: Path) -> None:
    path = write(tmp_path / "site.yml", "all:\n  hosts:\n    h1:\n")
    inv = load_inventory(path)
    assert inv.source == str(path)
    assert inv.host("h1").source == f"{path}:3"


def test_load_ini_without_extension_by_content(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts", "[gpu]\ng1 ansible_port=2200\n")
    assert load_inventory(str(path)).host("g1").port == 2200


def test_errors_name_the_file_given(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.ini", "[g]\nh1\n[g:kids]\n")
    with pytest.raises(InventoryError) as err:
        load_inventory(path)
    assert str(err.value).startswith(f"{path}:3: ")


def test_missing_file_is_an_error_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as err:
        load_inventory(tmp_path / "nope.yaml")
    assert "not found" in err.value.detail
    assert err.value.source == str(tmp_path / "nope.yaml")
    assert err.value.hint


def test_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="directory"):
        load_inventory(tmp_path)


@pytest.mark.parametrize("text", ["", "# nothing here\n", "all:\n", "[gpu]\n"])
def test_inventory_without_hosts_is_an_error(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "empty.yaml" if "[" not in text else tmp_path / "e.ini", text)
    with pytest.raises(InventoryError, match="no hosts"):
        load_inventory(path)


def test_non_utf8_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"all:\n  hosts:\n    caf\xe9:\n")
    with pytest.raises(InventoryError, match="UTF-8"):
        load_inventory(path)


def test_group_vars_and_host_vars_files_apply_with_ansible_precedence(tmp_path: Path) -> None:
    inv_path = write(
        tmp_path / "hosts.ini",
        "[gpu]\ng1\ng2 colour=inline-host\n\n[gpu:vars]\ncolour=inline-group\nsize=s\n",
    )
    write(tmp_path / "group_vars" / "all.yml", "colour: all-file\nowner: ops\n")
    write(tmp_path / "group_vars" / "gpu.yaml", "size: m\n")
    write(tmp_path / "group_vars" / "gpu" / "extra.yml", "extra: true\n")
    write(tmp_path / "host_vars" / "g1.yml", "ansible_port: 2222\n")
    write(tmp_path / "host_vars" / "g2", "size: xl\n")
    inv = load_inventory(inv_path)
    g1, g2 = inv.host("g1"), inv.host("g2")
    # group_vars/all.yml beats vars written in the inventory for any group
    assert g1.vars["colour"] == "all-file"
    assert g1.vars["owner"] == "ops"
    assert g1.vars["size"] == "m"  # group_vars/gpu beats inventory [gpu:vars]
    assert g1.vars["extra"] is True
    assert g1.port == 2222
    assert g2.vars["colour"] == "inline-host"  # inventory host vars beat group_vars files
    assert g2.vars["size"] == "xl"  # host_vars beat everything


def test_errors_in_vars_files_name_that_file_and_line(tmp_path: Path) -> None:
    inv_path = write(tmp_path / "hosts.yaml", "all:\n  hosts:\n    g1:\n")
    bad = write(tmp_path / "host_vars" / "g1.yml", "rack: r1\nansible_port: many\n")
    with pytest.raises(InventoryError) as err:
        load_inventory(inv_path)
    assert err.value.source == str(bad)
    assert err.value.line == 2


def test_vault_encrypted_vars_files_are_skipped(tmp_path: Path) -> None:
    inv_path = write(tmp_path / "hosts.yaml", "all:\n  hosts:\n    g1:\n")
    write(tmp_path / "group_vars" / "all" / "vault.yml", "$ANSIBLE_VAULT;1.1;AES256\n6162\n")
    write(tmp_path / "group_vars" / "all" / "plain.yml", "x: 1\n")
    assert load_inventory(inv_path).host("g1").vars["x"] == 1


# ---------------------------------------------------------------- the examples


def test_example_local_inventory_is_the_local_machine() -> None:
    inv = load_inventory(EXAMPLES / "local.yaml")
    (host,) = inv.hosts
    assert host.name == "localhost"
    assert host.connection == "local"


def test_example_cluster_yaml_loads_with_groups_capacity_and_bastion_alias() -> None:
    inv = load_inventory(EXAMPLES / "cluster.yaml")
    for group in ("gpu", "cpu", "fpga"):
        assert inv.groups[group], group
    bastion = inv.host("bastion")
    assert bastion.address is None  # an ~/.ssh/config alias
    gpu03 = inv.host("gpu03")
    assert gpu03.capacity is not None and gpu03.capacity.gpus == 7
    assert inv.host("gpu01").capacity is not None
    assert {h.vars.get("rack") for h in select_hosts(inv, "gpu")} == {"r1", "r2"}
    assert inv.host("fpga01").port == 2222
    assert len(inv.groups["cpu"]) == 8


def test_example_lab_ini_loads_with_children_ranges_and_capacity() -> None:
    inv = load_inventory(EXAMPLES / "lab.ini")
    for group in ("gpu", "cpu", "fpga"):
        assert inv.groups[group], group
    assert inv.host("bastion").address is None
    assert set(inv.groups["accel"]) == set(inv.groups["gpu"]) | set(inv.groups["fpga"])
    cpu = inv.host("lab-cpu05")
    assert cpu.capacity is not None and cpu.capacity.cpus == 8
    assert cpu.vars["rack"] == "b"
    gpu = inv.host("lab-gpu1")
    assert gpu.capacity is not None and gpu.capacity.gpus == 2
    assert gpu.user == "student"


def test_every_example_inventory_loads() -> None:
    found = sorted(EXAMPLES.glob("*.yaml")) + sorted(EXAMPLES.glob("*.ini"))
    assert len(found) >= 3
    for path in found:
        assert load_inventory(path).hosts, path
