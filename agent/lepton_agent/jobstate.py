"""Detached jobs: the spec checks, the job directory and the records shared by the ops and the
supervisor.
"""

from __future__ import annotations

import os
import time

from .fsutil import write_json_atomic
from .sysinfo import convert, read_text
from .wire import MIB, BadRequest, check_job_id, check_seconds

# Layout of DATA/jobs/<id>/: spec.json (what to run), state.json (RUNNING record of the
# supervisor), end.json (the end record), log (stdout+stderr), cancel (job-kill's request),
# start.lock (held by a job-start while it starts the supervisor) and supervisor.lock (held by
# the supervisor for its whole life, its text is the supervisor pid: a lock nobody holds is a
# supervisor that is gone, whatever happened to its pid since).
JOB_FIELDS = ("id", "state", "pid", "pgid", "started", "ended", "exit_code", "signal",
              "peak_rss_bytes", "reason", "log_bytes", "containment")  # fmt: skip


JOB_LIVE = ("STARTING", "RUNNING")


JOB_GRACE_S = 10


JOB_START_WAIT_S = 5.0


JOB_KILL_WAIT_S = 1.0  # job-kill waits this long for the end record before it answers


JOB_TICK_S = 0.2  # the supervisor's walltime / cancel-file check interval


JOB_LOG_LIMIT_MAX = 4 * MIB


EXIT_NOT_FOUND, EXIT_CANNOT_EXEC = 127, 126  # what a shell answers for the same failures


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
        "cpus": check_cpu_ids(spec.get("cpus")),
        "memory_bytes": check_memory(spec.get("memory_bytes")),
    }


def check_cpu_ids(cpus):
    """The CPU ids to pin the job to (null: not pinned)."""
    if cpus is None:
        return None
    good = isinstance(cpus, list) and cpus and all(
        isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 65536 for c in cpus
    )  # fmt: skip
    if not good:
        raise BadRequest("cpus must be a non-empty list of CPU ids or null")
    return sorted(set(cpus))


def check_memory(limit):
    """The job's memory limit in bytes (null or 0: none)."""
    if limit is None or limit == 0:
        return None
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise BadRequest("memory_bytes must be a non-negative integer or null")
    return limit


def job_path(data_dir, job_id, name=""):
    return os.path.join(data_dir, "jobs", job_id, name)


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


def signal_name(signum):
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return "signal %d" % signum


def boot_id():
    """This boot's random id: a pid or pgid recorded under another boot means nothing now."""
    return (read_text("/proc/sys/kernel/random/boot_id") or "").strip() or None


def process_start(pid):
    """When process pid started (clock ticks after boot, /proc/PID/stat field 22), or None."""
    stat = read_text("/proc/%d/stat" % pid)
    fields = stat.rsplit(")", 1)[-1].split() if stat else []
    return convert(fields[19]) if len(fields) > 19 else None  # fields[0] is field 3 (state)


def write_end(data_dir, job_id, state, exit_code, signum, reason, peak=None):
    """The end record. peak: the job tree's peak memory as the supervisor measured it; without
    one, the largest reaped child's ru_maxrss (which counts the supervisor's forked copy)."""
    import resource

    if peak is None:  # Linux reports ru_maxrss in KiB
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    end = {"state": state, "exit_code": exit_code, "signal": signum, "ended": time.time(),
           "peak_rss_bytes": peak, "reason": reason}  # fmt: skip
    write_json_atomic(job_path(data_dir, job_id, "end.json"), end)
