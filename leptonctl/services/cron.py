"""Crontab entries that run ``leptonctl maintain``: install, remove, show.

Edits go through the real ``crontab -l`` / ``crontab -`` (never an editor, never a
prompt).  Each entry we write ends with a marker comment, ``# leptonctl:NAME:SCHEDULE``,
which the shell that cron starts ignores; install replaces exactly the lines carrying
our markers (so installing twice leaves one entry each) and remove deletes only those.
Every other line of the user's crontab is kept as it was, in its place.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from leptonctl.errors import LeptonError, UsageError

# schedule name -> (default cron expression or "off", the playbooks it runs)
SCHEDULES: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "tick": ("*/5 * * * *", ("health", "dispatch")),
    "nightly": ("17 3 * * *", ("nightly",)),
    "scrub": ("off", ("scrub",)),
}
OFF = "off"
_MACROS = ("@reboot", "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight",
           "@hourly")  # fmt: skip
_FIELD = re.compile(r"^[0-9A-Za-z*/,\-]+$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_MARKER = re.compile(r"\s#\sleptonctl:(?P<name>[A-Za-z0-9_.-]+):(?P<schedule>[a-z]+)\s*$")
_TIMEOUT = 30.0
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class CronTarget:
    """What every entry runs, with absolute paths (cron has no working directory or PATH)."""

    python: Path
    inventory: Path | None  # None: leptonctl's built-in local inventory
    state: Path
    lock: Path
    log: Path
    metrics_dir: Path | None = None


@dataclass(frozen=True)
class CronEntry:
    name: str  # the installation's name (several clusters can share one crontab)
    schedule: str  # tick | nightly | scrub
    when: str  # the cron expression
    command: str

    @property
    def line(self) -> str:
        return f"{self.when} {self.command} # leptonctl:{self.name}:{self.schedule}"


def check_when(text: str, option: str) -> str:
    """A cron expression (five fields or an @macro), or ``off``; ``UsageError`` otherwise."""
    when = " ".join(text.split())
    if when == OFF or when in _MACROS:
        return when
    fields = when.split(" ")
    if len(fields) != 5 or not all(_FIELD.match(f) for f in fields):
        raise UsageError(
            f"{option}: {text!r} is not a cron schedule",
            hint='five fields, e.g. "*/5 * * * *" or "17 3 * * *", an @daily macro, or off',
        )
    return when


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise UsageError(f"--name: {name!r} must be letters, digits, '.', '_' or '-'")
    return name


def entry_command(target: CronTarget, playbooks: Sequence[str]) -> str:
    """The shell command of an entry: every word quoted, every ``%`` escaped, and no control
    character anywhere (a newline in a path would end the line and start a second entry)."""
    argv = [str(target.python), "-m", "leptonctl"]
    if target.inventory is not None:
        argv += ["-i", str(target.inventory)]
    argv += ["--state", str(target.state), "maintain", "--json", "--lock", str(target.lock)]
    if target.metrics_dir is not None:
        argv += ["--metrics-dir", str(target.metrics_dir)]
    argv += list(playbooks)
    for word in [*argv, str(target.log)]:
        if _CONTROL.search(word):
            raise UsageError(
                f"{word!r} contains a control character: it cannot be written to a crontab",
                hint="use paths without newlines, tabs or other control characters",
            )
    line = " ".join(shlex.quote(a) for a in argv) + f" >> {shlex.quote(str(target.log))} 2>&1"
    return line.replace("%", "\\%")  # an unescaped % ends a cron command


def prepare_directories(target: CronTarget) -> list[Path]:
    """Create (mode 0700) the directories the entry writes into, so that the first tick on a
    fresh machine does not fail in the shell before leptonctl starts; returns those made."""
    made: list[Path] = []
    for path in (target.state, target.lock, target.log):
        missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise LeptonError(
                f"cannot create {path.parent} for the crontab entry: {exc.strerror or exc}"
            ) from None
        for directory in reversed(missing):
            directory.chmod(0o700)  # mkdir's mode is masked by the umask
            made.append(directory)
    return made


def build_entries(target: CronTarget, when: Mapping[str, str], name: str) -> list[CronEntry]:
    """One entry per schedule that is not ``off``; ``when``: schedule -> cron expression."""
    entries = []
    for schedule, (default, playbooks) in SCHEDULES.items():
        expression = when.get(schedule, default)
        if expression != OFF:
            entries.append(CronEntry(name, schedule, expression, entry_command(target, playbooks)))
    return entries


def marker_of(line: str) -> tuple[str, str] | None:
    """(name, schedule) of one of our lines, None for any other line."""
    match = _MARKER.search(line)
    if match is None or line.lstrip().startswith("#"):
        return None
    return match["name"], match["schedule"]


def with_entries(lines: Sequence[str], entries: Sequence[CronEntry], name: str) -> list[str]:
    """The crontab with this installation's entries replaced by ``entries``: each new entry
    takes the place of the old one of its schedule, others go at the end."""
    new = {e.schedule: e.line for e in entries}
    out: list[str] = []
    for line in lines:
        mark = marker_of(line)
        if mark is None or mark[0] != name:
            out.append(line)
        elif mark[1] in new:
            out.append(new.pop(mark[1]))
    return out + [e.line for e in entries if e.schedule in new]


def without_entries(lines: Sequence[str], name: str | None) -> list[str]:
    """The crontab less this installation's entries (every installation's with None)."""
    out = []
    for line in lines:
        mark = marker_of(line)
        if mark is None or (name is not None and mark[0] != name):
            out.append(line)
    return out


def our_entries(lines: Sequence[str], name: str | None) -> list[CronEntry]:
    found = []
    for line in lines:
        match = _MARKER.search(line)
        mark = marker_of(line)
        if match is None or mark is None or (name is not None and mark[0] != name):
            continue
        body = line[: match.start()].strip()
        parts = body.split(None, 1 if body.startswith("@") else 5)
        when, command = " ".join(parts[:-1]), parts[-1] if len(parts) > 1 else ""
        found.append(CronEntry(mark[0], mark[1], when, command))
    return found


# -- the real crontab ----------------------------------------------------------------------


def read_crontab(binary: str = "crontab") -> list[str]:
    """The user's crontab lines; [] when there is none."""
    proc = _crontab(binary, ["-l"], None)
    if proc.returncode != 0:
        if "no crontab" in proc.stderr.lower():
            return []
        raise LeptonError(f"`{binary} -l` failed: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout.splitlines()


def write_crontab(lines: Sequence[str], binary: str = "crontab") -> None:
    text = "".join(f"{line}\n" for line in lines)
    proc = _crontab(binary, ["-"], text)
    if proc.returncode != 0:
        raise LeptonError(
            f"`{binary} -` refused the new crontab: {proc.stderr.strip() or proc.returncode}"
        )


def _crontab(binary: str, args: list[str], text: str | None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [binary, *args],
            input=text,
            stdin=subprocess.DEVNULL if text is None else None,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
        )
    except FileNotFoundError:
        raise LeptonError(
            f"`{binary}` is not installed",
            hint="install cron (Debian/Ubuntu: apt-get install cron)",
        ) from None
    except subprocess.TimeoutExpired:
        raise LeptonError(f"`{binary} {' '.join(args)}` did not answer in {_TIMEOUT:g} s") from None


def install(target: CronTarget, when: Mapping[str, str], name: str) -> list[CronEntry]:
    entries = build_entries(target, when, name)
    if entries:
        prepare_directories(target)
    current = read_crontab()
    updated = with_entries(without_stale(current, entries, name), entries, name)
    if updated != current:
        write_crontab(updated)
    return entries


def without_stale(lines: Sequence[str], entries: Sequence[CronEntry], name: str) -> list[str]:
    """Drop this installation's entries of schedules now turned off."""
    keep = {e.schedule for e in entries}
    return [
        line
        for line in lines
        if (mark := marker_of(line)) is None or mark[0] != name or mark[1] in keep
    ]


def remove(name: str | None) -> list[CronEntry]:
    current = read_crontab()
    gone = our_entries(current, name)
    if gone:
        write_crontab(without_entries(current, name))
    return gone


def show(name: str | None) -> list[CronEntry]:
    return our_entries(read_crontab(), name)
