"""``--limit`` selectors with Ansible's semantics, and no silent no-ops."""

from __future__ import annotations

import pytest

from leptonctl.errors import LimitError
from leptonctl.inventory import Inventory, parse_inventory, select_hosts, split_limit

INVENTORY = """\
all:
  hosts:
    bastion:
  children:
    gpu:
      hosts:
        gpu[01:04]:
    cpu:
      hosts:
        cpu[1:3]:
        web-1:
        web-2:
        web-x:
    fpga:
      hosts:
        fpga01:
    rack1:
      hosts:
        gpu01:
        cpu1:
    empty:
"""


@pytest.fixture
def inv() -> Inventory:
    return parse_inventory(INVENTORY, "limit.yaml")


def names(inv: Inventory, limit: str | None) -> list[str]:
    return [h.name for h in select_hosts(inv, limit)]


def test_no_limit_selects_every_host(inv: Inventory) -> None:
    assert names(inv, None) == list(inv.host_names)
    assert names(inv, "") == list(inv.host_names)
    assert names(inv, "all") == list(inv.host_names)
    assert names(inv, "*") == list(inv.host_names)


def test_host_name(inv: Inventory) -> None:
    assert names(inv, "gpu02") == ["gpu02"]


def test_group_name(inv: Inventory) -> None:
    assert names(inv, "fpga") == ["fpga01"]
    assert names(inv, "gpu") == ["gpu01", "gpu02", "gpu03", "gpu04"]


def test_comma_list_is_a_union_in_inventory_order(inv: Inventory) -> None:
    assert names(inv, "fpga,gpu02,bastion") == ["bastion", "gpu02", "fpga01"]


def test_colon_list_works_when_there_is_no_comma(inv: Inventory) -> None:
    assert names(inv, "fpga:bastion") == ["bastion", "fpga01"]


def test_glob_over_host_names(inv: Inventory) -> None:
    assert names(inv, "gpu0[12]") == ["gpu01", "gpu02"]
    assert names(inv, "web-?") == ["web-1", "web-2", "web-x"]
    assert names(inv, "web-[0-9]") == ["web-1", "web-2"]


def test_glob_over_group_names(inv: Inventory) -> None:
    assert names(inv, "fp*") == ["fpga01"]
    assert names(inv, "rack?") == ["gpu01", "cpu1"]


def test_regex_is_matched_at_the_start_of_names(inv: Inventory) -> None:
    assert names(inv, "~gpu0[34]") == ["gpu03", "gpu04"]
    assert names(inv, "~(fpga|bastion)") == ["bastion", "fpga01"]


def test_regex_that_matches_nothing_is_an_error(inv: Inventory) -> None:
    with pytest.raises(LimitError):
        select_hosts(inv, "~pu0")


def test_exclusion(inv: Inventory) -> None:
    assert names(inv, "gpu:!gpu02") == ["gpu01", "gpu03", "gpu04"]
    assert names(inv, "gpu,!rack1") == ["gpu02", "gpu03", "gpu04"]


def test_intersection(inv: Inventory) -> None:
    assert names(inv, "gpu:&rack1") == ["gpu01"]
    assert names(inv, "gpu,cpu,&rack1") == ["gpu01", "cpu1"]


def test_only_exclusions_start_from_all(inv: Inventory) -> None:
    assert names(inv, "!gpu,!cpu") == ["bastion", "fpga01"]


def test_only_intersections_start_from_all(inv: Inventory) -> None:
    assert names(inv, "&rack1") == ["gpu01", "cpu1"]


def test_exclusions_apply_after_additions_whatever_the_order(inv: Inventory) -> None:
    assert names(inv, "!gpu01,gpu") == ["gpu02", "gpu03", "gpu04"]
    assert names(inv, "&rack1,!cpu1,gpu,cpu") == ["gpu01"]


def test_subscripts_pick_positions_with_an_inclusive_end(inv: Inventory) -> None:
    assert names(inv, "gpu[0]") == ["gpu01"]
    assert names(inv, "gpu[-1]") == ["gpu04"]
    assert names(inv, "gpu[1:2]") == ["gpu02", "gpu03"]
    assert names(inv, "gpu[2:]") == ["gpu03", "gpu04"]
    assert names(inv, "gpu[:1]") == ["gpu01", "gpu02"]


def test_brackets_after_a_group_name_are_a_subscript_as_in_ansible(inv: Inventory) -> None:
    assert names(inv, "gpu[02:03]") == ["gpu03", "gpu04"]


def test_subscript_out_of_range_is_an_error(inv: Inventory) -> None:
    with pytest.raises(LimitError, match="out of range"):
        select_hosts(inv, "fpga[3]")


def test_host_range_and_folded_list_select_those_hosts(inv: Inventory) -> None:
    assert names(inv, "gpu0[1:2]") == ["gpu01", "gpu02"]  # `gpu0` names nothing: a range
    assert names(inv, "gpu0[1:3,4]") == ["gpu01", "gpu02", "gpu03", "gpu04"]
    assert names(inv, "web-[1:2],bastion") == ["bastion", "web-1", "web-2"]


def test_folded_list_naming_a_missing_host_is_an_error(inv: Inventory) -> None:
    with pytest.raises(LimitError, match="gpu05"):
        select_hosts(inv, "gpu0[3:6]")


def test_unknown_name_is_an_error_that_lists_groups(inv: Inventory) -> None:
    with pytest.raises(LimitError) as err:
        select_hosts(inv, "gpux")
    assert "gpux" in str(err.value)
    assert err.value.hint is not None
    assert "known groups:" in err.value.hint
    assert "fpga" in err.value.hint


def test_unknown_name_suggests_a_close_match(inv: Inventory) -> None:
    with pytest.raises(LimitError) as err:
        select_hosts(inv, "gpus")
    assert err.value.hint is not None and "gpu" in err.value.hint


def test_glob_without_match_is_an_error(inv: Inventory) -> None:
    with pytest.raises(LimitError, match="db\\*"):
        select_hosts(inv, "db*")


def test_unknown_name_in_an_exclusion_is_an_error_too(inv: Inventory) -> None:
    with pytest.raises(LimitError, match="gpu9"):
        select_hosts(inv, "gpu,!gpu9")


def test_unknown_name_among_known_ones_is_still_an_error(inv: Inventory) -> None:
    with pytest.raises(LimitError, match="nosuch"):
        select_hosts(inv, "gpu,nosuch")


def test_empty_group_selected_alone_is_an_error(inv: Inventory) -> None:
    with pytest.raises(LimitError, match="empty"):
        select_hosts(inv, "empty")


def test_excluding_an_empty_group_is_fine(inv: Inventory) -> None:
    assert names(inv, "fpga:!empty") == ["fpga01"]


def test_limit_that_leaves_nothing_is_an_error(inv: Inventory) -> None:
    with pytest.raises(LimitError, match="selects no hosts"):
        select_hosts(inv, "fpga:!fpga01")


def test_bad_regex_is_a_limit_error(inv: Inventory) -> None:
    with pytest.raises(LimitError, match="regular expression"):
        select_hosts(inv, "~gpu(")


def test_split_limit_keeps_ranges_and_ipv6_together() -> None:
    assert split_limit("a:b:!c") == ["a", "b", "!c"]
    assert split_limit("h[1:3]:&g") == ["h[1:3]", "&g"]
    assert split_limit("a, b ,,c") == ["a", "b", "c"]
    assert split_limit("h[01:03,05],db") == ["h[01:03,05]", "db"]
    assert split_limit("fe80::1") == ["fe80::1"]


def test_ip_address_host_names_can_be_selected() -> None:
    inv = parse_inventory("all:\n  hosts:\n    10.0.0.1:\n    10.0.0.2:\n", "ip.yaml")
    assert names(inv, "10.0.0.2") == ["10.0.0.2"]
    assert names(inv, "10.0.0.*") == ["10.0.0.1", "10.0.0.2"]


def test_colon_list_of_hex_looking_names_is_still_split() -> None:
    assert split_limit("dead:beef:cafe") == ["dead", "beef", "cafe"]
    assert split_limit("2001:db8:0:0:0:0:0:1") == ["2001:db8:0:0:0:0:0:1"]
