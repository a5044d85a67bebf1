"""The agent's wire protocol, imported by both ends: the agent and leptonctl.

Stdlib only, Python 3.8 syntax. It holds what the two ends must agree on:

* a request type per operation (frozen dataclasses) and the keys of its reply,
  in one registry (``OPS``), from which the agent dispatches and builds its
  command line, and from which ``docs/protocol.md`` is generated
  (``python -m agent.lepton_agent.wire --markdown``);
* the validators of identifiers that cross the wire (chunk hash, job id, transfer
  id, store id, ref) and ``BadRequest``, the error of a malformed request;
* the frame header of the data plane (encode and decode).

A request is one JSON object ``{"op": NAME, FIELD: VALUE, ...}``; its reply is
one JSON object with ``"schema": 1``, or ``{"schema": 1, "error": TEXT}``. The
agent reads fields leniently (a missing field is its default, unknown fields
are ignored) and checks every value itself, so a request built by hand still
gets a precise error.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from typing import IO, Any, ClassVar, Dict, List, Mapping, Optional, Tuple, Type, TypeVar

AGENT_VERSION = "0.1.0"
SCHEMA = 1
MIB = 1024 * 1024
JOB_LOG_LIMIT = 65536

JOB_ID_PATTERN = r"[A-Za-z0-9._-]{1,64}"
HASH_PATTERN = r"[0-9a-f]{64}"
STORE_ID_PATTERN = r"[0-9a-f]{32}"
TRANSFER_ID_PATTERN = r"[A-Za-z0-9_-]{8,64}"


def json_line(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"), default=str) + "\n"


# ---------------------------------------------------------------- validators


class BadRequest(ValueError):
    """A malformed request: answered with an error (exit 2 on the command line)."""


def check_job_id(job_id: Any) -> str:
    if not isinstance(job_id, str) or not re.fullmatch(JOB_ID_PATTERN, job_id):
        raise BadRequest("job id must match ^%s$, got %r" % (JOB_ID_PATTERN, job_id))
    if job_id in (".", ".."):
        raise BadRequest("job id must not be %r" % job_id)
    return job_id


def check_seconds(value: Any, name: str, positive: bool = False) -> Any:
    """A number of seconds (not a bool, not NaN), > 0 or >= 0; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value == value:
        raise BadRequest("%s must be a number of seconds or null, got %r" % (name, value))
    if value < 0 or (positive and value == 0):
        raise BadRequest("%s must be %s 0, got %r" % (name, ">" if positive else ">=", value))
    return value


def check_count(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadRequest("%s must be an integer >= %d, got %r" % (name, minimum, value))
    return value


def check_hash(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(HASH_PATTERN, value):
        raise BadRequest("chunk hash must be 64 lowercase hex digits, got %r" % (value,))
    return value


def check_hashes(values: Any, allow_all: bool = False) -> Any:
    """A list of chunk hashes; None (every chunk) too with allow_all."""
    if values is None and allow_all:
        return None
    if not isinstance(values, list):
        raise BadRequest("hashes must be a list of chunk hashes")
    return [check_hash(h) for h in values]


def check_store_id(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(STORE_ID_PATTERN, value):
        raise BadRequest("store must be 32 lowercase hex digits, got %r" % (value,))
    return value


def check_ref(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(HASH_PATTERN, value):
        raise BadRequest("ref must be 64 lowercase hex digits, got %r" % (value,))
    return value


def check_refs(values: Any) -> List[str]:
    if not isinstance(values, list):
        raise BadRequest("refs must be a list")
    return [check_ref(v) for v in values]


def check_transfer_id(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(TRANSFER_ID_PATTERN, value):
        raise BadRequest("transfer id must match %s, got %r" % (TRANSFER_ID_PATTERN, value))
    return value


# ---------------------------------------------------------------- frames

# A transfer is a stream of frames: a JSON header line {"h": sha256, "n": size, "t": [[file
# index, offset], ...]} then n bytes. A frame without "h" (a file range nobody hashed yet) is
# followed by a {"h": ...} trailer line; {"end": true} ends the stream. A probe frame carries
# "ack": the receiver answers it with a line "ack".
MAX_FRAME_LINE = 1 << 20  # a header or trailer line: a few hundred bytes in practice
MAX_FRAME_BYTES = 1 << 32  # far above any chunk size
END_FRAME = b'{"end":true}\n'


def encode_frame(frame: Mapping[str, Any]) -> bytes:
    """A header or trailer line."""
    return json_line(dict(frame)).encode()


def read_frame_line(stream: Any) -> bytes:
    """One header or trailer line (b"" at the end of the stream), never more than
    MAX_FRAME_LINE bytes: a line without its newline is a broken stream, not a reason to
    buffer without bound."""
    line: bytes = stream.readline(MAX_FRAME_LINE + 1)
    if line and not line.endswith(b"\n"):
        if len(line) > MAX_FRAME_LINE:
            raise ValueError("a frame header is longer than %d bytes" % MAX_FRAME_LINE)
        raise ValueError("the stream ended inside a frame header")
    return line


def frame_object(line: bytes) -> Dict[str, Any]:
    frame = json.loads(line)
    if not isinstance(frame, dict):
        raise ValueError("a frame header or trailer must be a JSON object")
    return frame


def frame_size(frame: Mapping[str, Any]) -> int:
    """The byte count a frame announces: an integer 0..MAX_FRAME_BYTES."""
    size = frame.get("n") or 0
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_FRAME_BYTES:
        raise ValueError("a frame size must be an integer 0..%d, got %r" % (MAX_FRAME_BYTES, size))
    return size


# ---------------------------------------------------------------- requests

R = TypeVar("R", bound="Request")


@dataclasses.dataclass(frozen=True)
class Arg:
    """How a request field (or a command's option) appears on the agent's command line."""

    name: str  # "id" (positional), "--grace" (option)
    help: str = ""
    type: str = "str"  # "str", "int", "float"
    nargs: Optional[str] = None
    default: Any = None
    required: bool = False
    metavar: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Request:
    """One operation's request. Subclasses set OP, SUMMARY, REPLY (the reply's keys)
    and, for an operation that is also a command, CLI (its arguments)."""

    OP: ClassVar[str] = ""
    SUMMARY: ClassVar[str] = ""
    REPLY: ClassVar[Tuple[str, ...]] = ()
    CLI: ClassVar[Optional[Tuple[Arg, ...]]] = None  # None: a serve/request op only
    STDIN_FIELD: ClassVar[Optional[str]] = None  # the field the command reads from stdin

    def to_wire(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = {"op": self.OP}
        for field in dataclasses.fields(self):
            doc[field.name] = getattr(self, field.name)
        return doc

    @classmethod
    def from_wire(cls: Type[R], doc: Mapping[str, Any]) -> R:
        """Lenient: a missing field is its default (None when it has none); the handler
        checks each value, so a malformed one gets its own error."""
        values = {}
        for field in dataclasses.fields(cls):
            if field.name in doc:
                values[field.name] = doc[field.name]
            elif field.default is not dataclasses.MISSING:
                values[field.name] = field.default
            elif field.default_factory is not dataclasses.MISSING:
                values[field.name] = field.default_factory()
            else:
                values[field.name] = None
        return cls(**values)


JOB_ENTRY = ("id", "state", "pid", "pgid", "started", "ended", "exit_code", "signal",
             "peak_rss_bytes", "reason", "log_bytes")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Probe(Request):
    OP = "probe"
    SUMMARY = "describe the host: os, cpu, memory, disks, gpus, fpgas (schema 1 document)"
    REPLY = ("schema", "agent_version", "time", "probe_ms", "hostname", "os", "python",
             "cpu", "memory", "disks", "gpus", "gpu_driver", "fpgas", "fpga_managers",
             "unavailable")  # fmt: skip
    CLI = (Arg("--root", "prefix for /proc, /sys and /etc reads", default="/"),)


@dataclasses.dataclass(frozen=True)
class Ping(Request):
    OP = "ping"
    SUMMARY = "is the agent alive"
    REPLY = ("schema", "pong", "agent_version")


@dataclasses.dataclass(frozen=True)
class Version(Request):
    OP = "version"
    SUMMARY = "the agent's version"
    REPLY = ("schema", "agent_version")
    CLI = ()


@dataclasses.dataclass(frozen=True)
class JobStart(Request):
    OP = "job-start"
    SUMMARY = (
        "start a detached job from its spec {id, command (argv list or shell string), env, "
        "workdir, walltime, grace}; a job dir that already has a supervisor or an end record "
        "is not started again (created: false)"
    )
    REPLY = ("schema", "created", *JOB_ENTRY)
    CLI = ()
    STDIN_FIELD = "spec"
    spec: Dict[str, Any]


@dataclasses.dataclass(frozen=True)
class JobStatus(Request):
    OP = "job-status"
    SUMMARY = "status entries of the given jobs (null: every job)"
    REPLY = ("schema", "jobs")
    CLI = (Arg("ids", nargs="*", metavar="ID"),)
    ids: Optional[List[str]] = None


@dataclasses.dataclass(frozen=True)
class JobKill(Request):
    OP = "job-kill"
    SUMMARY = "cancel a job: TERM its process group, KILL after the grace (default: the spec's)"
    REPLY = ("schema", "cancel_requested", *JOB_ENTRY)
    CLI = (Arg("id", metavar="ID"), Arg("--grace", "default: the spec's", type="float"))
    id: str
    grace: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class JobLog(Request):
    OP = "job-log"
    SUMMARY = "read a job's log from a byte offset (utf-8, errors replaced)"
    REPLY = ("schema", "id", "offset", "data", "next_offset", "eof", "state")
    CLI = (
        Arg("id", metavar="ID"),
        Arg("--offset", type="int", default=0),
        Arg("--limit", type="int", default=JOB_LOG_LIMIT),
    )
    id: str
    offset: int = 0
    limit: int = JOB_LOG_LIMIT


@dataclasses.dataclass(frozen=True)
class JobRm(Request):
    OP = "job-rm"
    SUMMARY = "remove an ended job's directory (an error while it runs)"
    REPLY = ("schema", "id", "removed", "state")
    CLI = (Arg("id", metavar="ID"),)
    id: str


@dataclasses.dataclass(frozen=True)
class ChunkHave(Request):
    OP = "chunk-have"
    SUMMARY = "which of the chunks (null: all) are stored here, and their sizes"
    REPLY = ("schema", "present", "free_bytes", "used_bytes")
    hashes: Optional[List[str]] = None


@dataclasses.dataclass(frozen=True)
class ChunkVerify(Request):
    OP = "chunk-verify"
    SUMMARY = "re-hash the chunks (null: all) and report the missing and corrupt ones"
    REPLY = ("schema", "ok", "missing", "corrupt", "bytes", "seconds")
    hashes: Optional[List[str]] = None


@dataclasses.dataclass(frozen=True)
class ChunkRm(Request):
    OP = "chunk-rm"
    SUMMARY = "delete chunks, whatever refs name them"
    REPLY = ("schema", "removed", "freed_bytes")
    hashes: List[str]


@dataclasses.dataclass(frozen=True)
class ChunkImport(Request):
    OP = "chunk-import"
    SUMMARY = "copy file ranges of this host [{h, n, path, o}] into its chunk store, verified"
    REPLY = ("schema", "stored", "failed")
    items: List[Dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class ChunkPin(Request):
    OP = "chunk-pin"
    SUMMARY = "write the store's refs [{ref, name, hashes}]: their chunks are kept"
    REPLY = ("schema", "pinned", "present")
    store: str
    refs: List[Dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class ChunkUnpin(Request):
    OP = "chunk-unpin"
    SUMMARY = "drop the store's refs; delete the candidate chunks no ref names any more"
    REPLY = ("schema", "unpinned", "removed", "kept", "freed_bytes")
    store: str
    refs: List[str]
    hashes: Optional[List[str]] = None


@dataclasses.dataclass(frozen=True)
class ChunkGc(Request):
    OP = "chunk-gc"
    SUMMARY = "drop the store's refs not in keep, delete the chunks no ref names"
    REPLY = ("schema", "stale_refs", "removed", "freed_bytes", "legacy", "released_legacy")
    store: str
    keep: List[str]
    release_legacy: bool = False
    check: bool = False


@dataclasses.dataclass(frozen=True)
class ChunkDrop(Request):
    OP = "chunk-drop"
    SUMMARY = "delete chunks no other store's ref names (corrupt: delete them anyway)"
    REPLY = ("schema", "removed", "kept", "others", "freed_bytes")
    store: str
    hashes: List[str]
    corrupt: bool = False
    check: bool = False


@dataclasses.dataclass(frozen=True)
class Grant(Request):
    OP = "grant"
    SUMMARY = (
        "store the spec a `recv --transfer ID` follows; with a pubkey also a one-shot "
        "restrict,command=...,expiry-time=... line in authorized_keys"
    )
    REPLY = ("schema", "granted", "key")
    transfer: str
    spec: Dict[str, Any]
    pubkey: Optional[str] = None
    ttl_s: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class Revoke(Request):
    OP = "revoke"
    SUMMARY = "remove the transfer's key line and spec, and every expired transfer key line"
    REPLY = ("schema", "revoked", "key_lines_removed", "stale_files_removed")
    transfer: str


@dataclasses.dataclass(frozen=True)
class Scan(Request):
    OP = "scan"
    SUMMARY = "walk a path: entries {path, type, mode, size, mtime_ns, chunks, target}"
    REPLY = ("schema", "kind", "entries")
    path: str
    chunk_size: int
    hash: bool = True


@dataclasses.dataclass(frozen=True)
class FileStatus(Request):
    OP = "file-status"
    SUMMARY = "which chunks of a files-mode destination are already in place"
    REPLY = ("schema", "files")
    files: List[Dict[str, Any]]
    dest: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class PathInfo(Request):
    OP = "path-info"
    SUMMARY = "kind, mode and free bytes of absolute paths"
    REPLY = ("schema", "paths")
    paths: List[str]


@dataclasses.dataclass(frozen=True)
class Materialize(Request):
    OP = "materialize"
    SUMMARY = "build a dataset at dest from local chunks"
    REPLY = ("schema", "done", "missing", "copied", "path")
    dest: str
    manifest: Dict[str, Any]
    label: Optional[str] = None


OPS: Dict[str, Type[Request]] = {
    cls.OP: cls
    for cls in (
        Probe, Ping, Version, JobStart, JobStatus, JobKill, JobLog, JobRm, ChunkHave,
        ChunkVerify, ChunkRm, ChunkImport, ChunkPin, ChunkUnpin, ChunkGc, ChunkDrop, Grant,
        Revoke, Scan, FileStatus, PathInfo, Materialize,
    )
}  # fmt: skip


# ---------------------------------------------------------------- commands that are not ops

DATA_DIR_HELP = "default: $XDG_DATA_HOME/leptonctl"


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    summary: str
    args: Tuple[Arg, ...] = ()


COMMANDS: Tuple[Command, ...] = (
    Command("serve", "answer JSON-line requests (any op) on stdin, one reply line each, until "
            "EOF", (Arg("--root", "prefix for /proc, /sys and /etc reads", default="/"),)),
    Command("request", "answer one request read from stdin (any op), then exit: 0, 1 when the "
            "reply is an error, 2 when stdin is not a JSON object"),
    Command("send", "send a transfer; its JSON spec (items, next hop) is the first line of "
            "stdin"),
    Command("net-probe", "measure rtt and bandwidth to a peer; the JSON spec is on stdin"),
    Command("recv", "receive a transfer (the forced command of a transfer key): store, write "
            "or relay its frames", (Arg("--transfer", required=True, metavar="ID"),)),
)  # fmt: skip


def command_names() -> List[str]:
    """Every command of the agent's command line."""
    ops = [name for name, cls in OPS.items() if cls.CLI is not None]
    return ops + [command.name for command in COMMANDS]


# ---------------------------------------------------------------- docs/protocol.md


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "")
    if text.startswith("Optional[") and text.endswith("]"):
        return _type_name(text[len("Optional[") : -1]) + " or null"
    return text.replace("List[", "list[").replace("Dict[", "dict[").replace("Any", "any")


def markdown() -> str:
    """docs/protocol.md: generated from the registry (tests fail when the file is stale)."""
    out = [
        "# The agent's protocol",
        "",
        "Generated by `python -m agent.lepton_agent.wire --markdown` from the registry in",
        "`agent/lepton_agent/wire.py`; do not edit by hand.",
        "",
        'Schema %d, agent version %s. A request is one JSON object `{"op": NAME, ...}`; its'
        % (SCHEMA, AGENT_VERSION),
        'reply is one JSON object with `"schema": 1`, or `{"schema": 1, "error": TEXT}`.',
        'A missing field takes its default; unknown fields are ignored; an `"id"` in a',
        "request is copied into a reply that has none. `serve` answers one line per request,",
        "`request` answers one request from stdin. Every command takes `--data-dir DIR`",
        "(%s)." % DATA_DIR_HELP,
        "",
        "## Operations",
        "",
    ]
    for name, cls in OPS.items():
        out += ["### `%s`" % name, "", cls.SUMMARY[0].upper() + cls.SUMMARY[1:] + ".", ""]
        fields = dataclasses.fields(cls)
        if fields:
            out += ["| field | type | default |", "|---|---|---|"]
            for field in fields:
                if field.default is not dataclasses.MISSING:
                    default = "`%s`" % json.dumps(field.default)
                else:
                    default = "required"
                out.append("| `%s` | %s | %s |" % (field.name, _type_name(field.type), default))
            out.append("")
        out += ["Reply: %s." % ", ".join("`%s`" % key for key in cls.REPLY), ""]
        if cls.CLI is not None:
            out += ["Command line: `%s`." % usage(name, cls.CLI, cls.STDIN_FIELD), ""]
    out += ["## Other commands", ""]
    for command in COMMANDS:
        out += ["- `%s`: %s." % (usage(command.name, command.args, None), command.summary)]
    out += [
        "",
        "## Frames",
        "",
        'A transfer is a stream of frames: a JSON header line `{"h": sha256, "n": size,',
        '"t": [[file index, offset], ...]}` then `n` bytes (at most %d). A frame without'
        % MAX_FRAME_BYTES,
        '`"h"` is followed by a `{"h": ...}` trailer line (hashed while sent); a header',
        'line is at most %d bytes; `{"end": true}` ends the stream.' % MAX_FRAME_LINE,
        "",
        "## Identifiers",
        "",
        "- chunk hash, ref: `^%s$`" % HASH_PATTERN,
        "- job id: `^%s$` (not `.` or `..`)" % JOB_ID_PATTERN,
        "- transfer id: `^%s$`" % TRANSFER_ID_PATTERN,
        "- store id: `^%s$`" % STORE_ID_PATTERN,
    ]
    return "\n".join(out) + "\n"


def usage(name: str, args: Tuple[Arg, ...], stdin_field: Optional[str]) -> str:
    words = [name]
    for arg in args:
        meta = arg.metavar or arg.name.lstrip("-").upper()
        if arg.name.startswith("--"):
            word = "%s %s" % (arg.name, meta)
            words.append(word if arg.required else "[%s]" % word)
        else:
            words.append("[%s ...]" % meta if arg.nargs == "*" else meta)
    if stdin_field:
        words.append("< %s" % stdin_field.upper())
    return " ".join(words)


def main(argv: Optional[List[str]] = None, stdout: IO[str] = sys.stdout) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["--markdown"]:
        sys.stderr.write("usage: python -m agent.lepton_agent.wire --markdown\n")
        return 2
    stdout.write(markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
