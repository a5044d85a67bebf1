"""Small builders shared by unit tests (plain data only; no hosts, no network)."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType

from leptonctl.core.facts import HostFacts, parse_facts
from leptonctl.inventory.model import DeclaredCapacity, Host

FIXTURES = Path(__file__).parent / "fixtures"


def gpu_facts() -> HostFacts:
    return parse_facts(json.loads((FIXTURES / "probe_h100_synthetic.json").read_text()))


def make_host(name: str, capacity: DeclaredCapacity | None = None, **kw: object) -> Host:
    fields: dict[str, object] = {
        "address": None,
        "port": None,
        "user": None,
        "identity_file": None,
        "connection": "ssh",
        "python": "python3",
        "data_dir": None,
        "groups": ("all", "ungrouped"),
        "vars": MappingProxyType({}),
        "capacity": capacity,
        "source": "test:1",
    }
    fields.update(kw)
    return Host(name=name, **fields)  # type: ignore[arg-type]
