"""The agent client: push the agent by content hash, run it, read its answers.

The agent is a stdlib-only package (``agent/lepton_agent/``, ``leptonctl/_agent/`` in the
wheel), pushed as one payload: a zip archive built in memory with sorted names, fixed
timestamps and modes, so the same sources always make the same bytes, named by their
sha256.  On each host it is unpacked into
``${XDG_CACHE_HOME:-~/.cache}/leptonctl/agent-<sha256 prefix>/`` (the payload's
``__main__.py`` and its ``lepton_agent/`` package): a changed agent gets a new directory,
an unchanged one is never uploaded again.  The installer verifies the hash, unpacks into a
private temporary directory, byte-compiles it with the host's own Python (so no run ever
compiles the agent again) and renames the directory into place: two pushers racing lose
nothing (the loser's copy is removed), a dropped connection never leaves a partial agent
under its final name.  It also removes the cache files of the old single-file agent.

The launcher imports the agent from that directory only (nothing from the remote cwd), after
checking that the cache directory is the user's with mode 0700 and the agent's directory the
user's and not writable by others.  ``python -m leptonctl.remote.agent explode DIR`` unpacks
the payload locally for debugging (run it with ``python DIR/ COMMAND ...``).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import io
import json
import shlex
import sys
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from leptonctl.core.facts import HostFacts, WireError, parse_facts
from leptonctl.core.outputs import RunResult
from leptonctl.errors import AgentError, HostError
from leptonctl.inventory.model import Host
from leptonctl.remote.transport import Connection, Stream

if TYPE_CHECKING:
    from agent.lepton_agent import wire as wire
    from leptonctl.remote.pool import HostPool


def __getattr__(name: str) -> Any:
    """``wire``, the agent's protocol module, imported on first use (``from
    leptonctl.remote.agent import wire``): its registry takes tens of milliseconds to import,
    and a plain ``status`` (one ``probe`` per host) never needs it."""
    if name != "wire":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:  # the agent bundled in an installed wheel
        module = importlib.import_module("leptonctl._agent.lepton_agent.wire")
    except ModuleNotFoundError:  # a checkout
        module = importlib.import_module("agent.lepton_agent.wire")
    globals()["wire"] = module
    return module


ReplyT = TypeVar("ReplyT")
PACKAGE = "lepton_agent"
_MISSING = 97  # exit status of the launcher when the agent is not in the cache yet
_TOO_OLD = 96  # exit status of the launcher and the installer under a Python older than 3.8
_NOT_FOUND, _NOT_EXECUTABLE = 127, 126  # what sh says when it cannot run the interpreter
_FLOOR = (3, 8)

# The first lines of the installer and the launcher: any Python (2.7 included) parses them,
# so an interpreter that is too old says so in its own exit status.
_VERSION_CHECK = f"""\
import sys
if sys.version_info < {_FLOOR!r}:
    sys.stderr.write("leptonctl: the agent needs Python >= {".".join(map(str, _FLOOR))}, "
                     "%s is %s\\n" % (sys.executable, sys.version.split()[0]))
    sys.exit({_TOO_OLD})
"""
_CACHE_DIR = '"${XDG_CACHE_HOME:-$HOME/.cache}/leptonctl"'
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can have

# Runs on the host with the payload on stdin: verify, unpack privately, byte-compile, rename.
_INSTALLER = (
    _VERSION_CHECK
    + """\
import hashlib, io, os, py_compile, re, shutil, sys, tempfile, zipfile
from importlib.util import cache_from_source
directory, name, digest = sys.argv[1:4]
os.umask(0o077)  # the bytecode caches' directories too: nothing here for other users
data = sys.stdin.buffer.read()
if hashlib.sha256(data).hexdigest() != digest:
    sys.exit("agent upload corrupted or truncated: sha256 mismatch")
os.makedirs(directory, mode=0o700, exist_ok=True)
st = os.stat(directory)
if st.st_uid != os.getuid() or st.st_mode & 0o077:
    sys.exit("leptonctl: refusing to install the agent into %s: it must be owned by you "
             "(uid %d, it is %d) with mode 0700 (it is %o)"
             % (directory, os.getuid(), st.st_uid, st.st_mode & 0o7777))
final = os.path.join(directory, name)
if not os.path.isdir(final):
    tmp = tempfile.mkdtemp(dir=directory, prefix=".agent-")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.namelist():
                if not re.fullmatch(r"(lepton_agent/)?[a-z_]+[.]py", member):
                    sys.exit("leptonctl: unexpected file in the agent payload: %r" % member)
                path = os.path.join(tmp, member)
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(archive.read(member))
                    f.flush()
                    os.fsync(f.fileno())
                try:
                    py_compile.compile(path, cfile=cache_from_source(path), doraise=True)
                except Exception:
                    pass  # no bytecode cache: the agent still runs, only its start-up is slower
        os.rename(tmp, final)
    except OSError:
        if not os.path.isdir(final):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # what is left after losing a race
for old in os.listdir(directory):  # the single-file agents of earlier versions
    if re.fullmatch(r"lepton_agent_[0-9a-f]+[.]py", old):
        os.unlink(os.path.join(directory, old))
cache = os.path.join(directory, "__pycache__")
for old in os.listdir(cache) if os.path.isdir(cache) else ():
    if re.fullmatch(r"lepton_agent_[0-9a-f]+[.].*pyc", old):
        os.unlink(os.path.join(cache, old))
"""
)

# Runs the cached agent as an imported package (so its bytecode cache is used). The cache
# directory is checked on every start (a few stats): it must be the user's own with mode
# 0700 (nobody else can plant a module there), the agent's directory the user's and not
# writable by others. sys.path[0] is replaced: nothing is ever imported from the remote cwd
# (os and sys are built in, imported before the interpreter reads any path).
_LAUNCHER = (
    _VERSION_CHECK
    + """\
import os, sys
c, d = sys.argv[1], os.path.join(sys.argv[1], sys.argv[2])
s, f = os.stat(c), os.stat(d)
if s.st_uid != os.getuid() or s.st_mode & 0o077 or f.st_uid != os.getuid() or f.st_mode & 0o022:
    sys.exit("leptonctl: refusing to run the agent in %s: the directory must be yours with mode "
             "0700 and the agent yours, not writable by others (directory: uid %d, mode %o; "
             "agent: uid %d, mode %o)" % (c, s.st_uid, s.st_mode & 0o7777, f.st_uid,
             f.st_mode & 0o7777))
sys.path[0] = d
from lepton_agent.cli import main
sys.exit(main(sys.argv[3:]))
"""
)


def _agent_root() -> Path:
    """The directory that holds ``__main__.py`` and ``lepton_agent/``."""
    packaged = resources.files("leptonctl") / "_agent"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "agent"


@cache
def agent_files() -> dict[str, bytes]:
    """The payload's files by archive name: ``__main__.py`` and ``lepton_agent/*.py``."""
    root = _agent_root()
    files = {"__main__.py": (root / "__main__.py").read_bytes()}
    for path in sorted((root / PACKAGE).glob("*.py")):
        files[f"{PACKAGE}/{path.name}"] = path.read_bytes()
    return files


@cache
def agent_payload() -> bytes:
    """The deterministic archive: the same files always make the same bytes."""
    import zipfile  # only to push: a command that finds the agent in place never packs it

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in sorted(agent_files().items()):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3  # unix, whatever the operator runs on
            archive.writestr(info, data, compresslevel=9)
    return buffer.getvalue()


def agent_source() -> bytes:
    """What is uploaded (the payload); tests replace it to simulate a broken upload."""
    return agent_payload()


@cache
def agent_digest() -> str:
    """What names the agent's cache directory on the hosts: a hash of the payload's files
    (names and bytes), computed without packing them. The payload itself is built only to
    push it (a deflated zip costs more than a command's whole probe of one host); the
    installer checks it against ``payload_sha256``."""
    digest = hashlib.sha256()
    for name, data in sorted(agent_files().items()):
        digest.update(b"%s\0%d\0" % (name.encode(), len(data)) + data)
    return digest.hexdigest()[:20]


def payload_sha256() -> str:
    return hashlib.sha256(agent_payload()).hexdigest()


def payload_name() -> str:
    return f"agent-{agent_digest()}"


def explode(directory: Path) -> Path:
    """Unpack the payload into ``directory`` (for debugging: ``python DIR probe``)."""
    import zipfile

    with zipfile.ZipFile(io.BytesIO(agent_payload())) as archive:
        archive.extractall(directory)
    return directory


def agent_command(host: Host, args: list[str]) -> str:
    """The sh script that runs the cached agent, or exits ``_MISSING`` if it is absent (an
    SSH connection sends it to the login shell as ``transport.sh_line``)."""
    argv = list(args)
    if host.data_dir:
        argv += ["--data-dir", host.data_dir]
    quoted = " ".join(shlex.quote(a) for a in argv)
    python = shlex.quote(host.python)
    launcher = shlex.quote(_LAUNCHER)
    name = payload_name()
    return (
        f'd={_CACHE_DIR}; [ -d "$d/{name}" ] || exit {_MISSING}; '
        f'exec {python} -c {launcher} "$d" {name} {quoted}'
    )


@dataclass(frozen=True)
class Probe:
    facts: HostFacts
    document: dict[str, Any]
    pushed: bool  # the agent had to be uploaded for this probe


def installer_command(host: Host) -> str:
    """The sh script that installs the payload it reads on stdin into the cache."""
    return " ".join(
        [
            shlex.quote(host.python),
            "-c",
            shlex.quote(_INSTALLER),
            _CACHE_DIR,
            shlex.quote(payload_name()),
            shlex.quote(payload_sha256()),
        ]
    )


def presence_command(host: Host) -> str:
    """The sh script that exits ``_NOT_FOUND`` when the host lacks its interpreter (the
    agent may be cached all the same, on a home other hosts share), ``_MISSING`` when the
    agent is not in the cache."""
    return (
        f"command -v {shlex.quote(host.python)} >/dev/null || exit {_NOT_FOUND}; "
        f"[ -d {_CACHE_DIR}/{payload_name()} ] || exit {_MISSING}"
    )


async def push_agent(conn: Connection, host: Host, timeout: float) -> None:
    result = await conn.run(installer_command(host), input=agent_source(), timeout=timeout)
    if not result.ok:
        raise _agent_failure(host, result, "could not install the agent")


async def ensure_agent(conn: Connection, host: Host, timeout: float) -> bool:
    """Make sure the agent is cached on the host; True if it had to be pushed."""
    result = await conn.run(presence_command(host), timeout=timeout)
    if result.exit_status == _NOT_FOUND:
        raise _agent_failure(host, result, "cannot start the agent")
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
    """A long-lived ``agent serve`` process: one request message, one reply message (wire's
    "messages": a fixed-size header, then a body of at most ``wire.MAX_MESSAGE_BYTES``)."""

    def __init__(self, host: Host, stream: Stream) -> None:
        self.host = host
        self._stream = stream
        self._turn = asyncio.Lock()  # one request in flight: answers come back in order

    @classmethod
    async def open(cls, conn: Connection, host: Host, timeout: float) -> AgentSession:
        await ensure_agent(conn, host, timeout)
        return cls(host, await conn.start(agent_command(host, ["serve"])))

    async def request(self, request: wire.Request[Any], timeout: float) -> dict[str, Any]:
        """Send one request (``wire.JobStart(spec=...)``), read its reply, error replies
        included. Concurrent callers take turns, so each gets its own reply."""
        from leptonctl.remote.agent import wire  # this module's, on first use

        try:
            message = wire.frame_message(request.to_wire())
        except ValueError as exc:
            raise AgentError(
                self.host.name,
                f"cannot send {request.OP}: {exc}",
                hint="split the operation (fewer files or chunks at a time)",
            ) from None
        async with self._turn:
            await self._stream.send_line(message)
            return _decode(self.host, await self._read_reply(request.OP, timeout))

    async def _read_reply(self, op: str, timeout: float) -> str:
        from leptonctl.remote.agent import wire  # this module's, on first use

        header = await self._stream.read_exactly(wire.MESSAGE_HEADER_SIZE, timeout)
        try:
            size = wire.message_header(header)
        except wire.MessageError as exc:
            await self.close()  # the stream is out of step: nothing after this can be read
            raise AgentError(
                self.host.name,
                f"the reply to {op}: {exc}",
                hint="a reply this large is a bug or a tree too large for one operation: "
                "split it (a sub-directory at a time) and report it",
            ) from None
        if size is None:
            await self.close()
            raise AgentError(
                self.host.name,
                f"the agent's answer to {op} is not a framed message: {header[:200]!r}",
                hint="an rc file or another program writes to the session's stdout; "
                "run `leptonctl exec` on that host to investigate",
            )
        try:
            body = wire.message_body(await self._stream.read_exactly(size + 1, timeout))
        except wire.MessageError as exc:
            await self.close()
            raise AgentError(self.host.name, f"the reply to {op}: {exc}") from None
        return body.decode("utf-8", errors="replace")

    async def probe(self, timeout: float) -> Probe:
        from leptonctl.remote.agent import wire  # this module's, on first use

        document = await self.request(wire.Probe(), timeout)
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
        self, host: Host, request: wire.Request[ReplyT], timeout: float | None = None
    ) -> ReplyT:
        """One request on the host's session, its reply. An error reply raises
        ``AgentError`` (with the operation and the agent's reason; the session stays), a
        failed session is dropped (reopened next time) and its ``HostError`` raised.
        ``timeout`` (default: the command timeout) is for ops that read a lot of data."""
        try:
            session = await self.get(host)
            reply = await session.request(request, timeout or self.pool.options.command_timeout)
        except HostError:
            await self.drop(host.name)
            raise
        error = reply.get("error")
        if error is not None:
            from leptonctl.core.scan import printable

            raise AgentError.refused(host.name, request.OP, printable(str(error)))
        return cast(ReplyT, reply)  # its type says what it should hold: check before trusting

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
    tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
    interpreter = _interpreter_problem(host, result.exit_status)
    if interpreter is not None:
        return AgentError(
            host.name,
            f"{what}: {interpreter}" + (f" ({' | '.join(tail)})" if tail else ""),
            hint="install python3 >= 3.8 there, or point ansible_python_interpreter at a "
            "Python >= 3.8 the host has (in an INI inventory: "
            f"`{host.name} ansible_python_interpreter=/usr/bin/python3.11`)",
        )
    return AgentError(
        host.name,
        f"{what} (exit status {result.exit_status}): {' | '.join(tail)}",
        hint="run `leptonctl exec` on that host to investigate",
    )


def _interpreter_problem(host: Host, status: int | None) -> str | None:
    """What is wrong with the host's Python, from the status of the installer or launcher."""
    tried = f"the interpreter `{host.python}`"
    if status == _NOT_FOUND:
        return f"{tried} was not found on the host"
    if status == _NOT_EXECUTABLE:
        return f"{tried} cannot be executed on the host"
    if status == _TOO_OLD:
        return f"{tried} is older than Python {'.'.join(map(str, _FLOOR))}"
    return None


def main(argv: list[str] | None = None) -> int:
    """``python -m leptonctl.remote.agent explode DIR``: the payload, unpacked, to debug."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "explode":
        sys.stderr.write("usage: python -m leptonctl.remote.agent explode DIR\n")
        return 2
    directory = explode(Path(args[1]))
    sys.stdout.write(f"{directory}: run it with `python {directory} probe`\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
