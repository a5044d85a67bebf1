"""The transfer progress bar: rich on a terminal's stderr, nothing under --json or cron."""

from __future__ import annotations

import sys
from typing import Any


class TransferBar:
    """Bytes done of a total, with speed and time left; started on first use."""

    def __init__(self, label: str) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._label = label
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._task: Any = None
        self._total = 1

    @classmethod
    def for_terminal(cls, label: str, as_json: bool) -> TransferBar | None:
        return cls(label) if not as_json and sys.stderr.isatty() else None

    def begin(self, total: int, label: str) -> None:
        self._label, self._total = label, max(total, 1)
        self.update(0, total)

    def advance(self, done: int) -> None:
        self.update(done, self._total)

    def update(self, done: int, total: int) -> None:
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task(self._label, total=max(total, 1))
        self._progress.update(self._task, completed=done, total=max(total, 1))

    def end(self) -> None:
        if self._task is not None:
            self._progress.stop()
            self._task = None
