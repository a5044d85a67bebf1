"""A table printed into a pipe is plain aligned columns (no rich loaded, see
test_lazy_imports.py): the same cells, in the same places, as a wide terminal shows,
less the colour; every cell literal.  The JSON documents of the reading commands are the
ones render.documents makes.  About 1 s.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from rich.console import Console

from leptonctl.cli.app import run
from leptonctl.core.records import JobRecord
from leptonctl.core.reports import NodeRow
from leptonctl.render import documents, job_documents
from leptonctl.render.columns import cell_width, plain_table
from leptonctl.render.jobs import JOB_COLUMNS, job_panel, job_rows, jobs_table, panel_rows
from leptonctl.render.nodes import NODE_COLUMNS, node_lines, nodes_table

NOW = 1_795_370_100.0


def record(**fields: Any) -> JobRecord:
    base: dict[str, Any] = dict(
        id=7, name="job", spec={"command": "true"}, state="PENDING", priority=0,
        submitted=NOW - 60, started=None, ended=None, host=None, allocation=None,
        exit_code=None, reason=None, attempt=0, retries=0, lost_since=None,
        cancel_requested=False, peak_rss_bytes=None,
    )  # fmt: skip
    base.update(fields)
    return JobRecord(**base)


RECORDS = [
    record(),
    record(
        id=12,
        name="训练 [bold]x[/]",
        state="RUNNING",
        host="gpu-01",
        started=NOW - 3700,
        allocation={
            "cpus": 2,
            "cores": [0, 1],
            "gpus": [0],
            "memory_bytes": 2**30,
            "containment": {"cpus": [0, 1], "memory": "cgroup"},
        },
        spec={"command": ["python", "t.py"], "inputs": [{"name": "d", "version": 2}]},
    ),
    record(id=1003, name="done", state="FAILED", host="h", exit_code=3, reason="exit 3"),
]


def terminal(renderable: object) -> list[str]:
    """What a 300-column terminal shows, without colour, trailing blanks dropped."""
    console = Console(record=True, width=300, color_system=None, force_terminal=True)
    console.print(renderable)
    return [line.rstrip() for line in console.export_text().splitlines()]


def test_columns_are_aligned_by_terminal_cells_and_literal() -> None:
    lines = plain_table(("A", "B"), [("训练", "x\x1b[31m"), ("abcdef", "")])
    assert lines == ["A      B", "训练   x\\x1b[31m", "abcdef"]
    assert cell_width("训练") == 4 and cell_width("e\u0301") == 1


@pytest.mark.parametrize(
    ("rich_view", "plain"),
    [
        (
            lambda: jobs_table(RECORDS, NOW),
            lambda: plain_table(JOB_COLUMNS, job_rows(RECORDS, NOW)),
        ),
        (
            lambda: job_panel(RECORDS[1], NOW),
            lambda: plain_table(None, panel_rows(RECORDS[1], NOW), gap=2),
        ),
        (
            lambda: nodes_table([NodeRow("a", True, "fan", NOW - 90, 0)], NOW),
            lambda: plain_table(
                NODE_COLUMNS, node_lines([NodeRow("a", True, "fan", NOW - 90, 0)], NOW)
            ),
        ),
    ],
    ids=["jobs", "show", "node-list"],
)
def test_a_pipe_gets_what_a_wide_terminal_shows_less_the_colour(rich_view: Any, plain: Any) -> None:
    assert plain() == terminal(rich_view())


def test_the_queue_into_a_pipe_is_plain_columns(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["submit", "--name", "evil\x1b[2J[red]x", "--wait", "--", "true"]) == 0
    capsys.readouterr()
    assert run(["jobs", "--all"]) == 0
    out = capsys.readouterr().out
    header, row = out.splitlines()
    assert header.split() == list(JOB_COLUMNS)
    assert "evil\\x1b[2J[red]x" in row and "\x1b" not in out  # literal, escaped, no colour
    assert row.index("COMPLETED") == header.index("STATE")
    assert out == out.replace(" \n", "\n")  # no trailing blanks
    assert run(["show", "1"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[:2] == ["id" + " " * 12 + "1", "name" + " " * 10 + "evil\\x1b[2J[red]x"]


def test_the_reading_commands_documents_are_render_documents(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for r in RECORDS:
        assert job_documents.job_document(r) == documents.job_document(r)
    assert job_documents.jobs_document(RECORDS) == documents.jobs_document(RECORDS)
    rows = [NodeRow("a", True, "fan", NOW, 1), NodeRow("b", False, None, None, 0)]
    assert job_documents.nodes_document(rows) == documents.nodes_document(rows)
    assert run(["submit", "--wait", "--", "true"]) == 0
    capsys.readouterr()
    assert run(["show", "1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == 1 and shown["state"] == "COMPLETED"
