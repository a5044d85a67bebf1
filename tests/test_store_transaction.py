"""One write transaction across every table of the store, and the store interface, on
both backends (SQLite, PostgreSQL)."""

from __future__ import annotations

import inspect

import pytest

from leptonctl.core.netgraph import LinkMeasurement
from leptonctl.errors import StateError
from leptonctl.store import interface
from leptonctl.store.open import open_store


class Boom(Exception):
    pass


def test_writes_to_every_table_inside_one_transaction_roll_back_together(
    state_backend: str,
) -> None:
    with open_store(state_backend) as store:
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


def test_one_transaction_commits_writes_to_several_tables_at_once(state_backend: str) -> None:
    with open_store(state_backend) as store, open_store(state_backend) as other:
        with store.transaction():
            store.set_value("k", "v")
            store.links.save([LinkMeasurement("a", "b", 1.0, 1e9, 0.001, None)])
            with store.jobs.exclusive():  # the job table's transaction joins the open one
                store.jobs.add([("j", {"request": {}}, 0, 0)], 1.0)
            assert other.value("k") is None  # nothing is visible before the commit
        assert other.value("k") == "v"
        assert [j.name for j in other.jobs.all()] == ["j"]
        assert len(other.links.load()) == 1


def test_the_job_and_data_tables_join_each_others_transactions(state_backend: str) -> None:
    with open_store(state_backend) as store:
        with pytest.raises(Boom), store.data.exclusive():
            with store.jobs.exclusive():
                store.jobs.add([("j", {"request": {}}, 0, 0)], 1.0)
            raise Boom
        assert store.jobs.all() == []


def test_a_database_error_inside_a_transaction_is_a_state_error_and_rolls_back(
    state_backend: str,
) -> None:
    with open_store(state_backend) as store:
        db = store.db
        with (
            pytest.raises(StateError, match=f"cannot fill the table: the state store {db.where}"),
            db.transaction("fill the table"),
        ):
            db.execute("INSERT INTO kv(key, value) VALUES ('k', 'v')")
            db.execute("INSERT INTO no_such_table VALUES (1)")
        assert store.value("k") is None
        assert not db.in_transaction


@pytest.mark.parametrize(
    ("protocol", "implementation"),
    [
        (interface.Store, "store"),
        (interface.JobStore, "jobs"),
        (interface.DataStore, "data"),
        (interface.LinkStore, "links"),
        (interface.MaintenanceStore, "maintenance"),
    ],
)
def test_each_backend_implements_every_method_of_the_store_interface(
    state_backend: str, protocol: type, implementation: str
) -> None:
    with open_store(state_backend) as store:
        target = store if implementation == "store" else getattr(store, implementation)
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
