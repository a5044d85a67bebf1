"""The agent's ``sample`` reply read into plain data, and CPU utilisation from two samples.

A sample carries the host's cumulative /proc/stat ticks; the share of busy ticks between
two samples of one host is its CPU utilisation over that interval (what top and btop
show), unlike the load average, which counts runnable tasks.  Values come from a host:
anything that is not the number it should be reads as ``None``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from leptonctl.core.facts import GpuFacts, HostFacts, MemoryFacts

# What the agent's job-status says of a job (UNKNOWN: no such job on the host).
JOB_STATES = frozenset(
    {"STARTING", "RUNNING", "COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "LOST", "UNKNOWN"}
)


@dataclass(frozen=True)
class CpuTimes:
    total: int  # ticks since boot, all CPUs, idle included
    idle: int  # idle + iowait ticks


@dataclass(frozen=True)
class GpuSample:
    index: int
    utilization_pct: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    temperature_c: float | None
    power_w: float | None


@dataclass(frozen=True)
class HostSample:
    time: float
    cpu: CpuTimes | None
    load: tuple[float, float, float] | None
    memory_total_bytes: int | None
    memory_available_bytes: int | None
    gpus: tuple[GpuSample, ...] = ()
    jobs: Mapping[str, str] = dataclasses.field(default_factory=dict)  # agent job id -> state


def parse_sample(doc: Mapping[str, Any]) -> HostSample:
    """A ``sample`` reply -> ``HostSample``; fields that are malformed read as ``None``."""
    times = doc.get("cpu_times")
    cpu = None
    if isinstance(times, Mapping):
        total, idle = _count(times.get("total")), _count(times.get("idle"))
        if total is not None and idle is not None and idle <= total:
            cpu = CpuTimes(total, idle)
    load_doc = doc.get("load")
    load = None
    if isinstance(load_doc, list) and len(load_doc) == 3:
        values = [_number(v) for v in load_doc]
        if all(v is not None for v in values):
            load = (float(values[0] or 0.0), float(values[1] or 0.0), float(values[2] or 0.0))
    memory_doc = doc.get("memory")
    memory: Mapping[str, Any] = memory_doc if isinstance(memory_doc, Mapping) else {}
    gpus_value = doc.get("gpus")
    gpus_doc: list[Any] = gpus_value if isinstance(gpus_value, list) else []
    return HostSample(
        time=_number(doc.get("time")) or 0.0,
        cpu=cpu,
        load=load,
        memory_total_bytes=_count(memory.get("total_bytes")),
        memory_available_bytes=_count(memory.get("available_bytes")),
        gpus=tuple(g for g in (_gpu(d) for d in gpus_doc) if g is not None),
        jobs=_job_states(doc.get("jobs")),
    )


def _job_states(value: Any) -> dict[str, str]:
    """The job states a sample reported, those that read as a job id and a state only."""
    if not isinstance(value, Mapping):
        return {}
    return {
        k: v
        for k, v in value.items()
        if isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and v in JOB_STATES
    }


def cpu_percent(before: CpuTimes | None, after: CpuTimes | None) -> float | None:
    """Busy share of the ticks between two samples, 0..100; None when it cannot be told
    (a missing sample, no tick elapsed, or counters that went back: the host rebooted)."""
    if before is None or after is None:
        return None
    total = after.total - before.total
    idle = after.idle - before.idle
    if total <= 0 or idle < 0 or idle > total:
        return None
    return 100.0 * (total - idle) / total


def apply_sample(facts: HostFacts, sample: HostSample) -> HostFacts:
    """The last probe's facts with what the sample measured since: memory, load, and the
    moving fields of the GPUs it names (by index; GPUs it does not name keep their values)."""
    memory = facts.memory
    if sample.memory_total_bytes is not None and sample.memory_available_bytes is not None:
        memory = MemoryFacts(sample.memory_total_bytes, sample.memory_available_bytes)
    cpu = facts.cpu if sample.load is None else dataclasses.replace(facts.cpu, load=sample.load)
    by_index = {g.index: g for g in sample.gpus}
    gpus = tuple(_gpu_with(g, by_index[g.index]) if g.index in by_index else g for g in facts.gpus)
    return dataclasses.replace(facts, memory=memory, cpu=cpu, gpus=gpus, time=sample.time)


def _gpu_with(gpu: GpuFacts, s: GpuSample) -> GpuFacts:
    return dataclasses.replace(
        gpu,
        utilization_pct=s.utilization_pct,
        memory_used_bytes=s.memory_used_bytes,
        memory_total_bytes=s.memory_total_bytes or gpu.memory_total_bytes,
        temperature_c=s.temperature_c,
        power_w=s.power_w,
    )


def _gpu(doc: Any) -> GpuSample | None:
    if not isinstance(doc, Mapping):
        return None
    index = _count(doc.get("index"))
    if index is None:
        return None
    util = _number(doc.get("utilization_pct"))
    return GpuSample(
        index=index,
        utilization_pct=None if util is None else max(0.0, min(100.0, util)),
        memory_used_bytes=_count(doc.get("memory_used_bytes")),
        memory_total_bytes=_count(doc.get("memory_total_bytes")),
        temperature_c=_number(doc.get("temperature_c")),
        power_w=_number(doc.get("power_w")),
    )


def _count(value: Any) -> int | None:
    """A non-negative integer, or None (bools and floats are not counts)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None
