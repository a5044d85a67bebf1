"""Nothing leptonctl writes on a host is readable by other users, and nothing needs root: a
put, a job with logs and an input, a host-to-host copy and a `data get`, all as the cluster
profile's non-root user (shared /home, node-local /scratch), and then every file and directory
leptonctl made on every host — agent cache, data dir, chunks, job dirs and logs, staged
inputs, transfer files — is checked for group/other bits."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from tests.conftest import write_inventory
from tests.lab import USER_UID, Lab

pytestmark = pytest.mark.lab


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())


def exposed(root: Path) -> list[str]:
    """Paths under ``root`` (itself included) that are not the lab user's, directories that
    another user could list or enter, and files another user could read.  A staged input
    keeps the modes its dataset recorded, so what is inside ``inputs/NAME@V`` is private
    through ``inputs/`` itself (checked like every other directory)."""
    found = []
    for path in (root, *root.rglob("*")):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue  # a link's own mode means nothing; its target is checked on its own
        parts = path.relative_to(root).parts
        staged = parts[:1] == ("inputs",) and (len(parts) > 2 or stat.S_ISREG(st.st_mode))
        kept = staged  # inside a staged input tree (inputs/NAME@V/...): the dataset's modes
        if st.st_uid != USER_UID or (st.st_mode & 0o077 and not kept):
            found.append(f"{oct(st.st_mode & 0o7777)} uid={st.st_uid} {path}")
    return found


def test_everything_leptonctl_writes_on_hosts_is_private_to_the_user(
    cluster_lab: Lab, cluster_operator: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = cluster_lab
    names = ["h1", "h2"]  # plain hosts: the relayed and no-python ones have their own tests
    inv = str(write_inventory(tmp_path / "inv.yaml", lab, names))
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(300_000))
    src.chmod(0o644)  # a world-readable source: the copies must not stay that way
    code, out, err = cli(capsys, "-i", inv, "data", "put", str(src), "model", "-k", "2", "--json")
    assert code == 0, err
    code, out, err = cli(
        capsys, "-i", inv, "submit", "--wait", "--json", "--input", "model", "--",
        'cat "$LEPTON_INPUT_MODEL" | wc -c; echo done',
    )  # fmt: skip
    assert code == 0, err
    job_id = json.loads(out.splitlines()[0])["id"]
    code, log, err = cli(capsys, "-i", inv, "logs", str(job_id))
    assert code == 0 and "300000" in log, err
    lab.path_on("h1", "/tmp/hop.bin").write_bytes(os.urandom(100_000))
    code, _, err = cli(capsys, "-i", inv, "cp", "h1:/tmp/hop.bin", "h2:/tmp/hop-copy.bin")
    assert code == 0, err
    code, _, err = cli(capsys, "-i", inv, "data", "get", "model", str(tmp_path / "back.bin"))
    assert code == 0, err

    problems = []
    data_dirs = [lab.path_on(name, lab.data_dir) for name in names]
    assert all((data / "chunks").is_dir() for data in data_dirs)  # two replicas
    assert any((data / "jobs").is_dir() for data in data_dirs)  # where the job ran
    for data in data_dirs:
        problems += exposed(data)
    cache = lab.path_on("h1", f"{lab.home}/.cache/leptonctl")  # the shared home's agent cache
    assert any(cache.glob("agent-*"))
    problems += exposed(cache)
    assert problems == [], "\n".join(problems)
