"""Short histories of utilisation for the dashboard's sparklines: plain data, no clock.

Each series (a host's CPU %, a host's mean GPU %) keeps the points of the last ``window``
seconds.  A sparkline of ``width`` characters splits that window into equal time buckets
and shows each bucket's mean, so it covers the same minutes at any refresh interval and
any width; a bucket with no point (the host was away) is a blank.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

BLOCKS = "▁▂▃▄▅▆▇█"
WINDOW = 300.0  # seconds a sparkline covers
MAX_POINTS = 1200  # per series: a 0.25 s refresh over the whole window


class History:
    """Series of (time, percent) by key, trimmed to the last ``window`` seconds."""

    def __init__(self, window: float = WINDOW, max_points: int = MAX_POINTS) -> None:
        self.window = window
        self._series: dict[str, deque[tuple[float, float]]] = {}
        self._max_points = max_points

    def add(self, key: str, at: float, value: float | None) -> None:
        if value is None:
            return
        series = self._series.setdefault(key, deque(maxlen=self._max_points))
        series.append((at, max(0.0, min(100.0, value))))
        while series and series[0][0] < at - self.window:
            series.popleft()

    def buckets(self, key: str, now: float, width: int) -> list[float | None]:
        """The mean of each of ``width`` equal slices of the window ending at ``now``."""
        if width <= 0:
            return []
        sums = [0.0] * width
        counts = [0] * width
        start = now - self.window
        step = self.window / width
        for at, value in self._series.get(key, ()):
            if at < start or at > now:
                continue
            index = min(width - 1, int((at - start) / step))
            sums[index] += value
            counts[index] += 1
        return [s / c if c else None for s, c in zip(sums, counts, strict=True)]

    def latest(self, key: str) -> float | None:
        series = self._series.get(key)
        return series[-1][1] if series else None


def sparkline(values: Sequence[float | None]) -> str:
    """One block character per value (0..100 %), a space where there is none."""
    out = []
    for value in values:
        if value is None:
            out.append(" ")
        else:
            level = round(max(0.0, min(100.0, value)) / 100.0 * (len(BLOCKS) - 1))
            out.append(BLOCKS[level])
    return "".join(out)
