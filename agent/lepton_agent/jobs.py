"""The job operations: job-start, job-status, job-kill, job-log, job-rm."""

from __future__ import annotations

import os
import re
import time

from .fsutil import file_size, lock_held, open_locked, read_json, write_json_atomic
from .jobstate import (
    JOB_FIELDS,
    JOB_GRACE_S,
    JOB_KILL_WAIT_S,
    JOB_LIVE,
    JOB_LOG_LIMIT_MAX,
    JOB_START_WAIT_S,
    boot_id,
    group_alive,
    job_path,
    normalize_spec,
    process_start,
    signal_group,
)
from .supervisor import spawn_supervisor
from .sysinfo import convert, read_line
from .wire import (
    JOB_ID_PATTERN,
    SCHEMA,
    BadRequest,
    check_count,
    check_job_id,
    check_seconds,
)


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
    entry.update((key, state.get(key)) for key in ("pid", "pgid", "started", "containment"))
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
