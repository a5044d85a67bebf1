"""Human-readable numbers for tables."""

from __future__ import annotations


def human_bytes(value: int | float | None, compact: bool = False) -> str:
    """Binary units, three significant digits: 1536 -> '1.5 KiB' (compact: '1.5K')."""
    if value is None:
        return "?"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(size) < 1024 or unit == "PiB":
            number = (
                str(int(size)) if unit == "B" else f"{size:.3g}" if size < 100 else f"{size:.0f}"
            )
            return f"{number}{unit[0]}" if compact else f"{number} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    seconds = max(0.0, seconds)
    for limit, divisor, unit in ((60, 1, "s"), (3600, 60, "m"), (86400, 3600, "h")):
        if seconds < limit:
            return f"{seconds // divisor:.0f}{unit}"
    return f"{seconds // 86400:.0f}d"


def short_gpu_name(name: str | None) -> str:
    if not name:
        return "GPU"
    return name.removeprefix("NVIDIA ").strip()
