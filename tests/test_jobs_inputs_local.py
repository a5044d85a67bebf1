"""A job's inputs on this machine (``connection: local``): ``show`` lists each dataset as
name@version and where it is mounted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leptonctl.cli.app import run


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_show_lists_the_inputs_with_version_and_mount(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # the table does not fold the long path
    for name in ("words", "more"):
        src = tmp_path / name
        src.write_text(f"{name}\n")
        code, _, err = cli(capsys, "data", "put", str(src), name, "--replicas", "1")
        assert code == 0, err
    mount = tmp_path / "mounted-words"
    code, out, err = cli(
        capsys, "submit", "--json", "--wait", "--input", f"words:{mount}", "--input", "more",
        "--", "cat $LEPTON_INPUT_WORDS",
    )  # fmt: skip
    assert code == 0, err
    job_id = json.loads(out.splitlines()[0])["id"]
    code, out, _ = cli(capsys, "show", "--json", str(job_id))
    assert json.loads(out)["inputs"] == [
        {"name": "words", "version": 1, "mount": str(mount)},
        {"name": "more", "version": 1, "mount": None},
    ]
    code, out, _ = cli(capsys, "show", str(job_id))
    assert f"words@1 -> {mount}, more@1 -> inputs/more@1" in out
