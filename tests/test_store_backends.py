"""What both store backends guarantee, on a SQLite file and a real PostgreSQL server: the
database itself refuses to give one device to two active jobs, even to processes racing
for it; migrations run once however many processes open a new database; who did what is
recorded; and the store named by --state, the config file or the default is the one used."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from leptonctl.errors import StateError, UsageError
from leptonctl.store.actor import Actor
from leptonctl.store.db import DeviceTaken
from leptonctl.store.location import state_location
from leptonctl.store.open import open_store
from leptonctl.store.schema import SCHEMA_VERSION
from tests.conftest import write_inventory
from tests.lab import Lab
from tests.pg import PgServer, execute_raw

ROOT = Path(__file__).resolve().parents[1]
GPU0 = {"cpus": 1, "memory_bytes": 0, "gpus": [0], "fpgas": []}


def add_jobs(state: str, n: int) -> list[int]:
    with open_store(state) as store:
        return store.jobs.add([(f"j{i}", {"request": {}}, 0, 0) for i in range(n)], 1.0)


def test_a_device_an_active_job_holds_cannot_be_allocated_to_another(state_backend: str) -> None:
    first, second = add_jobs(state_backend, 2)
    with open_store(state_backend) as store:
        store.jobs.update(first, state="STARTING", host="h1", allocation=GPU0)
        with pytest.raises(DeviceTaken, match="job_devices"):
            store.jobs.update(second, state="STARTING", host="h1", allocation=GPU0)
        assert store.jobs.get(second).state == "PENDING"  # type: ignore[union-attr]
        assert store.jobs.device_holders() == {("h1", "gpu:0"): first}
        # the same GPU on another host is another device
        store.jobs.update(second, state="STARTING", host="h2", allocation=GPU0)
        store.jobs.update(first, state="RUNNING")  # still held while running
        with pytest.raises(DeviceTaken):
            store.jobs.update(second, host="h1")
        store.jobs.update(first, state="COMPLETED", ended=2.0)  # ending lets it go
        assert store.jobs.device_holders() == {("h2", "gpu:0"): second}
        store.jobs.update(second, host="h1")
        assert store.jobs.device_holders() == {("h1", "gpu:0"): second}


def test_the_database_itself_refuses_a_second_row_for_a_held_device(state_backend: str) -> None:
    first, second = add_jobs(state_backend, 2)
    execute_raw(
        state_backend,
        f"INSERT INTO job_devices(host, device, job_id) VALUES ('h1', 'gpu:0', {first})",
    )
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        execute_raw(
            state_backend,
            f"INSERT INTO job_devices(host, device, job_id) VALUES ('h1', 'gpu:0', {second})",
        )


_RACER = """
import json, sys, time
from leptonctl.store.actor import Actor
from leptonctl.store.db import DeviceTaken
from leptonctl.store.open import open_store
state, job, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
alloc = {"cpus": 1, "memory_bytes": 0, "gpus": [0], "fpgas": []}
held = []
with open_store(state) as store:
    while time.time() < start:
        pass
    deadline = time.time() + 3.0
    while not held and time.time() < deadline:
        try:
            store.jobs.update(job, state="RUNNING", host="h1", allocation=alloc)
        except DeviceTaken:
            time.sleep(0.005)
            continue
        began = time.time()
        time.sleep(0.05)
        ended = time.time()
        store.jobs.update(job, state="COMPLETED", ended=ended)
        held.append((began, ended))
print(json.dumps(held))
"""


def test_processes_racing_for_one_gpu_never_hold_it_at_once(state_backend: str) -> None:
    # Each process blindly starts its job on GPU 0 of h1 (no look at the queue first): only
    # the database stands between them.  Every one gets it in the end, one at a time.
    jobs = add_jobs(state_backend, 6)
    start = str(time.time() + 1.5)  # every process has imported and connected by then
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, state_backend, str(job), start],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for job in jobs
    ]
    spans = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        spans += [tuple(s) for s in json.loads(out)]
    assert len(spans) == len(jobs)  # everyone ran
    spans.sort()
    for (_, end), (begin, _) in itertools.pairwise(spans):
        assert end <= begin, f"two jobs held gpu 0 at once: {spans}"


def test_many_processes_opening_a_new_postgres_database_migrate_it_once(
    pg_server: PgServer,
) -> None:
    url = pg_server.new_database()
    script = (
        "import sys, time\n"
        "from leptonctl.store.open import open_store\n"
        "while time.time() < float(sys.argv[2]): pass\n"
        "with open_store(sys.argv[1]) as s: s.record_event(0.0, 'opened', None, {})\n"
    )
    start = str(time.time() + 1.5)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, url, start], cwd=ROOT, stderr=subprocess.PIPE, text=True
        )
        for _ in range(5)
    ]
    errors = [err for p in procs if (err := p.communicate(timeout=60)[1]) and p.returncode]
    assert errors == []
    with open_store(url) as store:
        assert len(store.events("opened")) == 5
        assert store.schema_version() == SCHEMA_VERSION


def test_without_psycopg_a_postgres_url_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg fails
    with pytest.raises(StateError, match="psycopg") as info:
        open_store("postgresql://nobody@127.0.0.1:1/none")
    assert info.value.hint is not None and "leptonctl[postgres]" in info.value.hint


def test_a_password_in_the_url_never_shows_in_an_error(pg_server: PgServer) -> None:
    url = pg_server.url("no_such_database").replace("lepton@", "lepton:s3cret@")
    with pytest.raises(StateError) as info:
        open_store(url)
    assert "s3cret" not in info.value.message and "lepton:***@" in info.value.message


def test_jobs_datasets_and_events_record_who_did_it_from_where(
    state_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEPTONCTL_USER", "ada")
    from leptonctl.core.datasets import Manifest, ManifestEntry

    with open_store(state_backend) as store:
        (job,) = store.jobs.add([("j", {"request": {}}, 0, 0)], 1.0)
        store.data.begin_version(
            "ds",
            manifest=Manifest("dir", (ManifestEntry("", "dir", 0o755),)),
            replicas=1,
            chunk_size=10,
            source="/src",
            now=1.0,
        )
        store.drain(["h1"], "disk", 1.0)
        store.resume(["h1", "h2"], 2.0)  # h2 was not drained: no event
        machine = store.actor.machine
    with open_store(state_backend) as store:
        record = store.jobs.get(job)
        assert record is not None
        assert (record.submitted_by, record.submitted_from) == ("ada", machine)
        version = store.data.versions("ds")[0]
        assert (version.created_by, version.created_from) == ("ada", machine)
        (drained,) = store.events("host_drained")
        assert (drained.host, drained.detail, drained.actor) == (
            "h1",
            {"reason": "disk"},
            f"ada@{machine}",
        )
        assert [(e.host, e.actor) for e in store.events("host_resumed")] == [
            ("h1", f"ada@{machine}")
        ]


def test_state_comes_from_the_option_then_the_config_file_then_the_default(
    operator_home: Path, pg_server: PgServer
) -> None:
    default = operator_home / ".local" / "share" / "leptonctl" / "state.db"
    assert state_location(None) == str(default)
    config = operator_home / ".config" / "leptonctl" / "config.yaml"
    config.parent.mkdir(parents=True)
    url = pg_server.new_database()
    config.write_text(f"state: {url}\n")
    assert state_location(None) == url
    assert state_location("~/other.db") == str(operator_home / "other.db")
    config.write_text("stat: typo\n")
    with pytest.raises(UsageError, match="unknown settings: stat"):
        state_location(None)
    with pytest.raises(UsageError, match="mysql://"):
        state_location("mysql://u@h/db")


def test_a_command_runs_against_the_postgres_url_it_is_given(
    pg_server: PgServer, capsys: pytest.CaptureFixture[str], operator_home: Path
) -> None:
    url = pg_server.new_database()
    with open_store(url) as store:
        (job,) = store.jobs.add([("from-pg", {"request": {}, "command": ["true"]}, 0, 0)], 1.0)
        store.jobs.update(job, state="COMPLETED", ended=2.0, exit_code=0)
    assert run(["--state", url, "jobs", "--all", "--json"]) == 0
    names = [j["name"] for j in json.loads(capsys.readouterr().out)["jobs"]]
    assert names == ["from-pg"]
    assert not (operator_home / ".local" / "share" / "leptonctl" / "state.db").exists()


def test_jobs_filters_by_submitter_and_cancel_spares_other_users_jobs(
    state_backend: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    done = {"state": "COMPLETED", "ended": 2.0, "exit_code": 0}
    spec = {"request": {}, "command": ["true"]}
    for user in ("ada", "bob"):
        with open_store(state_backend, actor=Actor(user, f"{user}-laptop")) as store:
            (job,) = store.jobs.add([(f"{user}-job", spec, 0, 0)], 1.0)
            store.jobs.update(job, **done)
    with open_store(state_backend, actor=Actor("bob", "bob-laptop")) as store:
        (pending,) = store.jobs.add([("bob-pending", spec, 0, 0)], 1.0)
        store.drain(["localhost"], "nothing starts here during this test", 1.0)
    monkeypatch.setenv("LEPTONCTL_USER", "ada")

    def names(*args: str) -> list[str]:
        capsys.readouterr()
        assert run(["--state", state_backend, "jobs", "--all", "--json", *args]) == 0
        return [j["name"] for j in json.loads(capsys.readouterr().out)["jobs"]]

    assert names("--mine") == ["ada-job"]
    assert names("--user", "bob") == ["bob-job", "bob-pending"]
    assert run(["--state", state_backend, "jobs", "--mine", "--user", "bob"]) == 2

    capsys.readouterr()
    assert run(["--state", state_backend, "cancel", str(pending)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{pending} (bob@bob-laptop) is not yours (ada)" in err and "--any-user" in err
    with open_store(state_backend) as store:
        assert store.jobs.get(pending).state == "PENDING"  # type: ignore[union-attr]
    assert run(["--state", state_backend, "cancel", "--any-user", str(pending)]) == 0
    with open_store(state_backend) as store:
        assert store.jobs.get(pending).state == "CANCELLED"  # type: ignore[union-attr]


def test_jobs_running_when_the_device_table_arrives_hold_their_devices(
    state_backend: str,
) -> None:
    first, second = add_jobs(state_backend, 2)
    with open_store(state_backend) as store:
        store.jobs.update(first, state="RUNNING", host="h1", allocation=GPU0)
    # as a store from before step 9 was: no job_devices table (nor what later steps made),
    # the job running
    later = ("ALTER TABLE datasets DROP COLUMN files", "DROP TABLE dataset_manifests")  # 10, 11
    if state_backend.startswith("postgresql://"):
        execute_raw(
            state_backend,
            "DROP TABLE job_devices",
            *later,
            "UPDATE leptonctl_schema SET version = 8",
        )
    else:
        execute_raw(state_backend, "DROP TABLE job_devices", *later, "PRAGMA user_version = 8")
    with open_store(state_backend) as store:  # migrated on opening
        assert store.jobs.device_holders() == {("h1", "gpu:0"): first}
        with pytest.raises(DeviceTaken):
            store.jobs.update(second, state="STARTING", host="h1", allocation=GPU0)


def test_a_postgres_writer_waits_for_the_one_before_it_only_so_long(
    pg_server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import leptonctl.store.postgres as postgres

    monkeypatch.setattr(postgres, "_WRITE_WAIT", 0.5)
    url = pg_server.new_database()
    with open_store(url) as first, open_store(url) as second:
        with first.transaction():
            first.set_value("k", "first")
            began = time.monotonic()
            with pytest.raises(StateError, match="lock timeout"):
                second.set_value("k", "second")  # the write lock is first's until it commits
            assert 0.4 < time.monotonic() - began < 10
        second.set_value("k", "second")  # free again
        assert first.value("k") == "second"


@pytest.mark.lab
def test_every_command_group_works_on_a_postgres_store_against_real_hosts(
    lab: Lab,
    lab_operator: Path,
    pg_server: PgServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = pg_server.new_database()
    inv = str(write_inventory(tmp_path / "hosts.yaml", lab, ["h1", "h2"]))

    def cli(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = run(["-i", inv, "--state", url, *args])
        return code, capsys.readouterr().out

    code, out = cli("submit", "--wait", "--json", "--", "echo from-pg")
    assert code == 0, out
    src = tmp_path / "model.bin"
    src.write_bytes(bytes(range(256)) * 4000)
    assert cli("data", "put", str(src), "model", "-k", "2", "--json")[0] == 0
    code, out = cli("data", "get", "model", str(tmp_path / "back.bin"))
    assert code == 0 and (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    assert cli("node", "drain", "h1", "--reason", "disk swap")[0] == 0
    code, out = cli("node", "list", "--json")
    assert {n["host"]: n["state"] for n in json.loads(out)["nodes"]}["h1"] != "up"
    assert cli("node", "resume", "h1")[0] == 0
    assert cli("net", "probe", "--seconds", "0.2")[0] == 0
    assert len(json.loads(cli("net", "show", "--json")[1])["links"]) >= 2
    code, out = cli("maintain", "--json", "health")
    assert code == 0, out
    assert cli("data", "rm", "model")[0] == 0
    with open_store(url) as store:
        (job,) = store.jobs.all()
        assert job.state == "COMPLETED" and job.submitted_by == store.actor.user
        assert [e.actor for e in store.events("host_drained")] == [str(store.actor)]
        assert store.data.datasets() == []
    assert not (lab_operator / ".local" / "share" / "leptonctl" / "state.db").exists()


def test_a_start_claim_lasts_its_lease_for_a_terminal_whose_clock_runs_ahead(
    pg_server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two machines sharing one PostgreSQL store, the laptop's clock 100 s ahead: the lease
    # a cron host took a moment ago is still live for the laptop, and the laptop's own
    # claim is not over for the cron host before its lease ends.
    import leptonctl.store.postgres as postgres

    url = pg_server.new_database()
    cron_host = open_store(url)
    real = time.time
    monkeypatch.setattr(postgres.time, "time", lambda: real() + 100.0)
    laptop = open_store(url)
    monkeypatch.undo()
    try:
        with cron_host.jobs.exclusive():
            assert cron_host.jobs.claim_start(1, "cron", now=time.time(), lease=30.0) is None
        laptop_now = time.time() + 100.0
        assert laptop.jobs.start_claim(1, now=laptop_now) is not None
        with laptop.jobs.exclusive():
            assert laptop.jobs.claim_start(1, "laptop", now=laptop_now, lease=30.0) == "cron"
            assert laptop.jobs.claim_start(2, "laptop", now=laptop_now, lease=30.0) is None
        held = cron_host.jobs.start_claim(2, now=time.time() + 20.0)
        assert held is not None and held[0] == "laptop"
        assert abs(held[1] - (time.time() + 30.0)) < 5  # on the cron host's clock
    finally:
        laptop.close()
        cron_host.close()
