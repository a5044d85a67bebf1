"""A private PostgreSQL server for tests: ``initdb`` into a temporary directory, ``pg_ctl
start`` on a free local port (its unix socket in that directory too), stopped at the end.

PostgreSQL refuses to run as root, so under root the server runs as an unprivileged
system user (``postgres`` if it exists, else ``nobody``) through ``setpriv``.  The
binaries come from PATH or Debian's ``/usr/lib/postgresql/<version>/bin``.

    with PgServer.start() as server:
        url = server.new_database()      # postgresql://lepton@127.0.0.1:PORT/t1

``python -m tests.pg`` starts one and prints its URL until interrupted (benchmarks).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

SUPERUSER = "lepton"


class PgUnavailable(RuntimeError):
    """PostgreSQL cannot be started here; the message says why."""


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: PATH first, then Debian's layout
    (newest version first)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.name)] or [0],
        reverse=True,
    )
    for candidate in debian:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> tuple[list[str], pwd.struct_passwd | None]:
    """The argv prefix that runs a command as the server's user (none unless root)."""
    if os.geteuid() != 0:
        return [], None
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise PgUnavailable("running as root and setpriv is missing (util-linux)")
        prefix = [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
        return prefix, user
    raise PgUnavailable("running as root and no unprivileged user (postgres, nobody) exists")


@dataclass
class PgServer:
    """One running server; ``stop()`` (or leaving the ``with``) shuts it down and deletes it."""

    directory: Path
    port: int
    bin_dir: Path
    prefix: list[str]
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def start(cls, timeout: float = 60.0) -> PgServer:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise PgUnavailable(
                "initdb/pg_ctl not found on PATH nor in /usr/lib/postgresql/*/bin "
                "(Debian: apt-get install postgresql)"
            )
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise PgUnavailable(
                f"psycopg is not installed ({exc}): pip install -e '.[test]'"
            ) from exc
        prefix, user = _run_as()
        directory = Path(tempfile.mkdtemp(prefix="leptonctl-pg-"))
        if user is not None:
            os.chown(directory, user.pw_uid, user.pw_gid)
        os.chmod(directory, 0o700)
        server = cls(directory, _free_port(), bin_dir, prefix)
        try:
            server._init_and_start(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def _run(self, argv: list[str], timeout: float) -> None:
        try:
            done = subprocess.run(
                [*self.prefix, *argv],
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=self.directory,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PgUnavailable(f"{Path(argv[0]).name} failed: {exc}") from exc
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip()[-800:]
            raise PgUnavailable(f"{Path(argv[0]).name} exited {done.returncode}: {tail}")

    def _init_and_start(self, timeout: float) -> None:
        data = self.directory / "data"
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                "--no-sync", "--no-instructions",
            ],
            timeout,
        )  # fmt: skip
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.directory} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            [
                str(self.bin_dir / "pg_ctl"), "-D", str(data), "-l", str(self.directory / "log"),
                "-o", options, "-w", "-t", str(int(timeout)), "start",
            ],
            timeout + 10,
        )  # fmt: skip

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database on this server; returns its URL."""
        import psycopg

        name = f"t{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        data = self.directory / "data"
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(PgUnavailable):
                self._run(
                    [
                        str(self.bin_dir / "pg_ctl"),
                        "-D",
                        str(data),
                        "-m",
                        "immediate",
                        "-w",
                        "stop",
                    ],
                    60,
                )
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def execute_raw(state: str, *statements: str) -> None:
    """Run SQL on a store's database behind its back (a SQLite file or a postgresql://
    URL), as a damaged or foreign database would be: tests of how the store copes."""
    if state.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(state, autocommit=True) as conn:
            for sql in statements:
                conn.execute(sql.encode())
        return
    import sqlite3

    db = sqlite3.connect(state)
    try:
        for sql in statements:
            db.execute(sql)
        db.commit()
    finally:
        db.close()


def main() -> None:
    server = PgServer.start()
    print(server.url(), flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        server.stop()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    main()
