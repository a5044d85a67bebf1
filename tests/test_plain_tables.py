"""A table printed into a pipe is plain aligned columns (no rich loaded, see
test_lazy_imports.py): the same cells, in the same places, as a wide terminal shows,
less the colour; every cell literal.  On a terminal it fits, the same columns in the rich
table's styles, still without rich.  About 10 s (a few fresh interpreters on a pseudo-terminal).
"""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from leptonctl.cli.app import run
from leptonctl.core.records import JobRecord
from leptonctl.core.reports import NodeRow
from leptonctl.render import job_documents
from leptonctl.render.columns import cell_width, plain_table
from leptonctl.render.jobs import (
    JOB_COLUMNS,
    job_panel,
    job_rows,
    job_style,
    jobs_table,
    panel_rows,
    panel_style,
)
from leptonctl.render.nodes import NODE_COLUMNS, node_lines, node_style, nodes_table

ROOT = Path(__file__).resolve().parent.parent

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


def test_show_json_of_a_finished_job_comes_from_the_light_documents(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = [NodeRow("a", True, "fan", NOW, 1), NodeRow("b", False, None, None, 0)]
    nodes = job_documents.nodes_document(rows)["nodes"]
    assert [(n["host"], n["state"], n["jobs"]) for n in nodes] == [
        ("a", "drained", 1),
        ("b", "active", 0),
    ]
    assert run(["submit", "--wait", "--", "true"]) == 0
    capsys.readouterr()
    assert run(["show", "1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == 1 and shown["state"] == "COMPLETED"


def styled(ansi: str) -> list[tuple[str, frozenset[str]]]:
    """Each visible character of terminal output with the SGR codes in force (blanks,
    whose style cannot be seen, left out)."""
    shown: list[tuple[str, frozenset[str]]] = []
    codes: set[str] = set()
    at = 0
    while at < len(ansi):
        if ansi.startswith("\x1b[", at):
            end = ansi.index("m", at)
            params = ansi[at + 2 : end]
            codes = set() if params in ("", "0") else codes | set(params.split(";"))
            at = end + 1
            continue
        if not ansi[at].isspace():
            shown.append((ansi[at], frozenset(codes)))
        at += 1
    return shown


NODES = [NodeRow("a", True, "fan", NOW - 90, 0), NodeRow("b", False, None, None, 2)]


@pytest.mark.parametrize(
    ("rich_view", "ours"),
    [
        (
            lambda: jobs_table(RECORDS, NOW),
            lambda: plain_table(JOB_COLUMNS, job_rows(RECORDS, NOW), style=job_style),
        ),
        (
            lambda: job_panel(RECORDS[1], NOW),
            lambda: plain_table(None, panel_rows(RECORDS[1], NOW), gap=2, style=panel_style),
        ),
        (
            lambda: nodes_table(NODES, NOW),
            lambda: plain_table(NODE_COLUMNS, node_lines(NODES, NOW), style=node_style),
        ),
    ],
    ids=["jobs", "show", "node-list"],
)
def test_a_terminal_gets_the_rich_tables_styles_without_rich(rich_view: Any, ours: Any) -> None:
    """Where the table fits the terminal, the lines printed without rich show every
    character in the colour and weight the rich table gives it."""
    out = io.StringIO()
    Console(file=out, width=300, color_system="standard", force_terminal=True).print(rich_view())
    assert styled("\n".join(ours())) == styled(out.getvalue())


PROBE = (
    "import sys\n"
    "from leptonctl.cli.app import run\n"
    "code = run(sys.argv[1:])\n"
    "print('@@', code, 'rich' in sys.modules, file=sys.stderr)\n"
)


def on_a_terminal(argv: list[str], home: Path, **env: str) -> tuple[str, str]:
    """Run leptonctl with its stdout on a pseudo-terminal: (what it showed, its exit code
    and whether it loaded rich)."""
    main, child = pty.openpty()
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LEPTONCTL_")},
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "PYTHONPATH": str(ROOT),
        "TERM": "xterm",
        **env,
    }
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        if name not in env:
            environ.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        stdout=child,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
        cwd=home,
        timeout=60,
    )
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    return b"".join(chunks).decode(), done.stderr.rpartition("@@")[2].strip()


def test_the_queue_on_a_terminal_is_styled_without_rich_unless_too_wide(tmp_path: Path) -> None:
    """On a terminal the queue is the styled columns (no rich) when it fits; a terminal
    too narrow for it, or NO_COLOR, gets rich's own table."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LEPTONCTL_")}
    environ.update(
        HOME=str(tmp_path),
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        PYTHONPATH=str(ROOT),
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "submit", "--name", "x" * 30, "--wait", "--", "true"],
        env=environ,
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    shown, said = on_a_terminal(["jobs", "--all"], tmp_path, COLUMNS="200")
    assert said == "0 False"
    assert "\x1b[1mID\x1b[0m" in shown and "\x1b[2;32mCOMPLETED\x1b[0m" in shown
    shown, said = on_a_terminal(["jobs", "--all"], tmp_path, COLUMNS="40")
    assert said == "0 True"  # too wide for 40 columns: rich wraps it
    _, said = on_a_terminal(["jobs", "--all"], tmp_path, COLUMNS="200", NO_COLOR="1")
    assert said == "0 True"
