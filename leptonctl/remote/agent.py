"""The agent client: push the agent by content hash, run it, read its answers.

The agent is one stdlib-only file.  On each host it lives at
``${XDG_CACHE_HOME:-~/.cache}/leptonctl/lepton_agent_<sha256 prefix>.py``: a
changed agent gets a new name, an unchanged one is never uploaded again.  The
upload is verified against the hash on the host and renamed into place
atomically, so concurrent pushes from two terminals are safe and a dropped
connection never leaves a truncated agent under its final name.

The installer also byte-compiles the agent, and the launcher *imports* it
rather than running it as a script, so each run skips compiling ~700 lines
(about a third of the agent's start-up on a small host).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shlex
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from leptonctl.core.facts import HostFacts, WireError, parse_facts
from leptonctl.errors import AgentError, HostError
from leptonctl.inventory.model import Host
from leptonctl.remote.pool import HostPool
from leptonctl.remote.transport import Connection, RunResult, Stream

AGENT_FILE = "lepton_agent.py"
_MISSING = 97  # exit status of the launcher when the agent is not in the cache yet
_CACHE_DIR = '"${XDG_CACHE_HOME:-$HOME/.cache}/leptonctl"'

# Runs on the host with the agent on stdin: verify, write privately, fsync, rename.
_INSTALLER = """\
import hashlib, os, sys, tempfile
directory, name, digest = sys.argv[1:4]
data = sys.stdin.buffer.read()
if hashlib.sha256(data).hexdigest()[:len(digest)] != digest:
    sys.exit("agent upload corrupted or truncated: sha256 mismatch")
os.makedirs(directory, mode=0o700, exist_ok=True)
st = os.stat(directory)
if st.st_uid != os.getuid() or st.st_mode & 0o077:
    sys.exit("leptonctl: refusing to install the agent into %s: it must be owned by you "
             "(uid %d, it is %d) with mode 0700 (it is %o)"
             % (directory, os.getuid(), st.st_uid, st.st_mode & 0o7777))
fd, tmp = tempfile.mkstemp(dir=directory, prefix=".agent-")
with os.fdopen(fd, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
final = os.path.join(directory, name)
os.replace(tmp, final)
try:
    import importlib.util, py_compile
    py_compile.compile(final, cfile=importlib.util.cache_from_source(final), doraise=True)
except Exception:
    pass  # no bytecode cache: the agent still runs, only its start-up is slower
"""

# Runs the cached agent as an imported module (so its bytecode cache is used). The cache
# directory goes first on sys.path, so it is checked on every start (two stats): it must be
# the user's own with mode 0700 (nobody else can plant a module there), the agent file the
# user's and not writable by others. sys.path[0] is replaced: nothing is ever imported from
# the remote cwd (os and sys are built in, imported before the interpreter reads any path).
_LAUNCHER = """\
import os, sys
d = sys.argv[1]
s, f = os.stat(d), os.stat(os.path.join(d, "{module}.py"))
if s.st_uid != os.getuid() or s.st_mode & 0o077 or f.st_uid != os.getuid() or f.st_mode & 0o022:
    sys.exit("leptonctl: refusing to run the agent in %s: the directory must be yours with mode "
             "0700 and the agent yours, not writable by others (directory: uid %d, mode %o; "
             "agent: uid %d, mode %o)" % (d, s.st_uid, s.st_mode & 0o7777, f.st_uid,
             f.st_mode & 0o7777))
sys.path[0] = d
import {module} as a
sys.exit(a.main(sys.argv[2:]))
"""


@cache
def agent_source() -> bytes:
    """The agent's bytes: packaged in the wheel, or from ``agent/`` in a checkout."""
    packaged = resources.files("leptonctl") / "_agent" / AGENT_FILE
    if packaged.is_file():
        return packaged.read_bytes()
    checkout = Path(__file__).resolve().parents[2] / "agent" / AGENT_FILE
    return checkout.read_bytes()


@cache
def agent_digest() -> str:
    return hashlib.sha256(agent_source()).hexdigest()[:20]


def _module() -> str:
    return f"lepton_agent_{agent_digest()}"


def _agent_name() -> str:
    return f"{_module()}.py"


def agent_command(host: Host, args: list[str]) -> str:
    """Shell command that runs the cached agent, or exits ``_MISSING`` if it is absent."""
    argv = list(args)
    if host.data_dir:
        argv += ["--data-dir", host.data_dir]
    quoted = " ".join(shlex.quote(a) for a in argv)
    python = shlex.quote(host.python)
    launcher = shlex.quote(_LAUNCHER.format(module=_module()))
    return (
        f'd={_CACHE_DIR}; [ -r "$d/{_agent_name()}" ] || exit {_MISSING}; '
        f'exec {python} -c {launcher} "$d" {quoted}'
    )


@dataclass(frozen=True)
class Probe:
    facts: HostFacts
    document: dict[str, Any]
    pushed: bool  # the agent had to be uploaded for this probe


async def push_agent(conn: Connection, host: Host, timeout: float) -> None:
    command = " ".join(
        [
            shlex.quote(host.python),
            "-c",
            shlex.quote(_INSTALLER),
            _CACHE_DIR,
            shlex.quote(_agent_name()),
            shlex.quote(agent_digest()),
        ]
    )
    result = await conn.run(command, input=agent_source(), timeout=timeout)
    if not result.ok:
        raise _agent_failure(host, result, "could not install the agent")


async def ensure_agent(conn: Connection, host: Host, timeout: float) -> bool:
    """Make sure the agent is cached on the host; True if it had to be pushed."""
    probe_cmd = f"[ -r {_CACHE_DIR}/{_agent_name()} ] || exit {_MISSING}"
    result = await conn.run(probe_cmd, timeout=timeout)
    if result.exit_status == _MISSING:
        await push_agent(conn, host, timeout)
        return True
    return False


async def run_agent(
    conn: Connection,
    host: Host,
    args: list[str],
    timeout: float,
    input: bytes | None = None,
) -> tuple[dict[str, Any], bool]:
    """Run one agent subcommand; push the agent first if the host lacks it."""
    command = agent_command(host, args)
    result = await conn.run(command, input=input, timeout=timeout)
    pushed = False
    if result.exit_status == _MISSING:
        await push_agent(conn, host, timeout)
        pushed = True
        result = await conn.run(command, input=input, timeout=timeout)
    if not result.ok:
        raise _agent_failure(host, result, f"the agent's `{args[0]}` failed")
    return _decode(host, result.stdout), pushed


async def probe_host(conn: Connection, host: Host, timeout: float) -> Probe:
    document, pushed = await run_agent(conn, host, ["probe"], timeout)
    return Probe(_facts(host, document), document, pushed)


class AgentSession:
    """A long-lived ``agent serve`` process: one request line, one answer line."""

    def __init__(self, host: Host, stream: Stream) -> None:
        self.host = host
        self._stream = stream
        self._turn = asyncio.Lock()  # one request in flight: answers come back in order

    @classmethod
    async def open(cls, conn: Connection, host: Host, timeout: float) -> AgentSession:
        await ensure_agent(conn, host, timeout)
        return cls(host, await conn.start(agent_command(host, ["serve"])))

    async def request(self, op: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one op (``{"op": "job-start", "spec": ...}``), read its one-line answer.
        Concurrent callers take turns, so each gets its own answer."""
        async with self._turn:
            await self._stream.send_line(json.dumps(op).encode())
            return _decode(self.host, (await self._stream.read_line(timeout)).decode())

    async def probe(self, timeout: float) -> Probe:
        document = await self.request({"op": "probe"}, timeout)
        return Probe(_facts(self.host, document), document, pushed=False)

    async def close(self) -> None:
        await self._stream.close()


class AgentSessions:
    """One ``agent serve`` per host, opened on first use and kept while the pool lives.

    A command that talks to the same hosts again and again (``submit --wait``,
    ``schedule --watch``) then pays for the agent's start-up once per host, not per call.
    """

    def __init__(self, pool: HostPool) -> None:
        self.pool = pool
        self._sessions: dict[str, AgentSession] = {}
        self._opening: dict[str, asyncio.Lock] = {}

    async def get(self, host: Host) -> AgentSession:
        async with self._opening.setdefault(host.name, asyncio.Lock()):  # one per host
            session = self._sessions.get(host.name)
            if session is None:
                conn = await self.pool.connect(host)
                session = await AgentSession.open(conn, host, self.pool.options.command_timeout)
                self._sessions[host.name] = session
            return session

    async def request(
        self, host: Host, op: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        """One op on the host's session; a failed session is dropped (reopened next time).
        ``timeout`` (default: the command timeout) is for ops that read a lot of data."""
        try:
            session = await self.get(host)
            return await session.request(op, timeout or self.pool.options.command_timeout)
        except HostError:
            await self.drop(host.name)
            raise

    async def drop(self, name: str) -> None:
        session = self._sessions.pop(name, None)
        if session is not None:
            await session.close()

    async def close(self) -> None:
        for name in list(self._sessions):
            await self.drop(name)


def _decode(host: Host, text: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AgentError(
            host.name, f"the agent printed something that is not JSON ({exc}): {text[:200]!r}"
        ) from exc
    if not isinstance(document, dict):
        raise AgentError(host.name, "the agent's answer is not a JSON object")
    return document


def _facts(host: Host, document: dict[str, Any]) -> HostFacts:
    try:
        return parse_facts(document)
    except WireError as exc:
        raise AgentError(host.name, str(exc)) from exc


def _agent_failure(host: Host, result: RunResult, what: str) -> HostError:
    if result.exit_status == 127:
        return AgentError(
            host.name,
            f"{what}: `{host.python}` was not found on the host",
            hint="install python3 >= 3.8 there, or set `python:` "
            "(ansible_python_interpreter) for this host",
        )
    tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
    return AgentError(
        host.name,
        f"{what} (exit status {result.exit_status}): {' | '.join(tail)}",
        hint="run `leptonctl exec` on that host to investigate",
    )
