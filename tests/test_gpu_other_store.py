"""Two state stores (two teams' queues) on one GPU host: a GPU that the other store's job is
using is busy for this store's dry run, whatever that job's number is in this store.  (The
agent tags a GPU process with its job id ``<job>.<attempt>.<uid>``; only this store knows
whether the uid is one of its own jobs.)  Synthetic GPU facts: no GPU here."""

from __future__ import annotations

import time
from pathlib import Path

from leptonctl.core.jobspec import Submission
from leptonctl.core.scheduler import Request
from leptonctl.inventory import parse_inventory
from leptonctl.services.jobs.operations import dry_run
from leptonctl.store.sqlite import SqliteStore
from tests.test_gpu_placement import foreign, h100_box


def test_a_dry_run_treats_a_gpu_of_another_stores_job_as_busy(tmp_path: Path) -> None:
    inventory = parse_inventory("gpu01\n", "hosts.ini", fmt="ini")
    doc = h100_box()
    # job number 1 exists in neither store's sense here: this store never had a job 1 with
    # uid "zzzz", so the process is another queue's job and its GPU is not free
    doc["gpus"][5]["processes"] = [foreign(77, job="1.0.zzzz")]
    store = SqliteStore(tmp_path / "state.db")
    try:
        store.save_facts(time.time(), {"gpu01": doc})
        whole = Submission(name="all8", command="true", request=Request(gpus=8))
        result = dry_run(store, inventory, [whole], time.time())
        (blocked,) = result.plan.unplaceable
        assert "leptonctl job 1 of another state store" in blocked.reason
        seven = Submission(name="seven", command="true", request=Request(gpus=7))
        result = dry_run(store, inventory, [seven], time.time())
        (placed,) = result.plan.placements
        assert 5 not in placed.gpus and len(placed.gpus) == 7
    finally:
        store.close()
