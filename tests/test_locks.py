"""Store-wide locks on both backends (a file lock next to SQLite, advisory locks in
PostgreSQL): held across processes, shared or alone, released when the holder dies; and
the two users of them, maintain's overlap lock and the data lock."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from leptonctl.errors import ExitCode
from leptonctl.services.data.datalock import data_lock
from leptonctl.services.maintain.run import run_lock
from leptonctl.store.open import open_store
from tests.pg import PgServer
from tests.test_cron import crontab_text, set_crontab, user_crontab  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parents[1]

_HOLDER = """
import sys
from leptonctl.store.open import open_store
from tests.pg import PgServer
from tests.test_cron import crontab_text, set_crontab, user_crontab  # noqa: F401 - a fixture
with open_store(sys.argv[1]) as store, store.lock(sys.argv[2], shared=sys.argv[3] == "shared"):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes stdin, or kills us
"""


def hold_in_another_process(state: str, name: str, shared: bool = False) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, state, name, "shared" if shared else "alone"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def test_a_lock_held_by_another_process_is_refused_until_it_ends(state_backend: str) -> None:
    with open_store(state_backend) as store:
        holder = hold_in_another_process(state_backend, "maintain")
        with store.lock("maintain", wait=False) as held:
            assert held is False
        with store.lock("data", wait=False) as held:
            assert held is True  # another name is another lock
        holder.communicate("")  # it lets go and exits
        with store.lock("maintain", wait=False) as held:
            assert held is True


def test_a_killed_holder_never_leaves_the_lock_behind(state_backend: str) -> None:
    with open_store(state_backend) as store:
        holder = hold_in_another_process(state_backend, "maintain")
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        deadline = time.monotonic() + 10  # PostgreSQL ends the session when the socket closes
        while True:
            with store.lock("maintain", wait=False) as held:
                if held or time.monotonic() > deadline:
                    break
            time.sleep(0.05)
        assert held is True


def test_shared_holders_coexist_and_keep_an_exclusive_one_out(state_backend: str) -> None:
    with open_store(state_backend) as store:
        reader = hold_in_another_process(state_backend, "data", shared=True)
        with store.lock("data", shared=True, wait=False) as held:
            assert held is True
        with store.lock("data", wait=False) as held:
            assert held is False
        reader.communicate("")
        with store.lock("data", wait=False) as held:
            assert held is True


def test_the_data_lock_waits_for_shared_holders_without_blocking_the_loop(
    state_backend: str,
) -> None:
    with open_store(state_backend) as store:
        reader = hold_in_another_process(state_backend, "data", shared=True)

        async def main() -> list[str]:
            said: list[str] = []

            async def delete() -> None:
                async with data_lock(store, exclusive=True):
                    said.append("deleting")

            task = asyncio.create_task(delete())
            await asyncio.sleep(0.5)
            said.append("still waiting")  # the loop ran while the lock was waited for
            assert not task.done()
            await asyncio.to_thread(reader.communicate, "")
            await asyncio.wait_for(task, 10)
            return said

        assert asyncio.run(main()) == ["still waiting", "deleting"]
        with store.lock("data", wait=False) as held:
            assert held is True  # and let go after


def test_a_maintain_run_on_another_machine_makes_this_one_skip(
    state_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two machines share the store only through the database (no shared file): here, the
    # holder is another connection, as a cron host's would be.
    with open_store(state_backend) as cron_host, run_lock(cron_host, 1795370000.0) as holder:
        assert holder is None
        capsys.readouterr()
        code = run(["--state", state_backend, "maintain", "--json"])
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == ExitCode.SKIPPED
    assert f"(pid {os.getpid()}) by {cron_host.actor}" in lines[-1]["skipped"]
    assert run(["--state", state_backend, "maintain", "--json"]) == 0  # free again


def test_cron_entries_for_a_postgres_store_use_its_advisory_lock_not_a_local_file(
    user_crontab: None,  # noqa: F811 - the fixture imported above
    pg_server: PgServer,
    operator_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A lock file on the cron host would not keep a laptop's maintain out: with a URL the
    # entry names no --lock, so maintain takes the store's own (advisory) lock.
    url = pg_server.new_database()
    set_crontab([])
    assert run(["--state", url, "cron", "install"]) == 0
    tick = next(
        line for line in (crontab_text() or "").splitlines() if "leptonctl:default:tick" in line
    )
    words = shlex.split(tick.split(" ", 5)[5].split(" #", 1)[0])
    assert words[3:8] == ["--state", url, "maintain", "--json", "health"]
    assert "--lock" not in words
    assert words[-3:] == [">>", str(operator_home / ".local/share/leptonctl/maintain.log"), "2>&1"]
