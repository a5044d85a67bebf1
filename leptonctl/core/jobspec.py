"""What the operator asks for: submit options and batch files, read into plain data.

Pure parsing with errors that say where: ``jobs.yaml: entry 3 (gpus): ...``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from leptonctl.core.datasets import parse_input
from leptonctl.core.scheduler import Request
from leptonctl.errors import UsageError
from leptonctl.inventory.capacity import parse_size

_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*(s|sec|m|min|h|d)?$", re.IGNORECASE)
MAX_DURATION = 366 * 86400.0  # seconds: --time, est
MAX_ARRAY_TASKS = 100_000  # jobs one --array (or one batch file) may expand into
MAX_INT = 2**63 - 1  # what the state store (SQLite INTEGER) holds: --priority, counts
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
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
    """``90``, ``90s``, ``15m``, ``2h``, ``1d``, ``1:30:00``, ``30:00`` -> seconds.

    A duration is positive and at most :data:`MAX_DURATION` (a year): ``0:0`` and
    ``99999999999d`` are usage errors, not a job that never starts or never ends.
    """
    value = str(text).strip()
    if len(value) > 32:
        raise UsageError(f"{what}: cannot read {text[:40]!r}... as a duration", hint=_DURATION_HINT)
    if ":" in value:
        parts = value.split(":")
        if len(parts) > 3 or not all(p.isdigit() and p.isascii() for p in parts):
            raise UsageError(f"{what}: cannot read {text!r} as a duration", hint=_DURATION_HINT)
        seconds = 0.0
        for part in parts:
            seconds = seconds * 60 + int(part)
    else:
        match = _DURATION.match(value)
        if not match:
            raise UsageError(f"{what}: cannot read {text!r} as a duration", hint=_DURATION_HINT)
        unit = match.group(2).lower() if match.group(2) else None
        seconds = float(match.group(1)) * _UNIT_SECONDS[unit]
    if seconds <= 0:
        raise UsageError(f"{what}: a duration must be positive, got {text!r}")
    if seconds > MAX_DURATION:
        raise UsageError(f"{what}: {text!r} is longer than a year", hint=_DURATION_HINT)
    return float(seconds)


_DURATION_HINT = "use seconds (90), a unit (90s, 15m, 2h, 1d) or H:MM:SS"


def parse_env(items: Sequence[str]) -> dict[str, str]:
    """``--env KEY=VALUE`` (repeatable) -> {KEY: VALUE}; the value may contain ``=``."""
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _ENV_NAME.match(key):
            raise UsageError(
                f"--env: expected KEY=VALUE, got {item!r}",
                hint="a name is letters, digits and '_' and does not start with a digit",
            )
        env[key] = check_env_value(value, f"--env {key}")
    return env


def check_env_value(value: str, what: str) -> str:
    if "\0" in value:
        raise UsageError(f"{what}: an environment value cannot contain a NUL character")
    return value


def input_env_name(name: str) -> str:
    """``LEPTON_INPUT_<NAME>``: the variable that tells a job where its input dataset is."""
    return "LEPTON_INPUT_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def check_inputs(inputs: Sequence[str]) -> tuple[str, ...]:
    """``--input`` values, each readable, no two of them naming the same variable
    (``ok.name`` and ``ok-name`` would both be ``LEPTON_INPUT_OK_NAME``)."""
    seen: dict[str, str] = {}
    for text in inputs:
        variable = input_env_name(parse_input(text).name)
        if variable in seen:
            raise UsageError(
                f"--input {seen[variable]!r} and --input {text!r} would both set {variable}",
                hint="a job takes each dataset once; rename one of the datasets",
            )
        seen[variable] = text
    return tuple(inputs)


def check_priority(value: int, what: str = "--priority") -> int:
    if not -MAX_INT - 1 <= value <= MAX_INT:
        raise UsageError(f"{what}: {value} is out of range (a signed 64-bit integer)")
    return value


def check_workdir(value: str | None, what: str = "--workdir") -> str | None:
    """``None`` (the job's own directory) or a non-empty path without control characters."""
    if value is None:
        return None
    if not value.strip():
        raise UsageError(
            f"{what}: an empty path", hint="leave the option out to run in the job's directory"
        )
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise UsageError(f"{what}: {value!r} contains control characters")
    return value


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
    """``0-99``, ``1,3,5``, ``0-10:2`` (Slurm's forms) -> indexes.

    At most :data:`MAX_ARRAY_TASKS` indexes: the count is checked before the list is built.
    """
    if len(text) > 10_000:
        raise UsageError("--array: the index list is too long", hint=_ARRAY_HINT)
    parts: list[tuple[int, int, int]] = []
    count = 0
    for part in text.split(","):
        match = re.match(r"^([0-9]{1,18})(?:-([0-9]{1,18})(?::([0-9]{1,18}))?)?$", part.strip())
        if not match:
            raise UsageError(f"--array: cannot read {part!r}", hint=_ARRAY_HINT)
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else start
        step = int(match.group(3)) if match.group(3) else 1
        if end < start or step < 1:
            raise UsageError(f"--array: {part!r} is an empty range")
        count += (end - start) // step + 1
        if count > MAX_ARRAY_TASKS:
            raise UsageError(
                f"--array: more than {MAX_ARRAY_TASKS} jobs in one submit",
                hint="split the array over several submits",
            )
        parts.append((start, end, step))
    return [i for start, end, step in parts for i in range(start, end + 1, step)]


_ARRAY_HINT = "e.g. 0-99, 1,3,5 or 0-10:2"


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


def parse_batch_text(text: str, source: str) -> list[Submission]:
    """A batch file's text -> submissions (read with the bounded YAML loader)."""
    import yaml  # imported by the one command that reads a batch file

    from leptonctl.core.safeyaml import YamlLimitError, load_yaml

    try:
        document = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = source if mark is None else f"{source}:{mark.line + 1}"
        if isinstance(exc, yaml.MarkedYAMLError):
            what = ": ".join(str(p) for p in (exc.context, exc.problem) if p) or str(exc)
        else:
            what = str(exc)
        kind = "refused" if isinstance(exc, YamlLimitError) else "not valid YAML"
        raise UsageError(f"{where}: {kind}: {what}") from None
    return parse_batch(document, source)


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
        if array is None:
            jobs.append(job)
        else:
            try:
                indexes = parse_array(str(array))
            except UsageError as exc:
                raise _entry_error(source, index, "array", exc.message) from None
            jobs.extend(expand_array(job, indexes))
        if len(jobs) > MAX_ARRAY_TASKS:
            raise _entry_error(
                source, index, None, f"the batch has more than {MAX_ARRAY_TASKS} jobs"
            )
    if not jobs:
        raise UsageError(f"{source}: the `jobs:` list is empty")
    return jobs


def check_after(jobs: Sequence[Submission], is_job: Callable[[int], bool]) -> None:
    """What ``submit`` requires of ``after``: an existing job id (``is_job``) or the name of
    an earlier entry of the batch (an array's name covers its jobs).  ``--dry-run`` runs the
    same check, so a plan is never shown for a batch that submit would refuse."""
    earlier: set[str] = set()
    for job in jobs:
        for ref in job.after:
            if ref in earlier or (ref.isascii() and ref.isdigit() and _is_id(ref, is_job)):
                continue
            raise UsageError(
                f"job {job.name}: --after {ref!r} is neither a job id "
                "nor an earlier job of this batch"
            )
        earlier.add(job.name)
        if job.array_index is not None:
            earlier.add(job.name.split("[", 1)[0])


def _is_id(ref: str, is_job: Callable[[int], bool]) -> bool:
    return len(ref) <= 18 and is_job(int(ref))


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
        name = _opt_str(entry.get("name"), "name") or f"job{index}"
        field_name = "resources"
        request = make_request(
            cpus=_int(entry.get("cpus", 1), "cpus"),
            mem=entry.get("mem", entry.get("memory")),
            gpus=_int(entry.get("gpus", 0), "gpus"),
            gpu_type=_opt_str(entry.get("gpu_type"), "gpu_type"),
            gpu_mem=entry.get("gpu_mem"),
            fpgas=_int(entry.get("fpgas", 0), "fpgas"),
            fpga_type=_opt_str(entry.get("fpga_type"), "fpga_type"),
        )
        field_name = "time"
        walltime = entry.get("time", entry.get("walltime"))
        walltime_value = None if walltime is None else parse_duration(str(walltime), "time")
        field_name = "after"
        after = entry.get("after")
        after_list = [] if after is None else after if isinstance(after, list) else [after]
        if not all(_is_scalar(a) for a in after_list):
            raise ValueError("must be a job id, an entry name, or a list of them")
        after_value = tuple(str(a) for a in after_list)
        field_name = "est"
        est = entry.get("est") or {}
        if not isinstance(est, Mapping):
            raise ValueError("must be a mapping from host, group or kind to seconds")
        if not all(_is_scalar(v) for v in est.values()):
            raise ValueError("must be a mapping from host, group or kind to seconds")
        estimates = {str(k): parse_duration(str(v), "est") for k, v in est.items()}
        field_name = "env"
        env = _batch_env(entry.get("env"))
        field_name = "workdir"
        workdir = check_workdir(_opt_str(entry.get("workdir"), "workdir"), "workdir")
        return Submission(
            name=name,
            command=command_value,
            request=request,
            priority=_int(entry.get("priority", 0), "priority"),
            walltime=walltime_value,
            env=env,
            workdir=workdir,
            retries=_int(entry.get("retries", 0), "retries"),
            after=after_value,
            limit=_opt_str(entry.get("limit"), "limit"),
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
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise _FieldError(name, f"must be a non-negative 64-bit integer, got {value!r}")
    return value


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float)


def _batch_env(env: Any) -> dict[str, str]:
    """``env:``: a mapping of variable names to strings or numbers (true/false as written)."""
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise ValueError("must be a mapping of NAME: value")
    out: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str) or not _ENV_NAME.match(key):
            raise _FieldError(
                "env",
                f"{key!r} is not an environment variable name "
                "(letters, digits and '_', not starting with a digit)",
            )
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif _is_scalar(value):
            out[key] = check_env_value(str(value), f"env {key}")
        else:
            raise _FieldError(
                f"env.{key}",
                f"must be a string or a number, got {_describe(value)}",
            )
    return out


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _opt_str(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not _is_scalar(value) or isinstance(value, bool):
        raise _FieldError(name, f"must be a string, got {_describe(value)}")
    return str(value)


def _entry_error(source: str, index: int, key: str | None, message: str) -> UsageError:
    where = f"{source}: entry {index}" + (f" ({key})" if key else "")
    return UsageError(f"{where}: {message}")
