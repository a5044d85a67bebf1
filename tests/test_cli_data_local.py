"""`data` on the local default (no SSH, no root): versions, keep-last, get, errors."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from leptonctl.errors import ExitCode


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())  # rich wraps long messages


def chunk_dir(home: Path) -> Path:
    return home / ".local" / "share" / "leptonctl" / "chunks"


def on_disk(home: Path) -> set[str]:
    return {p.name for p in chunk_dir(home).rglob("*") if len(p.name) == 64}


def test_keep_last_removes_old_versions_and_their_chunks(
    capsys: pytest.CaptureFixture[str], operator_home: Path, tmp_path: Path
) -> None:
    src = tmp_path / "weights.bin"
    contents = [os.urandom(5000) for _ in range(3)]
    for data in contents:
        src.write_bytes(data)
        code, out, err = cli(capsys, "data", "put", str(src), "w", "--json")
        assert code == 0, err
    assert on_disk(operator_home) == {hashlib.sha256(d).hexdigest() for d in contents}
    code, out, _ = cli(capsys, "data", "rm", "w", "--keep-last", "2", "--json")
    assert code == 0
    assert json.loads(out)["versions"] == [1]
    assert on_disk(operator_home) == {hashlib.sha256(d).hexdigest() for d in contents[1:]}
    src.write_bytes(os.urandom(5000))
    code, out, _ = cli(capsys, "data", "put", str(src), "w", "--keep-last", "1", "--json")
    assert code == 0
    assert json.loads(out)["pruned"]["versions"] == [2, 3]
    assert on_disk(operator_home) == {hashlib.sha256(src.read_bytes()).hexdigest()}
    code, _, err = cli(capsys, "data", "get", "w@2", str(tmp_path / "gone"))
    assert code == ExitCode.USAGE and "no dataset w@2" in err
    assert cli(capsys, "data", "get", "w", str(tmp_path / "latest"))[0] == 0
    assert (tmp_path / "latest").read_bytes() == src.read_bytes()


def test_bad_names_and_missing_sources_are_usage_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = cli(capsys, "data", "put", str(tmp_path / "nope"), "x")
    assert code == ExitCode.USAGE and "no such file or directory" in err
    (tmp_path / "f").write_bytes(b"x")
    code, _, err = cli(capsys, "data", "put", str(tmp_path / "f"), "-bad")
    assert code == ExitCode.USAGE
    code, _, err = cli(capsys, "data", "put", str(tmp_path / "f"), "x", "--chunk-size", "1KiB")
    assert code == ExitCode.USAGE and "too small" in err
    code, _, err = cli(capsys, "data", "ls", "unknown")
    assert code == ExitCode.USAGE and "no dataset unknown" in err


def test_a_put_waits_while_a_deleting_command_holds_the_data_lock(
    capsys: pytest.CaptureFixture[str], operator_home: Path, tmp_path: Path
) -> None:
    state = operator_home / ".local" / "share" / "leptonctl" / "state.db"
    assert cli(capsys, "data", "ls")[0] == 0  # creates the store
    released = tmp_path / "released"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(state) + ".data.lock", str(released)],
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
    src = tmp_path / "f"
    src.write_bytes(b"payload")
    assert cli(capsys, "data", "put", str(src), "waited")[0] == 0
    finished = time.time()
    holder.wait()
    assert finished >= float(released.read_text())  # the put ran only after the release


HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(1.0)
open(sys.argv[2], "w").write(repr(time.time()))
os.close(fd)
"""
