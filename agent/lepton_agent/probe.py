"""The probe document (schema 1): os, cpu, memory and disks here, gpus and fpgas from hardware.py.

Every section is isolated: one that raises leaves its fallback and a reason in ``unavailable``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

from .common import AGENT_VERSION, SCHEMA
from .hardware import NO_DRIVER, read_fpgas, read_gpus
from .storage import filesystem_of, try_storage_id
from .sysinfo import Host, convert, read_line, read_text

CPU_FIELDS = ("model", "cores", "threads", "usable_threads", "load", "freq_mhz", "max_freq_mhz")


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
    usable, ids = threads, None
    if host.real_root and hasattr(os, "sched_getaffinity"):
        ids = sorted(os.sched_getaffinity(0))
        usable = len(ids)
    if ids is None:
        host.unavailable["cpu_ids"] = "no CPU affinity on this system: jobs are not pinned"
    try:
        load = [round(value, 2) for value in os.getloadavg()]
    except (OSError, AttributeError) as exc:
        load = None
        host.unavailable["cpu_load"] = "load average not available (%s)" % exc
    freq, max_freq = read_cpu_freq(host, blocks)
    model = next((b["model name"] for b in blocks if b.get("model name")), None)
    return {
        "cpu": {"model": model, "cores": cores, "threads": threads, "usable_threads": usable,
                "load": load, "freq_mhz": freq, "max_freq_mhz": max_freq, "ids": ids,
                "numa_nodes": read_cpu_nodes(host, ids)}
    }  # fmt: skip


def parse_cpu_list(text):
    """A kernel CPU list ("0-3,8,10-11") -> sorted ids; None if it is not one."""
    ids = set()
    for part in (text or "").strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            return None
        ids.update(range(int(low), int(high or low) + 1))
    return sorted(ids)


def read_cpu_nodes(host, ids):
    """The NUMA node of each usable CPU ({"cpu id": node}, from sysfs nodeN/cpulist), or
    None where the system shows no NUMA topology."""
    base = host.path("/sys/devices/system/node")
    try:
        names = os.listdir(base)
    except OSError:
        return None
    nodes = {}
    for name in names:
        if name.startswith("node") and name[4:].isdigit():
            for cpu in parse_cpu_list(read_text(os.path.join(base, name, "cpulist"))) or ():
                if ids is None or cpu in ids:
                    nodes[str(cpu)] = int(name[4:])
    return nodes or None


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
    disk.update(read_storage(host, path))
    return {"disks": [disk]}


def read_storage(host, path):
    """The data dir's storage identity (stamped on first use) and the filesystem it is on:
    hosts that report one storage id share one directory, whatever its filesystem."""
    found, why = try_storage_id(host.data_dir)
    if found is None:
        host.unavailable["storage_id"] = why
    mountinfo = host.path("/proc/self/mountinfo")
    fs = filesystem_of(read_text(mountinfo), path)
    if fs is None:
        host.unavailable["fs_type"] = "no mount of %s in %s" % (path, mountinfo)
        fs = {"fs_type": None, "network": None}
    return {"storage_id": found, "fs_type": fs["fs_type"], "network": fs["network"]}


# (section, reader, what the document holds when the reader raises)
SECTIONS: tuple = (
    ("os", read_os, {"os": None, "python": None}),
    ("cpu", read_cpu, {"cpu": dict(dict.fromkeys(CPU_FIELDS), threads=os.cpu_count())}),
    ("memory", read_memory, {"memory": {"total_bytes": None, "available_bytes": None}}),
    ("disks", read_disks, {"disks": []}),
    ("gpus", read_gpus, {"gpus": [], "gpu_driver": NO_DRIVER}),
    ("fpgas", read_fpgas, {"fpgas": [], "fpga_managers": []}),
)


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
