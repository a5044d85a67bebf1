"""Inventories: Ansible-compatible YAML and INI host lists, and ``--limit`` selectors.

Everything here is pure (text in, data out) except :func:`load_inventory`,
which reads the inventory file and its adjacent ``group_vars``/``host_vars``.
"""

from __future__ import annotations

from leptonctl.inventory.capacity import parse_capacity, parse_size
from leptonctl.inventory.limit import select_hosts, split_limit
from leptonctl.inventory.load import (
    DEFAULT_SOURCE,
    default_inventory,
    detect_format,
    load_inventory,
    parse_inventory,
)
from leptonctl.inventory.model import (
    DeclaredCapacity,
    Host,
    Inventory,
    LeftOutHost,
    describe_left_out,
)
from leptonctl.inventory.ranges import expand_host_list, expand_host_pattern, fold_host_names

__all__ = [
    "DEFAULT_SOURCE",
    "DeclaredCapacity",
    "Host",
    "Inventory",
    "LeftOutHost",
    "default_inventory",
    "describe_left_out",
    "detect_format",
    "expand_host_list",
    "expand_host_pattern",
    "fold_host_names",
    "load_inventory",
    "parse_capacity",
    "parse_inventory",
    "parse_size",
    "select_hosts",
    "split_limit",
]
