#!/usr/bin/env python3
"""lepton_agent: the small host agent that leptonctl copies to a host over SSH.

It is one stdlib-only file that runs on any python3 >= 3.8. psutil and pynvml are
used when they can be imported and are never installed. Missing hardware is not
an error: it shows up as an empty list plus a reason in ``unavailable``.

Commands
--------
``probe [--data-dir DIR] [--root ROOT]``
    Print one JSON document (compact, one line) describing the host, exit 0.
``serve [--data-dir DIR] [--root ROOT]``
    Request/response loop over stdio for persistent sessions. Each stdin line is
    one JSON request; each request gets exactly one JSON line on stdout (flushed).
    Ops: ``{"op": "probe"}`` -> the probe document, ``{"op": "ping"}`` ->
    ``{"schema": 1, "pong": true, "agent_version": ...}``, ``{"op": "version"}``.
    Anything else -> ``{"schema": 1, "error": "..."}``. An ``"id"`` in a request is
    copied into its reply. Exit 0 on EOF.
``version``
    Print ``{"schema": 1, "agent_version": ...}``.
``job-start | job-status [ID ...] | job-kill ID [--grace S] | job-log ID [--offset N]
[--limit N] | job-rm ID`` (each with ``--data-dir``)
    Detached jobs under DATA/jobs/<id>/, see "Jobs" below. Each prints one JSON line and
    exits 0; a malformed request prints ``{"schema": 1, "error": ...}`` and exits 2 (an
    internal failure: exit 1). ``serve`` has the same ops: ``{"op": "job-start", "spec":
    {...}}``, ``{"op": "job-status", "ids": [...] | null}``, ``{"op": "job-kill", "id": ID,
    "grace": S}``, ``{"op": "job-log", "id": ID, "offset": N, "limit": N}``, ``{"op":
    "job-rm", "id": ID}``; in their replies ``"id"`` is the job id.

``request [--data-dir DIR]``
    One serve request read from stdin (any op below), one reply; exit 0, 1 when the reply
    is an error, 2 when stdin is not a JSON object.
``send``, ``recv --transfer ID``, ``net-probe`` (each with ``--data-dir``)
    The data plane, see "Chunks and transfers" below.

``--data-dir`` defaults to ``$XDG_DATA_HOME/leptonctl`` or ``~/.local/share/leptonctl``
and is created (mode 0700) when missing; its filesystem is reported in ``disks``.
``--root`` (default ``/``) prefixes every file read of /proc, /sys and /etc, so tests
can hand in a fake tree. With a root other than ``/`` psutil is not used (it would
read the real /proc); load average, statvfs, uname and hostname stay real.

Environment: ``LEPTON_AGENT_NO_PSUTIL=1`` and ``LEPTON_AGENT_NO_PYNVML=1`` disable
those imports; ``LEPTON_AGENT_FAIL_SECTIONS=cpu,gpus`` makes the named sections
raise (a test hook proving that one failing section does not sink the probe).

Wire format, schema 1: one JSON object per line. Top-level keys: ``schema`` (1),
``agent_version``, ``time``, ``probe_ms``, ``hostname``, ``os``, ``python``, ``cpu``,
``memory``, ``disks``, ``gpus``, ``gpu_driver``, ``fpgas``, ``fpga_managers``, optional
``fpga_tools`` ({"xbutil": text, "fpgainfo": text}) and ``unavailable`` ({section: reason}).
The field names of each section are the keys the ``read_*`` functions below return;
any field may be null where it could not be read.

Jobs
----
``job-start`` reads the spec from stdin: ``{"id": "^[A-Za-z0-9._-]{1,64}$" (not . or ..),
"command": [argv...] | "shell string" (run by /bin/sh -c), "env": {K: V} (added to the
agent's environment), "workdir": path | null (home; relative = under home), "walltime": s |
null, "grace": s (10)}``. It starts a supervisor (double fork + setsid, stdio /dev/null,
cwd /) that outlives the SSH connection, waits up to 5 s for its first record and answers
``{"schema": 1, "created": bool, <status entry>}``. A job dir that already has a supervisor or
an end record is not started again (``created`` false): a retried submit is safe.
The supervisor runs the command in a new session (pgid = sid = its pid), stdin /dev/null,
stdout+stderr appended to ``log``, with the agent's original umask; it kills the whole
group when the leader exits, on walltime (TERM, KILL after the grace: TIMEOUT) and on cancel
(SIGTERM to the supervisor or a ``cancel`` file: CANCELLED).
A status entry: ``{"id", "state", "pid", "pgid", "started", "ended", "exit_code", "signal",
"peak_rss_bytes", "reason", "log_bytes"}``; state is one of STARTING, RUNNING, COMPLETED
(exit 0), FAILED (127/126 when it could not start), TIMEOUT, CANCELLED, LOST (no end
record and no supervisor: the host rebooted or it was killed), UNKNOWN (no such job).
``job-status`` -> ``{"schema": 1, "jobs": [entry...]}``; ``job-kill`` -> the entry after the
request plus ``"cancel_requested"`` (false for an ended job); ``job-log`` -> ``{"schema": 1,
"id", "offset", "data" (utf-8, errors replaced), "next_offset", "eof", "state"}``;
``job-rm`` -> ``{"schema": 1, "id", "removed", "state"}`` plus ``"error"`` while it runs.
Every file the agent writes is private (umask 077, dirs 0700), records are written atomically.

Chunks and transfers
--------------------
Chunks live in DATA/chunks/<2 hex>/<sha256> (read-only; written to DATA/chunks/.tmp, checked,
synced in batches, renamed). Ops (serve or ``request``): ``chunk-have {hashes|null}`` ->
``{"present": {hash: size}, "free_bytes", "used_bytes"}``; ``chunk-verify {hashes|null}`` ->
``{"ok", "missing", "corrupt", "bytes", "seconds"}`` (re-hashes); ``chunk-rm {hashes}``;
``chunk-pin {store, refs: [{ref, name, hashes}]}``, ``chunk-unpin {store, refs, hashes?}``,
``chunk-gc {store, keep, release_legacy?, check?}`` and ``chunk-drop {store, hashes, corrupt?}``
keep DATA/refs/<store>/<ref> and delete only chunks no store's ref names (see "chunks" below);
``chunk-import {items: [{"h", "n", "path", "o"}]}`` (file ranges of this host into the store);
``scan {path, chunk_size, hash}`` -> ``{"kind", "entries": [{"path", "type", "mode", "size",
"mtime_ns", "chunks": [[hash|null, size]], "target"}]}``; ``file-status {files, dest?}`` (which
chunks of a files-mode destination are in); ``materialize {dest, manifest, label}`` (a dataset from
local chunks); ``grant {transfer, spec, pubkey?, ttl_s?}`` (the spec a ``recv`` will follow, and
a one-shot ``restrict,command=...,expiry-time=...`` key line in authorized_keys) and ``revoke
{transfer}`` (removes it, and every expired transfer key line).
A transfer is a stream of frames: a JSON header line ``{"h": sha256, "n": size, "t": [[file
index, offset], ...]}`` then the bytes (a frame without "h" is followed by a ``{"h": ...}``
trailer line: hashed while sent), and a final ``{"end": true}``. ``send`` reads its spec
(items, next hop: ``{"kind": "stdout"}`` or an ssh hop with a key and pinned host key) from
the first stdin line; ``recv`` is the forced command: it stores ("chunks"), writes ("files":
journaled in DEST.lepton-part.done) or only relays ("none") what it receives while forwarding
it to its own next hop, and prints ``{"hops": [...]}``, its result followed by the hops after
it. ``net-probe`` measures rtt and bandwidth to a peer (``recv`` in "probe" mode).
LEPTON_AGENT_AUTHORIZED_KEYS overrides the authorized_keys path (tests).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time

# csv, shutil, subprocess, warnings and what only jobs need (fcntl, signal, select,
# resource) are imported where they are used: a probe of a host without GPU tools never
# needs them, and every import is start-up time.

AGENT_VERSION = "0.1.0"
SCHEMA = 1
TOOL_TIMEOUT_S = 10
TOOL_TEXT_LINES = 40
MIB = 1024 * 1024

NVIDIA_VENDOR = "0x10de"
FPGA_VENDORS = ("0x10ee", "0x1172")  # every function of these vendors except bridges
VENDOR_NAMES = {"0x10ee": "Xilinx/AMD", "0x1172": "Intel/Altera", "0x8086": "Intel/Altera"}
# (vendor, device) -> card name; an Alveo card has a management and a user function
FPGA_CARD_NAMES = {("0x10ee", "0x%04x" % (base + fn)): "Alveo " + model for base, model in (
    (0x5000, "U200"), (0x5004, "U250"), (0x500C, "U280"), (0x5020, "U50"), (0x505C, "U55C")
) for fn in (0, 1)}  # fmt: skip
FPGA_CARD_NAMES.update({
    ("0x8086", "0x09c4"): "Intel PAC with Arria 10 GX",
    ("0x8086", "0x0b2b"): "Intel FPGA PAC D5005",
    ("0x8086", "0x0b30"): "Intel FPGA PAC N3000",
})  # fmt: skip
FPGA_TOOLS = (("xbutil", ["examine"]), ("fpgainfo", ["fme"]))


def mib_to_bytes(text):
    return int(float(text) * MIB)


# GPU key, nvidia-smi --query-gpu field, converter of its csv text (None = not a GPU key)
SMI_COLUMNS = (
    ("index", "index", int),
    ("uuid", "uuid", str),
    ("name", "name", str),
    ("pci_bus_id", "pci.bus_id", str),
    ("memory_total_bytes", "memory.total", mib_to_bytes),
    ("memory_used_bytes", "memory.used", mib_to_bytes),
    ("utilization_pct", "utilization.gpu", float),
    ("memory_utilization_pct", "utilization.memory", float),
    ("temperature_c", "temperature.gpu", float),
    ("power_w", "power.draw", float),
    ("power_limit_w", "power.limit", float),
    ("compute_capability", "compute_cap", str),
    ("mig_mode", "mig.mode.current", str.lower),
    ("ecc_uncorrected", "ecc.errors.uncorrected.volatile.total", int),
    (None, "driver_version", str),
)
GPU_FIELDS = [key for key, _, _ in SMI_COLUMNS if key and key != "index"]
SMI_APP_FIELDS = "gpu_uuid,pid,process_name,used_memory"
SMI_NULLS = ("", "n/a", "[n/a]", "[not supported]", "not supported", "[unknown error]")
NO_DRIVER = {"driver_version": None, "cuda_version": None, "source": None}
CPU_FIELDS = ("model", "cores", "threads", "usable_threads", "load", "freq_mhz", "max_freq_mhz")


# ---------------------------------------------------------------- small helpers


def env_flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def read_text(path):
    """Whole file as text, or None if it cannot be read (missing, a dir, ...)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(1 << 20).decode("utf-8", "replace")
    except (OSError, ValueError):
        return None


def read_line(*parts):
    """Stripped content of the file os.path.join(*parts), or None if missing or empty."""
    text = (read_text(os.path.join(*parts)) or "").strip()
    return text or None


def convert(value, kind=int):
    """kind(value) or None when value is None or does not parse."""
    try:
        return None if value is None else kind(value)
    except (TypeError, ValueError):
        return None


def as_text(value):
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return None if value is None else str(value)


def norm_hex(value):
    """'0x10EE\\n' -> '0x10ee'; anything that is not a hex number -> None."""
    value = (value or "").strip().lower()
    return value if re.match(r"^0x[0-9a-f]+$", value) else None


def run_tool(argv):
    """Run a tool with stdin closed; return (returncode or None, stdout, stderr)."""
    import subprocess

    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            universal_newlines=True,
            errors="replace",
            timeout=TOOL_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return None, "", "timed out after %d s" % TOOL_TIMEOUT_S
    except OSError as exc:
        return None, "", str(exc)
    return proc.returncode, proc.stdout, proc.stderr


def first_line(text):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[0] if lines else "no output"


class Host:
    """What one probe needs: the file root, the data dir, psutil (or None), the reasons."""

    def __init__(self, root, data_dir):
        self.root = root or "/"
        self.real_root = os.path.realpath(self.root) == "/"
        self.data_dir = data_dir
        self.unavailable = {}
        self.psutil = import_psutil() if self.real_root else None
        self._pci = None

    def path(self, *parts):
        return os.path.join(self.root, *(part.lstrip("/") for part in parts))

    def pci_functions(self):
        if self._pci is None:
            self._pci = read_pci_functions(self)
        return self._pci


def import_psutil():
    if env_flag("LEPTON_AGENT_NO_PSUTIL"):
        return None
    try:
        import psutil
    except Exception:
        return None
    return psutil


# ---------------------------------------------------------------- os


def read_distro(host):
    for name in ("/etc/os-release", "/usr/lib/os-release"):
        for line in (read_text(host.path(name)) or "").splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "PRETTY_NAME":
                return value.strip().strip("\"'") or None
    host.unavailable["distro"] = "no PRETTY_NAME in %s" % host.path("/etc/os-release")
    return None


def read_os(host):
    uname = os.uname()
    distro = read_distro(host)
    return {
        "os": {"system": uname.sysname, "release": uname.release, "version": uname.version,
               "machine": uname.machine, "distro": distro},
        "python": {"version": "%d.%d.%d" % sys.version_info[:3], "executable": sys.executable},
    }  # fmt: skip


# ---------------------------------------------------------------- cpu / memory


def parse_cpuinfo(text):
    """/proc/cpuinfo -> one dict per blank-line separated block."""
    blocks, current = [], {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            current[key.strip()] = value.strip()
        elif not line.strip() and current:
            blocks.append(current)
            current = {}
    return [*blocks, current] if current else blocks


def read_cpu_freq(host, blocks):
    """(current MHz, max MHz) from sysfs cpufreq (kHz), else cpuinfo 'cpu MHz' (what psutil
    does too, so it is read from files here even when psutil is present)."""
    cpufreq = host.path("/sys/devices/system/cpu/cpu0/cpufreq")
    khz = convert(read_line(cpufreq, "scaling_cur_freq"))
    current = khz / 1000.0 if khz else None
    if current is None and blocks:
        current = convert(blocks[0].get("cpu MHz"), float)
    khz = convert(read_line(cpufreq, "cpuinfo_max_freq"))
    maximum = khz / 1000.0 if khz else None
    if current is None or maximum is None:
        host.unavailable["cpu_freq"] = "no cpufreq data in %s (usual in virtual machines)" % cpufreq
    return current, maximum


def read_cpu(host):
    cpuinfo = host.path("/proc/cpuinfo")
    blocks = parse_cpuinfo(read_text(cpuinfo))
    ps = host.psutil
    pairs = {(b.get("physical id"), b.get("core id")) for b in blocks if "core id" in b}
    cores = (ps.cpu_count(logical=False) if ps else None) or len(pairs) or None
    threads = (ps.cpu_count(logical=True) if ps else None) or sum("processor" in b for b in blocks)
    threads = threads or os.cpu_count()
    if cores is None:
        host.unavailable["cpu_cores"] = "no physical id/core id in %s" % cpuinfo
    usable = threads
    if host.real_root and hasattr(os, "sched_getaffinity"):
        usable = len(os.sched_getaffinity(0))
    try:
        load = [round(value, 2) for value in os.getloadavg()]
    except (OSError, AttributeError) as exc:
        load = None
        host.unavailable["cpu_load"] = "load average not available (%s)" % exc
    freq, max_freq = read_cpu_freq(host, blocks)
    model = next((b["model name"] for b in blocks if b.get("model name")), None)
    return {
        "cpu": {"model": model, "cores": cores, "threads": threads, "usable_threads": usable,
                "load": load, "freq_mhz": freq, "max_freq_mhz": max_freq}
    }  # fmt: skip


def read_memory(host):
    """psutil.virtual_memory, else ROOT/proc/meminfo MemTotal/MemAvailable (kB)."""
    if host.psutil:
        vm = host.psutil.virtual_memory()
        return {"memory": {"total_bytes": int(vm.total), "available_bytes": int(vm.available)}}
    path = host.path("/proc/meminfo")
    info = {}
    for line in (read_text(path) or "").splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and convert(parts[1]) is not None:
            info[parts[0]] = int(parts[1]) * (1024 if parts[2:3] == ["kB"] else 1)
    total, available = info.get("MemTotal"), info.get("MemAvailable")
    if available is None and total is not None:  # kernels before 3.14
        available = sum(info.get(key, 0) for key in ("MemFree", "Buffers", "Cached"))
    if total is None:
        host.unavailable["memory"] = "no MemTotal in %s" % path
    return {"memory": {"total_bytes": total, "available_bytes": available}}


# ---------------------------------------------------------------- disks


def mount_point(host, path):
    """Longest mount point in ROOT/proc/mounts containing path (by whole path components)."""
    best = None
    for line in (read_text(host.path("/proc/mounts")) or "").splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        # /proc/mounts writes space, tab, newline and backslash as octal escapes
        mount = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
        inside = path == mount or path.startswith(mount.rstrip("/") + "/")
        if inside and (best is None or len(mount) > len(best)):
            best = mount
    return best


def read_disks(host):
    """The data dir's filesystem; left out (with a reason) when it cannot be measured."""
    path = os.path.realpath(host.data_dir)
    try:
        st = os.statvfs(path)
    except OSError as exc:
        host.unavailable["disks"] = "statvfs(%s) failed: %s" % (path, exc)
        return {"disks": []}
    disk = {"path": host.data_dir, "role": "data", "mount": mount_point(host, path)}
    disk.update(total_bytes=st.f_blocks * st.f_frsize, free_bytes=st.f_bavail * st.f_frsize)
    return {"disks": [disk]}


# ---------------------------------------------------------------- pci sysfs


def pci_driver(device_dir):
    """Basename of the device's `driver` symlink (the bound kernel driver), or None."""
    link = os.path.join(device_dir, "driver")
    return os.path.basename(os.path.realpath(link)) or None if os.path.lexists(link) else None


def read_pci_functions(host):
    """(sysfs dir, [function dicts]) of ROOT/sys/bus/pci/devices; the list is None if missing."""
    base = host.path("/sys/bus/pci/devices")
    if not os.path.isdir(base):
        return base, None
    functions = []
    for name in sorted(os.listdir(base)):
        function = {"bdf": name, "dir": os.path.join(base, name)}
        for key in ("vendor", "device", "class"):
            function[key] = norm_hex(read_line(base, name, key))
        functions.append(function)
    return base, functions


# ---------------------------------------------------------------- gpus


def empty_gpu(index):
    return dict({"index": index}, **dict.fromkeys(GPU_FIELDS), processes=[])


def nv(func, *args):
    """Call one NVML function; NotSupported (or any other NVML error) becomes None."""
    try:
        return func(*args)
    except Exception:
        return None


def nvml_ecc(nvml, handle):
    kind = getattr(nvml, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", 1)
    for counter in (getattr(nvml, "NVML_VOLATILE_ECC", 0), getattr(nvml, "NVML_AGGREGATE_ECC", 1)):
        value = nv(nvml.nvmlDeviceGetTotalEccErrors, handle, kind, counter)
        if value is not None:
            return int(value)
    return None


def nvml_processes(host, nvml, handle):
    seen = {}
    for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        for proc in nv(getattr(nvml, getter), handle) or []:
            used = getattr(proc, "usedGpuMemory", None)
            if used is not None and used >= 2**63:  # NVML_VALUE_NOT_AVAILABLE
                used = None
            name = read_line(host.path("/proc/%d/comm" % proc.pid))
            seen.setdefault(proc.pid, {"pid": proc.pid, "name": name, "used_memory_bytes": used})
    return list(seen.values())


def gpu_from_nvml(host, nvml, index):
    gpu = empty_gpu(index)
    handle = nv(nvml.nvmlDeviceGetHandleByIndex, index)
    if handle is None:
        host.unavailable["gpus[%d]" % index] = "NVML cannot open GPU %d" % index
        return gpu
    mem = nv(nvml.nvmlDeviceGetMemoryInfo, handle)
    util = nv(nvml.nvmlDeviceGetUtilizationRates, handle)
    capability = nv(nvml.nvmlDeviceGetCudaComputeCapability, handle)
    mig = nv(nvml.nvmlDeviceGetMigMode, handle)  # [current, pending]
    power = nv(nvml.nvmlDeviceGetPowerUsage, handle)  # mW
    limit = nv(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)  # mW
    gpu.update(
        uuid=as_text(nv(nvml.nvmlDeviceGetUUID, handle)),
        name=as_text(nv(nvml.nvmlDeviceGetName, handle)),
        pci_bus_id=as_text(getattr(nv(nvml.nvmlDeviceGetPciInfo, handle), "busId", None)),
        memory_total_bytes=getattr(mem, "total", None),
        memory_used_bytes=getattr(mem, "used", None),
        utilization_pct=convert(getattr(util, "gpu", None), float),
        memory_utilization_pct=convert(getattr(util, "memory", None), float),
        temperature_c=convert(nv(nvml.nvmlDeviceGetTemperature, handle, 0), float),  # 0: GPU
        power_w=None if power is None else power / 1000.0,
        power_limit_w=None if limit is None else limit / 1000.0,
        compute_capability="%d.%d" % tuple(capability[:2]) if capability else None,
        mig_mode=None if not mig else ("enabled" if mig[0] == 1 else "disabled"),
        ecc_uncorrected=nvml_ecc(nvml, handle),
        processes=nvml_processes(host, nvml, handle),
    )
    return gpu


def gpus_from_pynvml(host, reasons):
    """(gpus, driver) from NVML, or None with the reason appended to reasons."""
    if env_flag("LEPTON_AGENT_NO_PYNVML"):
        reasons.append("NVML not available (disabled by LEPTON_AGENT_NO_PYNVML)")
        return None
    import warnings

    try:
        with warnings.catch_warnings():  # the old 'pynvml' package warns on import
            warnings.simplefilter("ignore")
            import pynvml as nvml
    except Exception as exc:
        reasons.append("NVML not available (pynvml not importable: %s)" % exc)
        return None
    try:
        nvml.nvmlInit()
    except Exception as exc:
        reasons.append("NVML not available (%s)" % (str(exc) or type(exc).__name__))
        return None
    try:
        cuda = nv(nvml.nvmlSystemGetCudaDriverVersion)  # 12040 -> "12.4"
        driver = {
            "driver_version": as_text(nv(nvml.nvmlSystemGetDriverVersion)),
            "cuda_version": "%d.%d" % (cuda // 1000, cuda % 1000 // 10) if cuda else None,
            "source": "pynvml",
        }
        count = nvml.nvmlDeviceGetCount()
        return [gpu_from_nvml(host, nvml, index) for index in range(count)], driver
    except Exception as exc:
        reasons.append("NVML failed (%s: %s)" % (type(exc).__name__, exc))
        return None
    finally:
        nv(nvml.nvmlShutdown)


def smi_csv(text):
    """nvidia-smi csv rows with '[N/A]'-like cells as None."""
    import csv

    for row in csv.reader((text or "").splitlines(), skipinitialspace=True):
        if row and row[0].strip():
            yield [None if cell.strip().lower() in SMI_NULLS else cell.strip() for cell in row]


def query_smi_gpus(smi):
    """Run --query-gpu, dropping fields an older nvidia-smi rejects -> (rc, out, err, columns)."""
    columns = list(SMI_COLUMNS)
    while True:
        query = "--query-gpu=" + ",".join(field for _, field, _ in columns)
        rc, out, err = run_tool([smi, query, "--format=csv,noheader,nounits"])
        bad = re.search(r'Field "([^"]+)" is not a valid field', out + err)
        droppable = [c for c in columns[1:] if bad and c[1] == bad.group(1)]
        if rc == 0 or not droppable:
            return rc, out, err, columns
        columns.remove(droppable[0])


def smi_processes(host, smi, gpus):
    rc, out, err = run_tool(
        [smi, "--query-compute-apps=" + SMI_APP_FIELDS, "--format=csv,noheader,nounits"]
    )
    if rc != 0:
        reason = "nvidia-smi --query-compute-apps failed (%s)" % first_line(err or out)
        host.unavailable["gpu_processes"] = reason
        return
    by_uuid = {gpu["uuid"]: gpu for gpu in gpus}
    for uuid, pid, name, used in ((row + [None] * 4)[:4] for row in smi_csv(out)):
        if uuid in by_uuid and convert(pid) is not None:
            used = convert(used, mib_to_bytes)
            process = {"pid": int(pid), "name": name, "used_memory_bytes": used}
            by_uuid[uuid]["processes"].append(process)


def gpus_from_nvidia_smi(host, reasons):
    import shutil

    smi = shutil.which("nvidia-smi")
    if not smi:
        reasons.append("nvidia-smi not on PATH")
        return None
    rc, out, err, columns = query_smi_gpus(smi)
    if rc != 0:
        reasons.append("nvidia-smi failed (%s)" % first_line(out + "\n" + err))
        return None
    gpus, driver = [], dict(NO_DRIVER, source="nvidia-smi")
    for row in smi_csv(out):
        gpu = empty_gpu(len(gpus))
        for position, (key, field, kind) in enumerate(columns):
            value = convert(row[position] if position < len(row) else None, kind)
            if key and (key != "index" or value is not None):
                gpu[key] = value
            elif field == "driver_version":
                driver["driver_version"] = driver["driver_version"] or value
        gpus.append(gpu)
    if gpus:
        smi_processes(host, smi, gpus)
    cuda = re.search(r"CUDA Version:\s*([0-9.]+)", run_tool([smi])[1] or "")
    driver["cuda_version"] = cuda.group(1) if cuda else None
    return gpus, driver


def read_gpus(host):
    reasons = []
    found = gpus_from_pynvml(host, reasons) or gpus_from_nvidia_smi(host, reasons)
    if found is None:
        _, functions = host.pci_functions()
        nvidia = [
            f for f in functions or []
            if f["vendor"] == NVIDIA_VENDOR and (f["class"] or "").startswith("0x03")
        ]  # fmt: skip
        reason = " and ".join(reasons)
        if nvidia:
            reason += "; %d NVIDIA PCI device(s) present without a usable driver" % len(nvidia)
        host.unavailable["gpus"] = reason
        return {"gpus": [], "gpu_driver": dict(NO_DRIVER)}
    gpus, driver = found
    if not gpus:
        host.unavailable["gpus"] = "%s reports no GPUs" % driver["source"]
    return {"gpus": gpus, "gpu_driver": driver}


# ---------------------------------------------------------------- fpgas


def is_fpga_function(function):
    """FPGA vendors (bridges excepted) or class 0x1200xx processing accelerator."""
    pci_class = function["class"] or ""
    if pci_class.startswith("0x06"):
        return False
    return function["vendor"] in FPGA_VENDORS or pci_class.startswith("0x1200")


def fpga_card(index, slot, functions):
    """One physical card: identity of its first function, the list of all functions."""
    first = functions[0]
    numa = convert(read_line(first["dir"], "numa_node"))
    per_function = {
        f["bdf"]: {"device_id": f["device"], "class": f["class"], "driver": pci_driver(f["dir"])}
        for f in functions
    }
    return {
        "index": index,
        "slot": slot,
        "vendor_id": first["vendor"],
        "vendor": VENDOR_NAMES.get(first["vendor"]),
        "device_id": first["device"],
        "class": first["class"],
        "functions": [f["bdf"] for f in functions],
        "driver": pci_driver(first["dir"]),
        "numa_node": numa if numa is not None and numa >= 0 else None,
        "name": FPGA_CARD_NAMES.get((first["vendor"], first["device"])),
        "details": {"functions": per_function},
    }


def read_fpga_cards(functions):
    slots = {}  # "0000:3b:00" -> its FPGA functions
    for function in functions:
        if is_fpga_function(function):
            slots.setdefault(function["bdf"].rsplit(".", 1)[0], []).append(function)
    return [fpga_card(i, slot, slots[slot]) for i, slot in enumerate(sorted(slots))]


def read_fpga_managers(host):
    base = host.path("/sys/class/fpga_manager")
    return [
        {
            "name": read_line(base, device, "name") or device,
            "device": device,
            "state": read_line(base, device, "state"),
        }
        for device in (sorted(os.listdir(base)) if os.path.isdir(base) else [])
    ]


def read_fpga_tools():
    """First lines of `xbutil examine` / `fpgainfo fme` for the tools that are on PATH."""
    import shutil

    texts = {}
    for tool, args in FPGA_TOOLS:
        exe = shutil.which(tool)
        if exe:
            rc, out, err = run_tool([exe, *args])
            text = "\n".join((out if out.strip() else err).splitlines()[:TOOL_TEXT_LINES])
            texts[tool] = text if rc == 0 else "(%s exited %s)\n%s" % (tool, rc, text)
    return texts


def read_fpgas(host):
    base, functions = host.pci_functions()
    result = {"fpgas": read_fpga_cards(functions or []), "fpga_managers": read_fpga_managers(host)}
    tools = read_fpga_tools()
    if tools:
        result["fpga_tools"] = tools
    if not result["fpgas"] and not result["fpga_managers"]:
        if functions is None:
            host.unavailable["fpgas"] = "no PCI sysfs at %s" % base
        else:
            host.unavailable["fpgas"] = "no FPGA found (scanned %d PCI devices)" % len(functions)
    return result


# ---------------------------------------------------------------- the document

# (section, reader, what the document holds when the reader raises)
SECTIONS = (
    ("os", read_os, {"os": None, "python": None}),
    ("cpu", read_cpu, {"cpu": dict(dict.fromkeys(CPU_FIELDS), threads=os.cpu_count())}),
    ("memory", read_memory, {"memory": {"total_bytes": None, "available_bytes": None}}),
    ("disks", read_disks, {"disks": []}),
    ("gpus", read_gpus, {"gpus": [], "gpu_driver": NO_DRIVER}),
    ("fpgas", read_fpgas, {"fpgas": [], "fpga_managers": []}),
)


def default_data_dir():
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = xdg if os.path.isabs(xdg) else os.path.expanduser("~/.local/share")
    return os.path.join(base, "leptonctl")


def probe(root, data_dir):
    """Build the schema-1 document. Every section is isolated from the others."""
    started = time.perf_counter()
    host = Host(root, data_dir)
    doc = {"schema": SCHEMA, "agent_version": AGENT_VERSION, "time": time.time()}
    doc.update(probe_ms=None, hostname=os.uname().nodename)
    try:
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
    except OSError as exc:
        host.unavailable["data_dir"] = "cannot create data dir %s: %s" % (data_dir, exc)
    failing = os.environ.get("LEPTON_AGENT_FAIL_SECTIONS", "").split(",")
    for name, reader, fallback in SECTIONS:
        try:
            if name in failing:
                raise RuntimeError("injected failure (LEPTON_AGENT_FAIL_SECTIONS)")
            doc.update(reader(host))
        except Exception as exc:
            doc.update(json.loads(json.dumps(fallback)))  # a fresh copy
            host.unavailable[name] = "probe failed: %s: %s" % (type(exc).__name__, exc)
    doc["unavailable"] = host.unavailable
    doc["probe_ms"] = round((time.perf_counter() - started) * 1000.0, 3)
    return doc


def json_line(doc):
    return json.dumps(doc, separators=(",", ":"), default=str) + "\n"


def answer(line, root, data_dir):
    """One serve request line -> one reply dict (never raises)."""
    try:
        request = json.loads(line)
    except ValueError as exc:
        return {"schema": SCHEMA, "error": "invalid JSON request: %s" % exc}
    if not isinstance(request, dict):
        return {"schema": SCHEMA, "error": "request must be a JSON object"}
    op = request.get("op")
    try:
        if op == "probe":
            reply = probe(root, data_dir)
        elif op == "ping":
            reply = {"schema": SCHEMA, "pong": True, "agent_version": AGENT_VERSION}
        elif op == "version":
            reply = {"schema": SCHEMA, "agent_version": AGENT_VERSION}
        elif op in JOB_OPS:
            reply = job_request(op, request, data_dir)
        elif op in DATA_OPS:
            reply = data_request(op, request, data_dir)
        else:
            reply = {"schema": SCHEMA, "error": "unknown op %r" % (op,)}
    except BadRequest as exc:
        reply = {"schema": SCHEMA, "error": str(exc)}
    except Exception as exc:
        reply = {"schema": SCHEMA, "error": "%s failed: %s: %s" % (op, type(exc).__name__, exc)}
    if "id" in request:
        reply.setdefault("id", request["id"])  # a job reply's "id" is the job id
    return reply


def serve(root, data_dir, stdin, stdout):
    """Answer JSON-line requests until EOF."""
    try:
        for line in iter(stdin.readline, ""):
            if line.strip():
                stdout.write(json_line(answer(line, root, data_dir)))
                stdout.flush()
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    return 0


# ---------------------------------------------------------------- jobs

# Layout of DATA/jobs/<id>/: spec.json (what to run), state.json (RUNNING record of the
# supervisor), end.json (the end record), log (stdout+stderr), cancel (job-kill's request),
# start.lock (held by a job-start while it starts the supervisor) and supervisor.lock (held by
# the supervisor for its whole life, its text is the supervisor pid: a lock nobody holds is a
# supervisor that is gone, whatever happened to its pid since).
JOB_ID_PATTERN = r"[A-Za-z0-9._-]{1,64}"
JOB_OPS = ("job-start", "job-status", "job-kill", "job-log", "job-rm")
JOB_FIELDS = ("id", "state", "pid", "pgid", "started", "ended", "exit_code", "signal",
              "peak_rss_bytes", "reason", "log_bytes")  # fmt: skip
JOB_LIVE = ("STARTING", "RUNNING")
JOB_GRACE_S = 10
JOB_START_WAIT_S = 5.0
JOB_KILL_WAIT_S = 1.0  # job-kill waits this long for the end record before it answers
JOB_TICK_S = 0.2  # the supervisor's walltime / cancel-file check interval
JOB_LOG_LIMIT = 65536
JOB_LOG_LIMIT_MAX = 4 * MIB
EXIT_NOT_FOUND, EXIT_CANNOT_EXEC = 127, 126  # what a shell answers for the same failures
USER_UMASK = 0o022  # the umask the agent was started with (main() records it): jobs get it back


class BadRequest(ValueError):
    """A malformed job request: answered with an error (exit 2 on the command line)."""


def check_job_id(job_id):
    if not isinstance(job_id, str) or not re.fullmatch(JOB_ID_PATTERN, job_id):
        raise BadRequest("job id must match ^%s$, got %r" % (JOB_ID_PATTERN, job_id))
    if job_id in (".", ".."):
        raise BadRequest("job id must not be %r" % job_id)
    return job_id


def check_seconds(value, name, positive=False):
    """A number of seconds (not a bool, not NaN), > 0 or >= 0; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value == value:
        raise BadRequest("%s must be a number of seconds or null, got %r" % (name, value))
    if value < 0 or (positive and value == 0):
        raise BadRequest("%s must be %s 0, got %r" % (name, ">" if positive else ">=", value))
    return value


def check_count(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadRequest("%s must be an integer >= %d, got %r" % (name, minimum, value))
    return value


def check_command(command):
    if isinstance(command, str) and command.strip() and "\0" not in command:
        return command
    if (
        isinstance(command, list) and command
        and all(isinstance(arg, str) and "\0" not in arg for arg in command)
        and command[0]
    ):  # fmt: skip
        return command
    raise BadRequest("command must be a non-empty argv list of strings or a shell string")


def check_env(env):
    if env is None:
        return {}
    good = isinstance(env, dict) and all(
        isinstance(key, str) and key and "=" not in key and "\0" not in key
        and isinstance(value, str) and "\0" not in value
        for key, value in env.items()
    )  # fmt: skip
    if not good:
        raise BadRequest("env must be an object of string names (no '=') to string values")
    return env


def normalize_spec(spec):
    """The job spec as stored in spec.json: checked, with defaults and an absolute workdir."""
    if not isinstance(spec, dict):
        raise BadRequest("job spec must be a JSON object")
    home = os.path.expanduser("~")
    workdir = spec.get("workdir")
    if workdir is not None and (not isinstance(workdir, str) or not workdir or "\0" in workdir):
        raise BadRequest("workdir must be a non-empty path or null")
    grace = spec.get("grace")
    return {
        "id": check_job_id(spec.get("id")),
        "command": check_command(spec.get("command")),
        "env": check_env(spec.get("env")),
        "workdir": home if workdir is None else os.path.join(home, os.path.expanduser(workdir)),
        "walltime": check_seconds(spec.get("walltime"), "walltime", positive=True),
        "grace": JOB_GRACE_S if grace is None else check_seconds(grace, "grace"),
    }


def job_path(data_dir, job_id, name=""):
    return os.path.join(data_dir, "jobs", job_id, name)


def read_json(path):
    """The JSON object in path, or None if it is missing or not a JSON object."""
    text = read_text(path)
    try:
        doc = json.loads(text) if text else None
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def write_json_atomic(path, doc):
    """Write doc to a temp file in the same dir, fsync it, rename it over path (mode 0600)."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json_line(doc))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable
        dir_fd = os.open(os.path.dirname(path), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def open_locked(path, flags, wait_s=0.0):
    """An fd of path holding an exclusive flock, or None if another process holds it (after
    trying for wait_s). Raises OSError when path cannot be opened."""
    import fcntl

    fd = os.open(path, flags, 0o600)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:  # someone else holds it
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.02)
        except OSError:  # no locking here at all (e.g. ENOLCK on NFS): say so, do not guess
            os.close(fd)
            raise


def lock_held(path):
    """Whether a live process holds the flock on path (a missing file is not held). Opened
    read-write: NFS refuses an exclusive flock on a read-only fd (EBADF), which would read as
    "nobody holds it" and make a running job look LOST."""
    try:
        fd = open_locked(path, os.O_RDWR)
    except OSError:
        return False
    if fd is None:
        return True
    os.close(fd)
    return False


def group_alive(pgid):
    """Whether a process (zombies aside) of process group pgid exists."""
    try:
        names = os.listdir("/proc")
    except OSError:
        names = None
    if names is None or not os.path.exists("/proc/self/stat"):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for name in names:
        stat = read_text("/proc/%s/stat" % name) if name.isdigit() else None
        fields = stat.rsplit(")", 1)[-1].split() if stat else []
        # after "pid (comm)": state ppid pgrp session ...
        if len(fields) > 2 and fields[0] != "Z" and fields[2] == str(pgid):
            return True
    return False


def signal_group(pgid, signum):
    """killpg -> whether it was sent (a group that is gone or not ours is not an error)."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def signal_name(signum):
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return "signal %d" % signum


# ---------------------------------------------------------------- jobs: status, log, rm


def job_status(data_dir, job_id):
    """One job's status entry (JOB_FIELDS). The end record wins; without one, the state record
    counts only while the supervisor holds its lock: otherwise the job is LOST."""
    entry = dict.fromkeys(JOB_FIELDS)
    entry.update(id=job_id, log_bytes=0)
    if not os.path.isdir(job_path(data_dir, job_id)):
        entry.update(state="UNKNOWN", reason="no such job")
        return entry
    entry["log_bytes"] = file_size(job_path(data_dir, job_id, "log"))
    state = read_json(job_path(data_dir, job_id, "state.json")) or {}
    entry.update((key, state.get(key)) for key in ("pid", "pgid", "started"))
    end = read_json(job_path(data_dir, job_id, "end.json"))
    if end is None and lock_held(job_path(data_dir, job_id, "supervisor.lock")):
        entry["state"] = "RUNNING" if state else "STARTING"
        return entry
    if end is None:  # read again: the supervisor writes end.json just before it lets go
        end = read_json(job_path(data_dir, job_id, "end.json"))
    if end is not None:
        keys = ("state", "ended", "exit_code", "signal", "peak_rss_bytes", "reason")
        entry.update((key, end.get(key)) for key in keys)
    elif lock_held(job_path(data_dir, job_id, "start.lock")):
        entry["state"] = "STARTING"
    elif state:
        entry["state"] = "LOST"
        entry["reason"] = (
            "supervisor (pid %s) is gone without an end record: the host rebooted or it was "
            "killed" % state.get("supervisor_pid")
        )
    else:
        entry.update(state="LOST", reason="the supervisor never started")
    return entry


def list_job_ids(data_dir):
    try:
        names = os.listdir(os.path.join(data_dir, "jobs"))
    except OSError:
        return []
    ids = [n for n in names if re.fullmatch(JOB_ID_PATTERN, n) and n not in (".", "..")]
    return sorted(n for n in ids if os.path.isdir(job_path(data_dir, n)))


def job_statuses(data_dir, ids):
    if ids is None:
        ids = list_job_ids(data_dir)
    elif not isinstance(ids, list):
        raise BadRequest("ids must be a list of job ids or null")
    return {"schema": SCHEMA, "jobs": [job_status(data_dir, check_job_id(i)) for i in ids]}


def trim_partial_utf8(data):
    """data less a UTF-8 sequence cut off at its end (the next read sends it whole); never
    trimmed to nothing, so a reader always makes progress."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # ASCII or a lead byte
            need = 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
            need = 1 if byte < 0x80 or byte >> 3 == 0b11111 else need
            return data[:-back] if need > back and len(data) > back else data
    return data


def read_job_log(data_dir, job_id, offset, limit):
    check_job_id(job_id)
    offset = check_count(offset, "offset", 0)
    limit = min(check_count(limit, "limit", 1), JOB_LOG_LIMIT_MAX)
    entry = job_status(data_dir, job_id)  # before the read: an ended job's log is complete
    data, size = b"", 0
    try:
        with open(job_path(data_dir, job_id, "log"), "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(offset)
            data = fh.read(limit)
    except OSError:
        pass
    eof = entry["state"] not in JOB_LIVE and offset + len(data) >= size
    if not eof:
        data = trim_partial_utf8(data)
    return {"schema": SCHEMA, "id": job_id, "offset": offset,
            "data": data.decode("utf-8", "replace"), "next_offset": offset + len(data),
            "eof": eof, "state": entry["state"]}  # fmt: skip


def remove_job(data_dir, job_id):
    """Remove an ended (or LOST and dead) job's directory; refuse while it runs."""
    import shutil

    entry = job_status(data_dir, check_job_id(job_id))
    reply = {"schema": SCHEMA, "id": job_id, "removed": False, "state": entry["state"]}
    if entry["state"] == "UNKNOWN":
        return reply
    alive = entry["state"] == "LOST" and entry["pgid"] and group_alive(entry["pgid"])
    if entry["state"] in JOB_LIVE or alive:
        reply["error"] = "job %s is %s: job-kill it first" % (job_id, entry["state"])
        return reply
    doomed = os.path.join(data_dir, "jobs", "%s~rm~%d" % (job_id, os.getpid()))
    os.rename(job_path(data_dir, job_id), doomed)  # gone at once, not half-removed
    shutil.rmtree(doomed, ignore_errors=True)
    reply["removed"] = True
    return reply


# ---------------------------------------------------------------- jobs: start and kill


def has_supervisor_or_end(data_dir, job_id):
    return (
        os.path.exists(job_path(data_dir, job_id, "state.json"))
        or os.path.exists(job_path(data_dir, job_id, "end.json"))
        or lock_held(job_path(data_dir, job_id, "supervisor.lock"))
    )


def wait_for_file(paths, timeout_s):
    deadline = time.monotonic() + timeout_s
    while not any(os.path.exists(path) for path in paths) and time.monotonic() < deadline:
        time.sleep(0.02)


def start_job(data_dir, spec):
    """Start the job's supervisor unless the job dir already has one (or an end record): a
    retried submit answers the current status instead of running the command twice."""
    spec = normalize_spec(spec)
    job_id = spec["id"]
    os.makedirs(job_path(data_dir, job_id), mode=0o700, exist_ok=True)
    lock = open_locked(job_path(data_dir, job_id, "start.lock"), os.O_RDWR | os.O_CREAT,
                       wait_s=2 * JOB_START_WAIT_S)  # fmt: skip
    created = False
    if lock is not None:
        try:
            created = not has_supervisor_or_end(data_dir, job_id)
            if created:
                write_json_atomic(job_path(data_dir, job_id, "spec.json"), spec)
                spawn_supervisor(data_dir, job_id)
                records = [job_path(data_dir, job_id, name) for name in ("state.json", "end.json")]
                wait_for_file(records, JOB_START_WAIT_S)
        finally:
            os.close(lock)
    return dict({"schema": SCHEMA, "created": created}, **job_status(data_dir, job_id))


def kill_job(data_dir, job_id, grace):
    """Ask the supervisor to cancel (cancel file + SIGTERM). A job whose supervisor is gone
    is killed here (TERM, grace, KILL of its process group) and recorded CANCELLED."""
    import signal

    grace = check_seconds(grace, "grace")
    entry = job_status(data_dir, check_job_id(job_id))
    if entry["state"] not in (*JOB_LIVE, "LOST"):
        return dict({"schema": SCHEMA, "cancel_requested": False}, **entry)
    request = {"grace": grace, "time": time.time()}
    write_json_atomic(job_path(data_dir, job_id, "cancel"), request)
    if entry["state"] == "LOST":
        kill_lost_job(data_dir, job_id, entry, grace)
    else:
        pid = convert(read_line(job_path(data_dir, job_id, "supervisor.lock")))
        if pid and lock_held(job_path(data_dir, job_id, "supervisor.lock")):
            os.kill(pid, signal.SIGTERM)
        wait_for_file([job_path(data_dir, job_id, "end.json")], JOB_KILL_WAIT_S)
    return dict({"schema": SCHEMA, "cancel_requested": True}, **job_status(data_dir, job_id))


def boot_id():
    """This boot's random id: a pid or pgid recorded under another boot means nothing now."""
    return (read_text("/proc/sys/kernel/random/boot_id") or "").strip() or None


def process_start(pid):
    """When process pid started (clock ticks after boot, /proc/PID/stat field 22), or None."""
    stat = read_text("/proc/%d/stat" % pid)
    fields = stat.rsplit(")", 1)[-1].split() if stat else []
    return convert(fields[19]) if len(fields) > 19 else None  # fields[0] is field 3 (state)


def kill_lost_job(data_dir, job_id, entry, grace):
    import signal

    pgid = entry["pgid"]
    state = read_json(job_path(data_dir, job_id, "state.json")) or {}
    if state.get("boot_id") and state["boot_id"] != boot_id():
        return  # the host rebooted: that process group died with it; never kill a stranger
    if not pgid or not group_alive(pgid):
        return  # nothing left to kill, and nothing known about how it ended: stays LOST
    leader, recorded = process_start(pgid), state.get("leader_start")
    if leader is not None and recorded is not None and leader != recorded:
        return  # the pid was reused: its group is another process's now, never the job's
    if grace is None:
        grace = (read_json(job_path(data_dir, job_id, "spec.json")) or {}).get("grace")
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + (JOB_GRACE_S if grace is None else grace)
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    signal_group(pgid, signal.SIGKILL)
    reason = "cancelled by job-kill; the supervisor was gone, so job-kill killed the group"
    end = {"state": "CANCELLED", "exit_code": None, "signal": None, "ended": time.time(),
           "peak_rss_bytes": None, "reason": reason}  # fmt: skip
    write_json_atomic(job_path(data_dir, job_id, "end.json"), end)


def spawn_supervisor(data_dir, job_id):
    """Double fork + setsid: the supervisor is re-parented to init, in a session of its own
    with no terminal, so it outlives the SSH connection and this process."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return
    code = 1
    try:
        os.setsid()
        if os.fork():
            code = 0
        else:
            detach_stdio()
            code = supervise(data_dir, job_id)
    finally:
        os._exit(code)  # never back into the caller's stack (or its stdout buffers)


def detach_stdio():
    """stdin/stdout/stderr to /dev/null, every other inherited fd closed (a pipe of the SSH
    channel or the job-start lock must not live on in the supervisor), cwd /."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = range(3, 1024)
    for fd in fds:
        if fd > 2:
            os.closerange(fd, fd + 1)  # closes, ignoring errors (the listdir fd is gone)
    os.chdir("/")


# ---------------------------------------------------------------- jobs: the supervisor


def supervise(data_dir, job_id):
    """Run the job to its end and write end.json. Returns the supervisor's exit status."""
    import signal

    lock = open_locked(job_path(data_dir, job_id, "supervisor.lock"), os.O_RDWR | os.O_CREAT,
                       wait_s=JOB_START_WAIT_S)  # fmt: skip
    if lock is None:
        return 1  # another supervisor owns this job
    os.ftruncate(lock, 0)
    os.write(lock, b"%d\n" % os.getpid())
    pid = None
    try:
        spec = read_json(job_path(data_dir, job_id, "spec.json"))
        flags = {}
        wakeup = install_signal_wakeup(flags)
        if flags or os.path.exists(job_path(data_dir, job_id, "cancel")):
            write_end(data_dir, job_id, "CANCELLED", None, None, "cancelled before it started")
            return 0
        become_subreaper()
        pid, error = start_job_process(data_dir, job_id, spec)
        if pid is None:
            write_end(data_dir, job_id, "FAILED", error[0], None, error[1])
            return 0
        ending, reason = watch_job(data_dir, job_id, spec, pid, flags, wakeup)
        # the leader is a zombie until reaped, so its pgid cannot be reused before this KILL
        signal_group(pid, signal.SIGKILL)
        exit_code, signum = reap(pid)
        pid = None
        kill_descendants()  # what left the group (setsid, daemons) ends with the job too
        if ending is None:
            ending = "COMPLETED" if exit_code == 0 else "FAILED"
            if exit_code:
                reason = "exit code %d" % exit_code
            elif signum:
                reason = "killed by %s" % signal_name(signum)
        write_end(data_dir, job_id, ending, exit_code, signum, reason)
        return 0
    except Exception as exc:
        if pid is not None:
            signal_group(pid, signal.SIGKILL)
        reason = "supervisor failed: %s: %s" % (type(exc).__name__, exc)
        write_end(data_dir, job_id, "FAILED", None, None, reason)
        return 1


def install_signal_wakeup(flags):
    """SIGTERM/SIGINT set flags["signal"] (cancel); every handled signal, SIGCHLD included,
    writes a byte to the returned pipe, which wait_for_signal sleeps on."""
    import signal

    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd)

    def cancel(signum, frame):
        flags["signal"] = signum

    signal.signal(signal.SIGTERM, cancel)
    signal.signal(signal.SIGINT, cancel)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    return read_fd


def wait_for_signal(read_fd, timeout_s):
    import select

    if not select.select([read_fd], [], [], max(0.0, timeout_s))[0]:
        return
    try:
        os.read(read_fd, 512)  # drain: the pipe only says "a signal came"
    except OSError:
        return


def start_job_process(data_dir, job_id, spec):
    """Start the job in a new session (pgid = sid = pid), stdin /dev/null, stdout+stderr
    appended to the log, with the agent's umask -> (pid, None) or (None, (exit code, reason))."""
    import subprocess

    workdir = spec["workdir"]
    if not os.path.isdir(workdir):
        return None, (EXIT_NOT_FOUND, "workdir %s does not exist" % workdir)
    command = spec["command"]
    argv = ["/bin/sh", "-c", command] if isinstance(command, str) else command
    env = dict(os.environ, **spec["env"])
    log = os.open(job_path(data_dir, job_id, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                  0o600)  # fmt: skip
    started = time.time()
    private = os.umask(USER_UMASK)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                cwd=workdir, env=env, start_new_session=True)  # fmt: skip
    except OSError as exc:
        code = EXIT_NOT_FOUND if isinstance(exc, FileNotFoundError) else EXIT_CANNOT_EXEC
        return None, (code, "cannot start %s: %s" % (argv[0], exc.strerror or exc))
    finally:
        os.umask(private)
        os.close(log)
    proc.returncode = 0  # reaped by reap(), not by Popen
    state = {"state": "RUNNING", "pid": proc.pid, "pgid": proc.pid,
             "supervisor_pid": os.getpid(), "started": started,
             "boot_id": boot_id(), "leader_start": process_start(proc.pid)}  # fmt: skip
    write_json_atomic(job_path(data_dir, job_id, "state.json"), state)
    return proc.pid, None


def watch_job(data_dir, job_id, spec, pid, flags, wakeup):
    """Wait until the job's leader has exited (left unreaped), enforcing walltime and cancel
    on the way: TERM to the group, KILL after the grace -> (TIMEOUT|CANCELLED|None, reason)."""
    import signal

    cancel_file = job_path(data_dir, job_id, "cancel")
    deadline = None if spec["walltime"] is None else time.monotonic() + spec["walltime"]
    ending = reason = kill_at = None
    grace = spec["grace"]
    while not child_exited(pid):
        now = time.monotonic()
        if ending is None:
            if flags or os.path.exists(cancel_file):
                request = read_json(cancel_file)
                ending, reason = "CANCELLED", "cancelled by job-kill"
                if request is None:
                    reason = "supervisor got %s" % signal_name(flags.get("signal", signal.SIGTERM))
                elif request.get("grace") is not None:
                    grace = request["grace"]
            elif deadline is not None and now >= deadline:
                ending, reason = "TIMEOUT", "walltime of %g s exceeded" % spec["walltime"]
            if ending:
                signal_group(pid, signal.SIGTERM)
                kill_at = now + grace
        elif kill_at is not None and now >= kill_at:
            signal_group(pid, signal.SIGKILL)
            reason += "; SIGKILL after %g s grace" % grace
            kill_at = None
        wake_at = kill_at if ending else deadline
        wait_for_signal(wakeup, JOB_TICK_S if wake_at is None else min(JOB_TICK_S, wake_at - now))
    return ending, reason


def become_subreaper():
    """Orphans of the job are re-parented to the supervisor instead of init (Linux >= 3.4,
    prctl PR_SET_CHILD_SUBREAPER), so a process that leaves the job's group with setsid
    can still be found and killed at the end. Best effort: without it only the group dies."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def kill_descendants(timeout_s=2.0):
    """SIGKILL and reap every remaining child of this process (with the subreaper set,
    that is everything the job left behind), until none is left or timeout_s passes."""
    import contextlib
    import signal

    me = str(os.getpid())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        children = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                stat = read_text("/proc/%s/stat" % name) or ""
                fields = stat.rsplit(")", 1)[-1].split()
                if len(fields) > 1 and fields[1] == me:
                    children.append(int(name))
        for child in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            if not children:
                return
        if not children:
            return
        time.sleep(0.02)


def child_exited(pid):
    """Whether the child has exited, without reaping it (WNOWAIT)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def reap(pid):
    """Reap the child -> (exit code or None, signal number or None)."""
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    return os.WEXITSTATUS(status), None


def write_end(data_dir, job_id, state, exit_code, signum, reason):
    import resource

    # Linux reports ru_maxrss in KiB: the largest of the reaped children (the job)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    end = {"state": state, "exit_code": exit_code, "signal": signum, "ended": time.time(),
           "peak_rss_bytes": peak, "reason": reason}  # fmt: skip
    write_json_atomic(job_path(data_dir, job_id, "end.json"), end)


def job_request(op, request, data_dir):
    """One job op (serve request or command line, same dict) -> its reply."""
    if op == "job-start":
        return start_job(data_dir, request.get("spec"))
    if op == "job-status":
        return job_statuses(data_dir, request.get("ids"))
    if op == "job-kill":
        return kill_job(data_dir, request.get("id"), request.get("grace"))
    if op == "job-log":
        offset, limit = request.get("offset", 0), request.get("limit", JOB_LOG_LIMIT)
        return read_job_log(data_dir, request.get("id"), offset, limit)
    return remove_job(data_dir, request.get("id"))


# ---------------------------------------------------------------- chunks

# DATA/chunks/<first two hex digits>/<sha256>: one verified chunk, read-only (0400). A chunk is
# written under DATA/chunks/.tmp/ and renamed into place only after its hash matched and its
# bytes were fsync'ed, so a crash never leaves a half chunk under a final name. Identical chunks
# are stored once per host (the name is the content).
HASH_PATTERN = r"[0-9a-f]{64}"
IO_BLOCK = 1 << 20
DATA_OPS = ("chunk-have", "chunk-verify", "chunk-rm", "chunk-import", "grant", "revoke", "scan",
            "file-status", "path-info", "materialize", "chunk-pin", "chunk-unpin", "chunk-gc",
            "chunk-drop")  # fmt: skip


def check_hash(value):
    if not isinstance(value, str) or not re.fullmatch(HASH_PATTERN, value):
        raise BadRequest("chunk hash must be 64 lowercase hex digits, got %r" % (value,))
    return value


def check_hashes(values, allow_all=False):
    if values is None and allow_all:
        return None
    if not isinstance(values, list):
        raise BadRequest("hashes must be a list of chunk hashes")
    return [check_hash(h) for h in values]


def chunk_path(data_dir, digest):
    return os.path.join(data_dir, "chunks", digest[:2], digest)


def existing_parent(path):
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def free_bytes(path):
    st = os.statvfs(existing_parent(path))
    return st.f_bavail * st.f_frsize


def path_info(paths):
    """What each absolute path is ("dir", "file", "other", "none"; symlinks followed, as cp
    does), its permission bits (None when there is nothing), and the free bytes of the
    filesystem that holds, or would hold, it."""
    if not isinstance(paths, list) or not all(isinstance(p, str) and p.startswith("/")
                                              for p in paths):  # fmt: skip
        raise BadRequest("paths must be a list of absolute paths")
    infos = []
    for path in paths:
        kind = "dir" if os.path.isdir(path) else "file" if os.path.isfile(path) else None
        kind = kind or ("other" if os.path.lexists(path) else "none")
        mode = os.stat(path).st_mode & 0o7777 if kind in ("dir", "file") else None
        infos.append({"path": path, "kind": kind, "mode": mode, "free_bytes": free_bytes(path)})
    return {"schema": SCHEMA, "paths": infos}


def make_dirs(path):
    """mkdir -p with the user's umask (the agent's own is 077): the directories a copy
    creates get 0o777 & ~umask, as mkdir -p in the user's shell would make them."""
    missing = []
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        missing.append(path)
        path = os.path.dirname(path)
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not os.path.isdir(path):
                raise
            continue
        os.chmod(path, 0o777 & ~USER_UMASK)


def stored_chunks(data_dir):
    """Every chunk on this host: hash -> size."""
    found = {}
    root = os.path.join(data_dir, "chunks")
    for sub in sorted(os.listdir(root)) if os.path.isdir(root) else ():
        if len(sub) != 2:
            continue
        for name in os.listdir(os.path.join(root, sub)):
            if re.fullmatch(HASH_PATTERN, name):
                found[name] = file_size(os.path.join(root, sub, name))
    return found


def chunk_have(data_dir, hashes):
    """Which chunks are here (no hashing: a chunk is verified when it is written)."""
    if hashes is None:
        present = stored_chunks(data_dir)
    else:
        present = {}
        for digest in hashes:
            with contextlib.suppress(OSError):
                present[digest] = os.stat(chunk_path(data_dir, digest)).st_size
    used = sum(present.values()) if hashes is None else None
    return {"schema": SCHEMA, "present": present, "free_bytes": free_bytes(data_dir),
            "used_bytes": used}  # fmt: skip


def hash_range(path, offset=0, length=None):
    """sha256 hex of length bytes of path from offset (to the end when length is None)."""
    import hashlib

    digest, total = hashlib.sha256(), 0
    with open(path, "rb", buffering=0) as fh:
        fh.seek(offset)
        buf = bytearray(IO_BLOCK)
        view = memoryview(buf)
        while length is None or total < length:
            want = IO_BLOCK if length is None else min(IO_BLOCK, length - total)
            got = fh.readinto(view[:want])
            if not got:
                break
            digest.update(view[:got])
            total += got
    return digest.hexdigest(), total


def chunk_verify(data_dir, hashes):
    """Re-hash the named chunks: which are ok, missing or corrupt."""
    started = time.monotonic()
    ok, missing, corrupt, hashed = [], [], [], 0
    for digest in hashes:
        path = chunk_path(data_dir, digest)
        try:
            actual, size = hash_range(path)
        except FileNotFoundError:
            missing.append(digest)
            continue
        except OSError as exc:
            corrupt.append(digest)
            sys.stderr.write("%s: %s\n" % (digest, exc))
            continue
        hashed += size
        (ok if actual == digest else corrupt).append(digest)
    return {"schema": SCHEMA, "ok": ok, "missing": missing, "corrupt": corrupt, "bytes": hashed,
            "seconds": round(time.monotonic() - started, 6)}  # fmt: skip


def chunk_rm(data_dir, hashes):
    removed, freed = [], 0
    for digest in hashes:
        path = chunk_path(data_dir, digest)
        try:
            size = os.stat(path).st_size
            os.unlink(path)
        except FileNotFoundError:
            continue
        removed.append(digest)
        freed += size
    return {"schema": SCHEMA, "removed": removed, "freed_bytes": freed}


def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


class ChunkSink:
    """Receives one chunk's bytes into a temp file; commit() renames it into the store."""

    def __init__(self, data_dir, digest):
        import hashlib

        self.final = chunk_path(data_dir, digest)
        self.digest = digest
        tmp_dir = os.path.join(data_dir, "chunks", ".tmp")
        os.makedirs(tmp_dir, mode=0o700, exist_ok=True)
        name = "%s.%d.%s" % (digest[:16], os.getpid(), os.urandom(4).hex())
        self.tmp = os.path.join(tmp_dir, name)
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.hash = hashlib.sha256()

    def write(self, block):
        self.hash.update(block)
        view = memoryview(block)
        while view:
            view = view[os.write(self.fd, view) :]

    def check(self):
        """None if the bytes hash to the chunk's name, else why not (and the temp is gone)."""
        if self.hash.hexdigest() == self.digest:
            write_behind(self.fd, 0, 0)
            return None
        self.abort()
        return "hash mismatch: received bytes hash to %s" % self.hash.hexdigest()

    def seal(self):
        """fsync, make read-only, rename into the store (after check())."""
        try:
            os.fsync(self.fd)
            os.fchmod(self.fd, 0o400)
            os.makedirs(os.path.dirname(self.final), mode=0o700, exist_ok=True)
            os.replace(self.tmp, self.final)
            self.tmp = None
        finally:
            self.abort()

    def commit(self):
        """check() then seal(): None when the chunk is in the store, else why not."""
        problem = self.check()
        if problem is None:
            self.seal()
        return problem

    def abort(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            self.tmp = None


def widen_pipe(fd):
    """1 MiB pipe buffers between the agent and ssh: fewer wake-ups per megabyte moved."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), IO_BLOCK)
    except OSError:
        pass  # not a pipe, or above /proc/sys/fs/pipe-max-size: the default works too


def write_behind(fd, offset, length):
    """Start writing these bytes back to disk now, without waiting (the later fsync then
    finds them clean) and without keeping them cached: a transfer streams, it does not fill
    the page cache with data nobody reads back."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        with contextlib.suppress(OSError):
            advise(fd, offset, length, os.POSIX_FADV_DONTNEED)


# Durability is paid per batch, not per chunk: verified chunks wait (open, unsynced) until
# SYNC_BATCH_BYTES of them are pending, then they are synced and made visible together; the
# kernel has written most of them back by then. A crash loses at most one batch of work,
# never correctness: nothing counts as stored before its bytes are on disk.
SYNC_BATCH_BYTES = 256 * MIB
SYNC_BATCH_FILES = 64


class ChunkBatch:
    def __init__(self):
        self.pending, self.bytes = [], 0

    def add(self, sink, size):
        """Queue a checked sink; the digests sealed now (when the batch was full)."""
        self.pending.append(sink)
        self.bytes += size
        full = self.bytes >= SYNC_BATCH_BYTES or len(self.pending) >= SYNC_BATCH_FILES
        return self.flush() if full else []

    def flush(self):
        sealed, pending = [], self.pending
        self.pending, self.bytes = [], 0
        for sink in pending:
            sink.seal()
            sealed.append(sink.digest)
        return sealed

    def abort(self):
        for sink in self.pending:
            sink.abort()
        self.pending, self.bytes = [], 0


# DATA/refs/<store id>/<ref>: which chunks one state store needs on this host. Chunks are shared
# by every state store that uses the host, and each store only knows its own datasets, so a chunk
# is deleted only when no ref file of any store names it. A ref is a JSON file {"schema", "store",
# "name" (e.g. "llama@3"), "hashes"}, private, written atomically. Every change to refs and every
# deletion decision happens under the flock on DATA/refs/.lock (opened O_RDWR: flock on NFS needs
# a writable fd), so a pin racing a gc is safe. The chunks already here when DATA/refs is set up
# (an upgrade) are pinned by the "legacy" ref, which only `chunk-gc` with release_legacy drops.
STORE_ID_PATTERN = r"[0-9a-f]{32}"
LEGACY_STORE = "legacy"
LEGACY_REF = "0" * 64
REFS_LOCK_WAIT_S = 300.0
REFS_READY = ".initialized"


def check_store_id(value):
    if not isinstance(value, str) or not re.fullmatch(STORE_ID_PATTERN, value):
        raise BadRequest("store must be 32 lowercase hex digits, got %r" % (value,))
    return value


def check_ref(value):
    if not isinstance(value, str) or not re.fullmatch(HASH_PATTERN, value):
        raise BadRequest("ref must be 64 lowercase hex digits, got %r" % (value,))
    return value


def check_refs(values):
    if not isinstance(values, list):
        raise BadRequest("refs must be a list")
    return [check_ref(v) for v in values]


def check_pins(values):
    """[{"ref", "name", "hashes"}] of a chunk-pin request."""
    if not isinstance(values, list):
        raise BadRequest("refs must be a list of {ref, name, hashes}")
    pins = []
    for item in values:
        if not isinstance(item, dict):
            raise BadRequest("refs must be a list of {ref, name, hashes}")
        name = item.get("name")
        if not isinstance(name, str) or len(name) > 1024:
            raise BadRequest("a ref's name must be a string of at most 1024 characters")
        hashes = sorted(set(check_hashes(item.get("hashes"))))
        pins.append((check_ref(item.get("ref")), name, hashes))
    return pins


def real_dir(path, create):
    """path as a directory we may use: created 0700 if asked, never a symlink."""
    import stat

    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise BadRequest("%s is not a directory (a symlink is refused)" % path)
    return path


@contextlib.contextmanager
def refs_locked(data_dir):
    """Hold the host's refs lock; on first use, pin the chunks already here as 'legacy'."""
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    root = real_dir(os.path.join(data_dir, "refs"), create=True)
    fd = open_locked(os.path.join(root, ".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW,
                     REFS_LOCK_WAIT_S)  # fmt: skip
    if fd is None:
        raise BadRequest("another process held %s/.lock for %d s" % (root, REFS_LOCK_WAIT_S))
    try:
        ready = os.path.join(root, REFS_READY)
        if not os.path.exists(ready):
            present = sorted(stored_chunks(data_dir))
            if present:
                legacy = real_dir(os.path.join(root, LEGACY_STORE), create=True)
                write_ref(legacy, LEGACY_REF, LEGACY_STORE, "chunks stored before refs", present)
            os.close(os.open(ready, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
            fsync_dir(root)
        yield root
    finally:
        os.close(fd)


def read_ref(path):
    """The hashes a ref file names; BadRequest if it cannot be read (then nothing is deleted:
    a guess could delete what another store needs)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "r") as fh:
            doc = json.loads(fh.read())
        hashes = doc["hashes"]
        if not isinstance(hashes, list) or not all(
            isinstance(h, str) and re.fullmatch(HASH_PATTERN, h) for h in hashes
        ):
            raise ValueError("hashes is not a list of chunk hashes")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadRequest("unreadable ref %s (%s): nothing was deleted" % (path, exc)) from exc
    return set(hashes)


def write_ref(store_dir, ref, store, name, hashes):
    """Write a ref (unless it already says exactly this); True if it changed."""
    path = os.path.join(store_dir, ref)
    doc = {"schema": SCHEMA, "store": store, "name": name, "hashes": list(hashes)}
    if read_json(path) == doc and not os.path.islink(path):
        return False
    write_json_atomic(path, doc)
    return True


def all_refs(root):
    """(store, ref) -> hashes, for every ref file of every store on this host."""
    refs = {}
    for store in sorted(os.listdir(root)):
        if store.startswith("."):
            continue
        store_dir = real_dir(os.path.join(root, store), create=False)
        for name in sorted(os.listdir(store_dir)):
            if re.fullmatch(HASH_PATTERN, name):  # temp files of a write are not refs
                refs[(store, name)] = read_ref(os.path.join(store_dir, name))
    return refs


def named_by(refs, skip=()):
    """Every hash some ref names, leaving out the (store, ref) keys in skip."""
    named = set()
    for key, hashes in refs.items():
        if key not in skip:
            named |= hashes
    return named


def unlink_ref(root, store, ref):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(root, store, ref))
        return True
    return False


def chunk_pin(data_dir, store, pins):
    """Write (or keep) this store's refs; which of their chunks are here, asked under the lock
    (a chunk present now cannot be deleted by anyone before this store unpins it)."""
    with refs_locked(data_dir) as root:
        store_dir = real_dir(os.path.join(root, store), create=True)
        wanted = set()
        for ref, name, hashes in pins:
            write_ref(store_dir, ref, store, name, hashes)
            wanted.update(hashes)
        fsync_dir(store_dir)
        present = {}
        for digest in sorted(wanted):
            with contextlib.suppress(OSError):
                present[digest] = os.stat(chunk_path(data_dir, digest)).st_size
    return {"schema": SCHEMA, "pinned": [p[0] for p in pins], "present": present}


def chunk_unpin(data_dir, store, refs, candidates):
    """Remove this store's refs, then delete their chunks (and the candidates: chunks the store
    stopped using) that no remaining ref of any store names."""
    with refs_locked(data_dir) as root:
        before = all_refs(root)
        doomed = set(candidates)
        for ref in refs:
            doomed |= before.get((store, ref), set())
        gone = [r for r in refs if unlink_ref(root, store, r)]
        fsync_dir(os.path.join(root, store))
        still = named_by(before, skip={(store, r) for r in refs})
        removed = chunk_rm(data_dir, sorted(doomed - still))
        kept = sorted(h for h in doomed & still if os.path.exists(chunk_path(data_dir, h)))
    return {"schema": SCHEMA, "unpinned": gone, "removed": removed["removed"],
            "freed_bytes": removed["freed_bytes"], "kept": kept}  # fmt: skip


def chunk_gc(data_dir, store, keep, release_legacy, check):
    """Drop this store's refs not in keep (and, when asked, the legacy ref), then delete every
    chunk no ref names. Under check, change nothing and say what would go."""
    with refs_locked(data_dir) as root:
        refs = all_refs(root)
        stale = sorted(r for s, r in refs if s == store and r not in keep)
        dropped = {(store, r) for r in stale}
        legacy = refs.get((LEGACY_STORE, LEGACY_REF))
        if release_legacy and legacy is not None:
            dropped.add((LEGACY_STORE, LEGACY_REF))
        present = stored_chunks(data_dir)
        doomed = sorted(set(present) - named_by(refs, skip=dropped))
        if check:
            removed = {"removed": doomed, "freed_bytes": sum(present[h] for h in doomed)}
        else:
            for key in sorted(dropped):
                unlink_ref(root, *key)
            removed = chunk_rm(data_dir, doomed)
        kept_legacy = None
        if legacy is not None and not release_legacy:
            kept_legacy = len(legacy.intersection(present))
    return {"schema": SCHEMA, "stale_refs": stale, "removed": removed["removed"],
            "freed_bytes": removed["freed_bytes"], "legacy": kept_legacy,
            "released_legacy": bool(release_legacy and legacy is not None)}  # fmt: skip


def chunk_drop(data_dir, store, hashes, corrupt, check=False):
    """Delete copies this store no longer wants here. A plain copy is kept while a ref of
    another store (or the legacy ref) names it; a copy said to be corrupt is re-hashed and
    deleted only if it really is (it is useless to every store then): "others" lists the
    deleted ones other stores pin, which the caller should copy back. Under check, nothing
    is deleted: "kept" says which copies other stores hold on to."""
    with refs_locked(data_dir) as root:
        refs = all_refs(root)
        others = named_by({k: v for k, v in refs.items() if k[0] != store})
        if corrupt:
            checked = chunk_verify(data_dir, hashes)
            doomed, intact = checked["corrupt"], checked["ok"]
        else:
            doomed = [h for h in hashes if h not in others]
            intact = [h for h in hashes if h in others]
        removed = {"removed": [], "freed_bytes": 0} if check else chunk_rm(data_dir, doomed)
    return {"schema": SCHEMA, "removed": removed["removed"], "freed_bytes": removed["freed_bytes"],
            "kept": sorted(h for h in intact if os.path.exists(chunk_path(data_dir, h))),
            "others": sorted(h for h in removed["removed"] if h in others)}  # fmt: skip


# ---------------------------------------------------------------- datasets: scan, materialize


def scan_tree(path, chunk_size, hashed=True):
    """Manifest of a local file or tree: {"kind", "entries": [{"path", "type", "mode", "size",
    "mtime_ns", "chunks": [[hash, size]...], "target"}]}. Paths are relative POSIX paths ("" =
    the file). With hashed false nothing is read: chunks are [null, size] (a copy that hashes
    while it sends)."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        raise BadRequest("no such file or directory: %s" % path)
    if not isinstance(chunk_size, int) or chunk_size < 4096:
        raise BadRequest("chunk_size must be an integer >= 4096")
    if os.path.isfile(path):
        entry = scan_file(path, "", chunk_size, hashed)
        return {"schema": SCHEMA, "kind": "file", "entries": [entry]}
    entries = []
    for top, dirs, files in os.walk(path):
        dirs.sort()
        rel_top = os.path.relpath(top, path)
        rel_top = "" if rel_top == "." else rel_top
        if rel_top:
            mode = os.stat(top).st_mode & 0o7777
            entries.append({"path": rel_top, "type": "dir", "mode": mode, "size": 0, "chunks": [],
                            "target": None})  # fmt: skip
        for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(top, d))]):
            full, rel = os.path.join(top, name), os.path.join(rel_top, name)
            if os.path.islink(full):
                entries.append({"path": rel, "type": "symlink", "mode": 0o777, "size": 0,
                                "chunks": [], "target": os.readlink(full)})  # fmt: skip
            elif os.path.isfile(full):
                entries.append(scan_file(full, rel, chunk_size, hashed))
    return {"schema": SCHEMA, "kind": "dir", "entries": entries}


def scan_file(full, rel, chunk_size, hashed=True):
    st = os.stat(full)
    chunks, offset = [], 0
    while offset < st.st_size:
        want = min(chunk_size, st.st_size - offset)
        digest, got = hash_range(full, offset, want) if hashed else (None, want)
        if not got:
            break
        chunks.append([digest, got])
        offset += got
    return {"path": rel, "type": "file", "mode": st.st_mode & 0o7777, "size": st.st_size,
            "mtime_ns": st.st_mtime_ns, "chunks": chunks, "target": None}  # fmt: skip


def check_dest(path):
    if not isinstance(path, str) or not os.path.isabs(path):
        raise BadRequest("destination must be an absolute path, got %r" % (path,))
    return os.path.normpath(path)


def entry_path(dest, kind, rel):
    if rel == "" and kind in ("file", "dir"):  # the file, or the top directory
        return dest
    if not isinstance(rel, str) or not rel or rel.startswith("/") or ".." in rel.split("/"):
        raise BadRequest("manifest path escapes the destination: %r" % (rel,))
    return os.path.join(dest, rel)


def check_manifest_entries(kind, entries):
    """Refuse a manifest with an entry under one of its own symbolic links (sub -> /etc, then
    sub/x): built, it would write outside the dataset."""
    links = {os.path.normpath(e.get("path") or "") for e in entries if e.get("type") == "symlink"}
    for entry in entries:
        path = entry.get("path")
        above = first_link_above(os.path.normpath(path or ""), links)
        if kind == "dir" and above is not None:
            raise BadRequest("manifest path %r is under its symbolic link %r" % (path, above))


def materialize(data_dir, dest, manifest, label=None):
    """Build a dataset at dest from the chunks stored here. Every file is a copy of its chunks
    (copy_file_range: a reflink where the filesystem can), never a hard link: a job that writes
    to its input cannot change a chunk. Nothing is written unless every chunk is here; it is
    built next to dest and renamed into place; nothing under dest's parent is reached through a
    symbolic link (see DestTree). A relative dest is under the data dir. dest is only ever
    replaced when a sidecar (.NAME.lepton-dataset, a regular file of this user) says leptonctl
    made it: never an operator's files."""
    import shutil

    if isinstance(dest, str) and dest and not os.path.isabs(dest):
        dest = os.path.join(data_dir, dest)
    dest = check_dest(dest)
    kind, entries = manifest.get("kind"), manifest.get("entries") or []
    check_manifest_entries(kind, entries)
    label = str(label or "")
    parent, name = os.path.dirname(dest), os.path.basename(dest)
    sidecar = os.path.join(parent, ".%s.lepton-dataset" % name)
    ours = is_file_at(None, sidecar) and os.lstat(sidecar).st_uid == os.getuid()
    if os.path.lexists(dest) and not ours:
        raise BadRequest("%s exists and was not made by leptonctl: not replacing it" % dest)
    if ours and os.path.lexists(dest) and label and (read_text(sidecar) or "").strip() == label:
        return {"schema": SCHEMA, "done": True, "missing": [], "path": dest, "reused": True}
    needed = {
        chunk_hash(c) for e in entries if e.get("type") == "file" for c in e.get("chunks", [])
    }
    missing = sorted(h for h in needed if not os.path.exists(chunk_path(data_dir, h)))
    if missing:
        return {"schema": SCHEMA, "done": False, "missing": missing, "path": dest}
    os.makedirs(parent, mode=0o755, exist_ok=True)
    tree = DestTree(parent)
    build = os.path.join(parent, ".%s.lepton-build.%d" % (name, os.getpid()))
    copied = 0
    try:
        if kind == "dir":
            os.mkdir(build, 0o755)
        for entry in entries:
            target = entry_path(build, kind, entry.get("path", ""))
            if entry["type"] == "dir":
                os.fchmod(tree.dir_fd(tree.rel(target)), entry["mode"] & 0o7777)
            elif entry["type"] == "symlink":
                where, base = tree.where(target)
                os.symlink(entry["target"], base, dir_fd=where)
            else:
                concatenate(data_dir, entry["chunks"], tree.where(target), entry["mode"])
                copied += 1
        fd = open_nofollow(tree.dir_fd(""), os.path.basename(sidecar),
                           os.O_WRONLY | os.O_CREAT | os.O_TRUNC)  # fmt: skip
        with os.fdopen(fd, "w") as fh:
            fh.write(label + "\n")
        if os.path.isdir(dest) and not os.path.islink(dest):
            shutil.rmtree(dest)
        elif os.path.lexists(dest):
            os.unlink(dest)
        os.replace(build, dest)
    finally:
        tree.close()
        if os.path.lexists(build):
            shutil.rmtree(build, ignore_errors=True) if os.path.isdir(build) else os.unlink(build)
    return {"schema": SCHEMA, "done": True, "missing": [], "path": dest, "copied": copied}


def chunk_hash(chunk):
    """A manifest chunk: [hash, size] (scan) or {"hash", "size"} (the operator's manifest)."""
    return chunk["hash"] if isinstance(chunk, dict) else chunk[0]


def chunk_size_of(chunk):
    return chunk["size"] if isinstance(chunk, dict) else chunk[1]


def concatenate(data_dir, chunks, place, mode):
    """Write the chunks, in order, as a new file at place (directory fd, name)."""
    where, name = place
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=where)
    try:
        for chunk in chunks:
            digest, size = chunk_hash(chunk), chunk_size_of(chunk)
            src = os.open(chunk_path(data_dir, digest), os.O_RDONLY)
            try:
                left = size
                while left:
                    copy = getattr(os, "copy_file_range", None)
                    try:
                        got = copy(src, fd, left) if copy else 0
                    except OSError:
                        got = 0
                    if not got:
                        got = os.write(fd, os.read(src, min(left, IO_BLOCK)))
                        if not got:
                            raise OSError("chunk %s is shorter than its manifest says" % digest)
                    left -= got
            finally:
                os.close(src)
        os.fsync(fd)
        os.fchmod(fd, mode & 0o7777)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- transfers

# A transfer moves chunk frames down a chain of hosts: source -> r1 -> r2 ... Each hop stores
# what it receives (chunks into its store, or files at their destinations) and forwards every
# byte to the next hop while it receives it, so K replicas cost about one transfer. Hops talk
# over OpenSSH: the operator installs a one-shot key on the receiver (restrict, a forced command
# that runs `recv --transfer ID`, expiry-time a few minutes ahead) and hands the private half to
# the upstream hop inside its spec. recv blanks its own key line when it starts; `revoke`
# blanks whatever a crash left, and expired lines, which every agent start (serve, request,
# send, recv) also does, with the files of transfers that are over. The stream is frames: one
# JSON header line {"h": hash, "n": size, "t": [[file index, offset], ...] (files mode)} then n
# bytes; a final {"end": true} line. Every hop that stores checks the hash before it commits.
TRANSFER_ID_PATTERN = r"[A-Za-z0-9_-]{8,64}"
KEY_COMMENT = "leptonctl-transfer:"
PEER_ALIAS = "leptonctl-peer"
PROGRESS_EVERY_S = 0.5
STALE_TRANSFER_S = 3600.0


def check_transfer_id(value):
    if not isinstance(value, str) or not re.fullmatch(TRANSFER_ID_PATTERN, value):
        raise BadRequest("transfer id must match %s, got %r" % (TRANSFER_ID_PATTERN, value))
    return value


def transfer_path(data_dir, transfer_id, suffix):
    return os.path.join(data_dir, "transfers", transfer_id + suffix)


def authorized_keys_path():
    override = os.environ.get("LEPTON_AGENT_AUTHORIZED_KEYS")  # tests: never the real file
    if override:
        return override
    import pwd

    home = pwd.getpwuid(os.getuid()).pw_dir  # what sshd reads, whatever $HOME says
    return os.path.join(home, ".ssh", "authorized_keys")


def agent_file():
    return os.path.abspath(__file__)


def forced_command(data_dir, transfer_id):
    parts = [sys.executable, agent_file(), "recv", "--transfer", transfer_id, "--data-dir",
             data_dir]  # fmt: skip
    for part in parts:
        if any(c in part for c in '"\\\n'):
            raise BadRequest("path not usable in a forced command: %r" % (part,))
    import shlex

    return "exec " + " ".join(shlex.quote(p) for p in parts)


# authorized_keys is shared with the user and every tool they run (ssh-copy-id, Ansible,
# cloud-init, other hosts on a shared home), which append to it without any lock of ours. So
# the agent never rewrites it: a transfer line goes in with one O_APPEND write (or over a free
# slot of its own making), and goes out by overwriting its own bytes in place with a comment of
# the same length (FREE_SLOT and spaces: sshd skips it, a later grant reuses it). Bytes stay
# bytes (lines end at b"\n" only, nothing is decoded), the file is never truncated or renamed,
# and a symlinked file is written through its link (which stays a link). Agents serialise their
# edits with a flock on the file itself, opened read-write (NFS needs that for a lock).
FREE_SLOT = b"#leptonctl-free"
TRANSFER_LINE = re.compile(
    rb'restrict,command="[^"\n]*",expiry-time="(\d{14})Z" ssh-ed25519 [A-Za-z0-9+/=]+ '
    + (KEY_COMMENT + "(" + TRANSFER_ID_PATTERN + ") *").encode()
)
FREE_LINE = re.compile(re.escape(FREE_SLOT) + b" *")
KEY_FILE_AGE_S = 60.0  # ssh reads a hop's .key and .known_hosts within seconds of its start
SPEC_GRACE_S = 2.0  # a spec outlives its key's expiry-time by this much (a recv reads it at once)


def utc_stamp(seconds):
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(seconds))


def same_file(fd, path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)


def keys_fallback_lock(data_dir, why):
    """A lock file in the data dir, for a home where authorized_keys cannot be flocked (NFS
    without lockd): it serialises the agents of this data dir, which is what is left."""
    import fcntl

    directory = os.path.join(data_dir, "transfers")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, ".authorized_keys.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as exc:
        os.close(fd)
        raise OSError("cannot lock authorized_keys (%s) nor %s (%s)" % (why, path, exc)) from exc
    return fd


@contextlib.contextmanager
def authorized_keys_locked(data_dir, create):
    """An fd of authorized_keys, read-write, locked against the edits of other agents (None when
    the file does not exist and create is false). Raises OSError when it cannot be locked at
    all: a transfer line is never left behind without a word."""
    import fcntl

    path = authorized_keys_path()
    if create:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    for _ in range(5):
        try:
            fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
        except FileNotFoundError:
            if create:
                raise
            yield None
            return
        fallback = None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:  # ENOLCK, or EBADF on some NFS servers
                fallback = keys_fallback_lock(data_dir, exc)
            if same_file(fd, path):  # not renamed over by another tool meanwhile
                yield fd
                return
        finally:
            os.close(fd)
            if fallback is not None:
                os.close(fallback)
    raise OSError("%s keeps being replaced while the agent edits it" % path)


def read_all(fd):
    parts, at = [], 0
    while True:
        block = os.pread(fd, 1 << 16, at)
        if not block:
            return b"".join(parts)
        parts.append(block)
        at += len(block)


def write_at(fd, data, offset):
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def complete_lines(data):
    """(offset, end) of every line that has its newline (a last line without one may be a
    write of another tool in progress: it is never touched)."""
    at = 0
    while True:
        end = data.find(b"\n", at)
        if end < 0:
            return
        yield at, end
        at = end + 1


def transfer_lines(data):
    """(offset, length, transfer id, expiry stamp) of every leptonctl transfer line."""
    found = []
    if KEY_COMMENT.encode() in data:
        for at, end in complete_lines(data):
            match = TRANSFER_LINE.fullmatch(data, at, end)
            if match:
                found.append((at, end - at, match.group(2).decode(), match.group(1).decode()))
    return found


def free_slot(length):
    return (FREE_SLOT if length >= len(FREE_SLOT) else b"#")[:length].ljust(length, b" ")


def blank_key_lines(data_dir, doomed):
    """Overwrite every transfer line for which doomed(transfer id, expiry stamp) is true with a
    free slot of its own length, in place: no other byte of the file moves or changes. The file
    is only opened for writing when it holds such a line (it may be read-only, managed by
    someone else, and have none)."""
    try:
        with open(authorized_keys_path(), "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return 0
    if not any(doomed(transfer_id, expiry) for _, _, transfer_id, expiry in transfer_lines(data)):
        return 0
    with authorized_keys_locked(data_dir, create=False) as fd:
        if fd is None:
            return 0
        removed = 0
        for offset, length, transfer_id, expiry in transfer_lines(read_all(fd)):
            if doomed(transfer_id, expiry):
                write_at(fd, free_slot(length), offset)
                removed += 1
        if removed:
            os.fsync(fd)
        return removed


def add_key_line(fd, line):
    """Write line (bytes, no newline) over the smallest free slot that holds it, padded with
    spaces, or else append it in one O_APPEND write."""
    import fcntl

    data = read_all(fd)
    slots = [
        (end - at, at)
        for at, end in complete_lines(data)
        if end - at >= len(line) and FREE_LINE.fullmatch(data, at, end)
    ]
    if slots:
        length, offset = min(slots)
        write_at(fd, line.ljust(length, b" "), offset)
    else:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_APPEND)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # never glue our line onto a last line without a newline
            os.write(fd, line + b"\n")  # one O_APPEND write: never interleaved with another
        finally:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    os.fsync(fd)


def grant(data_dir, request):
    """Write a transfer spec here and, with a public key, authorise it for one recv. The spec's
    mtime is set to the grant's expiry: the next agent start after it removes the spec."""
    transfer_id = check_transfer_id(request.get("transfer"))
    spec = request.get("spec")
    if not isinstance(spec, dict):
        raise BadRequest("grant needs a spec object")
    pubkey = request.get("pubkey")
    if pubkey is not None and (
        not isinstance(pubkey, str) or not re.fullmatch(r"ssh-ed25519 [A-Za-z0-9+/=]+", pubkey)
    ):
        raise BadRequest("pubkey must be one 'ssh-ed25519 BASE64' key")
    ttl = request.get("ttl_s")
    ttl = 300.0 if ttl is None else check_seconds(ttl, "ttl_s", positive=True)
    os.makedirs(os.path.join(data_dir, "transfers"), mode=0o700, exist_ok=True)
    spec_path = transfer_path(data_dir, transfer_id, ".json")
    write_json_atomic(spec_path, spec)
    expires_at = time.time() + ttl
    os.utime(spec_path, (expires_at, expires_at))
    if pubkey is None:
        return {"schema": SCHEMA, "granted": transfer_id, "key": False}
    expiry = utc_stamp(expires_at)
    line = 'restrict,command="%s",expiry-time="%sZ" %s %s%s' % (
        forced_command(data_dir, transfer_id),
        expiry,
        pubkey,
        KEY_COMMENT,
        transfer_id,
    )
    with authorized_keys_locked(data_dir, create=True) as fd:
        add_key_line(fd, line.encode())
    return {"schema": SCHEMA, "granted": transfer_id, "key": True, "expires": expiry + "Z"}


def revoke(data_dir, transfer_id, now=None):
    """Blank the transfer's key line and every expired transfer line; remove the transfer's
    files and those of transfers that are over."""
    transfer_id = check_transfer_id(transfer_id)
    now = time.time() if now is None else now
    stamp = utc_stamp(now)
    removed = blank_key_lines(data_dir, lambda tid, expiry: tid == transfer_id or expiry < stamp)
    for suffix in (".json", ".key", ".known_hosts", ".stderr"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(transfer_path(data_dir, transfer_id, suffix))
    stale = remove_stale_transfers(data_dir, now)
    return {"schema": SCHEMA, "revoked": transfer_id, "key_lines_removed": removed,
            "stale_files_removed": stale}  # fmt: skip


def sweep_transfers(data_dir, now=None):
    """What killed operators and agents left: expired transfer lines and the files of transfers
    that are over. Run at every serve/request/send/recv start; cheap when there is nothing."""
    now = time.time() if now is None else now
    stamp = utc_stamp(now)
    try:
        blank_key_lines(data_dir, lambda other, expiry: expiry < stamp)
    except OSError as exc:  # said on stderr; the op itself still runs (revoke fails loudly)
        sys.stderr.write("lepton_agent: cannot remove expired transfer keys: %s\n" % exc)
    remove_stale_transfers(data_dir, now)


def remove_stale_transfers(data_dir, now):
    """Files of transfers that are over: a spec whose key expired (its mtime is the expiry) more
    than SPEC_GRACE_S ago; a hop's key, known_hosts and stderr files after KEY_FILE_AGE_S (ssh
    has read them long before; NextHop keeps its stderr open); anything else after an hour."""
    directory, removed = os.path.join(data_dir, "transfers"), 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if name.startswith("."):
            continue  # the fallback lock of authorized_keys
        if name.endswith(".json"):
            limit = SPEC_GRACE_S
        elif name.endswith((".key", ".known_hosts", ".stderr")):
            limit = KEY_FILE_AGE_S
        else:
            limit = STALE_TRANSFER_S
        path = os.path.join(directory, name)
        with contextlib.suppress(OSError):
            if now - os.lstat(path).st_mtime > limit:
                os.unlink(path)
                removed += 1
    return removed


def read_transfer_spec(data_dir, transfer_id):
    spec = read_json(transfer_path(data_dir, transfer_id, ".json"))
    if spec is None:
        raise BadRequest("no spec for transfer %s (expired or already used)" % transfer_id)
    return spec


def check_ssh_word(value, what, spaces=False):
    """A user, address or host key for ssh's command line: a string that cannot be taken for an
    option (a leading "-") or split (whitespace, control characters; spaces where allowed)."""
    bad = not isinstance(value, str) or not value or value.startswith("-")
    if not bad:
        bad = any(ord(c) < 32 or ord(c) == 127 or (c.isspace() and not (spaces and c == " "))
                  for c in value)  # fmt: skip
    if bad:
        raise BadRequest("the next hop's %s is not usable with ssh: %r" % (what, value))
    return value


class NextHop:
    """The ssh process to the next host of the chain (or stdout), fed while we receive."""

    def __init__(self, data_dir, transfer_id, spec):
        import subprocess

        self.name, self.error, self.proc, self.out = spec.get("name"), None, None, None
        if spec.get("kind") == "stdout":
            self.out = sys.stdout.buffer
            return
        user = check_ssh_word(spec.get("user"), "user")
        address = check_ssh_word(spec.get("address"), "address")
        host_key = check_ssh_word(spec.get("host_key"), "host key", spaces=True)
        port = spec.get("port") or 22
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise BadRequest("the next hop's port must be 1..65535, got %r" % (port,))
        key = transfer_path(data_dir, transfer_id, ".key")
        known = transfer_path(data_dir, transfer_id, ".known_hosts")
        os.makedirs(os.path.dirname(key), mode=0o700, exist_ok=True)
        for path, text in ((key, spec["key"]), (known, "%s %s\n" % (PEER_ALIAS, host_key))):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
        argv = ["ssh", "-T", "-i", key, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", "UserKnownHostsFile=" + known, "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "HostKeyAlias=" + PEER_ALIAS, "-o", "ConnectTimeout=10",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                "-o", "Ciphers=aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,"
                "aes256-gcm@openssh.com,aes128-ctr",
                "-o", "Compression=" + ("yes" if spec.get("compress") else "no"),
                "-F", "/dev/null", "-p", str(port),
                "-l", user, "--", address, "lepton-recv"]  # fmt: skip
        self.stderr_path = transfer_path(data_dir, transfer_id, ".stderr")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.stderr_path)
        fd = os.open(self.stderr_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        self.err = os.fdopen(fd, "w+b")  # read back by finish(), even after a sweep unlinked it
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, bufsize=0)  # fmt: skip
        self.out = self.proc.stdin
        widen_pipe(self.out.fileno())

    def write(self, block):
        if self.out is None:
            return
        try:
            self.out.write(block)
        except (BrokenPipeError, OSError) as exc:
            self.fail("lost the connection to the next hop: %s" % exc)

    def fail(self, message):
        if self.error is None:
            self.error = message
        if self.proc is not None:
            with contextlib.suppress(OSError):
                self.proc.kill()
        self.out = None

    def finish(self):
        """Close the stream; the downstream hops' results (a list)."""
        if self.proc is None:
            if self.out is not None:
                self.out.flush()
            return []
        try:
            if self.out is not None:
                self.out.close()
        except OSError:
            pass
        output = self.proc.stdout.read()
        code = self.proc.wait()
        self.err.seek(0)
        tail = self.err.read().decode("utf-8", "replace").strip().splitlines()[-3:]
        self.err.close()
        with contextlib.suppress(OSError):
            os.unlink(self.stderr_path)
        for line in output.decode("utf-8", "replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and isinstance(doc.get("hops"), list):
                return doc["hops"]
        reason = self.error or "ssh exited with status %s" % code
        if tail:
            reason += ": " + " | ".join(tail)
        return [{"name": self.name, "error": reason, "stored": [], "failed": {}}]


# Files mode writes where the operator said, into directories that others may have touched: a
# symbolic link planted at DEST/sub must never carry a write, chmod or rename elsewhere. The
# destination's parent is opened as named (the operator chose it, links and all); below it every
# directory is opened O_NOFOLLOW relative to its parent's fd, and every file relative to its
# directory's fd.
PART, JOURNAL = ".lepton-part", ".lepton-part.done"
DEST_TREE_FDS = 64
PART_FDS = 256


def open_subdir(parent, name, create, shown):
    """fd of directory name in directory fd parent, made when missing (None when missing and
    create is false). A symbolic link there is replaced by a directory (only the link goes, as
    rsync does) or, without create, treated as missing: never followed."""
    import errno
    import stat

    for _ in range(3):
        try:
            return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                return None
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            if not stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                raise OSError(errno.ENOTDIR, "exists and is not a directory", shown) from None
            if not create:
                return None
            os.unlink(name, dir_fd=parent)
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:
            continue
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
        os.fchmod(fd, 0o777 & ~USER_UMASK)  # as mkdir -p in the user's shell (see make_dirs)
        return fd
    raise OSError(errno.EAGAIN, "cannot make a directory (it keeps changing)", shown)


def open_nofollow(parent, name, flags):
    """os.open of our own file name (a part file, journal, sidecar, empty file) in directory fd
    parent: a symbolic link in its place is removed, never followed."""
    import errno

    try:
        return os.open(name, flags | os.O_NOFOLLOW, 0o600, dir_fd=parent)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
    os.unlink(name, dir_fd=parent)
    return os.open(name, flags | os.O_NOFOLLOW, 0o600, dir_fd=parent)


def lstat_at(parent, name):
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None


def is_file_at(parent, name):
    import stat

    st = lstat_at(parent, name)
    return st is not None and stat.S_ISREG(st.st_mode)


def first_link_above(path, links):
    """The nearest ancestor of a normalised path that is in links, or None."""
    parent = os.path.dirname(path)
    while parent and parent not in links:
        up = os.path.dirname(parent)
        if up == parent:
            return None
        parent = up
    return parent or None


def dest_paths_base(paths, dest=None):
    """Check the absolute paths of a files-mode spec; the directory they are written under
    without following links: dest's parent, or the parent of what they have in common."""
    for path in paths:
        if not isinstance(path, str) or not os.path.isabs(path) or os.path.normpath(path) != path:
            raise BadRequest("a destination path must be absolute and normalised, got %r" % (path,))
        if path == "/":
            raise BadRequest("a destination cannot be /")
    if dest is not None:
        dest = check_dest(dest)
        outside = [p for p in paths if p != dest and not p.startswith(dest.rstrip("/") + "/")]
        if outside:
            raise BadRequest("%r is not under the destination %s" % (outside[0], dest))
        return os.path.dirname(dest)
    return os.path.commonpath([os.path.dirname(p) for p in paths]) if paths else "/"


class DestTree:
    """The directories under base, opened as described above. The most recently used
    DEST_TREE_FDS stay open; one closed since is opened again from base, with the same checks.
    An fd it returns is valid until the next dir_fd/where call."""

    def __init__(self, base, create=True):
        import collections

        self.base, self.create, self.fds = base, create, collections.OrderedDict()

    def rel(self, path):
        rel = os.path.relpath(path, self.base)
        if rel == ".." or rel.startswith("../") or os.path.isabs(rel):
            raise BadRequest("%s is not under %s" % (path, self.base))
        return "" if rel == "." else rel

    def dir_fd(self, rel):
        """fd of directory rel ("" = base); None where it is missing (or a link) and the tree
        does not create."""
        if rel in self.fds:
            self.fds.move_to_end(rel)
            return self.fds[rel]
        if rel == "":
            if self.create:
                make_dirs(self.base)
            try:
                fd = os.open(self.base, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                if self.create:
                    raise
                fd = None
        else:
            parent = self.dir_fd(os.path.dirname(rel))
            shown = os.path.join(self.base, rel)
            name = os.path.basename(rel)
            fd = None if parent is None else open_subdir(parent, name, self.create, shown)
        self.fds[rel] = fd
        while len(self.fds) > DEST_TREE_FDS:
            old = self.fds.popitem(last=False)[1]
            if old is not None:
                os.close(old)
        return fd

    def where(self, path):
        """(fd of path's directory or None, path's name)."""
        rel = self.rel(path)
        if not rel:
            raise BadRequest("%s cannot be written under itself" % path)
        return self.dir_fd(os.path.dirname(rel)), os.path.basename(rel)

    def close(self):
        for fd in self.fds.values():
            if fd is not None:
                os.close(fd)
        self.fds.clear()


class FilesSink:
    """Files mode: frames land at (file, offset) in DEST.lepton-part files as they arrive. A
    journal next to each part file lists the verified chunks ("offset hash" lines, appended
    after the bytes are synced), so a rerun sends only what is missing; a complete file is
    renamed into place with its mode. Nothing is reached through a symbolic link (see DestTree),
    and a spec with a path under one of its own links is refused."""

    def __init__(self, spec):
        self.files = spec.get("files") or []
        dirs, links = spec.get("dirs") or [], spec.get("links") or []
        paths = [entry.get("path") for entry in self.files + dirs + links]
        self.tree = DestTree(dest_paths_base(paths, spec.get("dest")))
        link_paths = {entry["path"] for entry in links}
        for path in paths:
            above = first_link_above(path, link_paths)
            if above is not None:
                raise BadRequest("%s is under %s, a symbolic link of the same copy" % (path, above))
        import collections

        self.fds, self.opened, self.done = collections.OrderedDict(), set(), {}
        self.pending, self.pending_bytes = [], 0
        for entry in dirs:
            os.fchmod(self.tree.dir_fd(self.tree.rel(entry["path"])), entry["mode"] & 0o7777)
        for entry in links:
            parent, name = self.tree.where(entry["path"])
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=parent)
            os.symlink(entry["target"], name, dir_fd=parent)

    def check_targets(self, targets, size):
        """A frame's [[file index, offset], ...]: inside the spec's files, or ValueError."""
        checked = []
        for target in targets or []:
            good = isinstance(target, list) and len(target) == 2
            good = good and all(type(v) is int for v in target)
            if good:
                index, offset = target
                good = 0 <= index < len(self.files) and offset >= 0
                good = good and offset + size <= self.files[index]["size"]
            if not good:
                raise ValueError("a frame target %.100r is not inside the files" % (target,))
            checked.append(target)
        return checked

    def place(self, index):
        """(directory fd, name) of file index: the fd is good until the next place()."""
        return self.tree.where(self.files[index]["path"])

    def part(self, index):
        """fd of file index's part file, good until the next part(): the PART_FDS most recently
        used stay open (a tree of many files must not run out of file descriptors)."""
        if index in self.fds:
            self.fds.move_to_end(index)
            return self.fds[index]
        parent, name = self.place(index)
        if index not in self.opened:
            self.opened.add(index)
            if journal_stale(self.files[index], parent, name):  # a copy of another version
                for leftover in (name + PART, name + JOURNAL):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(leftover, dir_fd=parent)
        fd = self.fds[index] = open_nofollow(parent, name + PART, os.O_RDWR | os.O_CREAT)
        while len(self.fds) > PART_FDS:
            os.close(self.fds.popitem(last=False)[1])
        return fd

    def verified(self, index):
        """offset -> hashes that the journal of file ``index`` lists (read once)."""
        if index not in self.done:
            self.part(index)
            done = {}
            for offset, digest in journal_entries(*self.place(index)):
                done.setdefault(offset, set()).add(digest)
            self.done[index] = done
        return self.done[index]

    def write(self, targets, position, block, digest):
        """Unverified bytes at their places (nothing counts until journaled); a place the
        journal already lists as verified is never written again (a streamed frame, whose
        hash comes after its bytes, is matched by offset: its journal is of this source)."""
        for index, offset in targets:
            hashes = self.verified(index).get(offset)
            if hashes and (digest is None or digest in hashes):
                continue
            fd, view, at = self.part(index), memoryview(block), offset + position
            while view:
                n = os.pwrite(fd, view, at)
                view, at = view[n:], at + n

    def commit(self, targets, digest, size):
        """A verified frame: journaled once its bytes are synced (in batches, see above)."""
        for index, offset in targets:
            write_behind(self.part(index), offset, size)
        self.pending += [(index, offset, digest) for index, offset in targets]
        self.pending_bytes += size * len(targets)
        if self.pending_bytes >= SYNC_BATCH_BYTES:
            self.flush()

    def flush(self):
        for index in sorted({index for index, _, _ in self.pending}):
            os.fdatasync(self.part(index))
        lines = {}
        for index, offset, digest in self.pending:
            lines.setdefault(index, []).append("%d %s\n" % (offset, digest))
        for index in sorted(lines):  # one journal open at a time
            parent, name = self.place(index)
            fd = open_nofollow(parent, name + JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            with os.fdopen(fd, "a") as journal:
                if not os.fstat(fd).st_size:
                    journal.write("# source %s\n" % (self.files[index].get("source_id") or ""))
                journal.write("".join(lines[index]))
        self.pending, self.pending_bytes = [], 0

    def finish(self):
        """Rename every complete file into place; the paths that are complete."""
        self.flush()
        done = []
        for index, entry in enumerate(self.files):
            path = entry["path"]
            parent, name = self.place(index)
            if not is_file_at(parent, name + PART):
                st = lstat_at(parent, name)
                if entry["size"] == 0 and not (is_file_at(parent, name) and not st.st_size):
                    fd = open_nofollow(parent, name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                    os.fchmod(fd, entry["mode"] & 0o7777)
                    if entry.get("mtime_ns") is not None:
                        os.utime(fd, ns=(entry["mtime_ns"], entry["mtime_ns"]))
                    os.close(fd)
                if is_file_at(parent, name):
                    done.append(path)
                continue
            if len(journal_done(entry, parent, name)) < len(entry.get("chunks") or []):
                continue
            fd = self.part(index)
            os.ftruncate(fd, entry["size"])
            os.fsync(fd)
            os.fchmod(fd, entry["mode"] & 0o7777)
            if entry.get("mtime_ns") is not None:  # the source's: a later cp's quick check
                os.utime(fd, ns=(entry["mtime_ns"], entry["mtime_ns"]))
            try:
                os.rename(name + PART, name, src_dir_fd=parent, dst_dir_fd=parent)
                os.unlink(name + JOURNAL, dir_fd=parent)
            except FileNotFoundError:  # a parallel stream finished the same file first
                if not is_file_at(parent, name):
                    raise
            done.append(path)
        self.close()
        return done

    def close(self):
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
        self.tree.close()

    def discard(self, done):
        """Remove the part files and journals of the files not in ``done`` (the disk is
        full: what was written of them goes, so that the space comes back)."""
        for index, entry in enumerate(self.files):
            if entry["path"] not in done:
                parent, name = self.place(index)
                for leftover in (name + PART, name + JOURNAL):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(leftover, dir_fd=parent)
        self.close()


def out_of_space(error):
    """The error text of a full disk or an exhausted quota."""
    import errno

    return any(os.strerror(code) in (error or "") for code in (errno.ENOSPC, errno.EDQUOT))


def open_at(parent, name):
    """Binary file object of our file name in directory fd parent (None: missing, or a link)."""
    if parent is None:
        return None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=parent)
    except OSError:
        return None
    return os.fdopen(fd, "rb")


def journal_entries(parent, name):
    """The (offset, hash) lines of the journal of file name (none when it is missing)."""
    fh = open_at(parent, name + JOURNAL)
    if fh is None:
        return []
    with fh:
        lines = fh.read().decode("ascii", "replace").splitlines()
    entries = []
    for line in lines:
        offset, _, digest = line.partition(" ")
        if offset.isdigit():
            entries.append((int(offset), digest))
    return entries


def journal_stale(entry, parent, name):
    """The journal was written for another version of the source (size:mtime differs)."""
    fh = open_at(parent, name + JOURNAL)
    if fh is None:
        return False
    with fh:
        first = fh.readline(4096).decode("utf-8", "replace").rstrip("\n")
    source = first[len("# source ") :] if first.startswith("# source ") else ""
    return source != (entry.get("source_id") or "")


def journal_done(entry, parent, name):
    """Offsets of the entry's chunks that its journal lists as verified. A chunk whose
    hash is not known in advance (streamed) counts by offset."""
    if journal_stale(entry, parent, name):
        return []
    done = set(journal_entries(parent, name))
    offsets = {offset for offset, _ in done}
    return [
        c[0]
        for c in entry.get("chunks") or []
        if (c[0], c[2]) in done or (c[2] is None and c[0] in offsets)
    ]


def file_state(entry, tree):
    """Which chunks ([offset, size, hash]) of a files-mode entry are at the destination (a
    path reached through a symbolic link below the tree's base has none)."""
    import stat

    path, chunks = entry["path"], entry.get("chunks") or []
    parent, name = tree.where(path)
    st = lstat_at(parent, name) if parent is not None else None
    if parent is not None and is_file_at(parent, name + PART):
        have = journal_done(entry, parent, name)
    elif st is not None and stat.S_ISREG(st.st_mode) and st.st_size == entry["size"]:
        if any(c[2] is None for c in chunks):  # a streamed copy: size and mtime, like rsync
            have = [c[0] for c in chunks] if st.st_mtime_ns == entry.get("mtime_ns") else []
        else:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=parent)
            try:  # hash_range closes what it opens: a copy of the fd each time
                have = [c[0] for c in chunks if hash_range(os.dup(fd), c[0], c[1])[0] == c[2]]
            finally:
                os.close(fd)
    else:
        have = []
    if not chunks:  # an empty file: there when a regular empty file is
        have, complete = [], st is not None and stat.S_ISREG(st.st_mode) and not st.st_size
    else:
        complete = len(have) == len(chunks)
    return {"path": path, "done": have, "complete": complete}


def file_status(files, dest=None):
    """file_state of every entry; dest (optional) is the copy's destination: nothing under it
    is reached through a symbolic link (without it: nothing under the files' common parent)."""
    if not isinstance(files, list):
        raise BadRequest("files must be a list")
    tree = DestTree(dest_paths_base([entry.get("path") for entry in files], dest), create=False)
    try:
        return {"schema": SCHEMA, "files": [file_state(entry, tree) for entry in files]}
    finally:
        tree.close()


def receive(data_dir, transfer_id):
    """The forced command of a transfer key: receive frames, store them, pass them on."""
    import hashlib

    spec = read_transfer_spec(data_dir, transfer_id)
    try:  # one-shot: nobody can use this key again
        blank_key_lines(data_dir, lambda other, expiry: other == transfer_id)
    except OSError as exc:
        error = "cannot remove the transfer key from authorized_keys: %s" % exc
        mine = {"name": spec.get("name"), "stored": [], "failed": {}, "error": error, "bytes": 0}
        sys.stdout.write(json_line({"schema": SCHEMA, "hops": [mine]}))
        return 1
    mode = spec.get("store", "chunks")
    hop = NextHop(data_dir, transfer_id, spec["next"]) if spec.get("next") else None
    mine = {"name": spec.get("name"), "stored": [], "failed": {}, "error": None, "bytes": 0}
    files = None
    batch = ChunkBatch()
    stdin, broken = sys.stdin.buffer, None
    widen_pipe(stdin.fileno())
    try:
        files = FilesSink(spec) if mode == "files" else None
        while True:
            header = read_frame_line(stdin)
            if not header:
                broken = "the stream ended early (the sender or a previous hop was lost)"
                break
            frame = frame_object(header)
            if frame.get("end"):
                break
            if mode == "probe":  # net probe: discard the bytes, answer acks at once
                skip(stdin, frame_size(frame))
                if frame.get("ack"):
                    sys.stdout.write("ack\n")
                    sys.stdout.flush()
                continue
            digest, size = frame.get("h"), frame_size(frame)
            targets = files.check_targets(frame.get("t"), size) if files is not None else []
            if digest is not None:
                check_hash(digest)
            elif mode == "chunks":
                raise BadRequest("a chunk frame needs its hash up front")
            if hop is not None:
                hop.write(header)
            sink = ChunkSink(data_dir, digest) if mode == "chunks" and not mine["error"] else None
            hasher = hashlib.sha256() if files is not None else None
            left = size
            while left:
                block = stdin.read(min(left, IO_BLOCK))
                if not block:
                    break
                if hop is not None:
                    hop.write(block)
                try:
                    if sink is not None:
                        sink.write(block)
                    elif hasher is not None and not mine["error"]:
                        hasher.update(block)
                        files.write(targets, size - left, block, digest)
                except OSError as exc:  # disk full, quota: keep forwarding, store no more
                    mine["error"] = "cannot store: %s" % exc
                    if sink is not None:
                        sink.abort()
                        sink = None
                left -= len(block)
            if not left and digest is None:  # streamed: the hash follows the bytes
                trailer = read_frame_line(stdin)
                if hop is not None:
                    hop.write(trailer)
                digest = check_hash(frame_object(trailer).get("h")) if trailer else None
            if left or digest is None:
                if sink is not None:
                    sink.abort()
                broken = "the stream ended inside a chunk (the sender or a previous hop was lost)"
                break
            mine["bytes"] += size
            if sink is not None:
                problem = sink.check()
                if problem:
                    mine["failed"][digest] = problem
                else:
                    mine["stored"] += batch.add(sink, size)
            elif hasher is not None and not mine["error"]:
                if hasher.hexdigest() != digest:
                    mine["failed"][digest] = "hash mismatch"
                else:
                    files.commit(targets, digest, size)
                    mine["stored"].append(digest)
        if hop is not None and broken is None:
            hop.write(b'{"end":true}\n')
    except (ValueError, KeyError, TypeError, BadRequest) as exc:
        broken = "malformed stream: %s" % exc
    except OSError as exc:
        mine["error"] = "cannot store: %s" % exc
    finally:
        try:
            mine["stored"] += batch.flush()
        except OSError as exc:
            batch.abort()
            mine["error"] = mine["error"] or "cannot store: %s" % exc
        downstream = hop.finish() if hop is not None else []
        if files is not None:
            try:
                mine["files_done"] = files.finish()
            except OSError as exc:
                mine["error"] = mine["error"] or "cannot finish files: %s" % exc
            if out_of_space(mine["error"]):  # give the space back: a rerun would fail too
                files.discard(mine.get("files_done") or [])
                mine["error"] += "; the partial files were removed"
                mine["no_space"] = True
        fsync_dir(os.path.join(data_dir, "chunks"))
        revoke(data_dir, transfer_id)
    mine["error"] = broken or mine["error"]
    if hop is not None and hop.error and downstream and not downstream[0].get("error"):
        downstream[0]["error"] = hop.error
    sys.stdout.write(json_line({"schema": SCHEMA, "hops": [mine, *downstream]}))
    sys.stdout.flush()
    return 0


MAX_FRAME_LINE = 1 << 20  # a header or trailer line: a few hundred bytes in practice
MAX_FRAME_BYTES = 1 << 32  # far above any chunk size


def read_frame_line(stream):
    """One header or trailer line (b"" at the end of the stream), never more than
    MAX_FRAME_LINE bytes: a line without its newline is a broken stream, not a reason to
    buffer without bound."""
    line = stream.readline(MAX_FRAME_LINE + 1)
    if line and not line.endswith(b"\n"):
        if len(line) > MAX_FRAME_LINE:
            raise ValueError("a frame header is longer than %d bytes" % MAX_FRAME_LINE)
        raise ValueError("the stream ended inside a frame header")
    return line


def frame_object(line):
    frame = json.loads(line)
    if not isinstance(frame, dict):
        raise ValueError("a frame header or trailer must be a JSON object")
    return frame


def frame_size(frame):
    """The byte count a frame announces: an integer 0..MAX_FRAME_BYTES."""
    size = frame.get("n") or 0
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_FRAME_BYTES:
        raise ValueError("a frame size must be an integer 0..%d, got %r" % (MAX_FRAME_BYTES, size))
    return size


def skip(stream, size):
    while size > 0:
        block = stream.read(min(size, IO_BLOCK))
        if not block:
            raise ValueError("the stream ended inside a frame")
        size -= len(block)


def net_probe(data_dir, spec):
    """Measure the link to spec["next"] over the transfer channel: the round-trip time
    (best of a few acked empty frames) and the bandwidth (zero-filled frames for about
    spec["seconds"], then one ack; the ack's own round trip is taken off the time)."""
    transfer_id = check_transfer_id(spec.get("transfer"))
    budget = float(spec.get("seconds") or 1.0)
    max_bytes = int(spec.get("max_bytes") or (1 << 30))
    hop = NextHop(data_dir, transfer_id, spec["next"])
    result = {"schema": SCHEMA, "rtt_s": None, "bandwidth_bps": None, "bytes": 0, "error": None}
    block = bytes(4 * IO_BLOCK)

    def ack():
        hop.write(b'{"n":0,"ack":true}\n')  # stdin of ssh is unbuffered: sent now
        line = hop.proc.stdout.readline(64) if hop.out is not None else b""
        if line.strip() != b"ack":
            raise OSError("no ack from the peer")

    try:
        started = time.monotonic()
        ack()  # the connection is up (handshake, key, forced command) after this
        rtts = []
        for _ in range(3):
            at = time.monotonic()
            ack()
            rtts.append(time.monotonic() - at)
        rtt = min(rtts)
        at, sent = time.monotonic(), 0
        while time.monotonic() - at < budget and sent < max_bytes and hop.out is not None:
            hop.write(json_line({"n": len(block)}).encode())
            hop.write(block)
            sent += len(block)
        ack()
        elapsed = max(time.monotonic() - at - rtt, 1e-6)
        result.update(rtt_s=round(rtt, 6), bandwidth_bps=round(sent / elapsed, 1), bytes=sent,
                      setup_s=round(at - started, 6))  # fmt: skip
    except (OSError, ValueError) as exc:
        result["error"] = hop.error or "probe failed: %s" % exc
    finally:
        if hop.out is not None:
            hop.write(b'{"end":true}\n')
        downstream = hop.finish()
        revoke(data_dir, transfer_id)
    if result["error"] and downstream and downstream[-1].get("error"):
        result["error"] = downstream[-1]["error"]
    sys.stdout.write(json_line(result))
    return 0


def send(data_dir, spec):
    """Send frames of spec["items"] to spec["next"] (an ssh hop, or stdout for the operator).
    An item is {"h", "n"} (from this host's chunk store) or {"h", "n", "path", "o"} (a range of
    a file), with "t" targets in files mode. An item without "h" (a file range nobody hashed
    yet) is hashed while it is read and sent: its frame has no "h" and a trailer line
    {"h": hash} follows the bytes. With "store": true the sender also keeps a copy of every
    item in its own chunk store (a `put host:/path` whose source host is a replica)."""
    import hashlib

    transfer_id = check_transfer_id(spec.get("transfer"))
    if not isinstance(spec.get("next"), dict):
        raise BadRequest("send needs a next hop")
    to_stdout = spec["next"].get("kind") == "stdout"
    hop = NextHop(data_dir, transfer_id, spec["next"])
    if to_stdout:
        widen_pipe(sys.stdout.fileno())
    rate = spec.get("rate_bps") or 0
    started = last = time.monotonic()
    mine = {"name": spec.get("name"), "stored": [], "failed": {}, "error": None, "bytes": 0}
    try:
        for item in spec.get("items") or []:
            if hop.out is None:
                break
            size, streaming = int(item["n"]), item.get("h") is None and item.get("path")
            digest = None if streaming else check_hash(item["h"])
            name = digest or "%s@%s" % (item.get("path"), item.get("o") or 0)
            source = item.get("path") or chunk_path(data_dir, digest)
            try:
                fh = open(source, "rb", buffering=0)  # noqa: SIM115 (the with below)
            except OSError as exc:
                mine["failed"][name] = "cannot read %s: %s" % (source, exc)
                continue
            keep = None
            if spec.get("store") and item.get("path") and not streaming:
                keep = ChunkSink(data_dir, digest)
            hasher = hashlib.sha256() if streaming else None
            with fh:
                fh.seek(int(item.get("o") or 0))
                frame = {"n": size} if streaming else {"h": digest, "n": size}
                if item.get("t"):
                    frame["t"] = item["t"]
                hop.write(json_line(frame).encode())
                left = size
                while left and hop.out is not None:
                    block = fh.read(min(left, IO_BLOCK))
                    if not block:  # the source shrank: pad, the receiver's hash check fails
                        mine["failed"][name] = "source %s is shorter than expected" % source
                        block = b"\0" * min(left, IO_BLOCK)
                    hop.write(block)
                    if hasher is not None:
                        hasher.update(block)
                    if keep is not None:
                        keep.write(block)
                    left -= len(block)
                    mine["bytes"] += len(block)
                    now = time.monotonic()
                    if rate and mine["bytes"] / rate > now - started:
                        time.sleep(min(1.0, mine["bytes"] / rate - (now - started)))
                    if not to_stdout and now - last >= PROGRESS_EVERY_S:
                        sys.stdout.write(json_line({"progress": mine["bytes"]}))
                        sys.stdout.flush()
                        last = now
            if hasher is not None and not left:
                trailer = {"h": hasher.hexdigest()}
                if name in mine["failed"]:
                    trailer["h"] = "0" * 64  # a short read: make sure it does not verify
                hop.write(json_line(trailer).encode())
            if keep is not None:
                problem = None if left else keep.commit()
                keep.abort()
                if not left and problem is None:
                    mine["stored"].append(digest)
        if hop.out is not None:
            hop.write(b'{"end":true}\n')
    finally:
        downstream = hop.finish()
        if not to_stdout:
            revoke(data_dir, transfer_id)
    mine["error"] = hop.error
    doc = {"schema": SCHEMA, "seconds": round(time.monotonic() - started, 6)}
    doc["hops"] = [mine, *downstream]
    if to_stdout:
        sys.stderr.write(json_line(doc))
    else:
        sys.stdout.write(json_line(doc))
    return 0


def chunk_import(data_dir, items):
    """Copy file ranges of this host into its own chunk store, verifying each hash."""
    if not isinstance(items, list):
        raise BadRequest("items must be a list")
    stored, failed = [], {}
    for item in items:
        digest, size = check_hash(item.get("h")), int(item.get("n", -1))
        sink = ChunkSink(data_dir, digest)
        try:
            with open(item["path"], "rb", buffering=0) as fh:
                fh.seek(int(item.get("o") or 0))
                left = size
                while left:
                    block = fh.read(min(left, IO_BLOCK))
                    if not block:
                        break
                    sink.write(block)
                    left -= len(block)
            problem = sink.commit() if not left else "the file is shorter than expected"
        except (OSError, KeyError) as exc:
            problem = "cannot read: %s" % exc
        finally:
            sink.abort()
        if problem:
            failed[digest] = problem
        else:
            stored.append(digest)
    return {"schema": SCHEMA, "stored": stored, "failed": failed}


def refs_request(op, request, data_dir):
    """chunk-pin / chunk-unpin / chunk-gc / chunk-drop, their inputs checked."""
    store = check_store_id(request.get("store"))
    if op == "chunk-pin":
        return chunk_pin(data_dir, store, check_pins(request.get("refs")))
    if op == "chunk-unpin":
        candidates = check_hashes(request.get("hashes") or [])
        return chunk_unpin(data_dir, store, check_refs(request.get("refs")), candidates)
    if op == "chunk-gc":
        keep = set(check_refs(request.get("keep")))
        flags = [request.get(f, False) for f in ("release_legacy", "check")]
        if not all(isinstance(f, bool) for f in flags):
            raise BadRequest("release_legacy and check must be true or false")
        return chunk_gc(data_dir, store, keep, *flags)
    flags = [request.get(f, False) for f in ("corrupt", "check")]
    if not all(isinstance(f, bool) for f in flags):
        raise BadRequest("corrupt and check must be true or false")
    return chunk_drop(data_dir, store, check_hashes(request.get("hashes")), *flags)


def data_request(op, request, data_dir):
    """One data op (serve request or `request` command line) -> its reply."""
    if op == "chunk-have":
        return chunk_have(data_dir, check_hashes(request.get("hashes"), allow_all=True))
    if op == "chunk-verify":
        hashes = check_hashes(request.get("hashes"), allow_all=True)
        return chunk_verify(data_dir, sorted(stored_chunks(data_dir)) if hashes is None else hashes)
    if op == "chunk-rm":
        return chunk_rm(data_dir, check_hashes(request.get("hashes")))
    if op in ("chunk-pin", "chunk-unpin", "chunk-gc", "chunk-drop"):
        return refs_request(op, request, data_dir)
    if op == "grant":
        return grant(data_dir, request)
    if op == "revoke":
        return revoke(data_dir, request.get("transfer"))
    if op == "scan":
        return scan_tree(request.get("path"), request.get("chunk_size"), request.get("hash", True))
    if op == "file-status":
        return file_status(request.get("files"), request.get("dest"))
    if op == "path-info":
        return path_info(request.get("paths"))
    if op == "chunk-import":
        return chunk_import(data_dir, request.get("items"))
    manifest = request.get("manifest") or {}
    return materialize(data_dir, request.get("dest"), manifest, request.get("label"))


class AgentParser(argparse.ArgumentParser):
    """argparse that also answers a bad command line with a JSON error line (exit 2)."""

    def error(self, message):
        self.print_usage(sys.stderr)
        sys.stdout.write(json_line({"schema": SCHEMA, "error": message}))
        sys.exit(2)


def build_parser():
    parser = AgentParser(prog="lepton_agent", description="leptonctl host agent")
    commands = parser.add_subparsers(dest="command")
    commands.required = True
    data_help = "default: $XDG_DATA_HOME/leptonctl"
    for name, text in (("probe", "print one JSON probe document"), ("serve", "JSON-lines loop")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--data-dir", default=None, help=data_help)
        sub.add_argument("--root", default="/", help="prefix for /proc, /sys and /etc reads")
    commands.add_parser("version", help="print the agent version as JSON")
    subs = {name: commands.add_parser(name, help=text) for name, text in (
        ("job-start", "start a detached job; the JSON spec is read from stdin"),
        ("job-status", "status of the given jobs (default: all)"),
        ("job-kill", "cancel a job: TERM its process group, KILL after the grace"),
        ("job-log", "read a job's log from a byte offset"),
        ("job-rm", "remove an ended job's directory"),
    )}  # fmt: skip
    for sub in subs.values():
        sub.add_argument("--data-dir", default=None, help=data_help)
    for name, text in (
        ("request", "answer one serve request read from stdin (any op), then exit"),
        ("send", "send a transfer; its JSON spec is the first line of stdin"),
        ("net-probe", "measure the link to a peer; the JSON spec is on stdin"),
        ("recv", "receive a transfer (the forced command of a transfer key)"),
    ):
        subs[name] = commands.add_parser(name, help=text)
        subs[name].add_argument("--data-dir", default=None, help=data_help)
    subs["recv"].add_argument("--transfer", required=True, metavar="ID")
    subs["job-status"].add_argument("ids", nargs="*", metavar="ID")
    for name in ("job-kill", "job-log", "job-rm"):
        subs[name].add_argument("id", metavar="ID")
    subs["job-kill"].add_argument("--grace", type=float, default=None, help="default: the spec's")
    subs["job-log"].add_argument("--offset", type=int, default=0)
    subs["job-log"].add_argument("--limit", type=int, default=JOB_LOG_LIMIT)
    return parser


def job_command(args, data_dir):
    """Run one job-* command line: one JSON line; exit 2 for a malformed request."""
    request = {"ids": args.ids or None} if args.command == "job-status" else vars(args)
    try:
        if args.command == "job-start":
            text = sys.stdin.read()
            try:
                request = {"spec": json.loads(text)}
            except ValueError as exc:
                raise BadRequest("job spec on stdin is not JSON: %s" % exc) from None
        reply, code = job_request(args.command, request, data_dir), 0
    except BadRequest as exc:
        reply, code = {"schema": SCHEMA, "error": str(exc)}, 2
    except Exception as exc:
        error = "%s failed: %s: %s" % (args.command, type(exc).__name__, exc)
        reply, code = {"schema": SCHEMA, "error": error}, 1
    sys.stdout.write(json_line(reply))
    return code


def transfer_command(args, data_dir):
    """request / send / recv: the data plane's command lines."""
    try:
        if args.command == "recv":
            return receive(data_dir, check_transfer_id(args.transfer))
        streaming = args.command in ("send", "net-probe")
        line = sys.stdin.buffer.readline() if streaming else sys.stdin.buffer.read()
        try:
            request = json.loads(line)
        except ValueError as exc:
            raise BadRequest("the request on stdin is not JSON: %s" % exc) from None
        if not isinstance(request, dict):
            raise BadRequest("the request on stdin must be a JSON object")
        if args.command == "send":
            return send(data_dir, request)
        if args.command == "net-probe":
            return net_probe(data_dir, request)
        reply = answer(json.dumps(request), "/", data_dir)
        sys.stdout.write(json_line(reply))
        return 1 if "error" in reply else 0
    except BadRequest as exc:
        sys.stdout.write(json_line({"schema": SCHEMA, "error": str(exc)}))
        return 2


def main(argv=None):
    global USER_UMASK
    USER_UMASK = os.umask(0o077)
    args = build_parser().parse_args(argv)
    if args.command == "version":
        sys.stdout.write(json_line({"schema": SCHEMA, "agent_version": AGENT_VERSION}))
        return 0
    data_dir = os.path.abspath(os.path.expanduser(args.data_dir or default_data_dir()))
    if args.command in ("serve", "request", "send", "recv", "net-probe"):
        sweep_transfers(data_dir)  # what a killed transfer left: gone at the next use
    if args.command == "serve":
        return serve(args.root, data_dir, sys.stdin, sys.stdout)
    if args.command.startswith("job-"):
        return job_command(args, data_dir)
    if args.command in ("request", "send", "recv", "net-probe"):
        return transfer_command(args, data_dir)
    sys.stdout.write(json_line(probe(args.root, data_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
