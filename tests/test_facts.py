"""The agent's wire format is read into typed facts, and version skew is refused clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leptonctl.core.facts import SUPPORTED_SCHEMA, WireError, parse_facts

FIXTURE = Path(__file__).parent / "fixtures" / "probe_h100_synthetic.json"


def load() -> dict:
    return json.loads(FIXTURE.read_text())


def test_gpu_host_document_reads_into_typed_facts() -> None:
    facts = parse_facts(load())
    assert facts.hostname == "gpu07"
    assert facts.cpu.cores == 112 and facts.cpu.threads == 224
    assert [g.name for g in facts.gpus] == ["NVIDIA H100 80GB HBM3"] * 2
    assert facts.gpus[0].processes[0].pid == 4242
    assert facts.gpus[1].ecc_uncorrected is None
    assert facts.fpgas[0].functions == ("0000:3b:00.0", "0000:3b:00.1")
    assert facts.fpgas[0].pci_class == "0x120000"
    assert facts.data_disk is not None and facts.data_disk.mount == "/home"
    assert facts.gpu_driver_version == "580.159.04"


def test_newer_schema_is_refused_with_an_upgrade_hint() -> None:
    doc = load() | {"schema": SUPPORTED_SCHEMA + 1}
    with pytest.raises(WireError, match="upgrade leptonctl"):
        parse_facts(doc)


def test_missing_optional_sections_read_as_empty() -> None:
    doc = load()
    for key in ("gpus", "fpgas", "disks", "gpu_driver", "unavailable", "os", "probe_ms"):
        del doc[key]
    facts = parse_facts(doc)
    assert facts.gpus == () and facts.fpgas == () and facts.data_disk is None
    assert facts.os_release is None and facts.probe_ms is None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("cpu"), "malformed"),
        (lambda d: d.pop("schema"), "schema"),
        (lambda d: d.update(error="disk on fire"), "disk on fire"),
        (lambda d: d["memory"].update(total_bytes="lots"), "malformed"),
    ],
)
def test_broken_documents_raise_wire_errors(mutate, message: str) -> None:
    doc = load()
    mutate(doc)
    with pytest.raises(WireError, match=message):
        parse_facts(doc)


def test_non_object_is_refused() -> None:
    with pytest.raises(WireError, match="JSON object"):
        parse_facts([1, 2])
