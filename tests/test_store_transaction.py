"""One write transaction across every table of the store, and the store interface."""

from __future__ import annotations

import inspect
import sqlite3
from pathlib import Path

import pytest

from leptonctl.core.netgraph import LinkMeasurement
from leptonctl.errors import StateError
from leptonctl.store import interface
from leptonctl.store.sqlite import SqliteStore
from leptonctl.store.tx import write_transaction


class Boom(Exception):
    pass


def test_writes_to_every_table_inside_one_transaction_roll_back_together(
    tmp_path: Path,
) -> None:
    with SqliteStore(tmp_path / "s.db") as store:
        with pytest.raises(Boom), store.transaction():
            store.set_value("k", "v")
            store.save_facts(1.0, {"h1": {"schema": 1}})
            store.jobs.add([("j", {"request": {}}, 0, 0)], 1.0)
            store.links.save([LinkMeasurement("a", "b", 1.0, 1e9, 0.001, None)])
            store.maintenance.start(["p"], False, 1.0)
            store.drain(["h1"], "why", 1.0)
            raise Boom
        assert store.value("k") is None
        assert store.load_facts() == {}
        assert store.jobs.all() == []
        assert store.links.load() == []
        assert store.maintenance.recent() == []
        assert store.drained() == {}


def test_one_transaction_commits_writes_to_several_tables_at_once(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SqliteStore(path) as store, SqliteStore(path) as other:
        with store.transaction():
            store.set_value("k", "v")
            store.links.save([LinkMeasurement("a", "b", 1.0, 1e9, 0.001, None)])
            with store.jobs.exclusive():  # the job table's transaction joins the open one
                store.jobs.add([("j", {"request": {}}, 0, 0)], 1.0)
            assert other.value("k") is None  # nothing is visible before the commit
        assert other.value("k") == "v"
        assert [j.name for j in other.jobs.all()] == ["j"]
        assert len(other.links.load()) == 1


def test_the_job_and_data_tables_join_each_others_transactions(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.db") as store:
        with pytest.raises(Boom), store.data.exclusive():
            with store.jobs.exclusive():
                store.jobs.add([("j", {"request": {}}, 0, 0)], 1.0)
            raise Boom
        assert store.jobs.all() == []


def test_a_database_error_inside_a_transaction_is_a_state_error_and_rolls_back(
    tmp_path: Path,
) -> None:
    db = sqlite3.connect(tmp_path / "raw.db", isolation_level=None)
    db.execute("CREATE TABLE t (x INTEGER)")
    raw = tmp_path / "raw.db"
    with (
        pytest.raises(StateError, match="cannot fill the table in"),
        write_transaction(db, raw, "fill the table"),
    ):
        db.execute("INSERT INTO t VALUES (1)")
        db.execute("INSERT INTO no_such_table VALUES (1)")
    assert db.execute("SELECT COUNT(*) FROM t").fetchone() == (0,)
    assert not db.in_transaction
    db.close()


@pytest.mark.parametrize(
    ("protocol", "implementation"),
    [
        (interface.Store, SqliteStore),
        (interface.JobStore, "jobs"),
        (interface.DataStore, "data"),
        (interface.LinkStore, "links"),
        (interface.MaintenanceStore, "maintenance"),
    ],
)
def test_the_sqlite_store_implements_every_method_of_the_store_interface(
    tmp_path: Path, protocol: type, implementation: object
) -> None:
    with SqliteStore(tmp_path / "s.db") as store:
        target = store if implementation is SqliteStore else getattr(store, str(implementation))
        wanted = {name for name, _ in inspect.getmembers(protocol) if not name.startswith("_")}
        assert wanted, "the protocol names no method"
        for name in wanted:
            assert hasattr(target, name), f"{type(target).__name__} lacks {name}"
            ours = (
                inspect.signature(getattr(protocol, name))
                if callable(getattr(protocol, name))
                else None
            )
            if ours is not None:
                theirs = inspect.signature(getattr(type(target), name))
                assert list(theirs.parameters) == list(ours.parameters), name
