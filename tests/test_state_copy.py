"""``leptonctl state``: a SQLite store moved whole into PostgreSQL (copy, or export and
import), every table intact and ids kept; a non-empty target refused without --force;
info and migrate."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from leptonctl.core.datasets import ChunkRef, Manifest, ManifestEntry
from leptonctl.core.netgraph import LinkMeasurement
from leptonctl.errors import ExitCode
from leptonctl.store.open import open_store
from leptonctl.store.schema import SCHEMA_VERSION, TABLES
from leptonctl.store.transfer import read_tables
from tests.pg import PgServer

A, B = "a" * 64, "b" * 64


def filled_store(path: Path) -> str:
    """A SQLite store with rows in every table."""
    state = str(path)
    with open_store(state) as store:
        store.save_facts(5.0, {"h1": {"schema": 1, "n": 1}})
        ids = store.jobs.add(
            [(f"j{i}", {"request": {}, "command": ["true"]}, i, 0) for i in range(4)], 1.0
        )
        store.jobs.update(ids[0], state="COMPLETED", ended=3.0, exit_code=0, host="h1")
        store.jobs.update(
            ids[1], state="RUNNING", host="h1", started=2.0,
            allocation={"cpus": 1, "memory_bytes": 0, "gpus": [0], "fpgas": []},
        )  # fmt: skip
        with store.jobs.exclusive():
            store.jobs.add_orphan("h2", "9.0.x", 4.0)
            store.jobs.claim_start(ids[2], "me", now=1.0, lease=30.0)
        store.drain(["h2"], "disk", 6.0)
        manifest = Manifest(
            "dir",
            (
                ManifestEntry("", "dir", 0o755),
                ManifestEntry("f", "file", 0o644, 20, (ChunkRef(A, 10), ChunkRef(B, 10))),
            ),
        )
        store.data.begin_version(
            "ds", manifest=manifest, replicas=2, chunk_size=10, source="/src", now=7.0
        )
        store.data.complete("ds", 1, now=8.0)
        store.data.set_replicas([(A, "h1", "ok"), (B, "h1", "corrupt")], now=9.0)
        store.links.save([LinkMeasurement("h1", "h2", 10.0, 1.25e9, 0.0002, None)])
        run_id = store.maintenance.start(["health"], False, 11.0)
        store.maintenance.finish(run_id, 12.0, "ok", 0, [{"action": "health"}])
        store.record_event(13.0, "host_key_accepted", "h1", {"known_as": "10.0.0.1"})
        store.set_value("scrub.cursor", "17")
        store.store_id()
    return state


def test_copy_moves_every_table_into_postgres_with_ids_kept(
    tmp_path: Path, pg_server: PgServer, capsys: pytest.CaptureFixture[str]
) -> None:
    source = filled_store(tmp_path / "old.db")
    target = pg_server.new_database()
    assert run(["state", "copy", source, target, "--json"]) == 0
    moved = json.loads(capsys.readouterr().out)
    assert moved["rows"]["jobs"] == 4 and moved["rows"]["job_devices"] == 1
    with open_store(source) as old, open_store(target) as new:
        before, after = read_tables(old), read_tables(new)
        assert [t.name for t in after] == [name for name, _ in TABLES]
        for was, now in zip(before, after, strict=True):
            assert was.rows == now.rows, was.name
            assert was.rows, f"the fixture left {was.name} empty"
        assert new.store_id() == old.store_id()
        # numbering goes on after the copied ids
        (job,) = new.jobs.add([("next", {"request": {}}, 0, 0)], 20.0)
        assert job == max(j.id for j in old.jobs.all()) + 1
        assert new.maintenance.start(["x"], True, 21.0) == 2
        new.record_event(22.0, "later", None, {})
        assert [e.kind for e in new.events()] == ["host_drained", "host_key_accepted", "later"]
        assert new.jobs.start_claim(3, now=2.0) == ("me", 31.0)


def test_a_target_that_holds_anything_is_refused_without_force(
    tmp_path: Path, pg_server: PgServer, capsys: pytest.CaptureFixture[str]
) -> None:
    source = filled_store(tmp_path / "old.db")
    target = pg_server.new_database()
    with open_store(target) as store:
        store.set_value("mine", "keep me")
    assert run(["state", "copy", source, target]) == ExitCode.USAGE
    assert "is not empty: kv (1)" in " ".join(capsys.readouterr().err.split())
    with open_store(target) as store:
        assert store.value("mine") == "keep me" and store.jobs.all() == []
    assert run(["state", "copy", source, target, "--force"]) == 0
    with open_store(target) as store:
        assert store.value("mine") is None and len(store.jobs.all()) == 4


def test_export_then_import_into_postgres_round_trips(
    tmp_path: Path, pg_server: PgServer, capsys: pytest.CaptureFixture[str]
) -> None:
    source = filled_store(tmp_path / "old.db")
    dump = tmp_path / "dump.json"
    assert run(["--state", source, "state", "export", str(dump)]) == 0
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    assert run(["--state", source, "state", "export", str(dump)]) == ExitCode.USAGE  # exists
    target = pg_server.new_database()
    assert run(["--state", target, "state", "import", str(dump)]) == 0
    with open_store(source) as old, open_store(target) as new:
        assert [t.rows for t in read_tables(old)] == [t.rows for t in read_tables(new)]
    capsys.readouterr()
    assert run(["--state", target, "state", "import", str(dump)]) == ExitCode.USAGE  # not empty
    assert "--force" in " ".join(capsys.readouterr().err.split())


def test_an_export_from_a_newer_schema_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = tmp_path / "new.json"
    dump.write_text(json.dumps({"format": "leptonctl-state", "schema": 999, "tables": {}}))
    assert run(["--state", str(tmp_path / "s.db"), "state", "import", str(dump)]) == 2
    assert "schema 999, newer than this leptonctl" in " ".join(capsys.readouterr().err.split())


def test_copy_from_a_store_that_does_not_exist_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing, target = tmp_path / "missing.db", tmp_path / "t.db"
    assert run(["state", "copy", str(missing), str(target)]) == ExitCode.USAGE
    assert "no state store at" in " ".join(capsys.readouterr().err.split())
    assert not missing.exists()


def test_info_and_migrate_report_the_schema(
    state_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["--state", state_backend, "state", "migrate", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"schema_before": 0, "schema": SCHEMA_VERSION}
    assert run(["--state", state_backend, "state", "info", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["schema"] == found["program_schema"] == SCHEMA_VERSION
    expected = "postgresql" if state_backend.startswith("postgresql://") else "sqlite"
    assert found["backend"] == expected
    assert found["rows"]["jobs"] == 0
