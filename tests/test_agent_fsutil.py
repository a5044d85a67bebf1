"""The agent's JSON files (job specs and states) are read whole: a job spec over 1 MiB (a
big environment) used to be cut at 1 MiB and read as missing, so its job never started."""

from __future__ import annotations

import json
from pathlib import Path

from agent.lepton_agent.fsutil import read_json, write_json_atomic


def test_a_spec_over_one_mib_is_read_whole(tmp_path: Path) -> None:
    spec = {"command": "true", "env": {"BIG": "x" * (3 << 20)}}
    path = tmp_path / "spec.json"
    write_json_atomic(str(path), spec)
    assert path.stat().st_size > 3 << 20
    assert read_json(str(path)) == spec


def test_missing_broken_and_non_object_files_read_as_none(tmp_path: Path) -> None:
    assert read_json(str(tmp_path / "absent.json")) is None
    (tmp_path / "cut.json").write_text(json.dumps({"a": "b"})[:-2])
    assert read_json(str(tmp_path / "cut.json")) is None
    (tmp_path / "list.json").write_text("[1, 2]")
    assert read_json(str(tmp_path / "list.json")) is None
