"""The state store on real files and a real PostgreSQL: private, migrated, shared by two
processes."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from leptonctl.errors import StateError
from leptonctl.store.open import open_store
from leptonctl.store.sqlite import SqliteStore
from tests.pg import execute_raw


def test_store_file_and_directory_are_private(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.db"
    with SqliteStore(path):
        pass
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_facts_round_trip_and_latest_wins(state_backend: str) -> None:
    with open_store(state_backend) as store:
        store.save_facts(10.0, {"h1": {"schema": 1, "n": 1}})
        store.save_facts(15.0, {"h1": {"schema": 1, "n": 1}, "h2": {"schema": 1, "n": 3}})
        store.save_facts(20.0, {"h1": {"schema": 1, "n": 2}})
    with open_store(state_backend) as store:  # reopened: it was stored
        facts = store.load_facts()
        assert {h: (f.probed_at, f.document["n"]) for h, f in facts.items()} == {
            "h1": (20.0, 2),
            "h2": (15.0, 3),
        }
        assert list(store.load_facts(["h2"])) == ["h2"]


def test_two_open_stores_see_each_others_writes(state_backend: str) -> None:
    with open_store(state_backend) as first, open_store(state_backend) as second:
        first.record_event(1.0, "host_key_accepted", "h1", {"known_as": "10.0.0.1"})
        second.record_event(2.0, "host_key_accepted", "h2", {"known_as": "10.0.0.2"})
        assert [e.host for e in first.events("host_key_accepted")] == ["h1", "h2"]
        assert second.events("other") == []


def test_wal_mode_and_schema_version_are_set(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SqliteStore(path):
        pass
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] >= 1
    db.close()


def test_a_store_from_a_newer_leptonctl_is_refused(state_backend: str) -> None:
    with open_store(state_backend):
        pass
    if state_backend.startswith("postgresql://"):
        execute_raw(state_backend, "UPDATE leptonctl_schema SET version = 999")
    else:
        execute_raw(state_backend, "PRAGMA user_version = 999")
    with pytest.raises(StateError, match=r"schema 999, newer than this leptonctl \(\d+\)"):
        open_store(state_backend)


def test_unwritable_location_is_a_state_error_with_a_hint(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StateError) as info:
        SqliteStore(blocker / "state.db")
    assert info.value.hint and "--state" in info.value.hint


def test_many_processes_opening_a_fresh_store_at_once_all_succeed(tmp_path: Path) -> None:
    # Two terminals (or cron and a terminal) creating the store at the same moment: the
    # switch to WAL must not fail with "database is locked" in either of them.  The
    # processes import first, then all open at one agreed instant.
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[1]
    script = (
        "import sys, time; from pathlib import Path\n"
        "from leptonctl.store.sqlite import SqliteStore\n"
        "while time.time() < float(sys.argv[2]): pass\n"
        "with SqliteStore(Path(sys.argv[1])) as s: s.record_event(0.0, 'opened', None, {})\n"
    )
    for attempt in range(10):
        path = tmp_path / f"fresh-{attempt}" / "state.db"
        start = str(time.time() + 1.0)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", script, str(path), start],
                cwd=root,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        errors = [err for p in procs if (err := p.communicate(timeout=60)[1]) and p.returncode]
        assert errors == []
        with SqliteStore(path) as store:
            assert len(store.events("opened")) == 4
