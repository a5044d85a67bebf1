"""Transfer security on real sshd hosts: a copy into a destination with a planted symbolic
link writes nothing through it (host to host: a real ssh next hop, `--` before its address),
and the one-shot transfer keys of a replicated put leave every other byte of authorized_keys
as it was (CRLF, a lone CR, bytes that are not UTF-8, a symlinked file), with no transfer line
left behind."""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from tests.conftest import write_inventory
from tests.lab import Lab

pytestmark = pytest.mark.lab

FREE = re.compile(rb"#leptonctl-free *")
OTHER_LINES = (
    b"ssh-ed25519 AAAAcrlf crlf@host\r\n"
    + b'command="echo a\rb",no-pty ssh-ed25519 AAAAlonecr lone-cr@host\n'
    + b"# caf\xe9 \xff\xfe not utf-8\n"
)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = run(list(args))
    return code, capsys.readouterr().out


def without_free_slots(data: bytes) -> bytes:
    return b"".join(
        line for line in data.splitlines(keepends=True) if not FREE.fullmatch(line.rstrip(b"\n"))
    )


def make_tree(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "sub" / "weights.bin").write_bytes(random.Random(7).randbytes(700_000))
    (root / "sub" / "deeper" / "empty").write_bytes(b"")
    (root / "top.txt").write_text("top\n")
    return root


@pytest.fixture
def inv(lab: Lab, lab_operator: Path, tmp_path: Path) -> Path:
    return write_inventory(tmp_path / "inventory.yaml", lab)


def test_cp_into_a_destination_with_a_planted_link_writes_nothing_through_it(
    lab: Lab, inv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = make_tree(tmp_path / "tree")
    h1, h2 = lab.hosts[0].name, lab.hosts[1].name
    for name in (h1, h2):
        outside = lab.path_on(name, "/tmp/sec-outside")
        outside.mkdir(mode=0o700)
        planted = lab.path_on(name, "/tmp/sec-dest/tree")
        planted.mkdir(parents=True)
        (planted / "sub").symlink_to("/tmp/sec-outside")
    args = ("-i", str(inv))
    assert cli(capsys, *args, "cp", str(src), f"{h1}:/tmp/sec-dest/")[0] == 0
    code, out = cli(capsys, *args, "cp", f"{h1}:/tmp/sec-dest/tree", f"{h2}:/tmp/sec-dest/")
    assert code == 0, out
    for name in (h1, h2):
        assert os.listdir(lab.path_on(name, "/tmp/sec-outside")) == []
        assert lab.path_on(name, "/tmp/sec-outside").stat().st_mode & 0o777 == 0o700
        copy = lab.path_on(name, "/tmp/sec-dest/tree")
        assert not (copy / "sub").is_symlink()
        assert (copy / "sub" / "weights.bin").read_bytes() == (
            src / "sub" / "weights.bin"
        ).read_bytes()
        assert (copy / "sub" / "deeper" / "empty").read_bytes() == b""


@pytest.fixture
def odd_authorized_keys(lab: Lab) -> Iterator[dict[str, Path]]:
    """Every host's authorized_keys with odd lines of another tool after the operator's key;
    on the first host it is a symbolic link to a file next to it. Restored afterwards."""
    saved: dict[str, bytes] = {}
    files: dict[str, Path] = {}
    for index, host in enumerate(lab.hosts):
        path = lab.path_on(host.name, "/root/.ssh/authorized_keys")
        saved[host.name] = path.read_bytes()
        content = saved[host.name] + OTHER_LINES
        if index == 0:
            real = path.with_name("authorized_keys.real")
            real.write_bytes(content)
            real.chmod(0o600)
            path.unlink()
            path.symlink_to("authorized_keys.real")
            files[host.name] = real
        else:
            path.write_bytes(content)
            files[host.name] = path
    try:
        yield files
    finally:
        for host in lab.hosts:
            path = lab.path_on(host.name, "/root/.ssh/authorized_keys")
            if path.is_symlink():
                path.unlink()
                path.with_name("authorized_keys.real").unlink()
            path.write_bytes(saved[host.name])
            path.chmod(0o600)


def test_a_replicated_put_leaves_every_other_byte_of_authorized_keys_and_no_key_line(
    lab: Lab,
    inv: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    odd_authorized_keys: dict[str, Path],
) -> None:
    before = {name: path.read_bytes() for name, path in odd_authorized_keys.items()}
    src = make_tree(tmp_path / "tree")
    args = ("-i", str(inv))
    code, out = cli(capsys, *args, "data", "put", str(src), "sec-keys", "-k", "4")
    assert code == 0, out
    for name, path in odd_authorized_keys.items():
        data = path.read_bytes()
        assert b"leptonctl-transfer:" not in without_free_slots(data), name
        assert without_free_slots(data) == without_free_slots(before[name]), name
        assert data.startswith(before[name]), name  # a reused slot is blanked back as it was
    first = lab.path_on(lab.hosts[0].name, "/root/.ssh/authorized_keys")
    assert first.is_symlink() and os.readlink(first) == "authorized_keys.real"


def test_a_job_that_writes_to_its_input_never_changes_a_stored_chunk(
    lab: Lab, inv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "tr"
    src.mkdir()
    (src / "a.txt").write_text("training data\n")  # one chunk: it was a hard link to it
    args = ("-i", str(inv))
    assert cli(capsys, *args, "data", "put", str(src), "sec-tr", "-k", "1")[0] == 0
    script = 'f="$LEPTON_INPUT_SEC_TR/a.txt"; chmod u+w "$f" && echo oops >> "$f"'
    code, out = cli(
        capsys, *args, "submit", "--input", "sec-tr", "--wait", "--json", "--", "sh", "-c", script
    )
    assert code == 0, out
    assert cli(capsys, *args, "data", "verify", "sec-tr")[0] == 0
