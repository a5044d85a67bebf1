"""Health checks and hardware changes, on facts alone (pure: no hosts, no store, no clock).

``check_health`` turns one host's probe into a list of problems (empty: healthy).
``hardware_signature`` keeps what identifies a machine's hardware (GPUs by UUID,
memory, CPU threads, FPGA cards); ``hardware_changes`` compares two signatures.
``drain_decisions`` says which hosts the health step drains and resumes: it only
ever resumes hosts that it drained itself, never an operator's drain.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from leptonctl.core.facts import GpuFacts, GpuHealth, HostFacts

HEALTH_DRAIN_PREFIX = "health: "
_GPU_UNOPENED = re.compile(r"gpus\[[0-9]+\]")
# The agent's words when NVIDIA devices are on the PCI bus but neither NVML nor
# nvidia-smi could read them (a driver that fell over, a GPU off the bus).
_NO_DRIVER = "without a usable driver"


@dataclass(frozen=True)
class HealthThresholds:
    max_gpu_temperature_c: float = 90.0
    max_power_pct: float = 105.0  # of each GPU's power limit
    max_ecc_uncorrected: int = 0
    min_disk_free_bytes: int = 1024**3
    agent_version: str | None = None  # None: any version is fine


def check_health(
    facts: HostFacts, thresholds: HealthThresholds, declared_gpus: int | None = None
) -> list[str]:
    """What is wrong with this host, in words; [] when it is healthy."""
    problems: list[str] = []
    gpus_reason = facts.unavailable.get("gpus")
    if gpus_reason and (_NO_DRIVER in gpus_reason or declared_gpus):
        problems.append(f"NVML unreachable: {gpus_reason}")
    for key, reason in sorted(facts.unavailable.items()):
        # NVML sees the GPU but cannot open it; "gpus[0].xid" and the like are one fact
        # the probe could not read (no /dev/kmsg for a non-root user), no problem
        if _GPU_UNOPENED.fullmatch(key):
            problems.append(f"{key}: {reason}")
    if declared_gpus and len(facts.gpus) < declared_gpus and not gpus_reason:
        problems.append(f"{len(facts.gpus)} of {declared_gpus} declared GPUs found")
    for gpu in facts.gpus:
        where = f"GPU {gpu.index}"
        if gpu.ecc_uncorrected is not None and gpu.ecc_uncorrected > thresholds.max_ecc_uncorrected:
            problems.append(f"{where}: {gpu.ecc_uncorrected} uncorrected ECC errors")
        temp = gpu.temperature_c
        if temp is not None and temp > thresholds.max_gpu_temperature_c:
            problems.append(f"{where}: {temp:g} °C, over {thresholds.max_gpu_temperature_c:g} °C")
        if gpu.power_w is not None and gpu.power_limit_w:
            pct = 100.0 * gpu.power_w / gpu.power_limit_w
            if pct > thresholds.max_power_pct:
                problems.append(
                    f"{where}: drawing {gpu.power_w:g} W, {pct:.0f}% of its "
                    f"{gpu.power_limit_w:g} W limit"
                )
    disk = facts.data_disk
    if disk is None:
        why = facts.unavailable.get("data_dir") or facts.unavailable.get("disks") or "not reported"
        problems.append(f"no data disk: {why}")
    elif disk.free_bytes < thresholds.min_disk_free_bytes:
        problems.append(
            f"data disk {disk.path}: {_gib(disk.free_bytes)} free, "
            f"under {_gib(thresholds.min_disk_free_bytes)}"
        )
    wanted = thresholds.agent_version
    if wanted is not None and facts.agent_version != wanted:
        problems.append(f"agent version {facts.agent_version}, expected {wanted}")
    return problems


# Xid codes that are an application's fault (a bad kernel, an out-of-range access, a
# reset by the user): they say nothing about the GPU.
APPLICATION_XIDS = frozenset({13, 31, 43, 45})
RECENT_XID_S = 3600.0


def gpu_problems(gpu: GpuFacts) -> list[str]:
    """Why this GPU must not be handed out to a job, in words; [] when nothing says so.

    Uncorrected (volatile) ECC errors, pages waiting to be retired, rows waiting to be
    remapped or a failed remapping, and an Xid of the last hour that is not an
    application's fault.  What the probe could not read is not a problem."""
    health = gpu.health or GpuHealth()
    found: list[str] = []
    ecc = health.ecc_uncorrected_volatile
    if ecc:
        found.append(f"{ecc} uncorrected ECC error{'s' if ecc != 1 else ''}")
    if health.retired_pages_pending:
        found.append("retired pages pending (needs a GPU reset)")
    if health.remapped_rows_pending:
        found.append("remapped rows pending (needs a GPU reset)")
    if health.remapped_rows_failed:
        found.append("row remapping failed")
    recent = [
        x
        for x in health.xid or ()
        if x.code not in APPLICATION_XIDS and x.age_s is not None and x.age_s < RECENT_XID_S
    ]
    if recent:
        newest = min(recent, key=lambda x: x.age_s or 0.0)
        codes = ",".join(str(c) for c in sorted({x.code for x in recent}))
        found.append(f"Xid {codes} {_minutes(newest.age_s or 0.0)} ago")
    return found


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _gib(value: int) -> str:
    return f"{value / 1024**3:.1f} GiB"


# -- drain and resume ----------------------------------------------------------------


@dataclass(frozen=True)
class DrainDecisions:
    drain: Mapping[str, str]  # host -> reason (new, or an updated health reason)
    resume: tuple[str, ...]


def drain_decisions(
    problems: Mapping[str, list[str]], drained: Mapping[str, str]
) -> DrainDecisions:
    """``problems``: host -> its problems, for every host whose health is known (not for
    unreachable ones).  ``drained``: host -> reason of every drained host.

    A failing host is drained with a ``health: ...`` reason unless someone else drained it
    already; a healthy host is resumed only if the health check had drained it."""
    drain: dict[str, str] = {}
    resume: list[str] = []
    for host, found in problems.items():
        reason = drained.get(host)
        by_health = reason is not None and reason.startswith(HEALTH_DRAIN_PREFIX)
        if found:
            wanted = HEALTH_DRAIN_PREFIX + "; ".join(found)
            if reason is None or (by_health and reason != wanted):
                drain[host] = wanted
        elif by_health:
            resume.append(host)
    return DrainDecisions(drain, tuple(resume))


# -- hardware changes ------------------------------------------------------------------


@dataclass(frozen=True)
class HardwareChange:
    change: str  # gpu_added | gpu_gone | memory_changed | cpus_changed | fpga_added | fpga_gone
    message: str
    detail: Mapping[str, Any]


def hardware_signature(facts: HostFacts) -> dict[str, Any]:
    """What identifies this machine's hardware, as plain JSON-able data."""
    return {
        "cpu_threads": facts.cpu.threads,
        "memory_bytes": facts.memory.total_bytes,
        "gpus": [
            {"index": g.index, "uuid": g.uuid, "name": g.name, "memory": g.memory_total_bytes}
            for g in facts.gpus
        ],
        "gpus_unavailable": facts.unavailable.get("gpus"),
        "fpgas": [{"slot": f.slot, "name": f.name or f.vendor} for f in facts.fpgas],
    }


def hardware_changes(
    old: Mapping[str, Any], new: Mapping[str, Any], memory_tolerance_pct: float = 1.0
) -> list[HardwareChange]:
    """What changed between two ``hardware_signature``s."""
    changes: list[HardwareChange] = []
    old_gpus = {_gpu_key(g): g for g in old.get("gpus", [])}
    new_gpus = {_gpu_key(g): g for g in new.get("gpus", [])}
    for key, gpu in old_gpus.items():
        if key not in new_gpus:
            why = new.get("gpus_unavailable")
            message = f"GPU {gpu.get('index')} ({gpu.get('name') or '?'}) is gone"
            changes.append(
                HardwareChange(
                    "gpu_gone", message + (f": {why}" if why else ""), {"gpu": dict(gpu)}
                )
            )
    for key, gpu in new_gpus.items():
        if key not in old_gpus:
            message = f"GPU {gpu.get('index')} ({gpu.get('name') or '?'}) was added"
            changes.append(HardwareChange("gpu_added", message, {"gpu": dict(gpu)}))
    # A size the new probe could not read is unknown, not zero: nothing to compare.
    before, after = int(old.get("memory_bytes") or 0), int(new.get("memory_bytes") or 0)
    if before and after and abs(after - before) * 100.0 > memory_tolerance_pct * before:
        changes.append(
            HardwareChange(
                "memory_changed",
                f"memory changed from {_gib(before)} to {_gib(after)}",
                {"before": before, "after": after},
            )
        )
    if old.get("cpu_threads") and new.get("cpu_threads") not in (None, old.get("cpu_threads")):
        before_t, after_t = old.get("cpu_threads"), new.get("cpu_threads")
        changes.append(
            HardwareChange(
                "cpus_changed",
                f"CPU threads changed from {before_t} to {after_t}",
                {"before": before_t, "after": after_t},
            )
        )
    old_fpgas = {f["slot"]: f for f in old.get("fpgas", [])}
    new_fpgas = {f["slot"]: f for f in new.get("fpgas", [])}
    for slot in sorted(set(old_fpgas) - set(new_fpgas)):
        name = old_fpgas[slot].get("name") or "?"
        changes.append(
            HardwareChange("fpga_gone", f"FPGA {slot} ({name}) is gone", {"fpga": old_fpgas[slot]})
        )
    for slot in sorted(set(new_fpgas) - set(old_fpgas)):
        name = new_fpgas[slot].get("name") or "?"
        changes.append(
            HardwareChange(
                "fpga_added", f"FPGA {slot} ({name}) was added", {"fpga": new_fpgas[slot]}
            )
        )
    return changes


def _gpu_key(gpu: Mapping[str, Any]) -> str:
    """A GPU is its UUID; without one (old drivers), its index and model."""
    return str(gpu.get("uuid") or f"{gpu.get('index')}:{gpu.get('name')}")
