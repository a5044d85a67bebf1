"""Small builders shared by tests: plain data, a tree's listing, one in-process CLI call."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import MappingProxyType

import pytest

from leptonctl.cli.app import run
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


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())


def tree_listing(root: Path) -> dict[str, tuple[str, int, str]]:
    """rel path -> (kind, mode, sha256 of a file or a link's target)."""
    out: dict[str, tuple[str, int, str]] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = ("link", 0, os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir", path.stat().st_mode & 0o777, "")
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[rel] = ("file", path.stat().st_mode & 0o777, digest)
    return out
