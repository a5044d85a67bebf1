"""The ``sample`` op: the few counters a live dashboard reads at every refresh.

A probe describes the whole host (PCI bus, disks, storage identity, os-release) and costs
milliseconds; a dashboard refreshing every two seconds needs only what moves: the CPU time
counters of /proc/stat, MemTotal/MemAvailable, the load average and, when the host has GPUs,
their utilisation. The agent keeps no state between requests: it returns the counters as
they are, and the operator turns two of them into a CPU percentage (busy ticks / all ticks
between the two samples), so one ``agent serve`` session, a one-shot ``request`` and a fake
host all answer alike.
"""

from __future__ import annotations

import os
import time

from .sysinfo import Host, read_text
from .wire import SCHEMA

# /proc/stat "cpu" columns: user nice system idle iowait irq softirq steal guest guest_nice.
# guest and guest_nice are already counted in user and nice, so they are left out of the total.
IDLE_COLUMNS = (3, 4)  # idle, iowait
COUNTED_COLUMNS = 8

GPU_FIELDS = (
    "index",
    "uuid",
    "utilization_pct",
    "memory_utilization_pct",
    "memory_used_bytes",
    "memory_total_bytes",
    "temperature_c",
    "power_w",
)


def parse_cpu_times(text):
    """The aggregate "cpu" line of /proc/stat -> {"total": ticks, "idle": ticks, "threads": n},
    or None when there is no such line. Ticks are USER_HZ since boot, all CPUs together."""
    total = idle = None
    threads = 0
    for line in (text or "").splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "cpu":
            try:
                values = [int(v) for v in fields[1 : 1 + COUNTED_COLUMNS]]
            except ValueError:
                return None
            if len(values) < 4:
                return None
            total = sum(values)
            idle = sum(values[i] for i in IDLE_COLUMNS if i < len(values))
        elif fields[0].startswith("cpu") and fields[0][3:].isdigit():
            threads += 1
    if total is None:
        return None
    return {"total": total, "idle": idle, "threads": threads or None}


def parse_meminfo(text):
    """MemTotal and MemAvailable (bytes) of /proc/meminfo; None where missing."""
    info = {}
    for line in (text or "").splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[0] in ("MemTotal", "MemAvailable", "MemFree", "Cached"):
            try:
                info[parts[0]] = int(parts[1]) * (1024 if parts[2:3] == ["kB"] else 1)
            except ValueError:
                continue
    available = info.get("MemAvailable")
    if available is None and "MemFree" in info:  # kernels before 3.14
        available = info["MemFree"] + info.get("Cached", 0)
    return {"total_bytes": info.get("MemTotal"), "available_bytes": available}


def sample_gpus(root, data_dir, unavailable):
    """The moving fields of each GPU (through the probe's own readers: NVML, nvidia-smi)."""
    from .hardware import read_gpus  # only when the caller knows the host has GPUs

    host = Host(root, data_dir)
    found = read_gpus(host)
    unavailable.update(host.unavailable)
    return [{key: gpu.get(key) for key in GPU_FIELDS} for gpu in found["gpus"]]


def sample(root, data_dir, gpus=False):
    """One sample: {"schema", "time", "cpu_times", "load", "memory", "gpus", "unavailable"}."""
    root = root or "/"
    unavailable = {}
    stat_path = os.path.join(root, "proc/stat")
    cpu_times = parse_cpu_times(read_text(stat_path))
    if cpu_times is None:
        unavailable["cpu_times"] = "no aggregate cpu line in %s" % stat_path
    try:
        load = [round(value, 2) for value in os.getloadavg()]
    except (OSError, AttributeError) as exc:
        load = None
        unavailable["cpu_load"] = "load average not available (%s)" % exc
    memory = parse_meminfo(read_text(os.path.join(root, "proc/meminfo")))
    if memory["total_bytes"] is None:
        unavailable["memory"] = "no MemTotal in %s" % os.path.join(root, "proc/meminfo")
    doc = {"schema": SCHEMA, "time": time.time(), "cpu_times": cpu_times, "load": load}
    doc["memory"] = memory
    doc["gpus"] = []
    if gpus:
        try:
            doc["gpus"] = sample_gpus(root, data_dir, unavailable)
        except Exception as exc:  # a GPU library that breaks leaves the rest of the sample
            unavailable["gpus"] = "sample failed: %s: %s" % (type(exc).__name__, exc)
    doc["unavailable"] = unavailable
    return doc
