"""Start claims in the state store (both backends): one owner at a time, a lease that
runs out, a release that only the holder can make."""

from __future__ import annotations

from leptonctl.store.open import open_store


def test_a_claim_has_one_owner_until_its_lease_runs_out(state_backend: str) -> None:
    with open_store(state_backend) as store:
        jobs = store.jobs
        with jobs.exclusive():
            assert jobs.claim_start(7, "a", now=100.0, lease=30.0) is None
            assert jobs.claim_start(7, "b", now=110.0, lease=30.0) == "a"  # a holds it
            assert jobs.claim_start(7, "a", now=125.0, lease=30.0) is None  # a renews
            assert jobs.claim_start(7, "b", now=150.0, lease=30.0) == "a"  # renewed: until 155
            assert jobs.claim_start(8, "b", now=150.0, lease=30.0) is None  # per job
        assert jobs.start_claim(7, now=150.0) == ("a", 155.0)
        with jobs.exclusive():
            assert jobs.claim_start(7, "b", now=156.0, lease=30.0) is None  # a's ran out
        jobs.release_start(7, "a")  # not a's any more: nothing happens
        assert jobs.start_claim(7, now=157.0) == ("b", 186.0)
        jobs.release_start(7, "b")
        assert jobs.start_claim(7, now=157.0) is None


def test_claims_survive_reopening_the_store(state_backend: str) -> None:
    with open_store(state_backend) as store, store.jobs.exclusive():
        store.jobs.claim_start(3, "a", now=0.0, lease=30.0)
    with open_store(state_backend) as store:
        assert store.jobs.start_claim(3, now=10.0) == ("a", 30.0)
