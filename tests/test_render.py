"""Pure renderers: rows in, what an operator reads out (recorded with a real rich Console)."""

from __future__ import annotations

import json

from rich.console import Console

from leptonctl.core.outputs import HostOutput, RunResult, fold_outputs
from leptonctl.core.reports import HostStatus
from leptonctl.errors import CommandFailed, Unreachable
from leptonctl.inventory.model import DeclaredCapacity
from leptonctl.render.documents import exec_document, status_document
from leptonctl.render.execute import exec_report, output_groups
from leptonctl.render.status import bar, dashboard, hosts_table, status_view
from leptonctl.render.units import human_age, human_bytes
from tests.helpers import gpu_facts, make_host

NOW = 1795370100.0


def rendered(renderable: object, width: int = 200) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def rows() -> list[HostStatus]:
    facts = gpu_facts()
    return [
        HostStatus(make_host("gpu07", DeclaredCapacity(cpus=64)), facts, NOW - 5),
        HostStatus(
            make_host("gpu08"),
            facts,
            NOW - 600,
            error=Unreachable("gpu08", "10.0.0.8 refused the connection"),
        ),
        HostStatus(make_host("new"), None, None),
    ]


def test_hosts_table_shows_gpus_states_and_reasons() -> None:
    text = rendered(hosts_table(rows(), NOW), width=300)
    line = {row.split()[0]: row for row in text.splitlines()[1:] if row.strip()}
    assert "up" in line["gpu07"] and "2× H100 80GB HBM3" in line["gpu07"]
    assert "112c/224t (use 64)" in line["gpu07"]
    assert "1× Xilinx/AMD" in line["gpu07"]
    assert "down" in line["gpu08"] and "unreachable" in line["gpu08"]
    assert "pending" in line["new"]


def test_status_view_lists_full_reasons_and_hints_under_the_table() -> None:
    trouble = [r for r in rows() if r.error is not None]
    text = rendered(status_view(rows(), NOW), width=80)
    assert "gpu08: 10.0.0.8 refused the connection (last seen 10m ago)" in text
    assert len(trouble) == 1 and "new:" not in text


def test_dashboard_has_per_gpu_bars() -> None:
    text = rendered(dashboard(rows(), NOW, "leptonctl status"))
    assert "2/3 up" not in text and "1/3 up" in text
    gpu_lines = [line for line in text.splitlines() if line.startswith("gpu07 ")]
    assert any("97%" in line and "700 W" in line for line in gpu_lines)
    # the down host keeps its (dimmed) table row, but gets no live-looking GPU bars
    assert not any("°C" in line for line in text.splitlines() if line.startswith("gpu08"))


def test_bar_fills_in_proportion_and_says_when_unknown() -> None:
    assert bar(50, width=10).plain == "█████░░░░░  50%"
    assert bar(None, width=4).plain.strip() == "n/a"
    assert bar(250, width=4).plain.startswith("████")


def test_status_document_is_json_with_stable_keys() -> None:
    doc = json.loads(json.dumps(status_document(rows(), NOW)))
    up, down, pending = doc["hosts"]
    assert doc["summary"] == {"total": 3, "up": 1, "down": 1}
    assert up["state"] == "up" and up["cpus"] == 224 and len(up["gpus"]) == 2
    assert up["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"
    assert up["capacity"]["cpus"] == 64 and up["capacity"]["source"] == "probe+declared"
    assert down["state"] == "down" and down["error"]["kind"] == "unreachable"
    assert down["gpus"] == [] and down["last_probed_at"] == NOW - 600
    assert pending["state"] == "pending"


def test_fold_outputs_groups_identical_results_in_inventory_order() -> None:
    outputs = [
        HostOutput("h3", 0, b"ok\n", b""),
        HostOutput("h1", 0, b"ok\n", b""),
        HostOutput("h2", 1, b"", b"boom\n"),
    ]
    groups = fold_outputs(outputs, {"h1": 0, "h2": 1, "h3": 2})
    assert [(g.hosts, g.exit_status) for g in groups] == [(("h1", "h3"), 0), (("h2",), 1)]


def test_exec_report_and_document() -> None:
    results = {
        "h1": RunResult("h1", "uptime", 0, "up 3 days\n", ""),
        "h2": RunResult("h2", "uptime", 0, "up 3 days\n", ""),
        "h3": Unreachable("h3", "h3 did not answer within 10 s"),
    }
    order = ["h1", "h2", "h3"]
    groups, errors = output_groups(results, order)
    text = b"".join(exec_report(groups, errors)).decode()
    assert text.count("up 3 days") == 1 and "h[1:2] (2) · exit 0" in text
    assert "h3 · unreachable" in text
    doc = exec_document("uptime", results, order)
    assert doc["summary"] == {"total": 3, "ok": 2}
    assert doc["results"][2]["error"]["kind"] == "unreachable"


def test_command_failed_carries_command_status_and_output_tail() -> None:
    error = CommandFailed("h1", "make -j", 2, "", "a\nb\nerror: no rule\n")
    assert error.to_json()["exit_status"] == 2
    assert "`make -j` failed with exit status 2" in error.message
    assert "error: no rule" in error.message


def test_units_are_human() -> None:
    assert human_bytes(85520809984) == "79.6 GiB"
    assert human_bytes(512) == "512 B"
    assert human_age(7200) == "2h" and human_age(59) == "59s" and human_age(None) == "never"
