"""Crontab entries of ``leptonctl maintain``, as pure text: build, find, replace, remove.

Each entry we write ends with a marker comment, ``# leptonctl:NAME:SCHEDULE``, which
the shell that cron starts ignores; replacing touches exactly the lines carrying our
markers and keeps every other line of the user's crontab as it was, in its place.
Reading and writing the real crontab is ``leptonctl.services.maintain.cron``'s business.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from leptonctl.errors import UsageError

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
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class CronTarget:
    """What every entry runs, with absolute paths (cron has no working directory or PATH)."""

    python: Path
    inventory: Path | None  # None: leptonctl's built-in local inventory
    state: Path | str  # a SQLite file, or a postgresql:// URL
    lock: Path | None  # None: the store's own run lock (PostgreSQL: an advisory lock)
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
    argv += ["--state", str(target.state), "maintain", "--json"]
    if target.lock is not None:
        argv += ["--lock", str(target.lock)]
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
