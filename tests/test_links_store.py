"""Measured links in the state store (SQLite and PostgreSQL): upserted per pair, loaded,
pruned."""

from __future__ import annotations

import pytest

from leptonctl.core.netgraph import LinkMeasurement
from leptonctl.errors import StateError
from leptonctl.store.open import open_store
from tests.pg import execute_raw


def test_links_round_trip_through_the_store(state_backend: str) -> None:
    rows = [
        LinkMeasurement("a", "b", 100.0, 1.25e9, 0.0002, None),
        LinkMeasurement("b", "a", 101.0, None, None, "connection refused"),
    ]
    with open_store(state_backend) as store:
        store.links.save(rows)
    with open_store(state_backend) as store:  # reopened: it was on disk
        assert store.links.load() == rows


def test_a_new_measurement_of_a_pair_replaces_the_old_one(state_backend: str) -> None:
    with open_store(state_backend) as store:
        store.links.save([LinkMeasurement("a", "b", 100.0, None, None, "timeout")])
        store.links.save(
            [
                LinkMeasurement("a", "b", 200.0, 5e8, 0.001),
                LinkMeasurement("a", "c", 200.0, 1.0, None),
            ]
        )
        assert store.links.load() == [
            LinkMeasurement("a", "b", 200.0, 5e8, 0.001, None),
            LinkMeasurement("a", "c", 200.0, 1.0, None, None),
        ]


def test_prune_forgets_only_measurements_older_than_the_cutoff(state_backend: str) -> None:
    with open_store(state_backend) as store:
        store.links.save(
            [
                LinkMeasurement("a", "b", 10.0, 1.0, None),
                LinkMeasurement("b", "a", 20.0, 1.0, None),
                LinkMeasurement("a", "c", 30.0, 1.0, None),
            ]
        )
        assert store.links.prune(older_than=20.0) == 1
        assert [(m.src, m.dst) for m in store.links.load()] == [("a", "c"), ("b", "a")]
        assert store.links.prune(older_than=20.0) == 0


def test_a_failed_save_writes_nothing_and_is_a_state_error(state_backend: str) -> None:
    with open_store(state_backend) as store:
        store.links.save([LinkMeasurement("a", "b", 1.0, 1.0, None)])
        bad = LinkMeasurement("a", "c", None, 1.0, None)  # type: ignore[arg-type]
        with pytest.raises(StateError, match="cannot save link measurements"):
            store.links.save([LinkMeasurement("a", "b", 2.0, 9.0, None), bad])
        assert store.links.load() == [LinkMeasurement("a", "b", 1.0, 1.0, None)]


def test_an_unreadable_links_table_is_a_state_error(state_backend: str) -> None:
    with open_store(state_backend):
        pass
    execute_raw(state_backend, "DROP TABLE links")
    with open_store(state_backend) as store, pytest.raises(StateError, match="cannot read link"):
        store.links.load()
