"""What confines a job, without root: its CPUs (sched_setaffinity) and its memory limit,
enforced by a memory cgroup where the user may make one (the kernel's OOM killer), else by the
supervisor sampling the job tree's RSS and killing it over the limit (Slurm's OverMemoryKill),
else by RLIMIT_AS.
"""

from __future__ import annotations

import contextlib
import os

from .sysinfo import read_text
from .wire import MIB

JOB_MEMORY_TICK_S = 0.1  # how often the tree of a job with a memory limit is measured

CGROUP_ROOT = "/sys/fs/cgroup"


def mib(n):
    return "%g MiB" % round(n / MIB, 1)


def contain(spec, job_id):
    """Pin this supervisor (and so the job it forks) to the spec's CPUs, and choose how the
    job's memory limit is enforced -> the containment record (state.json, job-status):
    cpus (the pinned ids, or null) with cpus_note when not pinned, memory ("cgroup",
    "sampling", "rlimit" or null), memory_limit_bytes, and cgroup (its directory, or null)."""
    record = {"cpus": None, "cpus_note": None, "memory": None,
              "memory_limit_bytes": spec.get("memory_bytes"), "cgroup": None}  # fmt: skip
    cpus = spec.get("cpus")
    if not cpus:
        record["cpus_note"] = "not pinned: no CPU ids were allocated (host never probed)"
    elif not hasattr(os, "sched_setaffinity"):
        record["cpus_note"] = "not pinned: no sched_setaffinity on this system"
    else:
        try:
            os.sched_setaffinity(0, cpus)
            record["cpus"] = sorted(os.sched_getaffinity(0))
        except (OSError, ValueError) as exc:
            record["cpus_note"] = "not pinned: cannot pin to CPUs %s: %s" % (
                ",".join(str(c) for c in cpus), getattr(exc, "strerror", None) or exc)  # fmt: skip
    limit = spec.get("memory_bytes")
    if limit:
        record["cgroup"] = make_memory_cgroup(job_id, limit)
        if record["cgroup"]:
            record["memory"] = "cgroup"
        elif os.path.exists("/proc/self/statm") and os.path.isdir("/proc/self/task"):
            record["memory"] = "sampling"
        else:
            record["memory"] = "rlimit"
    return record


def own_memory_cgroup():
    """The directory of this process's memory cgroup where it is ours to write in -> (cgroup
    version, directory) or None: v2 (the unified hierarchy, with memory delegated to its
    children) or v1 (the memory controller's hierarchy)."""
    for line in (read_text("/proc/self/cgroup") or "").splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if not path.startswith("/") or "/.." in path:
            continue
        if hierarchy == "0" and controllers == "":
            base = CGROUP_ROOT + path.rstrip("/")
            delegated = (read_text(os.path.join(base, "cgroup.subtree_control")) or "").split()
            if "memory" in delegated and os.access(base, os.W_OK):
                return 2, base
        elif "memory" in controllers.split(","):
            base = os.path.join(CGROUP_ROOT, "memory") + path.rstrip("/")
            if os.path.isfile(os.path.join(base, "memory.limit_in_bytes")) and os.access(
                base, os.W_OK
            ):
                return 1, base
    return None


def make_memory_cgroup(job_id, limit):
    """A new memory cgroup for the job, limited to ``limit`` bytes -> its directory, or None
    where none can be made (no writable cgroup: the usual case without root or a delegation).
    Never an existing directory: mkdir makes it, so nothing we did not create is used."""
    found = own_memory_cgroup()
    if found is None:
        return None
    version, base = found
    path = os.path.join(base, "lepton-%s-%d" % (job_id, os.getpid()))
    try:
        os.mkdir(path, 0o755)
    except OSError:
        return None
    knob = "memory.max" if version == 2 else "memory.limit_in_bytes"
    try:
        write_knob(path, knob, limit)
    except OSError:
        remove_cgroup(path)
        return None
    for swap in ("memory.swap.max", "memory.memsw.limit_in_bytes"):  # best effort: no swap
        with contextlib.suppress(OSError):
            write_knob(path, swap, 0 if swap == "memory.swap.max" else limit)
    # the whole job goes, never one process of it: v2 kills the cgroup as a group; v1 (no
    # group kill) pauses it at the limit (under_oom) for the supervisor to kill the tree
    with contextlib.suppress(OSError):
        write_knob(path, "memory.oom.group" if version == 2 else "memory.oom_control", 1)
    return path


def write_knob(path, name, value):
    fd = os.open(os.path.join(path, name), os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        os.write(fd, b"%d\n" % value)
    finally:
        os.close(fd)


def join_cgroup(path):
    """In the forked child, before exec: move this process into the job's cgroup."""
    fd = os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        os.write(fd, b"%d\n" % os.getpid())
    finally:
        os.close(fd)


def cgroup_counter(path, name, key=None):
    """One number from a cgroup file: the whole file, or the value of ``key`` in it."""
    text = read_text(os.path.join(path, name)) or ""
    for line in text.splitlines():
        fields = line.split()
        if key is None and len(fields) == 1 and fields[0].isdigit():
            return int(fields[0])
        if key is not None and len(fields) == 2 and fields[0] == key and fields[1].isdigit():
            return int(fields[1])
    return None


def cgroup_oom_kills(path):
    """How many processes the kernel's OOM killer killed in the cgroup (v2 memory.events,
    v1 memory.oom_control), or None where the kernel does not say."""
    found = cgroup_counter(path, "memory.events", "oom_kill")
    return found if found is not None else cgroup_counter(path, "memory.oom_control", "oom_kill")


def cgroup_peak(path):
    found = cgroup_counter(path, "memory.peak")
    return found if found is not None else cgroup_counter(path, "memory.max_usage_in_bytes")


def remove_cgroup(path):
    """rmdir the job's cgroup (once empty); a leftover empty directory is harmless."""
    with contextlib.suppress(OSError):
        os.rmdir(path)


def set_rlimit_as(limit):
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def children_of(pid):
    """The children of pid, from /proc/PID/task/*/children (none once it is gone)."""
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return []
    found = []
    for task in tasks:
        text = read_text("/proc/%d/task/%s/children" % (pid, task)) or ""
        found.extend(int(child) for child in text.split() if child.isdigit())
    return found


def descendants(root):
    """Every descendant of root: a walk down the job's tree through the kernel's children
    files (Linux >= 3.5 with CONFIG_PROC_CHILDREN), not a read of every process on the host;
    where those files are missing, found from the parent pid of every process."""
    me = os.getpid()
    if not os.path.exists("/proc/%d/task/%d/children" % (me, me)):
        return descendants_by_scan(root)
    tree, todo = [], [root]
    while todo:
        children = children_of(todo.pop())
        tree.extend(children)
        todo.extend(children)
    return tree


def descendants_by_scan(root):
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read_text("/proc/%s/stat" % name) or ""
            fields = stat.rsplit(")", 1)[-1].split()
            if len(fields) > 1 and fields[1].isdigit():
                parents.setdefault(int(fields[1]), []).append(int(name))
    tree, todo = [], list(parents.get(root, ()))
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(parents.get(pid, ()))
    return tree


class TreeMemory:
    """The memory of the job's process tree: every descendant of the supervisor (the
    subreaper keeps orphans among them), RSS summed from /proc/PID/statm, as Slurm's
    OverMemoryKill measures it without cgroups. limit: enforced by sampling, else None."""

    def __init__(self, limit, sampling, cgroup=None):
        self.limit = limit if sampling else None
        self.cgroup = cgroup  # where the kernel enforces the limit (the job's memory cgroup)
        self.cgroup_limit = limit
        self.sampling = os.path.exists("/proc/self/statm")
        self.peak = None
        self.floor = None  # the supervisor's own high-water mark, once it forked the job
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def after_fork(self):
        """Note the supervisor's high-water mark: the forked copy it exec'd the job from
        held no more, so a reaped child's ru_maxrss up to it may be only that copy."""
        for line in (read_text("/proc/self/status") or "").splitlines():
            if line.startswith("VmHWM:") and line.split()[1].isdigit():
                self.floor = int(line.split()[1]) * 1024

    def sample(self):
        """-> (bytes the tree holds, its pids), or (None, []) where /proc cannot say."""
        if not self.sampling:
            return None, []
        tree = descendants(os.getpid())
        total = 0
        for pid in tree:
            fields = (read_text("/proc/%d/statm" % pid) or "").split()
            if len(fields) > 1 and fields[1].isdigit():
                total += int(fields[1]) * self.page
        self.peak = max(self.peak or 0, total)
        return total, tree

    def over_limit(self, used):
        """Why the job is out of memory now, or None: its cgroup reached the limit (an OOM
        kill there, or v1's pause at the limit), or the tree holds more than the limit."""
        if self.cgroup:
            paused = cgroup_counter(self.cgroup, "memory.oom_control", "under_oom")
            if cgroup_oom_kills(self.cgroup) or paused:
                return "out of memory: limit %s (its memory cgroup reached it; killed)" % mib(
                    self.cgroup_limit
                )
        elif self.limit and used is not None and used > self.limit:
            return "out of memory: limit %s (its processes held %s; killed)" % (
                mib(self.limit), mib(used))  # fmt: skip
        return None

    def peak_bytes(self):
        """The sampled peak, or the largest reaped child's ru_maxrss where that is above what
        the supervisor held when it forked (below it, ru_maxrss only says the fork's size)."""
        import resource

        reaped = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        if self.peak is None:
            return None  # write_end falls back to ru_maxrss
        if self.floor is not None and reaped > self.floor:
            return max(self.peak, reaped)
        return self.peak
