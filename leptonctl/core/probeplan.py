"""Which ordered pairs of hosts a network probe measures, and in which rounds (pure)."""

from __future__ import annotations

import random
from collections.abc import Sequence


def probe_rounds(
    names: Sequence[str], sample: int | None = None, seed: int = 0
) -> list[list[tuple[str, str]]]:
    """Ordered pairs grouped into rounds in which every host appears at most once."""
    pairs = [(a, b) for a in names for b in names if a != b]
    if sample is not None and sample < len(names) - 1:
        rng = random.Random(seed)
        chosen = []
        for a in names:
            peers = [b for b in names if b != a]
            chosen += [(a, b) for b in rng.sample(peers, sample)]
        pairs = chosen
    rounds: list[list[tuple[str, str]]] = []
    left = list(pairs)
    while left:
        used: set[str] = set()
        current = []
        rest = []
        for a, b in left:
            if a in used or b in used:
                rest.append((a, b))
            else:
                current.append((a, b))
                used.update((a, b))
        rounds.append(current)
        left = rest
    return rounds
