"""What the operator asks for: submit options and batch files, read into plain data.

Pure parsing with errors that say where: ``jobs.yaml: entry 3 (gpus): ...``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from leptonctl.core.scheduler import Request
from leptonctl.errors import UsageError
from leptonctl.inventory.capacity import parse_size

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?$", re.IGNORECASE)
_UNIT_SECONDS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Submission:
    """One job to enqueue (an array is expanded into several)."""

    name: str
    command: tuple[str, ...] | str  # argv, or a string run by `sh -c`
    request: Request = field(default_factory=Request)
    priority: int = 0
    walltime: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str | None = None
    retries: int = 0
    after: tuple[str, ...] = ()  # job ids, or names of entries of the same batch file
    limit: str | None = None
    estimates: Mapping[str, float] = field(default_factory=dict)
    array_index: int | None = None
    inputs: tuple[str, ...] = ()  # NAME[@VERSION][:/mount] datasets it needs on its host


def parse_duration(text: str, what: str = "--time") -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d``, ``1:30:00``, ``30:00`` -> seconds."""
    value = str(text).strip()
    if ":" in value:
        parts = value.split(":")
        if len(parts) > 3 or not all(p.isdigit() for p in parts):
            raise UsageError(f"{what}: cannot read {text!r} as a duration", hint=_DURATION_HINT)
        seconds = 0.0
        for part in parts:
            seconds = seconds * 60 + int(part)
        return float(seconds)
    match = _DURATION.match(value)
    if not match:
        raise UsageError(f"{what}: cannot read {text!r} as a duration", hint=_DURATION_HINT)
    unit = match.group(2).lower() if match.group(2) else None
    seconds = float(match.group(1)) * _UNIT_SECONDS[unit]
    if seconds <= 0:
        raise UsageError(f"{what}: a duration must be positive, got {text!r}")
    return seconds


_DURATION_HINT = "use seconds (90), a unit (90s, 15m, 2h, 1d) or H:MM:SS"


def parse_env(items: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise UsageError(f"--env: expected KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def parse_estimates(items: Sequence[str]) -> dict[str, float]:
    """``--est gpu=600 --est h100=300 --est gpu01=250`` -> {key: seconds}."""
    estimates: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--est: expected KIND=SECONDS, got {item!r}")
        estimates[key] = parse_duration(value, "--est")
    return estimates


def parse_array(text: str) -> list[int]:
    """``0-99``, ``1,3,5``, ``0-10:2`` (Slurm's forms) -> indexes."""
    indexes: list[int] = []
    for part in text.split(","):
        match = re.match(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$", part.strip())
        if not match:
            raise UsageError(f"--array: cannot read {part!r}", hint="e.g. 0-99, 1,3,5 or 0-10:2")
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else start
        step = int(match.group(3)) if match.group(3) else 1
        if end < start or step < 1:
            raise UsageError(f"--array: {part!r} is an empty range")
        indexes.extend(range(start, end + 1, step))
    if len(indexes) > 100_000:
        raise UsageError("--array: more than 100000 jobs in one submit")
    return indexes


def expand_array(job: Submission, indexes: Sequence[int]) -> list[Submission]:
    """One job per index, named ``name[i]``, with ``LEPTON_ARRAY_INDEX`` set."""
    return [
        replace(
            job,
            name=f"{job.name}[{i}]",
            env={**job.env, "LEPTON_ARRAY_INDEX": str(i)},
            array_index=i,
        )
        for i in indexes
    ]


def make_request(
    cpus: int = 1,
    mem: str | int | None = None,
    gpus: int = 0,
    gpu_type: str | None = None,
    gpu_mem: str | int | None = None,
    fpgas: int = 0,
    fpga_type: str | None = None,
) -> Request:
    if cpus < 0 or gpus < 0 or fpgas < 0:
        raise UsageError("resource counts cannot be negative")
    return Request(
        cpus=cpus,
        memory_bytes=_size(mem, "--mem"),
        gpus=gpus,
        gpu_type=gpu_type,
        gpu_memory_bytes=_size(gpu_mem, "--gpu-mem"),
        fpgas=fpgas,
        fpga_type=fpga_type,
    )


def _size(value: str | int | None, what: str) -> int:
    if value is None:
        return 0
    try:
        return parse_size(value)
    except ValueError as exc:
        raise UsageError(f"{what}: {exc}", hint="e.g. 512M, 16GiB, 1.5T") from None


# -- batch files -----------------------------------------------------------------

_BATCH_KEYS = {
    "name", "command", "cpus", "mem", "memory", "gpus", "gpu_type", "gpu_mem", "fpgas",
    "fpga_type", "priority", "time", "walltime", "env", "workdir", "retries", "after",
    "limit", "est", "array",
}  # fmt: skip


def parse_batch(document: Any, source: str) -> list[Submission]:
    """A YAML ``jobs:`` list -> submissions; errors name the entry index and field."""
    if not isinstance(document, Mapping) or not isinstance(document.get("jobs"), list):
        raise UsageError(f"{source}: expected a mapping with a `jobs:` list")
    jobs: list[Submission] = []
    names: set[str] = set()
    for index, entry in enumerate(document["jobs"]):
        job = _batch_entry(entry, index, source)
        if job.name in names:
            raise _entry_error(source, index, "name", f"duplicate name {job.name!r}")
        names.add(job.name)
        array = entry.get("array") if isinstance(entry, Mapping) else None
        jobs.extend(expand_array(job, parse_array(str(array))) if array is not None else [job])
    if not jobs:
        raise UsageError(f"{source}: the `jobs:` list is empty")
    return jobs


def _batch_entry(entry: Any, index: int, source: str) -> Submission:
    if not isinstance(entry, Mapping):
        raise _entry_error(source, index, None, "expected a mapping")
    unknown = sorted(set(entry) - _BATCH_KEYS)
    if unknown:
        raise _entry_error(
            source, index, unknown[0], f"unknown key (known: {', '.join(sorted(_BATCH_KEYS))})"
        )
    field_name = "command"
    try:
        command = entry.get("command")
        if (
            isinstance(command, list)
            and command
            and all(isinstance(c, str | int | float) for c in command)
        ):
            command_value: tuple[str, ...] | str = tuple(str(c) for c in command)
        elif isinstance(command, str) and command.strip():
            command_value = command
        else:
            raise ValueError("must be a non-empty string or list of strings")
        field_name = "name"
        name = str(entry.get("name") or f"job{index}")
        field_name = "resources"
        request = make_request(
            cpus=_int(entry.get("cpus", 1), "cpus"),
            mem=entry.get("mem", entry.get("memory")),
            gpus=_int(entry.get("gpus", 0), "gpus"),
            gpu_type=_opt_str(entry.get("gpu_type")),
            gpu_mem=entry.get("gpu_mem"),
            fpgas=_int(entry.get("fpgas", 0), "fpgas"),
            fpga_type=_opt_str(entry.get("fpga_type")),
        )
        field_name = "time"
        walltime = entry.get("time", entry.get("walltime"))
        walltime_value = None if walltime is None else parse_duration(str(walltime), "time")
        field_name = "after"
        after = entry.get("after")
        after_list = [] if after is None else after if isinstance(after, list) else [after]
        after_value = tuple(str(a) for a in after_list)
        field_name = "est"
        est = entry.get("est") or {}
        if not isinstance(est, Mapping):
            raise ValueError("must be a mapping from host, group or kind to seconds")
        estimates = {str(k): parse_duration(str(v), "est") for k, v in est.items()}
        field_name = "env"
        env = entry.get("env") or {}
        if not isinstance(env, Mapping):
            raise ValueError("must be a mapping")
        return Submission(
            name=name,
            command=command_value,
            request=request,
            priority=_int(entry.get("priority", 0), "priority"),
            walltime=walltime_value,
            env={str(k): str(v) for k, v in env.items()},
            workdir=_opt_str(entry.get("workdir")),
            retries=_int(entry.get("retries", 0), "retries"),
            after=after_value,
            limit=_opt_str(entry.get("limit")),
            estimates=estimates,
        )
    except _FieldError as exc:
        raise _entry_error(source, index, exc.field, exc.message) from None
    except (UsageError, ValueError, TypeError) as exc:
        raise _entry_error(source, index, field_name, str(exc)) from None


class _FieldError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _FieldError(name, f"must be a non-negative integer, got {value!r}")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _entry_error(source: str, index: int, key: str | None, message: str) -> UsageError:
    where = f"{source}: entry {index}" + (f" ({key})" if key else "")
    return UsageError(f"{where}: {message}")
