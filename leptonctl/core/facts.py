"""The agent's wire format, read into frozen dataclasses.

The agent (``agent/lepton_agent.py``) prints one JSON document per probe.  This
module is the only place that knows its field names: everything else in
leptonctl works with ``HostFacts``.  Version skew is handled here too: a
document of a newer schema major than we understand is refused with a clear
message; missing optional fields read as ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SUPPORTED_SCHEMA = 1


class WireError(ValueError):
    """The agent's answer is not a document this leptonctl can read."""


@dataclass(frozen=True)
class CpuFacts:
    model: str | None
    cores: int | None
    threads: int
    usable_threads: int
    load: tuple[float, float, float]
    freq_mhz: float | None
    max_freq_mhz: float | None
    # the ids of the CPUs the agent may use (its affinity); empty: unknown, jobs not pinned
    ids: tuple[int, ...] = ()
    numa_nodes: tuple[tuple[int, int], ...] = ()  # (cpu id, NUMA node) where sysfs says


@dataclass(frozen=True)
class MemoryFacts:
    total_bytes: int
    available_bytes: int


@dataclass(frozen=True)
class DiskFacts:
    path: str
    role: str
    mount: str | None
    total_bytes: int
    free_bytes: int
    # the data dir's storage identity: hosts that report the same id share one directory
    storage_id: str | None = None
    fs_type: str | None = None  # as /proc/self/mountinfo names it: ext4, nfs4, fuse.sshfs
    network: bool | None = None  # the filesystem type is one other machines usually see


STORAGE_ID = re.compile(r"ls-[0-9a-f]{32}")


def storage_id_of(value: Any) -> str | None:
    """A storage id a host reported, or None when it is not one (a host is not trusted)."""
    return value if isinstance(value, str) and STORAGE_ID.fullmatch(value) else None


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    name: str | None
    used_memory_bytes: int | None
    uid: int | None = None  # from /proc/<pid>/status where the agent could read it
    user: str | None = None
    # the leptonctl job (its agent id) whose process group holds the process, when the
    # agent says so; None: not a job's, or an agent that does not tell
    job: str | None = None


@dataclass(frozen=True)
class MigDevice:
    """A MIG device (a GPU instance + compute instance) of a MIG-enabled GPU."""

    index: int  # the MIG device index on its parent GPU
    uuid: str | None
    profile: str | None  # nvidia-smi's profile name, e.g. "1g.10gb"
    gpu_instance_id: int | None
    compute_instance_id: int | None
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    processes: tuple[GpuProcess, ...] = ()


@dataclass(frozen=True)
class GpuLink:
    """How this GPU reaches a peer GPU: active NVLink links and the topology path."""

    peer: str  # the peer GPU's UUID
    nvlink: int  # active NVLink links to it, 0 if none
    path: str | None  # nvidia-smi topo -m vocabulary: NV, PIX, PXB, PHB, NODE, SYS


@dataclass(frozen=True)
class Xid:
    code: int
    age_s: float | None
    text: str


@dataclass(frozen=True)
class GpuHealth:
    """What says a GPU may be failing; each None: not readable (the probe says why)."""

    ecc_uncorrected_volatile: int | None = None
    retired_pages: int | None = None
    retired_pages_pending: bool | None = None
    remapped_rows_pending: bool | None = None
    remapped_rows_failed: bool | None = None
    xid: tuple[Xid, ...] | None = None


@dataclass(frozen=True)
class GpuFacts:
    index: int
    uuid: str | None
    name: str | None
    pci_bus_id: str | None
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    utilization_pct: float | None
    memory_utilization_pct: float | None
    temperature_c: float | None
    power_w: float | None
    power_limit_w: float | None
    compute_capability: str | None
    mig_mode: str | None
    ecc_uncorrected: int | None
    processes: tuple[GpuProcess, ...] = ()
    numa_node: int | None = None
    mig_devices: tuple[MigDevice, ...] = ()  # () when MIG is disabled or unknown
    topology: tuple[GpuLink, ...] = ()  # () when unknown
    health: GpuHealth | None = None  # None: an agent that does not report it

    @property
    def mig_enabled(self) -> bool:
        """Whether MIG is on: the GPU itself is then no device, its MIG devices are."""
        return (self.mig_mode or "").lower() == "enabled" or bool(self.mig_devices)


@dataclass(frozen=True)
class FpgaFacts:
    index: int
    slot: str
    vendor_id: str | None
    vendor: str | None
    device_id: str | None
    pci_class: str | None
    functions: tuple[str, ...]
    driver: str | None
    numa_node: int | None
    name: str | None


@dataclass(frozen=True)
class HostFacts:
    """What one probe of one host reported."""

    schema: int
    agent_version: str
    time: float
    probe_ms: float | None
    hostname: str
    os_system: str | None
    os_release: str | None
    os_distro: str | None
    machine: str | None
    python_version: str | None
    cpu: CpuFacts
    memory: MemoryFacts
    disks: tuple[DiskFacts, ...]
    gpus: tuple[GpuFacts, ...]
    gpu_driver_version: str | None
    cuda_version: str | None
    fpgas: tuple[FpgaFacts, ...]
    fpga_managers: tuple[Mapping[str, Any], ...] = ()
    unavailable: Mapping[str, str] = field(default_factory=dict)

    @property
    def data_disk(self) -> DiskFacts | None:
        return next((d for d in self.disks if d.role == "data"), None)


def parse_facts(doc: Any) -> HostFacts:
    """Read one probe document.  Raises ``WireError`` with what is wrong."""
    if not isinstance(doc, Mapping):
        raise WireError(f"expected a JSON object, got {type(doc).__name__}")
    schema = doc.get("schema")
    if not isinstance(schema, int):
        raise WireError("the document has no integer 'schema' field")
    if schema > SUPPORTED_SCHEMA:
        raise WireError(
            f"the agent speaks schema {schema}; this leptonctl reads up to {SUPPORTED_SCHEMA} "
            "(upgrade leptonctl on the operator machine)"
        )
    if "error" in doc:
        raise WireError(f"the agent reported an error: {doc['error']}")
    try:
        return _host_facts(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"malformed probe document: {exc!r}") from exc


def _host_facts(doc: Mapping[str, Any]) -> HostFacts:
    os_doc = doc.get("os") or {}
    driver = doc.get("gpu_driver") or {}
    return HostFacts(
        schema=doc["schema"],
        agent_version=str(doc.get("agent_version", "?")),
        time=float(doc.get("time", 0.0)),
        probe_ms=_opt_float(doc.get("probe_ms")),
        hostname=str(doc["hostname"]),
        os_system=os_doc.get("system"),
        os_release=os_doc.get("release"),
        os_distro=os_doc.get("distro"),
        machine=os_doc.get("machine"),
        python_version=(doc.get("python") or {}).get("version"),
        cpu=_cpu(doc["cpu"]),
        memory=MemoryFacts(
            total_bytes=int(doc["memory"]["total_bytes"]),
            available_bytes=int(doc["memory"]["available_bytes"]),
        ),
        disks=tuple(_disk(d) for d in doc.get("disks") or ()),
        gpus=tuple(_gpu(g) for g in doc.get("gpus") or ()),
        gpu_driver_version=driver.get("driver_version"),
        cuda_version=driver.get("cuda_version"),
        fpgas=tuple(_fpga(f) for f in doc.get("fpgas") or ()),
        fpga_managers=tuple(doc.get("fpga_managers") or ()),
        unavailable={str(k): str(v) for k, v in (doc.get("unavailable") or {}).items()},
    )


def _cpu(d: Mapping[str, Any]) -> CpuFacts:
    load = d.get("load") or (0.0, 0.0, 0.0)
    threads = int(d["threads"])
    return CpuFacts(
        model=d.get("model"),
        cores=_opt_int(d.get("cores")),
        threads=threads,
        usable_threads=int(d.get("usable_threads") or threads),
        load=(float(load[0]), float(load[1]), float(load[2])),
        freq_mhz=_opt_float(d.get("freq_mhz")),
        max_freq_mhz=_opt_float(d.get("max_freq_mhz")),
        ids=_cpu_ids(d.get("ids")),
        numa_nodes=_cpu_nodes(d.get("numa_nodes")),
    )


def _cpu_ids(value: Any) -> tuple[int, ...]:
    """CPU ids from a host: a list of distinct small non-negative ints, else none at all."""
    if not isinstance(value, list):
        return ()
    ids = [v for v in value if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 65536]
    return tuple(sorted(set(ids))) if len(ids) == len(value) else ()


def _cpu_nodes(value: Any) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, Mapping):
        return ()
    pairs = []
    for cpu, node in value.items():
        good = isinstance(node, int) and not isinstance(node, bool) and 0 <= node < 65536
        if str(cpu).isdigit() and good:
            pairs.append((int(cpu), node))
    return tuple(sorted(pairs))


def _disk(d: Mapping[str, Any]) -> DiskFacts:
    return DiskFacts(
        path=str(d["path"]),
        role=str(d.get("role", "data")),
        mount=d.get("mount"),
        total_bytes=int(d["total_bytes"]),
        free_bytes=int(d["free_bytes"]),
        storage_id=storage_id_of(d.get("storage_id")),
        fs_type=_fs_type(d.get("fs_type")),
        network=d["network"] if isinstance(d.get("network"), bool) else None,
    )


def _fs_type(value: Any) -> str | None:
    """A filesystem type name as mountinfo writes it (no spaces), at most 64 characters."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9._+-]{1,64}", value):
        return value
    return None


def _gpu(d: Mapping[str, Any]) -> GpuFacts:
    return GpuFacts(
        index=int(d["index"]),
        uuid=_uuid(d.get("uuid")),
        name=_text(d.get("name")),
        pci_bus_id=_text(d.get("pci_bus_id")),
        memory_total_bytes=_opt_int(d.get("memory_total_bytes")),
        memory_used_bytes=_opt_int(d.get("memory_used_bytes")),
        utilization_pct=_opt_float(d.get("utilization_pct")),
        memory_utilization_pct=_opt_float(d.get("memory_utilization_pct")),
        temperature_c=_opt_float(d.get("temperature_c")),
        power_w=_opt_float(d.get("power_w")),
        power_limit_w=_opt_float(d.get("power_limit_w")),
        compute_capability=_text(d.get("compute_capability")),
        mig_mode=_text(d.get("mig_mode")),
        ecc_uncorrected=_opt_int(d.get("ecc_uncorrected")),
        processes=_processes(d.get("processes")),
        numa_node=_opt_int(d.get("numa_node")),
        mig_devices=_mig_devices(d.get("mig_devices")),
        topology=_topology(d.get("topology")),
        health=_health(d.get("health")),
    )


# -- what newer agents add about GPUs: read leniently, a bad part is unknown, never fatal ---

_MAX_TEXT = 256
_MAX_ITEMS = 1024  # processes, MIG devices, peers, XIDs: more is not a GPU's
PATHS = ("NV", "PIX", "PXB", "PHB", "NODE", "SYS")
_UUID = re.compile(r"[A-Za-z0-9][A-Za-z0-9/_.-]{0,95}")  # GPU-..., MIG-..., MIG-GPU-.../1/0
_JOB_ID = re.compile(r"[0-9]{1,18}\.[0-9]{1,9}\.[A-Za-z0-9_-]{1,64}")


def _text(value: Any, limit: int = _MAX_TEXT) -> str | None:
    """A string from a host, shown and compared as is: printable and bounded, else None."""
    if isinstance(value, str) and 0 < len(value) <= limit and value.isprintable():
        return value
    return None


def _uuid(value: Any) -> str | None:
    """A device UUID as NVML writes it: it goes into CUDA_VISIBLE_DEVICES, so no commas."""
    return value if isinstance(value, str) and _UUID.fullmatch(value) else None


def _int(value: Any) -> int | None:
    """An int from a host (not a bool, not a float), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _count(value: Any) -> int | None:
    number = _int(value)
    return number if number is not None and number >= 0 else None


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _items(value: Any) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        return []
    return [v for v in value[:_MAX_ITEMS] if isinstance(v, Mapping)]


def _processes(value: Any) -> tuple[GpuProcess, ...]:
    found = []
    for p in _items(value):
        pid = _int(p.get("pid"))
        if pid is None or pid <= 0:
            continue
        job = _text(p.get("job"), 100)
        found.append(
            GpuProcess(
                pid=pid,
                name=_text(p.get("name")),
                used_memory_bytes=_count(p.get("used_memory_bytes")),
                uid=_count(p.get("uid")),
                user=_text(p.get("user"), 64),
                job=job if job is not None and _JOB_ID.fullmatch(job) else None,
            )
        )
    return tuple(found)


def _mig_devices(value: Any) -> tuple[MigDevice, ...]:
    found = []
    for m in _items(value):
        index = _count(m.get("index"))
        if index is None:
            continue
        found.append(
            MigDevice(
                index=index,
                uuid=_uuid(m.get("uuid")),
                profile=_text(m.get("profile"), 64),
                gpu_instance_id=_count(m.get("gpu_instance_id")),
                compute_instance_id=_count(m.get("compute_instance_id")),
                memory_total_bytes=_count(m.get("memory_total_bytes")),
                memory_used_bytes=_count(m.get("memory_used_bytes")),
                processes=_processes(m.get("processes")),
            )
        )
    return tuple(sorted(found, key=lambda m: m.index))


def _topology(value: Any) -> tuple[GpuLink, ...]:
    if not isinstance(value, Mapping):
        return ()
    links = []
    for peer, link in list(value.items())[:_MAX_ITEMS]:
        name = _uuid(peer)
        if name is None or not isinstance(link, Mapping):
            continue
        path = link.get("path")
        links.append(
            GpuLink(
                peer=name,
                nvlink=_count(link.get("nvlink")) or 0,
                path=path if path in PATHS else None,
            )
        )
    return tuple(sorted(links, key=lambda link: link.peer))


def _health(value: Any) -> GpuHealth | None:
    if not isinstance(value, Mapping):
        return None
    xids = value.get("xid")
    return GpuHealth(
        ecc_uncorrected_volatile=_count(value.get("ecc_uncorrected_volatile")),
        retired_pages=_count(value.get("retired_pages")),
        retired_pages_pending=_flag(value.get("retired_pages_pending")),
        remapped_rows_pending=_flag(value.get("remapped_rows_pending")),
        remapped_rows_failed=_flag(value.get("remapped_rows_failed")),
        xid=None if not isinstance(xids, list) else _xids(xids),
    )


def _xids(value: list[Any]) -> tuple[Xid, ...]:
    found = []
    for x in _items(value):
        code = _count(x.get("code"))
        age = x.get("age_s")
        if not isinstance(age, int | float) or isinstance(age, bool) or age < 0:
            age = None
        if code is not None:
            found.append(Xid(code, None if age is None else float(age), _text(x.get("text")) or ""))
    return tuple(found)


def _fpga(d: Mapping[str, Any]) -> FpgaFacts:
    return FpgaFacts(
        index=int(d["index"]),
        slot=str(d["slot"]),
        vendor_id=d.get("vendor_id"),
        vendor=d.get("vendor"),
        device_id=d.get("device_id"),
        pci_class=d.get("class"),
        functions=tuple(d.get("functions") or ()),
        driver=d.get("driver"),
        numa_node=_opt_int(d.get("numa_node")),
        name=d.get("name"),
    )


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
