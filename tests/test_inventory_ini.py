"""The Ansible INI inventory format, and its equivalence with the YAML one."""

from __future__ import annotations

from textwrap import dedent

import pytest

from leptonctl.errors import InventoryError
from leptonctl.inventory import Host, Inventory, parse_inventory
from leptonctl.inventory.ini_format import split_ini_tokens

SOURCE = "hosts.ini"


def parse(text: str) -> Inventory:
    return parse_inventory(dedent(text), SOURCE, fmt="ini")


def fails(text: str) -> InventoryError:
    with pytest.raises(InventoryError) as err:
        parse(text)
    return err.value


def line_of(text: str, needle: str, nth: int = 1) -> int:
    hits = [i for i, line in enumerate(dedent(text).splitlines(), 1) if needle in line]
    return hits[nth - 1]


SAME_YAML = """\
all:
  vars:
    ansible_user: ops
    lepton_data_dir: /srv/lepton
  hosts:
    bastion:
  children:
    compute:
      vars:
        rack: r0
      children:
        gpu:
          hosts:
            gpu[01:02]:
              ansible_host: 10.0.0.5
              capacity: {cpus: 8, gpus: 2}
            gpu03:
              ansible_port: 2222
              rack: r9
        cpu:
          hosts:
            cpu1:
              ansible_connection: local
"""

SAME_INI = """\
# the same inventory, written as INI
bastion

[gpu]
gpu[01:02] ansible_host=10.0.0.5 capacity='{"cpus": 8, "gpus": 2}'
gpu03:2222 rack=r9

[cpu]
cpu1 ansible_connection=local

[compute:children]
gpu
cpu

[compute:vars]
rack=r0

[all:vars]
ansible_user=ops
lepton_data_dir=/srv/lepton
"""


def _facts(host: Host) -> tuple[object, ...]:
    return (
        host.name,
        host.address,
        host.port,
        host.user,
        host.identity_file,
        host.connection,
        host.python,
        host.data_dir,
        host.groups,
        dict(host.vars),
        host.capacity,
    )


def test_ini_and_yaml_versions_of_one_inventory_are_the_same() -> None:
    from_yaml = parse_inventory(SAME_YAML, "same.yaml")
    from_ini = parse(SAME_INI)
    assert [_facts(h) for h in from_ini.hosts] == [_facts(h) for h in from_yaml.hosts]
    assert dict(from_ini.groups) == dict(from_yaml.groups)
    assert from_ini.host("gpu02").capacity is not None
    assert from_ini.host("gpu03").port == 2222
    assert from_ini.host("gpu03").vars["rack"] == "r9"
    assert from_ini.host("gpu01").vars["rack"] == "r0"


def test_hosts_before_any_section_are_ungrouped() -> None:
    inv = parse(SAME_INI)
    assert inv.groups["ungrouped"] == ("bastion",)
    assert inv.host("bastion").groups == ("all", "ungrouped")


def test_host_line_values_are_python_literals_where_possible() -> None:
    inv = parse(
        """\
        h1 n=8 f=1.5 on=True items="[1, 2]" word=hello ip=10.0.0.1 q="two words"
        """
    )
    v = inv.host("h1").vars
    assert v["n"] == 8
    assert v["f"] == 1.5
    assert v["on"] is True
    assert v["items"] == [1, 2]
    assert v["word"] == "hello"
    assert v["ip"] == "10.0.0.1"
    assert v["q"] == "two words"


def test_group_vars_section_values_stay_strings() -> None:
    inv = parse(
        """\
        [g]
        h1

        [g:vars]
        n=8
        on=True
        quoted="with spaces"
        """
    )
    v = inv.host("h1").vars
    assert v["n"] == "8"
    assert v["on"] == "True"
    assert v["quoted"] == "with spaces"


def test_typed_keys_from_group_vars_get_their_types() -> None:
    inv = parse(
        """\
        [g]
        h1

        [g:vars]
        ansible_port=2200
        capacity={cpus: 8, memory: 64GiB}
        """
    )
    host = inv.host("h1")
    assert host.port == 2200
    assert host.capacity is not None
    assert host.capacity.cpus == 8
    assert host.capacity.memory_bytes == 64 * 2**30


def test_inline_capacity_as_json_with_spaces_or_a_quoted_yaml_flow_mapping() -> None:
    inv = parse(
        """\
        a capacity={"cpus": 8, "gpus": 2}
        b capacity="{cpus: 4}"
        """
    )
    a, b = inv.host("a").capacity, inv.host("b").capacity
    assert a is not None and (a.cpus, a.gpus) == (8, 2)
    assert b is not None and b.cpus == 4


def test_comments_whole_line_and_inline() -> None:
    inv = parse(
        """\
        # hash comment
        ; semicolon comment
        [g]   # comment after a section
        h1 a=1   # trailing comment
        h2
        [g:vars]
        x=value  # comment
        y=value ; comment
        """
    )
    assert inv.host("h1").vars["a"] == 1
    assert "#" not in str(inv.host("h1").vars)
    assert inv.host("h1").vars["x"] == "value"
    assert inv.host("h1").vars["y"] == "value"


def test_name_port_shorthand_and_ranges() -> None:
    inv = parse(
        """\
        [cpu]
        cpu[01:03]:2200
        db-[a:b]
        """
    )
    assert [h.name for h in inv.hosts] == ["cpu01", "cpu02", "cpu03", "db-a", "db-b"]
    assert {h.port for h in inv.hosts[:3]} == {2200}
    assert inv.host("db-a").port is None


def test_explicit_hosts_suffix_is_a_host_section() -> None:
    inv = parse("[g:hosts]\nh1\n")
    assert inv.groups["g"] == ("h1",)


def test_child_group_never_defined_is_an_empty_group() -> None:
    inv = parse(
        """\
        [g]
        h1

        [parent:children]
        g
        ghost
        """
    )
    assert inv.groups["ghost"] == ()
    assert inv.groups["parent"] == ("h1",)


def test_tokenizer_keeps_braces_together_and_removes_quotes() -> None:
    assert split_ini_tokens('h1 a={"x": 1, "y": 2} b="c d" e=\'f\' # tail') == [
        "h1",
        "a={x: 1, y: 2}",
        "b=c d",
        "e=f",
    ]


# ---------------------------------------------------------------- errors


def test_unknown_section_suffix_is_an_error_at_its_line() -> None:
    text = """\
    [gpu]
    g1

    [gpu:child]
    x
    """
    err = fails(text)
    assert err.line == line_of(text, "[gpu:child]")
    assert str(err).startswith(f"{SOURCE}:{err.line}: ")
    assert ":child" in err.detail
    assert err.hint is not None and "[gpu:children]" in err.hint


def test_key_value_under_children_is_an_error() -> None:
    text = """\
    [gpu]
    g1

    [all:children]
    gpu
    ansible_user=ops
    """
    err = fails(text)
    assert err.line == line_of(text, "ansible_user=ops")
    assert err.hint is not None and "[all:vars]" in err.hint


def test_malformed_var_token_is_an_error() -> None:
    text = """\
    [gpu]
    g1 ansible_user=ops oops
    """
    err = fails(text)
    assert err.line == 2
    assert "'oops'" in err.detail


def test_unquoted_space_in_a_value_is_a_malformed_token() -> None:
    text = "[g]\n\nh1 motd=hello world\n"
    err = fails(text)
    assert err.line == 3
    assert "'world'" in err.detail


def test_unclosed_quote_is_an_error() -> None:
    err = fails("h0\n[g]\nh1 a='x\n")
    assert err.line == 3
    assert "quote" in err.detail


def test_vars_for_a_group_never_defined_is_an_error() -> None:
    text = """\
    [gpu]
    g1

    [gpus:vars]
    x=1
    """
    err = fails(text)
    assert err.line == line_of(text, "[gpus:vars]")


def test_vars_line_without_equals_is_an_error() -> None:
    text = "[g]\nh1\n[g:vars]\njust_a_word\n"
    assert fails(text).line == 4


def test_cycle_of_children_is_an_error_at_the_closing_line() -> None:
    text = """\
    [a]
    h1

    [a:children]
    b

    [b:children]
    a
    """
    err = fails(text)
    assert "cycle" in err.detail
    assert err.line == 8  # the `a` under [b:children] closes the cycle


def test_group_as_its_own_child_is_a_cycle() -> None:
    text = "[a]\nh1\n[a:children]\na\n"
    err = fails(text)
    assert "a -> a" in err.detail
    assert err.line == 4


def test_malformed_section_header() -> None:
    assert fails("[g\nh1\n").line == 1


def test_bad_range_on_a_host_line_reports_its_line() -> None:
    text = "[g]\nok1\nn[9:1]\n"
    err = fails(text)
    assert err.line == 3
    assert err.source == SOURCE


def test_bad_port_in_group_vars_reports_the_vars_line() -> None:
    text = """\
    [g]
    h1

    [g:vars]
    ansible_port=ssh
    """
    err = fails(text)
    assert err.line == line_of(text, "ansible_port=ssh")
    assert err.key == "ansible_port"
