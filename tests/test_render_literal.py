"""Everything that came from a user or a host is printed as written, never read as rich markup.

A job named ``[bold red]X[/]`` must print those characters (not a red X), and a command
``echo [/]`` must not crash ``show`` with a ``MarkupError``.  Recorded with a real rich
Console, as an operator's terminal would print them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from rich.console import Console

from leptonctl.cli.app import run
from leptonctl.core.datasets import ReplicaProblem, VerifyReport
from leptonctl.core.netgraph import LinkMeasurement, build_graph
from leptonctl.core.records import JobRecord
from leptonctl.core.reports import DryRun, NodeRow
from leptonctl.core.scheduler import Blocked, Plan
from leptonctl.render.data import verify_table
from leptonctl.render.jobs import job_panel, jobs_table, plan_table
from leptonctl.render.maintain import playbooks_table
from leptonctl.render.net import link_list_table
from leptonctl.render.nodes import nodes_table

NOW = 1_795_370_100.0
MARKUP = "[bold red]X[/]"
CLOSE = "echo [/] :cow: [link=http://evil]y[/link]"


def printed(renderable: object) -> tuple[str, str]:
    """(plain text, text with ANSI styles) as a 300-column colour terminal shows it."""
    console = Console(record=True, width=300, color_system="truecolor", force_terminal=True)
    console.print(renderable)
    return console.export_text(clear=False), console.export_text(styles=True)


def record(**fields: Any) -> JobRecord:
    base: dict[str, Any] = dict(
        id=7, name="job", spec={"command": "true"}, state="PENDING", priority=0,
        submitted=NOW - 60, started=None, ended=None, host=None, allocation=None,
        exit_code=None, reason=None, attempt=0, retries=0, lost_since=None,
        cancel_requested=False, peak_rss_bytes=None,
    )  # fmt: skip
    base.update(fields)
    return JobRecord(**base)


def test_a_job_name_with_markup_prints_as_written_not_in_red() -> None:
    text, styled = printed(jobs_table([record(name=MARKUP, reason=CLOSE)], NOW))
    assert MARKUP in text and CLOSE in text
    assert "\x1b[1;31mX" not in styled  # bold red


def test_show_prints_a_command_with_a_closing_tag_instead_of_crashing() -> None:
    job = record(name=MARKUP, spec={"command": CLOSE}, reason=MARKUP, host="h:cow:")
    text, _ = printed(job_panel(job, NOW))
    assert CLOSE in text and MARKUP in text and "h:cow:" in text
    argv = record(spec={"command": ["sh", "-c", "echo [/]"]})
    assert "sh -c 'echo [/]'" in printed(job_panel(argv, NOW))[0]


def test_a_dry_run_plan_prints_job_names_and_reasons_as_written() -> None:
    plan = Plan(placements=(), unplaceable=(Blocked("0", f"no host: {CLOSE}"),), makespan=0.0)
    text, _ = printed(plan_table(DryRun(plan, {"0": MARKUP}, ())))
    assert MARKUP in text and CLOSE in text


def test_node_reasons_maintain_playbooks_net_errors_and_scrub_details_print_as_written() -> None:
    rows = [NodeRow("gpu01", True, MARKUP, NOW - 5, 0)]
    assert MARKUP in printed(nodes_table(rows, NOW))[0]
    text = printed(playbooks_table([(MARKUP, "/srv/[red]/x.yaml", CLOSE)]))[0]
    assert MARKUP in text and "/srv/[red]/x.yaml" in text and CLOSE in text
    graph = build_graph(
        ["a", "b"], [LinkMeasurement("a", "b", NOW, None, None, CLOSE)], [], now=NOW
    )
    assert CLOSE in printed(link_list_table(graph, ["a", "b"], NOW))[0]
    report = VerifyReport(
        "d", 1, 0, 0, 0.1, (ReplicaProblem("a" * 64, "h1", "corrupt", CLOSE),), ()
    )
    assert CLOSE in printed(verify_table(report))[0]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_jobs_and_show_print_a_stored_name_and_command_as_written(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = cli(capsys, "submit", "--json", "--wait", "--name", MARKUP, "--", "echo [/]")
    assert code == 0, err
    job_id = json.loads(out.splitlines()[0])["id"]
    code, out, err = cli(capsys, "show", str(job_id))
    assert code == 0, err
    assert MARKUP in out and "echo [/]" in out
    code, out, err = cli(capsys, "jobs", "--all")
    assert code == 0 and MARKUP in out


def test_an_error_quoting_what_the_user_wrote_prints_it_as_written(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = cli(capsys, "submit", "--env", ":cow: [b]x[/b]", "--", "true")
    assert code == 2 and ":cow: [b]x[/b]" in err


def test_control_characters_from_a_job_or_host_never_reach_the_terminal() -> None:
    name, message = "a\x1b[31mb", "refused\x1b]0;pwned\x07"
    _, styled = printed(jobs_table([record(name=name, reason=message)], NOW))
    assert "\x1b[31mb" not in styled and "\x1b]0;" not in styled
    assert "a\\x1b[31mb" in styled and "refused\\x1b]0;pwned\\x07" in styled
