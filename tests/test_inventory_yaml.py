"""The Ansible YAML inventory format: groups, precedence, and located errors."""

from __future__ import annotations

from textwrap import dedent

import pytest

from leptonctl.errors import InventoryError
from leptonctl.inventory import Inventory, parse_inventory
from leptonctl.inventory.raw import EncryptedValue

SOURCE = "site.yaml"


def parse(text: str) -> Inventory:
    return parse_inventory(dedent(text), SOURCE)


def fails(text: str) -> InventoryError:
    with pytest.raises(InventoryError) as err:
        parse(text)
    return err.value


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the nth line containing ``needle`` in dedented ``text``."""
    hits = [i for i, line in enumerate(dedent(text).splitlines(), 1) if needle in line]
    return hits[nth - 1]


NESTED = """\
all:
  vars:
    level: all
    only_all: 1
  hosts:
    bastion:
  children:
    compute:
      vars:
        level: compute
        only_compute: 2
      children:
        gpu:
          vars:
            level: gpu
          hosts:
            gpu01:
            gpu02:
              level: host
        cpu:
          vars:
            level: cpu
          hosts:
            cpu01:
"""


def test_nested_groups_are_recursive_and_include_all() -> None:
    inv = parse(NESTED)
    assert [h.name for h in inv.hosts] == ["bastion", "gpu01", "gpu02", "cpu01"]
    assert inv.groups["all"] == ("bastion", "gpu01", "gpu02", "cpu01")
    assert inv.groups["compute"] == ("gpu01", "gpu02", "cpu01")
    assert inv.groups["gpu"] == ("gpu01", "gpu02")
    assert inv.groups["ungrouped"] == ("bastion",)


def test_host_groups_list_ancestors_all_first_and_ungrouped_only_when_alone() -> None:
    inv = parse(NESTED)
    assert inv.host("gpu01").groups == ("all", "compute", "gpu")
    assert inv.host("bastion").groups == ("all", "ungrouped")


def test_child_group_vars_beat_parent_vars_which_beat_all() -> None:
    inv = parse(NESTED)
    gpu01 = inv.host("gpu01")
    assert gpu01.vars["level"] == "gpu"
    assert gpu01.vars["only_compute"] == 2
    assert gpu01.vars["only_all"] == 1
    assert inv.host("bastion").vars["level"] == "all"


def test_host_vars_beat_every_group_var() -> None:
    assert parse(NESTED).host("gpu02").vars["level"] == "host"


def test_same_depth_groups_merge_alphabetically_later_wins() -> None:
    inv = parse(
        """\
        all:
          children:
            zeta:
              vars: {colour: zeta}
              hosts: {h1: }
            alpha:
              vars: {colour: alpha}
              hosts: {h1: }
        """
    )
    assert inv.host("h1").vars["colour"] == "zeta"


def test_deeper_group_wins_even_if_alphabetically_first() -> None:
    inv = parse(
        """\
        all:
          children:
            zz_parent:
              vars: {colour: parent}
              children:
                aa_child:
                  vars: {colour: child}
                  hosts: {h1: }
        """
    )
    assert inv.host("h1").vars["colour"] == "child"


def test_ansible_group_priority_breaks_same_depth_ties() -> None:
    inv = parse(
        """\
        all:
          children:
            alpha:
              vars: {colour: alpha, ansible_group_priority: 10}
              hosts: {h1: }
            zeta:
              vars: {colour: zeta}
              hosts: {h1: }
        """
    )
    assert inv.host("h1").vars["colour"] == "alpha"


def test_a_group_in_several_places_is_merged() -> None:
    inv = parse(
        """\
        all:
          children:
            gpu:
              hosts: {g1: }
              vars: {a: 1}
            rack1:
              children:
                gpu:
                  hosts: {g2: }
                  vars: {b: 2}
        """
    )
    assert inv.groups["gpu"] == ("g1", "g2")
    assert inv.groups["rack1"] == ("g1", "g2")
    assert inv.host("g1").vars["a"] == 1
    assert inv.host("g1").vars["b"] == 2


def test_top_level_groups_other_than_all_are_children_of_all() -> None:
    inv = parse(
        """\
        gpu:
          hosts: {g1: }
        cpu:
          hosts: {c1: }
        """
    )
    assert inv.groups["all"] == ("g1", "c1")
    assert inv.host("c1").groups == ("all", "cpu")


def test_a_host_listed_twice_keeps_its_first_position_and_merges_vars() -> None:
    inv = parse(
        """\
        all:
          hosts:
            h1: {a: 1}
            h2:
          children:
            g:
              hosts:
                h1: {b: 2}
        """
    )
    assert [h.name for h in inv.hosts] == ["h1", "h2"]
    assert dict(inv.host("h1").vars) == {"a": 1, "b": 2}
    assert inv.host("h1").source == f"{SOURCE}:3"


def test_ranges_in_host_keys_give_every_host_the_vars() -> None:
    inv = parse(
        """\
        all:
          hosts:
            node[01:03]: {rack: r1}
        """
    )
    assert [h.name for h in inv.hosts] == ["node01", "node02", "node03"]
    assert all(h.vars["rack"] == "r1" for h in inv.hosts)


def test_port_shorthand_in_a_host_key() -> None:
    inv = parse("all:\n  hosts:\n    gpu01:2222:\n")
    assert inv.host("gpu01").port == 2222


def test_values_are_typed_by_the_safe_constructor() -> None:
    inv = parse(
        """\
        all:
          hosts:
            h1:
              n: 8
              on: true
              tags: [a, b]
              nested: {x: 1.5}
              empty:
        """
    )
    v = inv.host("h1").vars
    assert (v["n"], v["on"], v["tags"], v["nested"], v["empty"]) == (
        8,
        True,
        ["a", "b"],
        {"x": 1.5},
        None,
    )


def test_merge_keys_and_anchors_work() -> None:
    inv = parse(
        """\
        all:
          vars:
            base: &base {user: ops, shell: bash}
          hosts:
            h1:
              <<: *base
              shell: zsh
        """
    )
    v = inv.host("h1").vars
    assert v["user"] == "ops"
    assert v["shell"] == "zsh"


def test_ansible_unsafe_and_vault_tags_load() -> None:
    text = """\
    all:
      hosts:
        h1:
          raw: !unsafe '{{ not_a_template }}'
          secret: !vault |
            $ANSIBLE_VAULT;1.1;AES256
            6162636465
    """
    v = parse(text).host("h1").vars
    assert v["raw"] == "{{ not_a_template }}"
    assert isinstance(v["secret"], EncryptedValue)


def test_vault_encrypted_connection_field_is_an_error_at_its_line() -> None:
    text = """\
    all:
      hosts:
        h1:
          ansible_user: !vault |
            $ANSIBLE_VAULT;1.1;AES256
            6162
    """
    err = fails(text)
    assert err.line == line_of(text, "ansible_user")
    assert "vault" in err.detail


def test_json_inventory_is_read_as_yaml() -> None:
    inv = parse_inventory('{"all": {"hosts": {"h1": {"ansible_port": 2200}}}}', "inv.json")
    assert inv.host("h1").port == 2200


def test_vars_are_read_only() -> None:
    inv = parse(NESTED)
    with pytest.raises(TypeError):
        inv.host("gpu01").vars["level"] = "x"  # type: ignore[index]


# ---------------------------------------------------------------- errors


def test_hosts_as_a_list_is_an_error_naming_the_path_and_line() -> None:
    text = """\
    all:
      children:
        gpu:
          hosts:
            - gpu01
            - gpu02
    """
    err = fails(text)
    assert err.line == line_of(text, "- gpu01")
    assert err.key == "all.children.gpu.hosts"
    assert str(err).startswith(f"{SOURCE}:{err.line} (all.children.gpu.hosts): ")
    assert "expected a mapping of host names, got a list" in str(err)


def test_unknown_group_key_suggests_hosts() -> None:
    text = """\
    all:
      children:
        gpu:
          host:
            gpu01:
    """
    err = fails(text)
    assert err.line == line_of(text, "host:")
    assert "'host'" in err.detail
    assert err.hint is not None and "hosts" in err.hint


def test_yaml_syntax_error_carries_the_line_of_the_mark() -> None:
    text = """\
    all:
      hosts:
        h1: {a: 1
        h2:
    """
    err = fails(text)
    assert err.source == SOURCE
    assert err.line is not None and err.line >= line_of(text, "h1:")
    assert "YAML syntax error" in err.detail


def test_bad_indentation_syntax_error_line() -> None:
    text = "all:\n  hosts:\n    h1:\n   bad: [\n"
    err = fails(text)
    assert err.line == 4


def test_duplicate_host_key_is_an_error_at_the_second_occurrence() -> None:
    text = """\
    all:
      hosts:
        h1:
        h2:
        h1:
    """
    err = fails(text)
    assert err.line == line_of(text, "h1:", nth=2)
    assert "duplicate key 'h1'" in err.detail
    assert "line 3" in err.detail


def test_duplicate_variable_is_an_error() -> None:
    text = """\
    all:
      vars:
        user: a
        user: b
      hosts: {h1: }
    """
    assert fails(text).line == line_of(text, "user: b")


def test_top_level_list_is_an_error() -> None:
    err = fails("- h1\n- h2\n")
    assert err.line == 1
    assert "mapping of groups" in err.detail


def test_group_body_that_is_a_string_is_an_error() -> None:
    text = """\
    all:
      children:
        gpu: gpu01
    """
    err = fails(text)
    assert err.line == line_of(text, "gpu: gpu01")
    assert err.key == "all.children.gpu"


def test_host_vars_that_are_a_list_are_an_error() -> None:
    text = """\
    all:
      hosts:
        h1:
          - a
    """
    err = fails(text)
    assert err.line == line_of(text, "- a")
    assert err.key == "all.hosts.h1"


def test_children_as_a_list_is_an_error() -> None:
    text = """\
    all:
      children:
        - gpu
    """
    err = fails(text)
    assert err.line == line_of(text, "- gpu")
    assert "mapping of group names" in err.detail


def test_unknown_tag_is_an_error_at_its_line() -> None:
    text = """\
    all:
      hosts:
        h1:
          x: !!python/object:os.system ls
    """
    err = fails(text)
    assert err.line == line_of(text, "x: !!python")


def test_bad_range_in_a_host_key_reports_its_line() -> None:
    text = """\
    all:
      hosts:
        ok:
        h[5:1]:
    """
    err = fails(text)
    assert err.line == line_of(text, "h[5:1]")
    assert "h[5:1]" in err.detail


def test_group_cycle_is_an_error() -> None:
    text = """\
    all:
      children:
        a:
          children:
            b:
              hosts: {h1: }
              children:
                a:
    """
    err = fails(text)
    assert "cycle" in err.detail
    assert "a -> b -> a" in err.detail
    assert err.line == line_of(text, "a:", nth=2)


def test_all_as_a_child_is_an_error() -> None:
    text = """\
    all:
      children:
        gpu:
          hosts: {h1: }
          children:
            all:
    """
    err = fails(text)
    assert err.line == line_of(text, "all:", nth=2)


def test_inventory_without_hosts_is_an_error() -> None:
    err = fails("all:\n  children:\n    gpu:\n")
    assert "no hosts" in err.detail
    assert err.source == SOURCE
