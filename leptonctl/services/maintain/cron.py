"""Crontab entries that run ``leptonctl maintain``: install, remove, show.

Edits go through the real ``crontab -l`` / ``crontab -`` (never an editor, never a
prompt).  Each entry we write ends with a marker comment, ``# leptonctl:NAME:SCHEDULE``,
which the shell that cron starts ignores; install replaces exactly the lines carrying
our markers (so installing twice leaves one entry each) and remove deletes only those.
Every other line of the user's crontab is kept as it was, in its place.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from leptonctl.core.crontab import (
    CronEntry,
    CronTarget,
    build_entries,
    marker_of,
    our_entries,
    with_entries,
    without_entries,
)
from leptonctl.errors import LeptonError

_TIMEOUT = 30.0


def prepare_directories(target: CronTarget) -> list[Path]:
    """Create (mode 0700) the directories the entry writes into, so that the first tick on a
    fresh machine does not fail in the shell before leptonctl starts; returns those made."""
    made: list[Path] = []
    files = [p for p in (target.state, target.lock, target.log) if isinstance(p, Path)]
    for path in files:  # a postgresql:// state and the store's own lock need no directory
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
