"""`cp HOST:/tree DIR/` to this machine goes into DIR, as it does between two hosts and as
cp(1) and scp do: the local path's normalisation used to drop the trailing "/", so the tree's
contents landed in DIR itself.  The host is this machine through `ansible_connection=local`
(the same agent and transfer code as over SSH)."""

from __future__ import annotations

from pathlib import Path

import pytest

from leptonctl.cli.app import run


@pytest.fixture
def setup(tmp_path: Path) -> tuple[list[str], Path, Path]:
    src = tmp_path / "src" / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_bytes(b"inside\n")
    (tmp_path / "dst").mkdir()
    inv = tmp_path / "hosts.ini"
    inv.write_text("l ansible_connection=local\n")
    return ["-i", str(inv), "--state", str(tmp_path / "state.db")], src, tmp_path / "dst"


def test_a_tree_copied_to_an_existing_local_dir_with_a_slash_goes_inside_it(
    setup: tuple[list[str], Path, Path],
) -> None:
    args, src, dst = setup
    assert run([*args, "cp", f"l:{src}", f"{dst}/"]) == 0
    assert (dst / "tree" / "sub" / "f").read_bytes() == b"inside\n"
    assert not (dst / "sub").exists()


def test_without_the_slash_the_tree_is_the_destination_itself(
    setup: tuple[list[str], Path, Path],
) -> None:
    args, src, dst = setup
    target = dst / "copy"
    assert run([*args, "cp", f"l:{src}", str(target)]) == 0
    assert (target / "sub" / "f").read_bytes() == b"inside\n"
