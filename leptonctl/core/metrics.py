"""Prometheus text exposition (format 0.0.4) of what a maintenance run saw.

The node_exporter textfile collector reads ``*.prom`` files from a directory; a
maintenance run writes ``leptonctl.prom`` there (atomically, by the service), so
an existing Prometheus and Grafana pick up hosts, GPUs, jobs and replicas.  Pure:
plain data in, text out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from leptonctl.core.facts import HostFacts

METRICS_FILE = "leptonctl.prom"


@dataclass(frozen=True)
class HostSample:
    host: str
    up: bool | None  # None: the run did not contact it
    healthy: bool | None  # None: no health check ran on it
    drained: bool
    facts: HostFacts | None  # the latest known probe
    facts_age_s: float | None


@dataclass(frozen=True)
class ReplicaHealth:
    by_state: Mapping[str, int] = field(default_factory=dict)  # "ok", "corrupt"
    under_replicated: int = 0  # chunks with fewer good replicas than asked for
    without_replica: int = 0  # chunks with no good replica at all


@dataclass(frozen=True)
class RunSample:
    started: float
    duration_s: float
    exit_code: int


@dataclass(frozen=True)
class MetricsSnapshot:
    hosts: Sequence[HostSample]
    jobs: Mapping[str, int]  # state -> count
    replicas: ReplicaHealth | None
    run: RunSample | None


@dataclass
class _Family:
    name: str
    kind: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float | int | None, **labels: str) -> None:
        if value is not None:
            self.samples.append((labels, float(value)))


def render_metrics(snapshot: MetricsSnapshot) -> str:
    """The whole exposition text: ``# HELP``/``# TYPE`` then samples, per family."""
    families = _host_families(snapshot.hosts) + _gpu_families(snapshot.hosts)
    jobs = _Family("leptonctl_jobs", "gauge", "Jobs in the queue and history, by state.")
    for state, count in sorted(snapshot.jobs.items()):
        jobs.add(count, state=state)
    families.append(jobs)
    if snapshot.replicas is not None:
        families += _replica_families(snapshot.replicas)
    if snapshot.run is not None:
        families += _run_families(snapshot.run)
    return "".join(_family_text(f) for f in families)


def _host_families(hosts: Sequence[HostSample]) -> list[_Family]:
    up = _Family("leptonctl_host_up", "gauge", "1 if the host answered in the last run.")
    healthy = _Family("leptonctl_host_healthy", "gauge", "1 if the host passed its health check.")
    drained = _Family("leptonctl_host_drained", "gauge", "1 if no new jobs go to the host.")
    age = _Family("leptonctl_host_facts_age_seconds", "gauge", "Age of the host's last probe.")
    memory = _Family("leptonctl_host_memory_bytes", "gauge", "Memory of the host.")
    available = _Family(
        "leptonctl_host_memory_available_bytes", "gauge", "Memory available on the host."
    )
    load = _Family("leptonctl_host_load1", "gauge", "One-minute load average.")
    disk = _Family(
        "leptonctl_host_data_disk_free_bytes", "gauge", "Free space in the agent's data dir."
    )
    for h in hosts:
        up.add(None if h.up is None else int(h.up), host=h.host)
        healthy.add(None if h.healthy is None else int(h.healthy), host=h.host)
        drained.add(int(h.drained), host=h.host)
        age.add(h.facts_age_s, host=h.host)
        if h.facts is not None:
            memory.add(h.facts.memory.total_bytes, host=h.host)
            available.add(h.facts.memory.available_bytes, host=h.host)
            load.add(h.facts.cpu.load[0], host=h.host)
            data = h.facts.data_disk
            disk.add(data.free_bytes if data else None, host=h.host)
    return [up, healthy, drained, age, memory, available, load, disk]


def _gpu_families(hosts: Sequence[HostSample]) -> list[_Family]:
    util = _Family("leptonctl_gpu_utilization_ratio", "gauge", "GPU utilization, 0 to 1.")
    used = _Family("leptonctl_gpu_memory_used_bytes", "gauge", "GPU memory in use.")
    total = _Family("leptonctl_gpu_memory_total_bytes", "gauge", "GPU memory.")
    temp = _Family("leptonctl_gpu_temperature_celsius", "gauge", "GPU temperature.")
    power = _Family("leptonctl_gpu_power_watts", "gauge", "GPU power draw.")
    ecc = _Family("leptonctl_gpu_ecc_uncorrected_errors", "gauge", "Uncorrected ECC errors.")
    for h in hosts:
        for gpu in h.facts.gpus if h.facts else ():
            labels = {"host": h.host, "gpu": str(gpu.index), "model": gpu.name or ""}
            labels["uuid"] = gpu.uuid or ""
            pct = gpu.utilization_pct
            util.add(None if pct is None else pct / 100.0, **labels)
            used.add(gpu.memory_used_bytes, **labels)
            total.add(gpu.memory_total_bytes, **labels)
            temp.add(gpu.temperature_c, **labels)
            power.add(gpu.power_w, **labels)
            ecc.add(gpu.ecc_uncorrected, **labels)
    return [util, used, total, temp, power, ecc]


def _replica_families(replicas: ReplicaHealth) -> list[_Family]:
    states = _Family("leptonctl_replicas", "gauge", "Chunk replicas, by state.")
    for state, count in sorted(replicas.by_state.items()):
        states.add(count, state=state)
    under = _Family(
        "leptonctl_chunks_under_replicated", "gauge", "Chunks with fewer replicas than asked for."
    )
    under.add(replicas.under_replicated)
    lost = _Family("leptonctl_chunks_without_replica", "gauge", "Chunks with no good replica.")
    lost.add(replicas.without_replica)
    return [states, under, lost]


def _run_families(run: RunSample) -> list[_Family]:
    started = _Family(
        "leptonctl_maintenance_last_run_timestamp_seconds", "gauge", "When the last run started."
    )
    started.add(run.started)
    duration = _Family(
        "leptonctl_maintenance_last_run_duration_seconds", "gauge", "How long the last run took."
    )
    duration.add(run.duration_s)
    code = _Family(
        "leptonctl_maintenance_last_run_exit_code", "gauge", "Exit code of the last run (0: ok)."
    )
    code.add(run.exit_code)
    return [started, duration, code]


def _family_text(family: _Family) -> str:
    lines = [
        f"# HELP {family.name} {escape_help(family.help)}",
        f"# TYPE {family.name} {family.kind}",
    ]
    for labels, value in family.samples:
        if labels:
            body = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels.items())
            lines.append(f"{family.name}{{{body}}} {format_value(value)}")
        else:
            lines.append(f"{family.name} {format_value(value)}")
    return "\n".join(lines) + "\n"


def escape_label_value(value: str) -> str:
    """Backslash, double quote and line feed are escaped in label values."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """Backslash and line feed are escaped in HELP text."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
