"""The reply of each operation, as TypedDicts (imported into wire.py, its home for callers).

What a successful reply carries; an error reply is {"schema": 1, "error": TEXT}. Values come
from a host: leptonctl checks what it uses before it trusts it. The dicts are flat, without
TypedDict inheritance: its key order differs between Python versions, and docs/protocol.md
lists the keys in order.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, TypedDict


class ProbeReply(TypedDict, total=False):
    schema: int
    agent_version: str
    time: float
    probe_ms: float
    hostname: str
    os: Dict[str, Any]
    python: Dict[str, Any]
    cpu: Dict[str, Any]
    memory: Dict[str, Any]
    disks: List[Dict[str, Any]]
    gpus: List[Dict[str, Any]]
    gpu_driver: Dict[str, Any]
    fpgas: List[Dict[str, Any]]
    fpga_managers: List[Dict[str, Any]]
    unavailable: Dict[str, str]


class SampleReply(TypedDict, total=False):
    """The moving counters of a host, for a live dashboard. cpu_times: {total, idle, threads}
    ticks of /proc/stat since boot (the operator takes the busy share between two samples);
    gpus: [{index, uuid, utilization_pct, memory_utilization_pct, memory_used_bytes,
    memory_total_bytes, temperature_c, power_w}], only when asked for; jobs: {id: state} of
    the job ids asked for (RUNNING, COMPLETED, ..., UNKNOWN: no such job here)."""

    schema: int
    time: float
    cpu_times: Optional[Dict[str, Any]]
    load: Optional[List[float]]
    memory: Dict[str, Any]
    gpus: List[Dict[str, Any]]
    jobs: Dict[str, str]
    unavailable: Dict[str, str]


class PingReply(TypedDict, total=False):
    schema: int
    pong: bool
    agent_version: str


class VersionReply(TypedDict, total=False):
    schema: int
    agent_version: str


class JobEntry(TypedDict, total=False):
    """A job's status entry. state: STARTING, RUNNING, COMPLETED, FAILED, TIMEOUT,
    CANCELLED, LOST (no end record, no supervisor) or UNKNOWN (no such job). A job killed
    over its memory limit is FAILED with a reason that starts "out of memory". containment:
    {cpus: the CPU ids it is pinned to or null, cpus_note: why not, memory: how its limit is
    enforced ("sampling", "rlimit") or null, memory_limit_bytes}, once it started."""

    id: str
    state: str
    pid: Optional[int]
    pgid: Optional[int]
    started: Optional[float]
    ended: Optional[float]
    exit_code: Optional[int]
    signal: Optional[str]
    peak_rss_bytes: Optional[int]
    reason: Optional[str]
    log_bytes: int
    containment: Optional[Dict[str, Any]]


class JobStartReply(JobEntry, total=False):
    """The job's status entry after the start."""

    schema: int
    created: bool


class JobStatusReply(TypedDict, total=False):
    schema: int
    jobs: List[JobEntry]


class JobKillReply(JobEntry, total=False):
    """The job's status entry after the request."""

    schema: int
    cancel_requested: bool


class JobLogReply(TypedDict, total=False):
    schema: int
    id: str
    offset: int
    data: str
    next_offset: int
    eof: bool
    state: str


class JobRmReply(TypedDict, total=False):
    schema: int
    id: str
    removed: bool
    state: str


class ChunkHaveReply(TypedDict, total=False):
    """storage: the data dir's storage id (hosts that share one directory report the same
    id), or null when it cannot be stamped."""

    schema: int
    present: Dict[str, int]
    free_bytes: int
    used_bytes: int
    storage: Optional[str]


class ChunkVerifyReply(TypedDict, total=False):
    schema: int
    ok: List[str]
    missing: List[str]
    corrupt: List[str]
    bytes: int
    seconds: float


class ChunkRmReply(TypedDict, total=False):
    schema: int
    removed: List[str]
    freed_bytes: int


class ChunkImportReply(TypedDict, total=False):
    schema: int
    stored: List[str]
    failed: Dict[str, str]


class ChunkPinReply(TypedDict, total=False):
    schema: int
    pinned: List[str]
    present: Dict[str, int]


class ChunkUnpinReply(TypedDict, total=False):
    schema: int
    unpinned: List[str]
    removed: List[str]
    kept: Dict[str, Any]
    freed_bytes: int


class ChunkGcReply(TypedDict, total=False):
    schema: int
    stale_refs: List[str]
    removed: List[str]
    freed_bytes: int
    legacy: int
    released_legacy: bool


class ChunkDropReply(TypedDict, total=False):
    schema: int
    removed: List[str]
    kept: Dict[str, Any]
    others: List[str]
    freed_bytes: int


class GrantReply(TypedDict, total=False):
    schema: int
    granted: str
    key: bool
    expires: str


class RevokeReply(TypedDict, total=False):
    schema: int
    revoked: str
    key_lines_removed: int
    stale_files_removed: int


class ScanReply(TypedDict, total=False):
    schema: int
    kind: str
    entries: List[Dict[str, Any]]
    format: int  # 2: a packed scan, the columns below instead of entries
    chunks: List[Any]
    paths: List[str]
    types: str
    modes: List[int]
    sizes: List[int]
    pieces: List[List[int]]
    links: List[Any]
    mtimes: List[Any]


# Keys of a reply that has two shapes: a scan is unpacked (``entries``) or packed (format 2:
# the columns); the contract requires the keys common to both, and one of the shapes.
SHAPE_KEYS = {
    "ScanReply": (
        ("entries",),
        ("format", "chunks", "paths", "types", "modes", "sizes", "pieces", "links", "mtimes"),
    ),
}


class FileStatusReply(TypedDict, total=False):
    schema: int
    files: List[Dict[str, Any]]
    tree_ok: bool  # every dir (with its mode) and symlink (with its target) of the request is there


class PathInfoReply(TypedDict, total=False):
    schema: int
    paths: List[Dict[str, Any]]


class MaterializeReply(TypedDict, total=False):
    schema: int
    done: bool
    missing: List[str]
    copied: int
    path: str
