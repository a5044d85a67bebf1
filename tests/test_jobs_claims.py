"""Start claims in the state store (both backends): one owner at a time, a lease that
runs out, a release that only the holder can make, and a holder that died on this machine
losing its claim at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from leptonctl.store.claims import claimant_is_dead, new_claimant, process_space
from leptonctl.store.interface import Store
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


CLAIM_IN_A_CHILD = """
import sys
from leptonctl.store.claims import new_claimant
from leptonctl.store.open import open_store
store = open_store(sys.argv[1])
with store.jobs.exclusive():
    assert store.jobs.claim_start(7, new_claimant(), now=100.0, lease=3600.0) is None
store.close()
"""


def test_a_claim_whose_process_died_on_this_machine_is_taken_over_at_once(
    any_store: Store, state_backend: str
) -> None:
    """A terminal killed between claiming and starting a job: the next command on the same
    machine takes the job over now, not after the lease (an hour here)."""
    done = subprocess.run(
        [sys.executable, "-c", CLAIM_IN_A_CHILD, state_backend],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    jobs = any_store.jobs
    with jobs.exclusive():
        assert jobs.claim_start(7, new_claimant(), now=101.0, lease=30.0) is None


def test_a_live_claimant_or_one_from_elsewhere_keeps_its_claim(any_store: Store) -> None:
    jobs = any_store.jobs
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        here = f"{socket.gethostname()}:{alive.pid}:beef@{process_space()}"
        elsewhere = f"other:{alive.pid + 999_999}:beef@boot-of-another-machine/4026531836"
        with jobs.exclusive():
            assert jobs.claim_start(7, here, now=100.0, lease=3600.0) is None
            assert jobs.claim_start(8, elsewhere, now=100.0, lease=3600.0) is None
            assert jobs.claim_start(7, new_claimant(), now=101.0, lease=30.0) == here
            assert jobs.claim_start(8, new_claimant(), now=101.0, lease=30.0) == elsewhere
    finally:
        alive.kill()
        alive.wait()
    assert claimant_is_dead(here)
    assert not claimant_is_dead(elsewhere)
    assert not claimant_is_dead("host:12:beef")  # an old-style name: the lease decides
