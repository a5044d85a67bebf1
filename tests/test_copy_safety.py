"""`cp` and `data put/get` on this machine (no sshd, no root): scans a host cannot use to
write outside the destination, manifests that cannot be used through a symlink, a damaged
stored manifest that spoils only its own dataset, and the copies that used to report
success without the file (into a directory, empty things, a changed file fetched again).

Hosts here are ``connection: local`` inventory hosts: the agent runs on this machine as it
would on a host.  A *compromised* host is one whose Python interpreter (the inventory's
``ansible_python_interpreter``) runs the real agent with its ``scan`` rigged to list other
entries than the tree holds (which the rigged sender then really reads and sends).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from leptonctl.cli.app import run
from leptonctl.core.datasets import Manifest
from leptonctl.core.scan import UnsafeScan, read_scan
from leptonctl.errors import ExitCode, StateError
from leptonctl.remote.transfer import _outcomes
from leptonctl.services.data.datasets import manifest_from_scan
from leptonctl.services.net.copy import copy_spec

H = "a" * 64
RIGGED = """\
#!{python}
import importlib, json, os, re, sys
launcher = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "-c" else ""
found = re.search(r"from (lepton_agent)[.]cli import main", launcher)
if found is None:  # the installer, or anything else: the real interpreter
    os.execv({python!r}, [{python!r}] + sys.argv[1:])
sys.path.insert(0, os.path.join(sys.argv[3], sys.argv[4]))
agent = importlib.import_module(found.group(1) + ".datasets")
wire = importlib.import_module(found.group(1) + ".wire")
cli = importlib.import_module(found.group(1) + ".cli")
honest = agent.scan_tree
def scan_tree(path, chunk_size, hashed=True, pack=False):
    doc = honest(path, chunk_size, hashed)  # one entry per file: what the host claims below
    with open({extra!r}) as fh:
        claim = json.load(fh)
    if isinstance(claim, str):  # an error message of the host's choosing
        raise wire.BadRequest(claim)
    doc["entries"] = claim  # what the host claims instead of what is there
    return doc
agent.scan_tree = scan_tree
sys.exit(cli.main(sys.argv[5:]))
"""


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())  # rich wraps long messages


def file_entry(path: str, data: bytes, hashed: bool) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest() if hashed else None
    return {"path": path, "type": "file", "mode": 0o644, "size": len(data),
            "mtime_ns": 1, "chunks": [[digest, len(data)]], "target": None}  # fmt: skip


def scan(*entries: dict[str, Any], kind: str = "dir") -> dict[str, Any]:
    return {"schema": 1, "kind": kind, "entries": list(entries)}


def local_inventory(tmp_path: Path, rigged: list[dict[str, Any]] | str | None = None) -> Path:
    """``loc``: this machine as a host; ``evil``: the same, with a rigged scan."""
    lines = ["all:", "  hosts:", "    loc:", "      ansible_connection: local"]
    if rigged is not None:
        extra = tmp_path / "rigged.json"
        extra.write_text(json.dumps(rigged))
        python = tmp_path / "rigged-python"
        python.write_text(RIGGED.format(python=sys.executable, extra=str(extra)))
        python.chmod(0o755)
        lines += ["    evil:", "      ansible_connection: local",
                  f"      ansible_python_interpreter: {python}"]  # fmt: skip
    lines += ["    h1:", "      ansible_host: 127.0.0.1", "      ansible_port: 9"]
    lines += ["    h4:", "      ansible_host: 127.0.0.1", "      ansible_port: 9"]
    inv = tmp_path / "inventory.yaml"
    inv.write_text("\n".join(lines) + "\n")
    return inv


# -- one gate for every scan ------------------------------------------------------------

UNSAFE = [
    (file_entry("../escaped", b"x", False), "'../escaped'", "'..'"),
    (file_entry("/etc/cron.d/x", b"x", False), "'/etc/cron.d/x'", "relative"),
    (file_entry("a/../../x", b"x", False), "'a/../../x'", "'..'"),
    (file_entry("./x", b"x", False), "'./x'", "'.'"),
    (file_entry("x//y", b"x", False), "'x//y'", "empty"),
    (file_entry("x/", b"x", False), "'x/'", "empty"),
    (file_entry("bad\nname", b"x", False), "'bad\\nname'", "control"),
    (file_entry("esc\x1b[31m", b"x", False), "'esc\\x1b[31m'", "control"),
    (file_entry("nul\x00", b"x", False), "'nul\\x00'", "NUL"),
    (file_entry("", b"x", False), "''", "top directory"),
    ({**file_entry("x", b"x", False), "type": "fifo"}, "'x'", "type"),
    ({**file_entry("x", b"x", False), "mode": 0o10644}, "'x'", "mode"),
    ({**file_entry("x", b"x", False), "size": -1}, "'x'", "size"),
    ({**file_entry("x", b"x", False), "size": 2}, "'x'", "add up"),
    ({**file_entry("x", b"x", False), "chunks": [[None, 0]]}, "'x'", "chunk size"),
    ({**file_entry("x", b"x", False), "chunks": [[H, 1]]}, "'x'", "no chunk hashes"),
    ({**file_entry("x", b"x", False), "mtime_ns": "now"}, "'x'", "mtime_ns"),
    ({"path": "l", "type": "symlink", "mode": 511, "target": "a\x00b"}, "'l'", "target"),
    (file_entry("no/parent", b"x", False), "'no/parent'", "not in the tree"),
]


@pytest.mark.parametrize(("entry", "named", "why"), UNSAFE)
def test_copy_refuses_a_scan_entry_that_could_write_elsewhere(
    entry: dict[str, Any], named: str, why: str
) -> None:
    with pytest.raises(UnsafeScan) as caught:
        copy_spec(scan(entry), "/data/dst")
    assert named in str(caught.value) and why in str(caught.value)


def test_put_refuses_the_same_entries_with_the_same_gate() -> None:
    for entry, named, why in UNSAFE:
        if why == "no chunk hashes":
            continue  # a put expects hashes
        chunks = [[H, n] for _, n in entry.get("chunks") or []]
        with pytest.raises(UnsafeScan) as caught:
            manifest_from_scan(scan({**entry, "chunks": chunks}))
        assert named in str(caught.value)
    with pytest.raises(UnsafeScan, match="64 lowercase hex"):
        manifest_from_scan(scan(file_entry("x", b"x", hashed=False)))


def test_no_entry_may_lie_under_a_symlink_or_a_file_of_the_same_scan() -> None:
    link = {"path": "link", "type": "symlink", "mode": 0o777, "target": "/root/.ssh"}
    under_link = file_entry("link/authorized_keys", b"x", False)
    with pytest.raises(
        UnsafeScan, match="'link/authorized_keys' lies under 'link', which is a symlink"
    ):
        read_scan(scan(link, under_link), chunk_size=1 << 20, hashed=False)
    plain = file_entry("f", b"x", False)
    with pytest.raises(UnsafeScan, match="under 'f', which is a file"):
        read_scan(scan(plain, file_entry("f/g", b"x", False)), chunk_size=1 << 20, hashed=False)
    with pytest.raises(UnsafeScan, match="'f' appears twice"):
        read_scan(scan(plain, plain), chunk_size=1 << 20, hashed=False)
    with pytest.raises(UnsafeScan, match="chunk size"):  # larger than the chunks asked for
        read_scan(scan(file_entry("f", b"xy", False)), chunk_size=1, hashed=False)


def test_a_good_scan_passes_and_keeps_its_order() -> None:
    entries = [
        file_entry("top.bin", b"abc", False),
        {"path": "d", "type": "dir", "mode": 0o750, "size": 0, "chunks": [], "target": None},
        file_entry("d/in.bin", b"", False) | {"chunks": [], "size": 0},
        {"path": "d/up", "type": "symlink", "mode": 0o777, "target": "../top.bin"},
    ]
    spec = copy_spec(scan(*entries), "/data/dst")
    assert [f["path"] for f in spec["files"]] == ["/data/dst/top.bin", "/data/dst/d/in.bin"]
    assert spec["links"] == [{"path": "/data/dst/d/up", "target": "../top.bin"}]


def test_a_stored_manifest_with_a_file_under_one_of_its_symlinks_is_refused() -> None:
    doc = {
        "kind": "dir",
        "entries": [
            {"path": "link", "type": "symlink", "mode": 0o777, "target": "/etc"},
            {"path": "link/passwd", "type": "file", "mode": 0o644, "size": 0},
        ],
    }
    with pytest.raises(ValueError, match="'link/passwd' lies under 'link', which is a symlink"):
        Manifest.from_dict(doc)


def test_a_damaged_manifest_cannot_be_handed_to_an_agent() -> None:
    damaged = Manifest.damaged("the manifest of dataset x@1 is unreadable: ...")
    assert damaged.hashes() == [] and damaged.entries == ()
    with pytest.raises(StateError, match="x@1"):
        damaged.to_dict()


# -- a compromised host, end to end -----------------------------------------------------


@pytest.fixture
def rigged_tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "honest.txt").write_text("hello\n")
    (tmp_path / "escaped").write_text("planted\n")  # what the rigged entry reads
    (tmp_path / "outside").mkdir()
    return src


@pytest.mark.parametrize(
    ("rigged", "escapes_to"),
    [
        ([file_entry("../escaped", b"planted\n", False)], "out/escaped"),
        (
            [
                {"path": "lnk", "type": "symlink", "mode": 511, "target": "{outside}"},
                file_entry("lnk/planted", b"planted\n", False),
            ],
            "outside/planted",
        ),
    ],
)
def test_cp_from_a_compromised_host_writes_nothing_outside_the_destination(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    rigged_tree: Path,
    rigged: list[dict[str, Any]],
    escapes_to: str,
) -> None:
    rigged = json.loads(json.dumps(rigged).replace("{outside}", str(tmp_path / "outside")))
    (rigged_tree / "lnk").mkdir()  # where the sender reads the rigged file entry
    (rigged_tree / "lnk" / "planted").write_text("planted\n")
    inv = local_inventory(tmp_path, rigged)
    (tmp_path / "out").mkdir()
    dest = tmp_path / "out" / "dst"
    code, _, err = cli(capsys, "-i", str(inv), "cp", f"evil:{rigged_tree}", str(dest))
    assert code == 1, err
    assert "evil: refusing its scan of" in err and repr(rigged[-1]["path"]) in err
    assert not (tmp_path / escapes_to).exists()
    assert not dest.exists()  # the whole scan is refused: nothing was written


def test_what_a_host_says_is_printed_literally(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, rigged_tree: Path
) -> None:
    inv = local_inventory(tmp_path, "\x1b]0;owned\x07\x1b[2J[bold]gone[/bold]")
    for args in (("cp", f"evil:{rigged_tree}", str(tmp_path / "d")),
                 ("data", "put", f"evil:{rigged_tree}", "t", "-l", "evil")):  # fmt: skip
        capsys.readouterr()
        code = run(["-i", str(inv), *args])
        err = capsys.readouterr().err
        assert code == ExitCode.USAGE
        assert "\x1b" not in err and "\\x1b]0;owned\\x07\\x1b[2J[bold]gone[/bold]" in err


def test_malformed_hop_results_read_as_errors_not_crashes() -> None:
    hops = _outcomes({"hops": [{"bytes": "many", "stored": "abc", "failed": [1]}, 5]})
    assert [(h.bytes, h.stored, dict(h.failed), h.error) for h in hops] == [
        (0, (), {}, None),
        (0, (), {}, "an unreadable result"),
    ]
    assert _outcomes({"hops": "none"}) == []


def test_put_from_a_compromised_host_stores_nothing_and_data_commands_still_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, rigged_tree: Path
) -> None:
    inv = local_inventory(tmp_path, [file_entry("../escaped", b"planted\n", True)])
    code, _, err = cli(capsys, "-i", str(inv), "data", "put", f"evil:{rigged_tree}", "t", "-k", "1")
    assert code == 1, err
    assert "evil: refusing its scan of" in err and "'../escaped'" in err
    code, out, err = cli(capsys, "-i", str(inv), "data", "ls", "--json")
    assert code == 0, err
    assert json.loads(out)["datasets"] == []


def test_a_damaged_stored_manifest_spoils_only_its_own_dataset(
    capsys: pytest.CaptureFixture[str], operator_home: Path, tmp_path: Path
) -> None:
    for name in ("good", "bad"):
        (tmp_path / name).write_bytes(name.encode() * 100)
        assert cli(capsys, "data", "put", str(tmp_path / name), name, "-k", "1")[0] == 0
    # What an older leptonctl let in: a file under a symlink of the same dataset.
    state = operator_home / ".local" / "share" / "leptonctl" / "state.db"
    db = sqlite3.connect(state)
    (text,) = db.execute("SELECT manifest FROM dataset_manifests WHERE name = 'bad'").fetchone()
    ((digest, size),) = json.loads(text)["chunks"]  # the one chunk of the file "bad"
    damaged = {"kind": "dir", "entries": [
        {"path": "link", "type": "symlink", "mode": 511, "size": 0, "target": str(tmp_path)},
        {"path": "link/planted", "type": "file", "mode": 420, "size": size,
         "chunks": [{"hash": digest, "size": size}]},
    ]}  # fmt: skip
    db.execute("UPDATE datasets SET manifest = ? WHERE name = 'bad'", (json.dumps(damaged),))
    db.commit()
    db.close()
    code, out, err = cli(capsys, "data", "ls", "--json")
    assert code == 0, err
    assert {d["name"] for d in json.loads(out)["datasets"]} == {"good", "bad"}
    code, _, err = cli(capsys, "data", "ls", "bad")  # a listing never reads manifests; this does
    assert code == ExitCode.FAILED and "bad@1" in err and "unreadable" in err
    code, _, err = cli(capsys, "data", "get", "bad", str(tmp_path / "bad-out"))
    assert code == ExitCode.FAILED and "dataset bad@1" in err and "lies under 'link'" in err
    assert not (tmp_path / "planted").exists() and not (tmp_path / "bad-out").exists()
    code, _, err = cli(capsys, "data", "get", "good", str(tmp_path / "good-out"))
    assert code == 0, err
    assert (tmp_path / "good-out").read_bytes() == b"good" * 100


# -- copies that must produce the file or fail ------------------------------------------


def parts(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.lepton-part*"))


def test_cp_of_a_file_into_an_existing_directory_lands_inside_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    inv = local_inventory(tmp_path)
    src = tmp_path / "weights.bin"
    src.write_bytes(os.urandom(300_000))
    (tmp_path / "dir").mkdir()
    for _ in range(2):  # the rerun finds it there
        code, _, err = cli(capsys, "-i", str(inv), "cp", str(src), f"loc:{tmp_path / 'dir'}")
        assert code == 0, err
        assert (tmp_path / "dir" / "weights.bin").read_bytes() == src.read_bytes()
        assert parts(tmp_path) == []
    code, _, err = cli(capsys, "-i", str(inv), "cp", f"loc:{src}", str(tmp_path / "dir"))
    assert code == 0, err  # host -> this machine too
    # A file never replaces a directory, a tree never a file: refused before sending.
    (tmp_path / "dir" / "sub").mkdir()
    (tmp_path / "sub").write_bytes(b"x")
    code, _, err = cli(capsys, "-i", str(inv), "cp", str(tmp_path / "sub"), f"loc:{tmp_path}/dir/")
    assert code == 1 and "is a directory" in err
    code, _, err = cli(capsys, "-i", str(inv), "cp", str(tmp_path / "dir"), f"loc:{tmp_path}/sub")
    assert code == 1 and "is not a directory" in err
    assert parts(tmp_path) == []


@pytest.mark.parametrize("direction", ["to-host", "from-host"])
def test_cp_creates_empty_files_empty_directories_and_trees_of_them(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, direction: str
) -> None:
    inv = local_inventory(tmp_path)
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "emptydir").mkdir()
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "x").write_bytes(b"")
    (tree / "a" / "b" / "y").write_bytes(b"")
    (tree / "a" / "b" / "y").chmod(0o600)
    (tmp_path / "out").mkdir()
    for name in ("empty", "emptydir", "tree"):
        src, dst = str(tmp_path / name), str(tmp_path / "out" / name)
        args = (src, f"loc:{dst}") if direction == "to-host" else (f"loc:{src}", dst)
        code, _, err = cli(capsys, "-i", str(inv), "cp", *args)
        assert code == 0, err
    out = tmp_path / "out"
    assert (out / "empty").is_file() and (out / "empty").stat().st_size == 0
    assert (out / "emptydir").is_dir()
    assert sorted(str(p.relative_to(out / "tree")) for p in (out / "tree").rglob("*")) == [
        "a", "a/b", "a/b/y", "x",
    ]  # fmt: skip
    assert (out / "tree" / "a" / "b" / "y").stat().st_mode & 0o777 == 0o600


def test_cp_of_an_empty_file_over_a_longer_one_empties_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    inv = local_inventory(tmp_path)
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "old").write_bytes(b"old contents")
    code, _, err = cli(capsys, "-i", str(inv), "cp", str(tmp_path / "empty"), f"loc:{tmp_path}/old")
    assert code == 0, err
    assert (tmp_path / "old").read_bytes() == b""


def test_data_put_and_get_of_empty_things(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "tree" / "a").mkdir(parents=True)
    (tmp_path / "tree" / "a" / "y").write_bytes(b"")
    for name in ("empty", "emptydir", "tree"):
        code, _, err = cli(capsys, "data", "put", str(tmp_path / name), name, "-k", "1")
        assert code == 0, err
        code, _, err = cli(capsys, "data", "get", name, str(tmp_path / f"{name}.out"))
        assert code == 0, err
    assert (tmp_path / "empty.out").is_file()
    assert (tmp_path / "emptydir.out").is_dir()
    assert (tmp_path / "tree.out" / "a" / "y").is_file()


def test_data_get_over_a_changed_file_produces_the_right_bytes_in_one_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(3 * 65536 + 100))
    code, _, err = cli(capsys, "data", "put", str(src), "m", "-k", "1", "--chunk-size", "64KiB")
    assert code == 0, err
    out = tmp_path / "out.bin"
    assert cli(capsys, "data", "get", "m", str(out))[0] == 0
    with out.open("r+b") as fh:  # one byte of the second chunk changes
        fh.seek(65536 + 7)
        fh.write(bytes([src.read_bytes()[65536 + 7] ^ 0xFF]))
    code, _, err = cli(capsys, "data", "get", "m", str(out))
    assert code == 0, err
    assert out.read_bytes() == src.read_bytes()
    assert parts(tmp_path) == []  # no resume state outlives a finished get
    assert cli(capsys, "data", "get", "m", str(out))[0] == 0  # and again: nothing to do
    assert out.read_bytes() == src.read_bytes()


def test_cp_makes_missing_parents_with_the_umask(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    inv = local_inventory(tmp_path)
    src = tmp_path / "f"
    src.write_bytes(b"data")
    old = os.umask(0o027)
    try:
        code, _, err = cli(capsys, "-i", str(inv), "cp", str(src), f"loc:{tmp_path}/p/q/f")
    finally:
        os.umask(old)
    assert code == 0, err
    assert (tmp_path / "p").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "p" / "q").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "p" / "q" / "f").read_bytes() == b"data"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--via", "h1", "h1:/tmp/a", "h4:/tmp/b"), "must differ from both ends"),
        (("--via", "h4", "h1:/tmp/a", "h4:/tmp/b"), "must differ from both ends"),
        (("--via", "h9", "h1:/tmp/a", "h4:/tmp/b"), "no such host"),
        (("--via", "h4", "/tmp/a", "h1:/tmp/b"), "with this machine as an end"),
        (("--via", "h4", "h1:/tmp/a", "/tmp/b"), "with this machine as an end"),
        (("--via", "loc", "h1:/tmp/a", "h4:/tmp/b"), "relay"),
        (("h1:/", "h4:/tmp/b"), "name a file or directory"),
    ],
)
def test_a_via_that_cannot_be_honoured_is_a_usage_error_before_any_connection(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    inv = local_inventory(tmp_path)  # h1 and h4 cannot be reached: nothing may try
    code, _, err = cli(capsys, "-i", str(inv), "cp", *args)
    assert code == ExitCode.USAGE, err
    assert message in err


def test_a_tree_copied_onto_an_existing_directory_leaves_its_mode_alone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    inv = local_inventory(tmp_path)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_bytes(b"data")
    tree.chmod(0o750)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    code, _, err = cli(capsys, "-i", str(inv), "cp", str(tree), f"loc:{private}")
    assert code == 0, err
    assert private.stat().st_mode & 0o777 == 0o700  # was made world-readable (0755)
    assert (private / "sub" / "f").read_bytes() == b"data"
    code, _, err = cli(capsys, "-i", str(inv), "cp", str(tree), f"loc:{tmp_path}/fresh")
    assert code == 0, err
    assert (tmp_path / "fresh").stat().st_mode & 0o777 == 0o750  # the source's, as cp -a
    assert cli(capsys, "data", "put", str(tree), "t", "-k", "1")[0] == 0
    code, _, err = cli(capsys, "data", "get", "t", str(private))
    assert code == 0, err
    assert private.stat().st_mode & 0o777 == 0o700
