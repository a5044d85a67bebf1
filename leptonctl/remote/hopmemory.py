"""What this command (and, with a state store, earlier commands) learnt about hops.

One ``HopMemory`` per set of agent sessions (one command): every transfer of the command
sees what the others found, so a host that ignores transfer keys costs one failed hop,
not one per chain.  With a state store attached, a finding is kept there with its time
(``hop-key:<host>``, ``hop-pair:<src>><dst>``) and used by later commands until it is old
enough to be tried again (``KEY_RECHECK_S``, ``PAIR_RECHECK_S``).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import Protocol

from leptonctl.core.hops import (
    KEY_RECHECK_S,
    PAIR_RECHECK_S,
    RelayedHop,
    key_memory_key,
    key_refused_reason,
    memory_value,
    pair_memory_key,
    read_memory,
    unreachable_reason,
)


class ValueStore(Protocol):
    def value(self, key: str) -> str | None: ...
    def set_value(self, key: str, value: str) -> None: ...


class HopMemory:
    """Hosts whose sshd ignores transfer keys, pairs that cannot connect, and the hops
    relayed so far (``relayed``, in order)."""

    def __init__(
        self, store: ValueStore | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.clock = clock
        self._seen: dict[str, tuple[bool, str] | None] = {}  # store key -> (usable, detail)
        self.relayed: list[RelayedHop] = []

    def attach(self, store: ValueStore | None, clock: Callable[[], float] | None = None) -> None:
        if store is not None and self.store is None:
            self.store = store
            self._seen = {k: v for k, v in self._seen.items() if v is not None}
        if clock is not None:
            self.clock = clock

    def _read(self, key: str, max_age_s: float) -> tuple[bool, str] | None:
        if key not in self._seen:
            stored = self.store.value(key) if self.store is not None else None
            self._seen[key] = read_memory(stored, self.clock(), max_age_s)
        return self._seen[key]

    def _write(self, key: str, usable: bool, detail: str) -> None:
        self._seen[key] = (usable, detail)
        if self.store is not None:
            self.store.set_value(key, memory_value(usable, self.clock(), detail))

    def refused(self, host: str) -> str | None:
        """Why transfer keys do not work on ``host`` (None: they do, or nobody knows)."""
        known = self._read(key_memory_key(host), KEY_RECHECK_S)
        return key_refused_reason(host) if known is not None and not known[0] else None

    def cut(self, source: str, target: str) -> str | None:
        """Why ``source`` cannot connect to ``target`` (None: it can, or nobody knows)."""
        known = self._read(pair_memory_key(source, target), PAIR_RECHECK_S)
        if known is None or known[0]:
            return None
        return unreachable_reason(source, target, known[1] or "found earlier")

    def remember_refused(self, host: str) -> str:
        self._write(key_memory_key(host), False, "publickey refused")
        return key_refused_reason(host)

    def remember_honoured(self, host: str) -> None:
        """A direct hop into ``host`` worked: keep that, unless it is known already."""
        key = key_memory_key(host)
        known = self._read(key, KEY_RECHECK_S)
        if known is None or not known[0]:
            self._write(key, True, "a transfer key worked")

    def remember_cut(self, source: str, target: str, detail: str) -> str:
        self._write(pair_memory_key(source, target), False, detail)
        return unreachable_reason(source, target, detail)

    def forget_cut(self, source: str, target: str) -> None:
        """A direct hop ``source -> target`` worked: an old finding no longer holds."""
        key = pair_memory_key(source, target)
        known = self._read(key, PAIR_RECHECK_S)
        if known is not None and not known[0]:
            self._write(key, True, "connected")


_memories: weakref.WeakKeyDictionary[object, HopMemory] = weakref.WeakKeyDictionary()


def hop_memory(
    owner: object, store: ValueStore | None = None, clock: Callable[[], float] | None = None
) -> HopMemory:
    """The memory shared by every transfer over ``owner`` (a command's agent sessions);
    ``store`` is attached when one is given and none was before."""
    memory = _memories.get(owner)
    if memory is None:
        memory = _memories[owner] = HopMemory(store, clock or time.time)
    else:
        memory.attach(store, clock)
    return memory


def relayed_in(owner: object) -> list[RelayedHop]:
    """Every hop relayed by the operator so far over ``owner`` (a command's agent sessions),
    each pair once, in the order they were first relayed: what a command's report says."""
    memory = _memories.get(owner)
    found: dict[tuple[str, str], RelayedHop] = {}
    for hop in memory.relayed if memory is not None else ():
        found.setdefault((hop.source, hop.target), hop)
    return list(found.values())
