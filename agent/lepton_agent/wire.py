"""The agent's wire protocol, imported by both ends: the agent and leptonctl.

Stdlib only, Python 3.8 syntax. It holds what the two ends must agree on:

* a request type per operation (frozen dataclasses) and the keys of its reply,
  in one registry (``OPS``), from which the agent dispatches and builds its
  command line, and from which ``docs/protocol.md`` is generated
  (``python -m agent.lepton_agent.wire --markdown``);
* the validators of identifiers that cross the wire (chunk hash, job id, transfer
  id, store id, ref) and ``BadRequest``, the error of a malformed request;
* the frame header of the data plane (encode and decode), and the framing of the
  control plane's messages (``serve`` requests and replies of any size).

A request is one JSON object ``{"op": NAME, FIELD: VALUE, ...}`` (sent to ``serve`` as a
message: see "messages" below); its reply is one JSON object with ``"schema": 1``, or
``{"schema": 1, "error": TEXT}``. The agent reads fields leniently (a missing field is its
default, unknown fields are ignored) and checks every value itself, so a request built by
hand still gets a precise error.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from typing import (
    IO,
    Any,
    ClassVar,
    Dict,
    Generic,
    List,
    Mapping,
    Optional,
    Tuple,
    Type,
    TypeVar,
    get_args,
)

from .common import AGENT_VERSION as AGENT_VERSION  # the probe path imports no wire
from .common import MIB as MIB
from .common import SCHEMA as SCHEMA
from .common import json_line as json_line
from .replies import SHAPE_KEYS
from .replies import (
    ChunkDropReply as ChunkDropReply,
)
from .replies import (
    ChunkGcReply as ChunkGcReply,
)
from .replies import (
    ChunkHaveReply as ChunkHaveReply,
)
from .replies import (
    ChunkImportReply as ChunkImportReply,
)
from .replies import (
    ChunkPinReply as ChunkPinReply,
)
from .replies import (
    ChunkRmReply as ChunkRmReply,
)
from .replies import (
    ChunkUnpinReply as ChunkUnpinReply,
)
from .replies import (
    ChunkVerifyReply as ChunkVerifyReply,
)
from .replies import (
    FileStatusReply as FileStatusReply,
)
from .replies import (
    GrantReply as GrantReply,
)
from .replies import (
    JobEntry as JobEntry,
)
from .replies import (
    JobKillReply as JobKillReply,
)
from .replies import (
    JobLogReply as JobLogReply,
)
from .replies import (
    JobRmReply as JobRmReply,
)
from .replies import (
    JobStartReply as JobStartReply,
)
from .replies import (
    JobStatusReply as JobStatusReply,
)
from .replies import (
    MaterializeReply as MaterializeReply,
)
from .replies import (
    PathInfoReply as PathInfoReply,
)
from .replies import (
    PingReply as PingReply,
)
from .replies import (  # the reply types, one per operation
    ProbeReply as ProbeReply,
)
from .replies import (
    RevokeReply as RevokeReply,
)
from .replies import (
    SampleReply as SampleReply,
)
from .replies import (
    ScanReply as ScanReply,
)
from .replies import (
    VersionReply as VersionReply,
)

JOB_LOG_LIMIT = 65536

JOB_ID_PATTERN = r"[A-Za-z0-9._-]{1,64}"
HASH_PATTERN = r"[0-9a-f]{64}"
STORE_ID_PATTERN = r"[0-9a-f]{32}"
TRANSFER_ID_PATTERN = r"[A-Za-z0-9_-]{8,64}"


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
# index, offset] or [file index, file offset, frame offset, length], ...]} then n bytes. A
# frame without "h" (a file range nobody hashed yet) is followed by a {"h": ...} trailer line;
# {"end": true} ends the stream. A probe frame carries "ack": the receiver answers it with a
# line "ack".
MAX_FRAME_LINE = 1 << 20  # a header or trailer line: a few hundred bytes in practice
MAX_FRAME_BYTES = 1 << 32  # far above any chunk size
END_FRAME = b'{"end":true}\n'


@dataclasses.dataclass(frozen=True)
class SendItem:
    """One frame a sender sends (an item of a ``send`` spec or of ``chunk-import``): a stored
    chunk (``hash``), or ``size`` bytes of the sender's file ``path`` at ``offset``, or the
    concatenation of ``segments`` ((path, offset, length), ...: a packed item, many small
    files in one frame); hashed while read when ``hash`` is None. ``targets`` are the places a
    files-mode receiver writes it to: (file index, offset) for the whole item, or (file index,
    file offset, item offset, length) for a slice of it."""

    size: int
    hash: Optional[str] = None
    path: Optional[str] = None
    offset: int = 0
    targets: Tuple[Tuple[int, ...], ...] = ()
    segments: Tuple[Tuple[str, int, int], ...] = ()

    def to_wire(self) -> Dict[str, Any]:
        doc = {"n": self.size}  # type: Dict[str, Any]
        if self.hash is not None:
            doc["h"] = self.hash
        if self.path is not None:
            doc["path"], doc["o"] = self.path, self.offset
        if self.segments:
            doc["s"] = [[path, offset, length] for path, offset, length in self.segments]
        if self.targets:
            doc["t"] = [list(target) for target in self.targets]
        return doc


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


# ---------------------------------------------------------------- messages

# The control plane (``serve``): a request or reply of any size is a message, a header line
# {"frame": n} then n bytes of JSON (one object) then a newline. Nothing is read as one
# unbounded line: a header is MESSAGE_HEADER_SIZE bytes as sent (the size padded with spaces,
# so a reader reads exactly that many; the agent takes up to MAX_MESSAGE_HEADER), a body at most
# MAX_MESSAGE_BYTES (a scan of 1,000,000 files is about 200 MiB), both checked before a byte
# of the body is read. A serve session also takes a bare JSON request line (typed by hand) of
# at most MAX_REQUEST_LINE bytes, and answers it with a bare JSON line.
MAX_MESSAGE_HEADER = 64  # what the agent accepts; it sends MESSAGE_HEADER_SIZE exactly
MESSAGE_HEADER_SIZE = 21  # '{"frame":%10d}' and its newline: a reader reads exactly this
MAX_MESSAGE_BYTES = 256 * MIB
MAX_REQUEST_LINE = MIB
# A transfer's sender and receiver print progress lines and end with one result line (the
# hops and what each stored): each line is read with this bound.
MAX_RESULT_LINE = 64 * MIB


class MessageError(ValueError):
    """A message that breaks the framing: the stream cannot be trusted after it."""


def frame_message(doc: Any) -> bytes:
    """A message without its final newline: the header line, then the JSON body (over
    MAX_MESSAGE_BYTES: ValueError, before anything is sent)."""
    body = json.dumps(doc, separators=(",", ":"), default=str).encode()
    if len(body) > MAX_MESSAGE_BYTES:
        raise ValueError(
            "a message of %d bytes is over the bound of %d bytes" % (len(body), MAX_MESSAGE_BYTES)
        )
    return b'{"frame":%10d}\n' % len(body) + body  # JSON allows the padding


def message_header(line: bytes) -> Optional[int]:
    """The body size a header line announces; None when ``line`` is not a header (a bare
    JSON request line). A size over MAX_MESSAGE_BYTES is a MessageError."""
    if not line.startswith(b'{"frame":') or len(line) > MAX_MESSAGE_HEADER:
        return None
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if not isinstance(doc, dict) or list(doc) != ["frame"]:
        return None
    size = doc["frame"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise MessageError(
            "a message header must announce a size 0..%d, got %r" % (MAX_MESSAGE_BYTES, size)
        )
    if size > MAX_MESSAGE_BYTES:
        raise MessageError(
            "a message of %d bytes is over the bound of %d bytes (%d MiB)"
            % (size, MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES // MIB)
        )
    return size


def message_body(data: bytes) -> bytes:
    """The body of a message read as its size plus one byte: without the final newline
    (a missing newline is a MessageError: the two ends disagree on the framing)."""
    if not data.endswith(b"\n"):
        raise MessageError("a message does not end where its header said")
    return data[:-1]


# ---------------------------------------------------------------- requests

R = TypeVar("R", bound="Request[Any]")
ReplyT = TypeVar("ReplyT")


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
class Request(Generic[ReplyT]):
    """One operation's request; ``Request[XReply]``: its reply is an ``XReply`` (a
    TypedDict of the keys a success carries). Subclasses set OP, SUMMARY and, for an
    operation that is also a command, CLI (its arguments)."""

    OP: ClassVar[str] = ""
    SUMMARY: ClassVar[str] = ""
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


def reply_type(cls: Type[Request[Any]]) -> Any:
    """The TypedDict of an operation's reply (``Request[XReply]``)."""
    for base in getattr(cls, "__orig_bases__", ()):
        args = get_args(base)
        if args:
            return args[0]
    raise TypeError("%s has no reply type" % cls.__name__)


def reply_keys(cls: Type[Request[Any]]) -> Tuple[str, ...]:
    """The keys a successful reply of the operation carries."""
    reply = reply_type(cls)
    shaped = {key for shape in SHAPE_KEYS.get(reply.__name__, ()) for key in shape}
    return tuple(key for key in reply.__annotations__ if key not in shaped)


def reply_shapes(cls: Type[Request[Any]]) -> Tuple[Tuple[str, ...], ...]:
    """The alternative key sets of a reply with several shapes (one of them is present in
    full); () for a reply of one shape."""
    return tuple(SHAPE_KEYS.get(reply_type(cls).__name__, ()))


@dataclasses.dataclass(frozen=True)
class Probe(Request[ProbeReply]):
    OP = "probe"
    SUMMARY = "describe the host: os, cpu, memory, disks, gpus, fpgas (schema 1 document)"
    CLI = (Arg("--root", "prefix for /proc, /sys and /etc reads", default="/"),)


@dataclasses.dataclass(frozen=True)
class Sample(Request[SampleReply]):
    OP = "sample"
    SUMMARY = (
        "the counters a dashboard refresh reads: /proc/stat cpu ticks, memory, load and, with "
        "gpus: true, each GPU's utilisation (no probe; the operator computes CPU % between "
        "two samples); with jobs (at most 256 job ids), the state of each of those jobs"
    )
    gpus: bool = False
    jobs: Optional[List[str]] = None


@dataclasses.dataclass(frozen=True)
class Ping(Request[PingReply]):
    OP = "ping"
    SUMMARY = "is the agent alive"


@dataclasses.dataclass(frozen=True)
class Version(Request[VersionReply]):
    OP = "version"
    SUMMARY = "the agent's version"
    CLI = ()


@dataclasses.dataclass(frozen=True)
class JobStart(Request[JobStartReply]):
    OP = "job-start"
    SUMMARY = (
        "start a detached job from its spec {id, command (argv list or shell string), env, "
        "workdir, walltime, grace, cpus (CPU ids to pin it to), memory_bytes (its limit: over "
        "it the job is killed, FAILED 'out of memory')}; a job dir that already has a "
        "supervisor or an end record is not started again (created: false)"
    )
    CLI = ()
    STDIN_FIELD = "spec"
    spec: Dict[str, Any]


@dataclasses.dataclass(frozen=True)
class JobStatus(Request[JobStatusReply]):
    OP = "job-status"
    SUMMARY = "status entries of the given jobs (null: every job)"
    CLI = (Arg("ids", nargs="*", metavar="ID"),)
    ids: Optional[List[str]] = None


@dataclasses.dataclass(frozen=True)
class JobKill(Request[JobKillReply]):
    OP = "job-kill"
    SUMMARY = "cancel a job: TERM its process group, KILL after the grace (default: the spec's)"
    CLI = (Arg("id", metavar="ID"), Arg("--grace", "default: the spec's", type="float"))
    id: str
    grace: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class JobLog(Request[JobLogReply]):
    OP = "job-log"
    SUMMARY = "read a job's log from a byte offset (utf-8, errors replaced)"
    CLI = (
        Arg("id", metavar="ID"),
        Arg("--offset", type="int", default=0),
        Arg("--limit", type="int", default=JOB_LOG_LIMIT),
    )
    id: str
    offset: int = 0
    limit: int = JOB_LOG_LIMIT


@dataclasses.dataclass(frozen=True)
class JobRm(Request[JobRmReply]):
    OP = "job-rm"
    SUMMARY = "remove an ended job's directory (an error while it runs)"
    CLI = (Arg("id", metavar="ID"),)
    id: str


@dataclasses.dataclass(frozen=True)
class ChunkHave(Request[ChunkHaveReply]):
    OP = "chunk-have"
    SUMMARY = "which of the chunks (null: all) are stored here, and their sizes"
    hashes: Optional[List[str]] = None


@dataclasses.dataclass(frozen=True)
class ChunkVerify(Request[ChunkVerifyReply]):
    OP = "chunk-verify"
    SUMMARY = "re-hash the chunks (null: all) and report the missing and corrupt ones"
    hashes: Optional[List[str]] = None


@dataclasses.dataclass(frozen=True)
class ChunkRm(Request[ChunkRmReply]):
    OP = "chunk-rm"
    SUMMARY = "delete chunks, whatever refs name them"
    hashes: List[str]


@dataclasses.dataclass(frozen=True)
class ChunkImport(Request[ChunkImportReply]):
    OP = "chunk-import"
    SUMMARY = (
        "copy file ranges of this host [{h, n, path, o}] or [{h, n, s: [[path, offset, "
        "length], ...]}] (a pack of small files) into its chunk store, verified"
    )
    items: List[Dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class ChunkPin(Request[ChunkPinReply]):
    OP = "chunk-pin"
    SUMMARY = "write the store's refs [{ref, name, hashes}]: their chunks are kept"
    store: str
    refs: List[Dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class ChunkUnpin(Request[ChunkUnpinReply]):
    OP = "chunk-unpin"
    SUMMARY = "drop the store's refs; delete the candidate chunks no ref names any more"
    store: str
    refs: List[str]
    hashes: Optional[List[str]] = None


@dataclasses.dataclass(frozen=True)
class ChunkGc(Request[ChunkGcReply]):
    OP = "chunk-gc"
    SUMMARY = "drop the store's refs not in keep, delete the chunks no ref names"
    store: str
    keep: List[str]
    release_legacy: bool = False
    check: bool = False


@dataclasses.dataclass(frozen=True)
class ChunkDrop(Request[ChunkDropReply]):
    OP = "chunk-drop"
    SUMMARY = "delete chunks no other store's ref names (corrupt: delete them anyway)"
    store: str
    hashes: List[str]
    corrupt: bool = False
    check: bool = False


@dataclasses.dataclass(frozen=True)
class Grant(Request[GrantReply]):
    OP = "grant"
    SUMMARY = (
        "store the spec a `recv --transfer ID` follows; with a pubkey also a one-shot "
        "restrict,command=...,expiry-time=... line in authorized_keys"
    )
    transfer: str
    spec: Dict[str, Any]
    pubkey: Optional[str] = None
    ttl_s: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class Revoke(Request[RevokeReply]):
    OP = "revoke"
    SUMMARY = "remove the transfer's key line and spec, and every expired transfer key line"
    transfer: str


@dataclasses.dataclass(frozen=True)
class Scan(Request[ScanReply]):
    OP = "scan"
    SUMMARY = (
        "walk a path: entries {path, type, mode, size, mtime_ns, chunks, target}; with pack "
        "(and hash) a packed manifest instead: small files share chunks, in columns "
        "(format 2: chunks, paths, types, modes, sizes, pieces, links, mtimes)"
    )
    path: str
    chunk_size: int
    hash: bool = True
    pack: bool = False


@dataclasses.dataclass(frozen=True)
class FileStatus(Request[FileStatusReply]):
    OP = "file-status"
    SUMMARY = (
        "which chunks of a files-mode destination are already in place; with dirs and links "
        "(of a files-mode spec) also whether those are there as asked (tree_ok)"
    )
    files: List[Dict[str, Any]]
    dest: Optional[str] = None
    dirs: Optional[List[Dict[str, Any]]] = None
    links: Optional[List[Dict[str, Any]]] = None


@dataclasses.dataclass(frozen=True)
class PathInfo(Request[PathInfoReply]):
    OP = "path-info"
    SUMMARY = "kind, mode and free bytes of absolute paths"
    paths: List[str]


@dataclasses.dataclass(frozen=True)
class Materialize(Request[MaterializeReply]):
    OP = "materialize"
    SUMMARY = "build a dataset at dest from local chunks (a format 1 or 2 manifest)"
    dest: str
    manifest: Dict[str, Any]
    label: Optional[str] = None


OPS: Dict[str, Type[Request[Any]]] = {
    cls.OP: cls
    for cls in (
        Probe, Sample, Ping, Version, JobStart, JobStatus, JobKill, JobLog, JobRm, ChunkHave,
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
    Command("serve", "answer requests (any op) on stdin until EOF: a framed message gets a "
            "framed reply, a bare JSON line a bare reply line",
            (Arg("--root", "prefix for /proc, /sys and /etc reads", default="/"),)),
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


def main(argv: Optional[List[str]] = None, stdout: IO[str] = sys.stdout) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["--markdown"]:
        sys.stderr.write("usage: python -m agent.lepton_agent.wire --markdown\n")
        return 2
    from .protocol import markdown  # the generator is only needed here

    stdout.write(markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
