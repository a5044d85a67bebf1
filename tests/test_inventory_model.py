"""Connection fields: Ansible and native variable names, defaults, validation."""

from __future__ import annotations

from textwrap import dedent

import pytest

from leptonctl.errors import InventoryError, LimitError
from leptonctl.inventory import Host, Inventory, parse_inventory


def one_host(host_vars: str) -> Host:
    text = "all:\n  hosts:\n    h1:\n" + "".join(
        f"      {line}\n" for line in dedent(host_vars).splitlines()
    )
    return parse_inventory(text, "m.yaml").host("h1")


def test_ansible_connection_variables_map_to_fields() -> None:
    host = one_host(
        """\
        ansible_host: 10.1.2.3
        ansible_port: 2222
        ansible_user: admin
        ansible_ssh_private_key_file: ~/.ssh/lab_ed25519
        ansible_python_interpreter: /usr/bin/python3.11
        lepton_data_dir: /scratch/lepton
        """
    )
    assert host.address == "10.1.2.3"
    assert host.port == 2222
    assert host.user == "admin"
    assert host.identity_file == "~/.ssh/lab_ed25519"  # kept as written
    assert host.python == "/usr/bin/python3.11"
    assert host.data_dir == "/scratch/lepton"
    assert host.connection == "ssh"


def test_native_short_names_map_to_fields() -> None:
    host = one_host(
        """\
        host: 10.9.9.9
        port: 22
        user: me
        identity_file: /keys/id
        connection: local
        python: python3.12
        data_dir: /data
        """
    )
    assert (host.address, host.port, host.user, host.identity_file) == (
        "10.9.9.9",
        22,
        "me",
        "/keys/id",
    )
    assert (host.connection, host.python, host.data_dir) == ("local", "python3.12", "/data")
    assert host.is_local


def test_old_ansible_ssh_names_are_accepted() -> None:
    host = one_host(
        """\
        ansible_ssh_host: 10.0.0.2
        ansible_ssh_port: 2200
        ansible_ssh_user: legacy
        ansible_private_key_file: /k
        """
    )
    assert (host.address, host.port, host.user, host.identity_file) == (
        "10.0.0.2",
        2200,
        "legacy",
        "/k",
    )


def test_ansible_name_wins_over_native_name_in_the_same_place() -> None:
    host = one_host("user: native\nansible_user: ansible\n")
    assert host.user == "ansible"


def test_host_level_native_name_beats_group_level_ansible_name() -> None:
    inv = parse_inventory(
        "all:\n  vars:\n    ansible_user: group\n  hosts:\n    h1:\n      user: mine\n",
        "m.yaml",
    )
    assert inv.host("h1").user == "mine"


def test_defaults_without_connection_vars() -> None:
    host = one_host("rack: r1\n")
    assert host.address is None
    assert host.port is None
    assert host.user is None
    assert host.identity_file is None
    assert host.connection == "ssh"
    assert host.python == "python3"
    assert host.data_dir is None
    assert host.capacity is None


def test_host_without_address_is_an_ssh_config_alias() -> None:
    host = one_host("rack: r1\n")
    assert host.address is None
    assert host.ssh_target == "h1"
    assert one_host("ansible_host: 10.0.0.1\n").ssh_target == "10.0.0.1"


def test_local_connection() -> None:
    host = one_host("ansible_connection: local\n")
    assert host.connection == "local"
    assert host.is_local


def test_ansible_smart_connection_means_ssh_and_auto_python_means_python3() -> None:
    host = one_host("ansible_connection: smart\nansible_python_interpreter: auto_silent\n")
    assert host.connection == "ssh"
    assert host.python == "python3"


def test_unknown_connection_is_an_error_at_its_line() -> None:
    """A connection that is no Ansible plugin we know (a typo) is an error, not left out
    (Ansible's non-SSH plugins are left out: tests/test_inventory_wild.py)."""
    with pytest.raises(InventoryError) as err:
        one_host("rack: r1\nansible_connection: shh\n")
    assert err.value.line == 5
    assert err.value.key == "ansible_connection"
    assert "shh" in err.value.detail


@pytest.mark.parametrize("port", ["0", "65536", "ssh", "true", "[22]"])
def test_bad_port_is_an_error(port: str) -> None:
    with pytest.raises(InventoryError) as err:
        one_host(f"ansible_port: {port}\n")
    assert err.value.line == 4
    assert err.value.source == "m.yaml"


def test_port_as_a_digit_string_is_accepted() -> None:
    assert one_host("ansible_port: '2222'\n").port == 2222


def test_non_string_user_is_an_error() -> None:
    with pytest.raises(InventoryError) as err:
        one_host("ansible_user: [a, b]\n")
    assert err.value.key == "ansible_user"


def test_vars_hold_everything_merged_including_connection_names() -> None:
    host = one_host("ansible_host: 10.0.0.1\nrack: r1\n")
    assert dict(host.vars) == {"ansible_host": "10.0.0.1", "rack": "r1"}


def test_hosts_do_not_share_mutable_var_values() -> None:
    inv = parse_inventory("all:\n  vars:\n    tags: [a]\n  hosts:\n    h1:\n    h2:\n", "m.yaml")
    inv.host("h1").vars["tags"].append("b")
    assert inv.host("h2").vars["tags"] == ["a"]


def test_source_is_path_and_line_of_first_definition() -> None:
    inv = parse_inventory("all:\n  hosts:\n    h0:\n    h1:\n", "where.yaml")
    assert inv.host("h1").source == "where.yaml:4"


def test_hosts_and_inventories_are_hashable_frozen_values() -> None:
    inv = parse_inventory("all:\n  hosts:\n    h0:\n    h1:\n", "where.yaml")
    assert len({inv.host("h0"), inv.host("h1"), inv.host("h0")}) == 2
    assert hash(inv) == hash(parse_inventory("all:\n  hosts:\n    h0:\n    h1:\n", "where.yaml"))
    with pytest.raises(AttributeError):
        inv.host("h0").name = "x"  # type: ignore[misc]


def test_unknown_host_lookup_raises_limit_error_with_suggestion() -> None:
    inv: Inventory = parse_inventory("all:\n  hosts:\n    gpu01:\n", "m.yaml")
    with pytest.raises(LimitError) as err:
        inv.host("gpu1")
    assert "gpu1" in str(err.value)
    assert err.value.hint is not None and "gpu01" in err.value.hint


@pytest.mark.parametrize("value", ["ignroe", "yes", "[ignore]", "1"])
def test_a_mistyped_lepton_gpu_foreign_is_an_error_at_its_line(value: str) -> None:
    with pytest.raises(InventoryError) as err:
        one_host(f"rack: r1\nlepton_gpu_foreign: {value}\n")
    assert (err.value.line, err.value.key) == (5, "lepton_gpu_foreign")
    assert "'ignore' or 'busy'" in err.value.detail


def test_lepton_gpu_foreign_ignore_and_busy_are_read() -> None:
    assert one_host("lepton_gpu_foreign: Ignore\n").gpu_foreign_ignored
    assert not one_host("lepton_gpu_foreign: busy\n").gpu_foreign_ignored
    assert not one_host("rack: r1\n").gpu_foreign_ignored
