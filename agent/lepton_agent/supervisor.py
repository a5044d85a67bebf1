"""A job's supervisor: a double-forked process that runs the job in its own session,
enforces walltime and cancel, and writes the end record.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from . import fsutil
from .containment import (
    JOB_MEMORY_TICK_S,
    TreeMemory,
    cgroup_peak,
    contain,
    join_cgroup,
    mib,
    remove_cgroup,
    set_rlimit_as,
)
from .fsutil import open_locked, read_json, write_json_atomic
from .jobstate import (
    EXIT_CANNOT_EXEC,
    EXIT_NOT_FOUND,
    JOB_START_WAIT_S,
    JOB_TICK_S,
    boot_id,
    job_path,
    process_start,
    signal_group,
    signal_name,
    write_end,
)
from .sysinfo import read_text


def spawn_supervisor(data_dir, job_id):
    """Double fork + setsid: the supervisor is re-parented to init, in a session of its own
    with no terminal, so it outlives the SSH connection and this process."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return
    code = 1
    try:
        os.setsid()
        if os.fork():
            code = 0
        else:
            detach_stdio()
            code = supervise(data_dir, job_id)
    finally:
        os._exit(code)  # never back into the caller's stack (or its stdout buffers)


def detach_stdio():
    """stdin/stdout/stderr to /dev/null, every other inherited fd closed (a pipe of the SSH
    channel or the job-start lock must not live on in the supervisor), cwd /."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = range(3, 1024)
    for fd in fds:
        if fd > 2:
            os.closerange(fd, fd + 1)  # closes, ignoring errors (the listdir fd is gone)
    os.chdir("/")


def supervise(data_dir, job_id):
    """Run the job to its end and write end.json. Returns the supervisor's exit status."""
    import signal

    lock = open_locked(job_path(data_dir, job_id, "supervisor.lock"), os.O_RDWR | os.O_CREAT,
                       wait_s=JOB_START_WAIT_S)  # fmt: skip
    if lock is None:
        return 1  # another supervisor owns this job
    os.ftruncate(lock, 0)
    os.write(lock, b"%d\n" % os.getpid())
    pid = cgroup = None
    try:
        spec = read_json(job_path(data_dir, job_id, "spec.json"))
        flags = {}
        wakeup = install_signal_wakeup(flags)
        if flags or os.path.exists(job_path(data_dir, job_id, "cancel")):
            write_end(data_dir, job_id, "CANCELLED", None, None, "cancelled before it started")
            return 0
        become_subreaper()
        containment = contain(spec, job_id)
        pid, error = start_job_process(data_dir, job_id, spec, containment)
        cgroup = containment["cgroup"]
        sampling = containment["memory"] == "sampling"
        memory = TreeMemory(spec.get("memory_bytes"), sampling, cgroup)
        if pid is None:
            if cgroup:
                remove_cgroup(cgroup)
            write_end(data_dir, job_id, "FAILED", error[0], None, error[1])
            return 0
        memory.after_fork()
        memory.sample()
        ending, reason = watch_job(data_dir, job_id, spec, pid, flags, wakeup, memory)
        # the leader is a zombie until reaped, so its pgid cannot be reused before this KILL
        signal_group(pid, signal.SIGKILL)
        exit_code, signum = reap(pid)
        pid = None
        kill_descendants()  # what left the group (setsid, daemons) ends with the job too
        peak = memory.peak_bytes()
        if cgroup:
            over = memory.over_limit(None)  # an OOM kill just before the end counts too
            if ending is None and over:
                ending, reason = "FAILED", over
            peak = cgroup_peak(cgroup) or peak
            remove_cgroup(cgroup)
        if ending is None:
            ending = "COMPLETED" if exit_code == 0 else "FAILED"
            if exit_code:
                reason = "exit code %d" % exit_code
            elif signum:
                reason = "killed by %s" % signal_name(signum)
            if ending == "FAILED" and containment["memory"] == "rlimit":
                reason += "; its address space was limited to %s (RLIMIT_AS)" % mib(
                    spec["memory_bytes"]
                )
        write_end(data_dir, job_id, ending, exit_code, signum, reason, peak)
        return 0
    except Exception as exc:
        if pid is not None:
            signal_group(pid, signal.SIGKILL)
        if cgroup:
            remove_cgroup(cgroup)  # once empty; a leftover empty directory is harmless
        reason = "supervisor failed: %s: %s" % (type(exc).__name__, exc)
        write_end(data_dir, job_id, "FAILED", None, None, reason)
        return 1


def install_signal_wakeup(flags):
    """SIGTERM/SIGINT set flags["signal"] (cancel); every handled signal, SIGCHLD included,
    writes a byte to the returned pipe, which wait_for_signal sleeps on."""
    import signal

    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd)

    def cancel(signum, frame):
        flags["signal"] = signum

    signal.signal(signal.SIGTERM, cancel)
    signal.signal(signal.SIGINT, cancel)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    return read_fd


def wait_for_signal(read_fd, timeout_s):
    import select

    if not select.select([read_fd], [], [], max(0.0, timeout_s))[0]:
        return
    try:
        os.read(read_fd, 512)  # drain: the pipe only says "a signal came"
    except OSError:
        return


def start_job_process(data_dir, job_id, spec, containment):
    """Start the job in a new session (pgid = sid = pid), stdin /dev/null, stdout+stderr
    appended to the log, with the agent's umask -> (pid, None) or (None, (exit code, reason))."""
    import functools
    import subprocess

    workdir = spec["workdir"]
    if not os.path.isdir(workdir):
        return None, (EXIT_NOT_FOUND, "workdir %s does not exist" % workdir)
    command = spec["command"]
    argv = ["/bin/sh", "-c", command] if isinstance(command, str) else command
    env = dict(os.environ, **spec["env"])
    if containment["cpus"]:
        env["LEPTON_CPUS"] = ",".join(str(c) for c in containment["cpus"])
    preexec = None
    if containment["memory"] == "rlimit":
        preexec = functools.partial(set_rlimit_as, spec["memory_bytes"])
    elif containment["memory"] == "cgroup":
        preexec = functools.partial(join_cgroup, containment["cgroup"])
    log = os.open(job_path(data_dir, job_id, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                  0o600)  # fmt: skip
    started = time.time()
    private = os.umask(fsutil.USER_UMASK)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                cwd=workdir, env=env, start_new_session=True,
                                preexec_fn=preexec)  # fmt: skip
    except OSError as exc:
        code = EXIT_NOT_FOUND if isinstance(exc, FileNotFoundError) else EXIT_CANNOT_EXEC
        return None, (code, "cannot start %s: %s" % (argv[0], exc.strerror or exc))
    except subprocess.SubprocessError:  # the child could not join its cgroup: sample instead
        if containment["memory"] != "cgroup":
            raise
        remove_cgroup(containment["cgroup"])
        containment.update(memory="sampling", cgroup=None)
        return start_job_process(data_dir, job_id, spec, containment)
    finally:
        os.umask(private)
        os.close(log)
    proc.returncode = 0  # reaped by reap(), not by Popen
    state = {"state": "RUNNING", "pid": proc.pid, "pgid": proc.pid,
             "supervisor_pid": os.getpid(), "started": started,
             "boot_id": boot_id(), "leader_start": process_start(proc.pid),
             "containment": containment}  # fmt: skip
    write_json_atomic(job_path(data_dir, job_id, "state.json"), state)
    return proc.pid, None


def watch_job(data_dir, job_id, spec, pid, flags, wakeup, memory):
    """Wait until the job's leader has exited (left unreaped), enforcing walltime and cancel
    on the way: TERM to the group, KILL after the grace -> (TIMEOUT|CANCELLED|None, reason).
    A tree over its memory limit is KILLed at once -> ("FAILED", "out of memory: ...")."""
    import signal

    cancel_file = job_path(data_dir, job_id, "cancel")
    deadline = None if spec["walltime"] is None else time.monotonic() + spec["walltime"]
    ending = reason = kill_at = None
    grace = spec["grace"]
    while not child_exited(pid):
        now = time.monotonic()
        used, tree = memory.sample()
        over = memory.over_limit(used) if ending is None else None
        if over:
            ending, reason, kill_at = "FAILED", over, None
            signal_group(pid, signal.SIGKILL)
            for member in tree:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(member, signal.SIGKILL)
        elif ending is None:
            if flags or os.path.exists(cancel_file):
                request = read_json(cancel_file)
                ending, reason = "CANCELLED", "cancelled by job-kill"
                if request is None:
                    reason = "supervisor got %s" % signal_name(flags.get("signal", signal.SIGTERM))
                elif request.get("grace") is not None:
                    grace = request["grace"]
            elif deadline is not None and now >= deadline:
                ending, reason = "TIMEOUT", "walltime of %g s exceeded" % spec["walltime"]
            if ending:
                signal_group(pid, signal.SIGTERM)
                kill_at = now + grace
        elif kill_at is not None and now >= kill_at:
            signal_group(pid, signal.SIGKILL)
            reason += "; SIGKILL after %g s grace" % grace
            kill_at = None
        wake_at = kill_at if ending else deadline
        tick = JOB_MEMORY_TICK_S if memory.limit or memory.cgroup else JOB_TICK_S
        wait_for_signal(wakeup, tick if wake_at is None else min(tick, wake_at - now))
    return ending, reason


def become_subreaper():
    """Orphans of the job are re-parented to the supervisor instead of init (Linux >= 3.4,
    prctl PR_SET_CHILD_SUBREAPER), so a process that leaves the job's group with setsid
    can still be found and killed at the end. Best effort: without it only the group dies."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def kill_descendants(timeout_s=2.0):
    """SIGKILL and reap every remaining child of this process (with the subreaper set,
    that is everything the job left behind), until none is left or timeout_s passes."""
    import signal

    me = str(os.getpid())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        children = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                stat = read_text("/proc/%s/stat" % name) or ""
                fields = stat.rsplit(")", 1)[-1].split()
                if len(fields) > 1 and fields[1] == me:
                    children.append(int(name))
        for child in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            if not children:
                return
        if not children:
            return
        time.sleep(0.02)


def child_exited(pid):
    """Whether the child has exited, without reaping it (WNOWAIT)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def reap(pid):
    """Reap the child -> (exit code or None, signal number or None)."""
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    return os.WEXITSTATUS(status), None
