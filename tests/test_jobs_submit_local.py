"""``submit`` of a job no host can ever run (on this machine, ``connection: local``): it is
rejected at once with the reason and exit status 1, kept in the history as FAILED."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from leptonctl.errors import ExitCode


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("request_args", "word"),
    [(["--gpus", "1"], "gpu"), (["--cpus", "100000"], "cpu"), (["--mem", "1PiB"], "mem")],
)
def test_an_impossible_request_is_rejected_with_its_reason(
    capsys: pytest.CaptureFixture[str], request_args: list[str], word: str
) -> None:
    code, out, err = cli(capsys, "submit", *request_args, "--", "true")
    assert code == ExitCode.FAILED
    assert "queued" not in out and "started" not in out
    assert "job 1 rejected: can never run" in err and word in err.lower()
    code, out, _ = cli(capsys, "jobs", "--all", "--json")
    (entry,) = json.loads(out)["jobs"]  # kept as history, said so
    assert (entry["id"], entry["state"], entry["started"]) == (1, "FAILED", None)


def test_submit_wait_on_an_impossible_request_says_why_and_does_not_wait(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = cli(capsys, "submit", "--wait", "--json", "--cpus", "100000", "--", "true")
    assert code == ExitCode.FAILED
    (rejected,) = json.loads(out)["rejected"]
    assert rejected["id"] == 1 and "can never run" in rejected["reason"]
    assert "rejected" in err


def test_a_batch_says_which_of_its_jobs_were_rejected(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    batch = tmp_path / "jobs.yaml"
    batch.write_text(
        "jobs:\n  - {name: fine, command: 'true'}\n  - {name: huge, command: x, cpus: 100000}\n"
    )
    code, out, err = cli(capsys, "submit", "--file", str(batch))
    assert code == ExitCode.FAILED
    assert "job 1 " in out and "job 2" not in out
    assert "job 2 rejected" in err
