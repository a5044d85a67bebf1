"""`node drain/resume/list` on the local default: a drained host gets no new jobs."""

from __future__ import annotations

import json

import pytest

from leptonctl.cli.app import run
from leptonctl.errors import ExitCode


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def show(capsys: pytest.CaptureFixture[str], job_id: int) -> dict:
    return json.loads(cli(capsys, "show", str(job_id), "--json")[1])


def test_a_drained_host_gets_no_new_jobs_until_resumed(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "node", "drain", "localhost", "--reason", "fan swap")
    assert code == 0 and "localhost" in out
    _, out, _ = cli(capsys, "node", "list", "--json")
    (node,) = json.loads(out)["nodes"]
    assert (node["host"], node["state"], node["reason"]) == ("localhost", "drained", "fan swap")

    job_id = json.loads(cli(capsys, "submit", "--json", "--", "true")[1])["id"]
    doc = show(capsys, job_id)
    assert doc["state"] == "PENDING" and "drained" in (doc["reason"] or "")

    assert cli(capsys, "node", "resume", "localhost")[0] == 0
    assert cli(capsys, "schedule")[0] == 0
    assert show(capsys, job_id)["state"] in ("RUNNING", "COMPLETED")
    _, out, _ = cli(capsys, "node", "list")
    assert "active" in out and "fan swap" not in out


def test_draining_waits_for_running_jobs_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    job_id = json.loads(cli(capsys, "submit", "--json", "--", "sleep 1")[1])["id"]
    code, out, _ = cli(capsys, "node", "drain", "localhost", "--wait")
    assert code == 0 and "no jobs left" in out
    assert show(capsys, job_id)["state"] == "COMPLETED"  # it was left to finish


def test_draining_an_unknown_host_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "node", "drain", "gpu99")
    assert code == ExitCode.USAGE and "gpu99" in err
