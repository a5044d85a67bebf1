"""The CLI on the embedded default (this machine, no SSH) and its error handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from leptonctl.errors import ExitCode


def test_status_without_inventory_probes_this_machine(
    capsys: pytest.CaptureFixture[str], operator_home: Path
) -> None:
    assert run(["status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (row,) = doc["hosts"]
    assert row["host"] == "localhost" and row["state"] == "up"
    assert row["cpus"] >= 1 and row["memory_bytes"] > 0
    # the probe was kept in the state store under XDG_DATA_HOME, privately
    state = operator_home / ".local" / "share" / "leptonctl" / "state.db"
    assert state.stat().st_mode & 0o777 == 0o600


def test_status_table_on_the_local_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["status"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["HOST", "STATE", "CPU"]
    assert "localhost" in out and " up " in out


def test_state_option_moves_the_store(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    state = tmp_path / "elsewhere.db"
    assert run(["--state", str(state), "status", "--json"]) == 0
    assert state.exists()


def test_exec_runs_locally_and_quotes_words(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["exec", "--json", "--", "printf", "%s|", "a b", "$HOME"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert result["stdout"] == "a b|$HOME|"


def test_malformed_inventory_names_file_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("all:\n  hosts:\n    h1:\n      ansible_port: seventy\n")
    assert run(["-i", str(bad), "status"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert f"{bad}:4" in err and "ansible_port" in err


def test_missing_inventory_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(["-i", str(tmp_path / "nope.ini"), "status"]) == ExitCode.USAGE
    assert "nope.ini" in capsys.readouterr().err


def test_unknown_limit_is_an_error_not_a_no_op(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["status", "--limit", "gpu-nodes"]) == ExitCode.USAGE
    assert "gpu-nodes" in capsys.readouterr().err


def test_inventory_from_environment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[workstations]\nme ansible_connection=local\n")
    monkeypatch.setenv("LEPTONCTL_INVENTORY", str(inventory))
    assert run(["status", "--json", "-l", "workstations"]) == 0
    assert [h["host"] for h in json.loads(capsys.readouterr().out)["hosts"]] == ["me"]


def test_bad_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["status", "--no-such-option"]) == ExitCode.USAGE
    assert run(["--forks", "0", "status"]) == ExitCode.USAGE


def test_exec_without_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["exec"]) == ExitCode.USAGE
