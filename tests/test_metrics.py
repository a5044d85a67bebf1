"""The Prometheus text exposition, read back with prometheus_client's own parser."""

from __future__ import annotations

import math
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leptonctl.core.metrics import (
    METRICS_FILE,
    HostSample,
    MetricsSnapshot,
    ReplicaHealth,
    RunSample,
    format_value,
    render_metrics,
)
from leptonctl.services.maintain.run import write_metrics
from tests.helpers import gpu_facts

parser = pytest.importorskip("prometheus_client.parser")


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """name -> [(labels, value)], from the real parser; also checks HELP/TYPE are there."""
    families = {}
    for family in parser.text_string_to_metric_families(text):
        assert family.type == "gauge" and family.documentation, family.name
        families[family.name] = [(s.labels, s.value) for s in family.samples]
    return families


def snapshot(**changes: object) -> MetricsSnapshot:
    base = MetricsSnapshot(
        hosts=[
            HostSample("gpu07", True, True, False, gpu_facts(), 12.5),
            HostSample("cpu01", False, None, True, None, None),
        ],
        jobs={"PENDING": 3, "RUNNING": 2, "COMPLETED": 40, "NODE_FAIL": 0},
        replicas=ReplicaHealth({"ok": 900, "corrupt": 2}, under_replicated=5, without_replica=1),
        run=RunSample(started=1795370000.0, duration_s=4.25, exit_code=3),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_hosts_gpus_jobs_replicas_and_the_run_parse_with_the_real_parser() -> None:
    families = parse(render_metrics(snapshot()))
    assert families["leptonctl_host_up"] == [({"host": "gpu07"}, 1.0), ({"host": "cpu01"}, 0.0)]
    assert families["leptonctl_host_healthy"] == [({"host": "gpu07"}, 1.0)]  # cpu01: unknown
    assert families["leptonctl_host_drained"] == [
        ({"host": "gpu07"}, 0.0),
        ({"host": "cpu01"}, 1.0),
    ]
    assert families["leptonctl_host_memory_bytes"] == [({"host": "gpu07"}, 2164663537664.0)]
    utilization = dict(
        (labels["gpu"], value) for labels, value in families["leptonctl_gpu_utilization_ratio"]
    )
    facts = gpu_facts()
    assert utilization == {str(g.index): (g.utilization_pct or 0) / 100 for g in facts.gpus}
    labels, used = families["leptonctl_gpu_memory_used_bytes"][0]
    assert labels == {
        "host": "gpu07",
        "gpu": "0",
        "model": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-0b1c2d3e-0000-1111-2222-333344445555",
    }
    assert used == facts.gpus[0].memory_used_bytes
    assert len(families["leptonctl_gpu_ecc_uncorrected_errors"]) == 1  # GPU 1 reports none
    assert dict((lb["state"], v) for lb, v in families["leptonctl_jobs"]) == {
        "COMPLETED": 40.0, "NODE_FAIL": 0.0, "PENDING": 3.0, "RUNNING": 2.0,
    }  # fmt: skip
    assert families["leptonctl_replicas"] == [({"state": "corrupt"}, 2.0), ({"state": "ok"}, 900.0)]
    assert families["leptonctl_chunks_under_replicated"] == [({}, 5.0)]
    assert families["leptonctl_maintenance_last_run_exit_code"] == [({}, 3.0)]
    assert families["leptonctl_maintenance_last_run_duration_seconds"] == [({}, 4.25)]


def test_every_family_is_declared_once_before_its_samples() -> None:
    text = render_metrics(snapshot())
    seen: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            assert name not in seen
            seen.add(name)
        elif not line.startswith("#"):
            assert line.split("{")[0].split(" ")[0] in seen
    assert text.endswith("\n")


def test_optional_parts_are_left_out() -> None:
    families = parse(render_metrics(snapshot(replicas=None, run=None, hosts=[])))
    assert "leptonctl_replicas" not in families
    assert "leptonctl_maintenance_last_run_exit_code" not in families
    assert families["leptonctl_host_up"] == []


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=20), st.text(max_size=20))
def test_label_values_survive_escaping(host: str, model: str) -> None:
    facts = gpu_facts()
    gpus = (replace(facts.gpus[0], name=model),)
    sample = HostSample(host, True, None, False, replace(facts, gpus=gpus), 0.0)
    families = parse(render_metrics(snapshot(hosts=[sample])))
    assert families["leptonctl_host_up"] == [({"host": host}, 1.0)]
    ((labels, _),) = families["leptonctl_gpu_temperature_celsius"]
    assert (labels["host"], labels["model"]) == (host, model)


def test_special_values_are_written_the_prometheus_way() -> None:
    assert [format_value(v) for v in (math.nan, math.inf, -math.inf, 3.0, 0.25)] == [
        "NaN", "+Inf", "-Inf", "3", "0.25",
    ]  # fmt: skip
    (family,) = parser.text_string_to_metric_families(f"x {format_value(math.inf)}\n")
    assert family.samples[0].value == math.inf


def test_the_file_is_replaced_atomically_and_readable_by_node_exporter(tmp_path: Path) -> None:
    directory = tmp_path / "textfile"
    first = write_metrics(directory, "a 1\n")
    assert first == directory / METRICS_FILE and first.read_text() == "a 1\n"
    inode = os.stat(first).st_ino
    write_metrics(directory, "a 2\n")
    assert first.read_text() == "a 2\n" and os.stat(first).st_ino != inode  # renamed into place
    assert stat.S_IMODE(first.stat().st_mode) == 0o644
    assert sorted(p.name for p in directory.iterdir()) == [METRICS_FILE]  # no temp file left
