"""Commands import only what they use: `--version` and `--help` load no command module and
none of the heavy packages; `jobs` on the local default loads no SSH stack and no graph
library; the lazy command table says what the commands themselves say.

Each check runs leptonctl in a fresh interpreter and reads ``sys.modules`` at its end (a
behaviour, not a timing: benchmarks/bench_startup.py measures the time).  About 2 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.core import TyperCommand

from leptonctl.cli.app import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("asyncssh", "networkx", "yaml", "rich", "psycopg")
COMMAND_MODULES = tuple(sorted({c.module for c in COMMANDS}))

PROBE = """
import json, sys
from leptonctl.cli.app import run
code = run({argv!r})
print("\\n@@" + json.dumps({{"code": code, "modules": sorted(sys.modules)}}))
"""


def loaded_by(argv: list[str], home: Path) -> tuple[int, set[str]]:
    """Run ``leptonctl argv`` in a fresh interpreter; its exit code and loaded modules."""
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "100",
    }
    for name in ("LEPTONCTL_INVENTORY", "LEPTONCTL_STATE"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)],
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.rpartition("\n@@")[2])
    return int(report["code"]), set(report["modules"])


def packages(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


@pytest.mark.parametrize("argv", [["--version"], ["--help"], []], ids=["version", "help", "bare"])
def test_version_and_help_load_no_command_and_no_heavy_package(
    argv: list[str], tmp_path: Path
) -> None:
    code, modules = loaded_by(argv, tmp_path)
    assert code in (0, 2)  # bare `leptonctl` prints the help as a usage error
    assert packages(modules) & set(HEAVY) == set()
    assert modules & set(COMMAND_MODULES) == set()
    assert "leptonctl.cli.context" not in modules


def test_jobs_on_the_local_default_loads_no_ssh_stack_and_no_graph(tmp_path: Path) -> None:
    code, modules = loaded_by(["jobs", "--json"], tmp_path)
    assert code == 0
    assert "leptonctl.cli.jobs" in modules  # it did run the command
    assert packages(modules) & {"asyncssh", "networkx", "psycopg"} == set()


def test_node_list_and_a_local_job_load_no_ssh_stack_and_no_graph(tmp_path: Path) -> None:
    """On the local default, nothing needs SSH: listing nodes, running a job to its end and
    showing it as JSON load neither asyncssh nor networkx (nor rich and PyYAML for JSON)."""
    for argv in (["node", "list", "--json"], ["submit", "--wait", "--", "true"]):
        code, modules = loaded_by(argv, tmp_path)
        assert code == 0, argv
        assert packages(modules) & {"asyncssh", "networkx", "psycopg"} == set(), argv
    code, modules = loaded_by(["show", "1", "--json"], tmp_path)
    assert code == 0
    assert packages(modules) & set(HEAVY) == set()


# What a reading command with nothing to plan must not load: the scheduler and the job
# views built on it, the facts parser, the job spec, the reports, the start machinery and
# the documents of every other command (issue 14 item 1).
PLANNING = (
    "leptonctl.core.scheduler",
    "leptonctl.core.jobviews",
    "leptonctl.core.facts",
    "leptonctl.core.capacity",
    "leptonctl.core.jobspec",
    "leptonctl.core.reports",
    "leptonctl.services.jobs.operations",
    "leptonctl.services.jobs.starts",
    "leptonctl.render.documents",
)


def test_reading_jobs_with_nothing_queued_loads_no_planner_and_no_rich_into_a_pipe(
    tmp_path: Path,
) -> None:
    """With only finished jobs in the store, `jobs`, `show` and their --json load none of
    PLANNING, and printing a table into a pipe (not a terminal) loads no rich."""
    assert loaded_by(["submit", "--wait", "--", "true"], tmp_path)[0] == 0
    for argv in (
        ["jobs"],
        ["jobs", "--all"],
        ["jobs", "--json"],
        ["show", "1"],
        ["show", "1", "--json"],
    ):
        code, modules = loaded_by(argv, tmp_path)
        assert code == 0, argv
        assert modules & set(PLANNING) == set(), argv
        assert packages(modules) & set(HEAVY) == set(), argv


def test_node_list_loads_no_planner_and_no_rich_into_a_pipe(tmp_path: Path) -> None:
    for argv in (["node", "list"], ["node", "list", "--json"]):
        code, modules = loaded_by(argv, tmp_path)
        assert code == 0, argv
        assert modules & (set(PLANNING) - {"leptonctl.core.reports"}) == set(), argv
        assert packages(modules) & set(HEAVY) == set(), argv


def test_a_pending_job_still_gets_planned_by_a_reading_command(tmp_path: Path) -> None:
    """The lazy imports change nothing a pass does: with a job waiting (`--after` a job
    still running), `jobs` observes and plans, loading the scheduler."""
    assert loaded_by(["submit", "--", "sleep 60"], tmp_path)[0] == 0  # job 1 runs
    try:
        assert loaded_by(["submit", "--after", "1", "--", "true"], tmp_path)[0] == 0
        code, modules = loaded_by(["jobs"], tmp_path)
        assert code == 0
        assert "leptonctl.core.scheduler" in modules
    finally:
        loaded_by(["cancel", "1", "2"], tmp_path)


def test_the_priority_bound_is_the_job_specs() -> None:
    """`submit --priority/--retries` bounds, written in cli.jobs without importing the
    job spec, are the store's (core.jobspec.MAX_INT)."""
    from leptonctl.cli.jobs import MAX_INT
    from leptonctl.core.jobspec import MAX_INT as SPEC_MAX_INT

    assert MAX_INT == SPEC_MAX_INT


def test_a_command_loads_its_own_module_only(tmp_path: Path) -> None:
    code, modules = loaded_by(["state", "--help"], tmp_path)
    assert code == 0
    assert modules & set(COMMAND_MODULES) == {"leptonctl.cli.state"}


@pytest.mark.parametrize("entry", COMMANDS, ids=[c.name for c in COMMANDS])
def test_the_lazy_table_says_what_each_command_says(entry: object) -> None:
    """The one-line help `leptonctl --help` prints from the table is the command's own,
    at every width, and a group entry is a group."""
    from leptonctl.cli.app import LazyCommand

    assert isinstance(entry, LazyCommand)
    real = entry.load()
    stand_in = TyperCommand(name=entry.name, help=entry.help)
    assert real.name == entry.name
    for width in (30, 45, 60, 80, 10**6):
        assert stand_in.get_short_help_str(width) == real.get_short_help_str(width)
    assert hasattr(real, "list_commands") is entry.group
    assert dict(real.context_settings).get("ignore_unknown_options", False) is bool(
        entry.context_settings.get("ignore_unknown_options", False)
    )


def test_every_command_module_is_in_the_table() -> None:
    """A command module under leptonctl/cli/ that defines commands is registered (a new
    one left out of the table would never be reachable)."""
    cli = ROOT / "leptonctl" / "cli"
    defining = {
        f"leptonctl.cli.{p.stem}"
        for p in cli.glob("*.py")
        if "typer.Argument(" in p.read_text(encoding="utf-8")
        or "typer.Typer(" in p.read_text(encoding="utf-8")
    } - {"leptonctl.cli.app", "leptonctl.cli.context"}
    assert defining - set(COMMAND_MODULES) == set()


def test_help_lists_every_command_with_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    from leptonctl.cli.app import run

    assert run(["--help"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.partition("Commands:")[2].splitlines() if line]
    assert listed == [c.name for c in COMMANDS]


def test_a_mistyped_command_is_a_usage_error_that_suggests_the_right_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from leptonctl.cli.app import run

    assert run(["jbos"]) == 2
    assert "Did you mean 'jobs'?" in capsys.readouterr().err
