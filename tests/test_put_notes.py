"""`data put` notes each host it could not use once: a host the survey could not reach was
named twice (once as skipped, once again by the placement)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from tests.test_jobs_warnings import closed_port


def test_an_unreachable_host_is_noted_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = tmp_path / "hosts.ini"
    inv.write_text(
        f"here ansible_connection=local lepton_data_dir={tmp_path / 'data'}\n"
        f"gone ansible_host=127.0.0.1 ansible_port={closed_port()}\n"
    )
    src = tmp_path / "blob"
    src.write_bytes(b"x" * 5000)
    args = ["-i", str(inv), "--state", str(tmp_path / "state.db"), "--connect-timeout", "2"]
    capsys.readouterr()
    assert run([*args, "data", "put", str(src), "blob", "-k", "1", "--json"]) == 0
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert [n for n in notes if n.startswith("gone:")] == [
        "gone: skipped (127.0.0.1 refused the connection)"
    ], notes
