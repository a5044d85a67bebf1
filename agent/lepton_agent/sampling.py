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

from . import nvml
from .hardware import SMI_NULLS, mib_to_bytes
from .sysinfo import convert, first_line, read_text, run_tool
from .wire import SCHEMA

# /proc/stat "cpu" columns: user nice system idle iowait irq softirq steal guest guest_nice.
# guest and guest_nice are already counted in user and nice, so they are left out of the total.
IDLE_COLUMNS = (3, 4)  # idle, iowait
COUNTED_COLUMNS = 8
MAX_JOBS = 256  # job ids one sample reports on

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


# nvidia-smi's names of the moving fields, in GPU_FIELDS order
SMI_SAMPLE_FIELDS = (
    ("index", "index", int),
    ("uuid", "uuid", str),
    ("utilization_pct", "utilization.gpu", float),
    ("memory_utilization_pct", "utilization.memory", float),
    ("memory_used_bytes", "memory.used", "mib"),
    ("memory_total_bytes", "memory.total", "mib"),
    ("temperature_c", "temperature.gpu", float),
    ("power_w", "power.draw", float),
)


def gpus_from_smi():
    """One nvidia-smi run for the moving fields only (the probe runs it three times)."""
    import shutil

    smi = shutil.which("nvidia-smi")
    if not smi:
        return None, "nvidia-smi not on PATH"
    query = "--query-gpu=" + ",".join(field for _, field, _ in SMI_SAMPLE_FIELDS)
    rc, out, err = run_tool([smi, query, "--format=csv,noheader,nounits"])
    if rc != 0:
        return None, "nvidia-smi failed (%s)" % first_line(out + "\n" + err)
    gpus = []
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != len(SMI_SAMPLE_FIELDS):
            continue
        gpu = {}
        for (key, _, kind), cell in zip(SMI_SAMPLE_FIELDS, cells):
            value = None if cell.lower() in SMI_NULLS else cell
            gpu[key] = convert(value, mib_to_bytes if kind == "mib" else kind)
        if gpu["index"] is not None:
            gpus.append(gpu)
    return gpus, None


def sample_gpus(unavailable):
    """The moving fields of each GPU: NVML (opened once per agent process), else one
    nvidia-smi run."""
    session = nvml.sample_session()
    if session is not None:
        try:
            return nvml.sample_gpus(session)
        except nvml.NvmlError as exc:
            unavailable["gpus_nvml"] = "NVML failed (%s)" % exc
    gpus, why = gpus_from_smi()
    if gpus is None:
        unavailable["gpus"] = "%s and %s" % (nvml.SAMPLE_STATE["failed"] or "NVML failed", why)
        return []
    return gpus


def sample(root, data_dir, gpus=False, job_ids=None):
    """One sample: {"schema", "time", "cpu_times", "load", "memory", "gpus", "jobs",
    "unavailable"}; "jobs" has the state of each job id asked for."""
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
            doc["gpus"] = sample_gpus(unavailable)
        except Exception as exc:  # a GPU library that breaks leaves the rest of the sample
            unavailable["gpus"] = "sample failed: %s: %s" % (type(exc).__name__, exc)
    doc["jobs"] = {}
    if job_ids:
        from .jobs import job_status  # only when the dashboard shows jobs

        doc["jobs"] = {job_id: job_status(data_dir, job_id)["state"] for job_id in job_ids}
    doc["unavailable"] = unavailable
    return doc
