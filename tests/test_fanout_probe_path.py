"""The agent's probe runs on every host at every ``status``: its path is kept short.

A plain ``probe`` (what leptonctl sends) imports neither the protocol's registry (wire.py,
three times the interpreter's own start-up) nor argparse nor the other commands' modules,
and answers exactly as the full command line does; anything else on a probe command line
goes to the full parser.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.lepton_agent import cli, wire
from tests.test_agent_probe import build_host_tree

AGENT = Path(__file__).resolve().parents[1] / "agent"

# Runs the agent's entry point as the launcher does, then lists what was imported.
IMPORTS = """
import json, sys
sys.path[0] = sys.argv[1]
from lepton_agent.cli import main
code = main(sys.argv[2:])
sys.stderr.write(json.dumps(sorted(sys.modules)))
sys.exit(code)
"""


def run_entry(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", IMPORTS, str(AGENT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/nonexistent", "LEPTON_AGENT_NO_NVML": "1"},
    )
    last = proc.stderr.splitlines()[-1:] or [""]
    modules = set(json.loads(last[0])) if last[0].startswith("[") else set()  # not on an exit
    return proc, modules


def test_plain_probe_imports_neither_wire_nor_argparse_nor_other_commands(tmp_path):
    proc, modules = run_entry("probe", "--data-dir", str(tmp_path / "data"))
    assert proc.returncode == 0
    document = json.loads(proc.stdout)
    assert document["schema"] == wire.SCHEMA and document["agent_version"] == wire.AGENT_VERSION
    assert "lepton_agent.probe" in modules
    heavy = {"lepton_agent.wire", "lepton_agent.commands", "lepton_agent.ops", "argparse"}
    assert not modules & heavy


def test_other_commands_still_go_through_the_registry(tmp_path):
    proc, modules = run_entry("version")
    assert proc.returncode == 0
    assert json.loads(proc.stdout) == {"schema": wire.SCHEMA, "agent_version": wire.AGENT_VERSION}
    assert "lepton_agent.wire" in modules


def test_the_short_path_answers_as_the_full_parser_does(tmp_path, capsys):
    from agent.lepton_agent import commands

    root, data_dir = tmp_path / "root", tmp_path / "data" / "leptonctl"
    build_host_tree(root, data_dir)
    documents = []
    for main, argv in (
        (cli.main, ["probe", f"--root={root}", "--data-dir", str(data_dir)]),
        (commands.main, ["probe", "--root", str(root), f"--data-dir={data_dir}"]),
    ):
        umask = os.umask(0o022)
        try:
            assert main(argv) == 0
        finally:
            os.umask(umask)  # main sets the agent's 077 for the commands it runs
        document = json.loads(capsys.readouterr().out)
        for varying in ("time", "probe_ms"):
            document.pop(varying)
        document["cpu"].pop("load")
        for disk in document["disks"]:
            disk.pop("free_bytes")  # the real data dir's, which the other run wrote to
        documents.append(document)
    assert documents[0] == documents[1]
    assert documents[0]["cpu"]["threads"] == 8  # from the fake root, not this machine


@pytest.mark.parametrize(
    ("argv", "found"),
    [
        (["probe"], {"--root": "/", "--data-dir": None}),
        (["probe", "--data-dir", "/d"], {"--root": "/", "--data-dir": "/d"}),
        (["probe", "--root=/r", "--data-dir=/d"], {"--root": "/r", "--data-dir": "/d"}),
        (["probe", "--root", "/a", "--root", "/b"], {"--root": "/b", "--data-dir": None}),
        (["probe", "--help"], None),
        (["probe", "--root"], None),
        (["probe", "--root", "--data-dir", "/d"], None),
        (["probe", "extra"], None),
        (["version"], None),
        ([], None),
    ],
)
def test_probe_options_take_only_what_the_full_parser_would_take_alike(argv, found):
    assert cli.probe_options(argv) == found


@pytest.mark.parametrize("argv", [["probe", "--bogus"], ["probe", "--root"]])
def test_unusual_probe_command_lines_get_the_full_parsers_error(argv):
    proc, _ = run_entry(*argv)
    assert proc.returncode == 2
    assert "error" in json.loads(proc.stdout.splitlines()[-1])
