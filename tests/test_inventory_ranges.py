"""Host ranges: expansion (Ansible syntax), errors with locations, folding back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leptonctl.errors import InventoryError
from leptonctl.inventory import expand_host_list, expand_host_pattern, fold_host_names
from leptonctl.inventory.ranges import split_host_port


def test_zero_padded_numeric_range_keeps_the_padding() -> None:
    names = expand_host_pattern("h[01:16]")
    assert names[0] == "h01"
    assert names[-1] == "h16"
    assert len(names) == 16
    assert names[8:10] == ["h09", "h10"]


def test_unpadded_numeric_range_has_no_padding() -> None:
    assert expand_host_pattern("h[1:3]") == ["h1", "h2", "h3"]
    assert expand_host_pattern("n[8:11]") == ["n8", "n9", "n10", "n11"]


def test_letter_range() -> None:
    assert expand_host_pattern("db-[a:f]") == ["db-a", "db-b", "db-c", "db-d", "db-e", "db-f"]


def test_stride_steps_through_the_range() -> None:
    assert expand_host_pattern("h[1:10:2]") == ["h1", "h3", "h5", "h7", "h9"]
    assert expand_host_pattern("x[a:e:2]") == ["xa", "xc", "xe"]


def test_several_ranges_give_the_cartesian_product_leftmost_slowest() -> None:
    assert expand_host_pattern("r[1:2]n[a:b]") == ["r1na", "r1nb", "r2na", "r2nb"]


def test_range_with_a_domain_suffix() -> None:
    assert expand_host_pattern("h[01:03].example.com") == [
        "h01.example.com",
        "h02.example.com",
        "h03.example.com",
    ]


def test_pattern_without_brackets_is_itself() -> None:
    assert expand_host_pattern("gpu01.lab") == ["gpu01.lab"]


def test_comma_list_inside_brackets_mixes_ranges_and_single_items() -> None:
    assert expand_host_pattern("h[01:03,05]") == ["h01", "h02", "h03", "h05"]


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("h[3:1]", "after the end"),
        ("h[a:3]", "both bounds"),
        ("h[01:3", "unclosed"),
        ("h01:3]", "without a matching"),
        ("h[1:]", "no end"),
        ("h[1:5:0]", "stride"),
        ("h[01:100]", "same width"),
        ("h[]", "empty item"),
        ("h[1:2:3:4]", "too many"),
    ],
)
def test_bad_ranges_raise_inventory_error_with_source_and_line(pattern: str, why: str) -> None:
    with pytest.raises(InventoryError) as err:
        expand_host_pattern(pattern, source="hosts.ini", line=7)
    assert err.value.line == 7
    assert err.value.source == "hosts.ini"
    assert str(err.value).startswith("hosts.ini:7: ")
    assert why in str(err.value)
    assert pattern in str(err.value)


def test_split_host_port_reads_name_port_and_leaves_ranges_alone() -> None:
    assert split_host_port("gpu01:2222") == ("gpu01", 2222)
    assert split_host_port("h[01:04]:22") == ("h[01:04]", 22)
    assert split_host_port("h[01:04]") == ("h[01:04]", None)
    assert split_host_port("fe80::1") == ("fe80::1", None)
    assert split_host_port("[2001:db8::5]:2200") == ("2001:db8::5", 2200)


@pytest.mark.parametrize("text", ["gpu01:http", "gpu01:0", "gpu01:70000", "a:b:c"])
def test_split_host_port_rejects_bad_ports(text: str) -> None:
    with pytest.raises(InventoryError) as err:
        split_host_port(text, source="f", line=3)
    assert err.value.line == 3


def test_fold_names_like_clubak() -> None:
    assert fold_host_names(["h01", "h02", "h03", "h05", "db"]) == "db,h[01:03,05]"


def test_fold_is_order_independent_and_ignores_duplicates() -> None:
    names = ["h05", "db", "h02", "h01", "h03", "h02"]
    assert fold_host_names(names) == "db,h[01:03,05]"


def test_fold_keeps_suffixes_and_single_names_plain() -> None:
    names = ["gpu1.lab", "gpu2.lab", "gpu3.lab", "cpu7.lab"]
    assert fold_host_names(names) == "cpu7.lab,gpu[1:3].lab"


def test_fold_crosses_a_digit_boundary_without_padding() -> None:
    assert fold_host_names(["n8", "n9", "n10", "n11"]) == "n[8:11]"


def test_fold_keeps_padded_and_unpadded_numbers_distinct() -> None:
    folded = fold_host_names(["h1", "h01", "h2"])
    assert sorted(expand_host_list(folded)) == ["h01", "h1", "h2"]


def test_fold_of_nothing_is_empty() -> None:
    assert fold_host_names([]) == ""


_NAME = st.builds(
    lambda prefix, number, width, suffix: f"{prefix}{str(number).zfill(width)}{suffix}",
    st.sampled_from(["h", "gpu", "node-", "r1n", "db"]),
    st.integers(min_value=0, max_value=120),
    st.integers(min_value=0, max_value=4),
    st.sampled_from(["", ".lab", "-ib"]),
)


@given(st.lists(_NAME | st.sampled_from(["bastion", "login", "db"]), max_size=40))
def test_fold_then_expand_round_trips(names: list[str]) -> None:
    folded = fold_host_names(names)
    assert sorted(expand_host_list(folded)) == sorted(set(names))
    assert fold_host_names(expand_host_list(folded)) == folded
