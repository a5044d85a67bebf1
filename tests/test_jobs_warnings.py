"""`jobs` beside a host it cannot reach: the warning carries the error's own message and hint
(an interpreter that is missing, a refused connection), not only its kind."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from leptonctl.cli.app import run


def closed_port() -> int:
    """A local TCP port nobody listens on: a host there refuses the connection at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_jobs_names_why_a_host_is_unreachable_and_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = tmp_path / "hosts.ini"
    inv.write_text(f"h1 ansible_host=127.0.0.1 ansible_port={closed_port()}\n")
    args = ["-i", str(inv), "--state", str(tmp_path / "state.db"), "--connect-timeout", "2"]
    assert run([*args, "submit", "--", "true"]) == 0  # never probed: pending, not rejected
    capsys.readouterr()
    assert run([*args, "jobs"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "warning: h1: 127.0.0.1 refused the connection" in err, err
    assert "(unreachable); its jobs are as last seen" in err
    assert "hint: is sshd running on that port?" in err
