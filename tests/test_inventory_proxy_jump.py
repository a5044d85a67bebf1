"""ProxyJump from the inventory: native var, or the one ssh option read from Ansible's ssh args."""

from __future__ import annotations

import pytest

from leptonctl.errors import InventoryError
from leptonctl.inventory import parse_inventory


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("h1 proxy_jump=bastion", "bastion"),
        ("h1 ansible_ssh_common_args='-o ProxyJump=ops@gw:2222'", "ops@gw:2222"),
        ("h1 ansible_ssh_common_args='-C -oProxyJump=gw'", "gw"),
        ("h1 ansible_ssh_extra_args='-J gw1,gw2'", "gw1,gw2"),
        ("h1 ansible_ssh_common_args='-o ServerAliveInterval=5'", None),
        ("h1", None),
    ],
)
def test_proxy_jump_is_read_from_inventory(line: str, expected: str | None) -> None:
    (host,) = parse_inventory(line + "\n", "hosts.ini", fmt="ini").hosts
    assert host.proxy_jump == expected


def test_group_ssh_args_apply_to_every_member() -> None:
    text = "[edge]\ne[1:2]\n[edge:vars]\nansible_ssh_common_args=-o ProxyJump=gw\n"
    assert {h.proxy_jump for h in parse_inventory(text, "hosts.ini", fmt="ini").hosts} == {"gw"}


def test_unbalanced_quotes_in_ssh_args_are_reported_with_the_line() -> None:
    text = 'all:\n  hosts:\n    h1:\n      ansible_ssh_common_args: "-o \'ProxyJump=gw"\n'
    with pytest.raises(InventoryError, match=r"hosts.yaml:4"):
        parse_inventory(text, "hosts.yaml", fmt="yaml")
