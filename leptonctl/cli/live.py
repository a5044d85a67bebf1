"""The terminal side of the live dashboards (``status --watch``, ``jobs --watch``).

The screen is the terminal's alternate screen, redrawn whole at each refresh with the
renderer given the terminal's current size; ``q`` quits at once (stdin is put in cbreak
mode while the dashboard runs, never raw, so Ctrl-C still interrupts), and whatever ends
the dashboard (``q``, Ctrl-C, an error) restores the terminal's modes and screen.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from rich.console import Console, RenderableType
from rich.live import Live

T = TypeVar("T")
QUIT_KEYS = b"qQ"


class QuitKey:
    """Sets ``pressed`` when ``q`` is typed on a terminal stdin (nothing when stdin is not a
    terminal).  A context manager: the terminal's modes are restored on exit."""

    def __init__(self) -> None:
        self.pressed = asyncio.Event()
        self._fd: int | None = None
        self._saved: Any = None

    def __enter__(self) -> QuitKey:
        if not sys.stdin.isatty():
            return self
        import termios
        import tty

        fd = sys.stdin.fileno()
        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)  # keys arrive one by one, unechoed; signals still work
        self._fd = fd
        asyncio.get_running_loop().add_reader(fd, self._read)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is None:
            return
        import termios

        asyncio.get_running_loop().remove_reader(self._fd)
        termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
        self._fd = None

    def _read(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, 64)
        except OSError:
            data = b""
        if not data or any(key in data for key in QUIT_KEYS):
            self.pressed.set()  # q, or the terminal went away


async def show_live(
    frames: AsyncIterator[T],
    render: Callable[[T, int, int], RenderableType],
    console: Console | None = None,
) -> None:
    """Draw each frame with ``render(frame, width, height)`` until ``q`` or Ctrl-C."""
    console = console or Console()
    iterator = aiter(frames)
    with QuitKey() as quit_key, Live(console=console, screen=True, auto_refresh=False) as live:
        try:
            while True:
                next_frame = asyncio.ensure_future(anext(iterator))
                pressed = asyncio.ensure_future(quit_key.pressed.wait())
                done, _ = await asyncio.wait(
                    {next_frame, pressed}, return_when=asyncio.FIRST_COMPLETED
                )
                if next_frame not in done:
                    next_frame.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await next_frame
                    return
                pressed.cancel()
                frame = next_frame.result()
                width, height = console.size
                live.update(render(frame, width, height), refresh=True)
        finally:
            closer = getattr(iterator, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()
