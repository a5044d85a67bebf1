"""Chunk refs on a host (agent/lepton_agent.py chunk-pin, chunk-unpin, chunk-gc, chunk-drop)
and their operator side: two state stores share a host's chunks, and a chunk is deleted only
when no ref of any store names it.  The agent runs as a subprocess, as in test_agent_data."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from leptonctl.core.datasets import ChunkRef, Manifest, ManifestEntry
from leptonctl.errors import UsageError
from leptonctl.inventory import Inventory
from leptonctl.services.context import ServiceContext
from leptonctl.services.data import chunkrefs, datasets
from leptonctl.store.sqlite import SqliteStore
from tests.test_agent_data import (
    CHUNK,
    AgentHost,
    agent_argv,
    agent_env,
    agent_host,
    distinct_bytes,
    keys_file,  # noqa: F401 - the autouse fixture that keeps agents off authorized_keys
    sha,
)

STORE_A = "a" * 32
STORE_B = "b" * 32
REF_1 = sha(b"ds@1")
REF_2 = sha(b"ds@2")


@pytest.fixture
def host(tmp_path: Path) -> Any:
    yield from agent_host(tmp_path, "data")


def chunks(host: AgentHost, tmp_path: Path, n: int, seed: int) -> list[str]:
    """n fresh chunks in the host's store; their hashes."""
    path = tmp_path / f"src-{seed}"
    path.write_bytes(distinct_bytes(n * CHUNK, seed=seed))
    return [h for h, _ in host.import_file(path)]


def pin(host: AgentHost, store: str, ref: str, hashes: list[str]) -> dict[str, Any]:
    return host.ok("chunk-pin", store=store, refs=[{"ref": ref, "name": "ds", "hashes": hashes}])


def on_disk(host: AgentHost) -> set[str]:
    return set(host.have("chunk-have", hashes=None)["present"])


def test_a_gc_of_one_store_never_deletes_what_another_store_pinned(tmp_path, host):
    host.ok("chunk-gc", store=STORE_A, keep=[])  # refs set up on an empty host: no legacy
    mine, theirs, nobodys = (chunks(host, tmp_path, 1, seed=s)[0] for s in (1, 2, 3))
    pin(host, STORE_A, REF_1, [mine])
    pin(host, STORE_B, REF_1, [theirs])
    reply = host.ok("chunk-gc", store=STORE_B, keep=[REF_1])
    assert reply["removed"] == [nobodys]
    assert on_disk(host) == {mine, theirs}
    reply = host.ok("chunk-gc", store=STORE_B, keep=[])  # B forgot its version: its ref goes
    assert reply["stale_refs"] == [REF_1] and reply["removed"] == [theirs]
    assert on_disk(host) == {mine}  # A's ref was not B's to drop
    assert (host.data / "refs" / STORE_A / REF_1).exists()


def test_unpin_deletes_only_chunks_no_remaining_ref_of_any_store_names(tmp_path, host):
    host.ok("chunk-gc", store=STORE_A, keep=[])
    shared, own_1, own_2 = chunks(host, tmp_path, 3, seed=4)
    pin(host, STORE_A, REF_1, [shared, own_1])
    pin(host, STORE_A, REF_2, [own_2])
    pin(host, STORE_B, REF_1, [shared])  # B adopted the shared chunk
    reply = host.ok("chunk-unpin", store=STORE_A, refs=[REF_1])
    assert reply["unpinned"] == [REF_1]
    assert reply["removed"] == [own_1] and reply["kept"] == [shared]
    assert on_disk(host) == {shared, own_2}
    assert not (host.data / "refs" / STORE_A / REF_1).exists()
    reply = host.ok("chunk-unpin", store=STORE_A, refs=[REF_1])  # again: a no-op
    assert reply["unpinned"] == [] and reply["removed"] == []


def test_unpin_also_deletes_candidates_that_no_ref_names(tmp_path, host):
    host.ok("chunk-gc", store=STORE_A, keep=[])
    loose, pinned = chunks(host, tmp_path, 2, seed=5)
    pin(host, STORE_B, REF_1, [pinned])
    reply = host.ok("chunk-unpin", store=STORE_A, refs=[REF_2], hashes=[loose, pinned])
    assert reply["removed"] == [loose] and reply["kept"] == [pinned]


def test_chunks_stored_before_refs_existed_stay_pinned_as_legacy_until_released(tmp_path, host):
    old = chunks(host, tmp_path, 2, seed=6)  # an upgraded host: chunks, no refs yet
    reply = host.ok("chunk-gc", store=STORE_A, keep=[])
    assert reply["removed"] == [] and reply["legacy"] == 2
    assert on_disk(host) == set(old)
    newer = chunks(host, tmp_path, 1, seed=7)  # stored after refs were set up: not legacy
    assert host.ok("chunk-gc", store=STORE_B, keep=[])["removed"] == newer
    check = host.ok("chunk-gc", store=STORE_A, keep=[], release_legacy=True, check=True)
    assert sorted(check["removed"]) == sorted(old) and on_disk(host) == set(old)
    pin(host, STORE_A, REF_1, [old[0]])  # store A ran once and pinned what it uses
    reply = host.ok("chunk-gc", store=STORE_A, keep=[REF_1], release_legacy=True)
    assert reply["released_legacy"] is True and reply["removed"] == [old[1]]
    assert on_disk(host) == {old[0]}
    assert host.ok("chunk-gc", store=STORE_A, keep=[REF_1])["legacy"] is None  # not re-created


def test_pin_answers_which_pinned_chunks_are_present(tmp_path, host):
    (here,) = chunks(host, tmp_path, 1, seed=8)
    absent = sha(b"absent")
    reply = pin(host, STORE_A, REF_1, [here, absent])
    assert reply["pinned"] == [REF_1] and reply["present"] == {here: CHUNK}


def test_ref_files_are_private_json_naming_the_version(tmp_path, host):
    (digest,) = chunks(host, tmp_path, 1, seed=9)
    host.ok(
        "chunk-pin", store=STORE_A, refs=[{"ref": REF_1, "name": "llama@1", "hashes": [digest]}]
    )
    refs = host.data / "refs"
    for path in (refs, refs / STORE_A, refs / LEGACY_DIR):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    ref = refs / STORE_A / REF_1
    assert stat.S_IMODE(ref.stat().st_mode) == 0o600
    assert '"name":"llama@1"' in ref.read_text() and digest in ref.read_text()
    assert stat.S_IMODE((refs / ".lock").stat().st_mode) == 0o600


LEGACY_DIR = "legacy"


def test_refs_ops_refuse_malformed_store_ids_refs_and_flags(tmp_path, host):
    digest = sha(b"x")
    for bad in ["A" * 32, "a" * 31, "../" + "a" * 29, "legacy", "", None, 7]:
        reply = host.ask("chunk-gc", store=bad, keep=[])
        assert "store must be 32 lowercase hex digits" in reply.get("error", ""), bad
    for bad in ["../" + "a" * 61, "a" * 63, ".lock", None]:
        reply = host.ask("chunk-pin", store=STORE_A, refs=[{"ref": bad, "name": "x", "hashes": []}])
        assert "ref must be 64 lowercase hex digits" in reply.get("error", ""), bad
        assert "ref must be" in host.ask("chunk-unpin", store=STORE_A, refs=[bad])["error"]
    reply = host.ask("chunk-pin", store=STORE_A, refs=[{"ref": REF_1, "name": 3, "hashes": []}])
    assert "name must be a string" in reply["error"]
    reply = host.ask(
        "chunk-pin", store=STORE_A, refs=[{"ref": REF_1, "name": "x", "hashes": ["z"]}]
    )
    assert "chunk hash must be" in reply["error"]
    assert (
        "must be true or false"
        in host.ask("chunk-gc", store=STORE_A, keep=[], check="yes")["error"]
    )
    assert (
        "must be true or false"
        in host.ask("chunk-drop", store=STORE_A, hashes=[digest], corrupt=1)["error"]
    )
    assert not (host.data / "refs" / STORE_A).exists()


def test_an_unreadable_ref_stops_every_deletion(tmp_path, host):
    host.ok("chunk-gc", store=STORE_A, keep=[])
    (digest,) = chunks(host, tmp_path, 1, seed=10)
    (host.data / "refs" / STORE_B).mkdir(mode=0o700)
    (host.data / "refs" / STORE_B / REF_1).write_text("{not json")
    reply = host.ask("chunk-gc", store=STORE_A, keep=[])
    assert "unreadable ref" in reply["error"] and "nothing was deleted" in reply["error"]
    assert on_disk(host) == {digest}


def test_a_symlinked_store_dir_or_ref_is_refused_not_followed(tmp_path, host):
    host.ok("chunk-gc", store=STORE_A, keep=[])
    (digest,) = chunks(host, tmp_path, 1, seed=11)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (host.data / "refs" / STORE_B).symlink_to(elsewhere)
    reply = host.ask("chunk-pin", store=STORE_B, refs=[{"ref": REF_1, "name": "x", "hashes": []}])
    assert "is not a directory" in reply["error"]
    assert list(elsewhere.iterdir()) == []
    (host.data / "refs" / STORE_B).unlink()
    (host.data / "refs" / STORE_B).mkdir(mode=0o700)
    (elsewhere / "ref").write_text('{"hashes": []}')
    (host.data / "refs" / STORE_B / REF_1).symlink_to(elsewhere / "ref")
    reply = host.ask("chunk-gc", store=STORE_A, keep=[])
    assert "unreadable ref" in reply["error"]  # O_NOFOLLOW: a link is not read as a ref
    assert on_disk(host) == {digest}


def test_drop_keeps_a_copy_another_store_pins_and_check_deletes_nothing(tmp_path, host):
    host.ok("chunk-gc", store=STORE_A, keep=[])
    mine, shared = chunks(host, tmp_path, 2, seed=12)
    pin(host, STORE_A, REF_1, [mine, shared])
    pin(host, STORE_B, REF_1, [shared])
    check = host.ok("chunk-drop", store=STORE_A, hashes=[mine, shared], check=True)
    assert check["kept"] == [shared] and check["removed"] == []
    assert on_disk(host) == {mine, shared}
    reply = host.ok("chunk-drop", store=STORE_A, hashes=[mine, shared])
    assert reply["removed"] == [mine] and reply["kept"] == [shared]  # our own pin is ours to lift


def test_drop_of_a_corrupt_copy_rehashes_first_and_names_the_stores_that_need_it(tmp_path, host):
    host.ok("chunk-gc", store=STORE_A, keep=[])
    fine, rotten = chunks(host, tmp_path, 2, seed=13)
    pin(host, STORE_B, REF_1, [fine, rotten])
    path = host.chunk_file(rotten)
    path.chmod(0o600)
    path.write_bytes(b"bit rot" + path.read_bytes()[7:])
    reply = host.ok("chunk-drop", store=STORE_A, hashes=[fine, rotten], corrupt=True)
    assert reply["removed"] == [rotten] and reply["kept"] == [fine]
    assert reply["others"] == [rotten]  # B pinned it: it should get a good copy back
    assert on_disk(host) == {fine}


def test_a_gc_waits_for_the_host_lock_held_by_a_pin(tmp_path, host):
    host.ok("chunk-gc", store=STORE_A, keep=[])
    (digest,) = chunks(host, tmp_path, 1, seed=14)
    fd = os.open(host.data / "refs" / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a pin in progress elsewhere
    try:
        proc = subprocess.Popen(
            agent_argv("request", host.data),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=agent_env(),
        )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"op": "chunk-gc", "store": STORE_B, "keep": []}) + "\n")
        proc.stdin.close()
        time.sleep(1.0)
        assert proc.poll() is None and on_disk(host) == {digest}  # still waiting
        (host.data / "refs" / STORE_A).mkdir(mode=0o700)
        (host.data / "refs" / STORE_A / REF_1).write_text(json.dumps({"hashes": [digest]}))
    finally:
        os.close(fd)
    assert proc.stdout is not None
    out = proc.stdout.read()
    assert proc.wait(timeout=60) == 0, out
    assert on_disk(host) == {digest}  # the pin made under the lock was seen


# ---------------------------------------------------------------- the operator side


def record_in(store: SqliteStore, name: str, payload: bytes, now: float) -> Any:
    manifest = Manifest(
        kind="file",
        entries=(
            ManifestEntry(
                path="",
                type="file",
                mode=0o644,
                size=len(payload),
                chunks=(ChunkRef(sha(payload), len(payload)),),
            ),
        ),
    )
    record = store.data.begin_version(
        name, manifest=manifest, replicas=1, chunk_size=CHUNK, source="x", now=now
    )
    store.data.complete(name, record.version, now)
    return store.data.get(name, record.version)


def test_each_store_has_its_own_stable_id(tmp_path):
    with SqliteStore(tmp_path / "a.db") as a, SqliteStore(tmp_path / "b.db") as b:
        first = a.store_id()
        assert first == a.store_id() and first != b.store_id()
    with SqliteStore(tmp_path / "a.db") as a:
        assert a.store_id() == first


def test_a_version_put_again_after_removal_gets_a_new_ref(tmp_path):
    with SqliteStore(tmp_path / "a.db") as store:
        old = record_in(store, "ds", b"one", now=100.0)
        store.data.remove("ds")
        new = record_in(store, "ds", b"one", now=200.0)
        assert (old.name, old.version) == (new.name, new.version)
        assert chunkrefs.version_ref(old) != chunkrefs.version_ref(new)
        assert chunkrefs.version_ref(new) == chunkrefs.version_ref(store.data.get("ds", 1))


async def remove_on_no_hosts(store: SqliteStore, *args: Any, **kw: Any) -> Any:
    async with ServiceContext(Inventory("none", (), {}), store=store) as ctx:
        return await datasets.remove(ctx, *args, **kw)


def test_rm_refuses_a_version_an_active_job_needs_and_names_the_job(tmp_path):
    with SqliteStore(tmp_path / "a.db") as store:
        record_in(store, "ds", b"one", now=1.0)
        record_in(store, "ds", b"two", now=2.0)
        spec = {"command": ["true"], "inputs": [{"name": "ds", "version": 1, "mount": None}]}
        (job,) = store.jobs.add([("train", spec, 0, 0)], now=3.0)
        (done,) = store.jobs.add([("old", spec, 0, 0)], now=3.0)
        store.jobs.update(done, state="COMPLETED")
        with pytest.raises(UsageError) as caught:
            asyncio.run(remove_on_no_hosts(store, "ds", 1))
        assert f"ds@1 is the input of job(s) {job} (PENDING)" in caught.value.message
        assert str(done) not in caught.value.message.split("job(s)")[1]
        assert "--force" in (caught.value.hint or "")
        assert [v.version for v in store.data.versions("ds")] == [1, 2]  # nothing removed
        report = asyncio.run(remove_on_no_hosts(store, "ds", None, keep_last=0))
        assert report.versions == (2,)  # --keep-last spares what a job needs, and says so
        assert any(f"ds@1 kept: the input of job(s) {job}" in n for n in report.notes)
