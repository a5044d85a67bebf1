"""Host-to-host hops that cannot carry a transfer themselves, and what to do instead.

A transfer hop ``a -> b`` is OpenSSH from ``a`` to ``b`` with a one-shot key that the
operator appended to ``b``'s ``~/.ssh/authorized_keys``.  Two things break it on real
clusters: ``b``'s sshd reads keys only from a root-owned central file (the key is
ignored), or ``a`` cannot open a connection to ``b`` at all (a firewall, separate
networks).  Both are relayed through the operator, who reaches every host over its own
connections.  A host key that does not match the one the operator verified is a security
failure: it is never relayed around.

Pure: the verdict on an ssh error, the memory of what was found (as JSON values with the
time they were found, re-checked after a while), which hops of a chain to relay, and the
notes that say so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

OPERATOR = "(operator)"
KEY_RECHECK_S = 24 * 3600.0  # a central-keys verdict is tried again after this long
PAIR_RECHECK_S = 3600.0  # an unreachable pair is tried again after this long

HopFailure = Literal["key_refused", "unreachable", "host_key"]

_KEY_REFUSED = re.compile(r"Permission denied \(publickey")
_HOST_KEY = re.compile(
    r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|"
    r"Host key for \S+ has changed|is not the one the operator verified"
)
_UNREACHABLE = re.compile(
    r"(?i)(no route to host|connection refused|connection timed out|operation timed out|"
    r"network is unreachable|timed out during banner exchange|could not resolve hostname|"
    r"name or service not known|temporary failure in name resolution)"
)


def classify_hop_error(error: str | None) -> tuple[HopFailure, str] | None:
    """What an ssh failure to the next hop means, and the phrase that says it; None when
    it is none of the three (the stream broke for another reason)."""
    if not error:
        return None
    if _HOST_KEY.search(error):
        return "host_key", "host key mismatch"
    if _KEY_REFUSED.search(error):
        return "key_refused", "publickey refused"
    found = _UNREACHABLE.search(error)
    if found:
        return "unreachable", found.group(1).lower()
    return None


@dataclass(frozen=True)
class RelayedHop:
    """The hop ``source -> target`` went through ``via`` instead, for ``reason``."""

    source: str
    target: str
    via: str
    reason: str

    @property
    def note(self) -> str:
        by = "the operator" if self.via == OPERATOR else self.via
        return f"{self.source} -> {self.target} relayed by {by}: {self.reason}"

    def to_dict(self) -> dict[str, str]:
        return {"from": self.source, "to": self.target, "via": self.via, "reason": self.reason}


def key_refused_reason(target: str) -> str:
    return (
        f"{target}'s sshd ignores ~/.ssh/authorized_keys (central keys): "
        "it refused the one-shot transfer key"
    )


def unreachable_reason(source: str, target: str, detail: str) -> str:
    return f"{source} cannot connect to {target} ({detail})"


def host_key_error(source: str, target: str, error: str) -> str:
    """A hop that failed on the host key: the message that says why it is not relayed."""
    tail = error.strip().splitlines()[-1][-200:] if error.strip() else ""
    return (
        f"{source} -> {target}: the host key {target} presented to {source} is not the one "
        f"the operator verified; not relayed around (a security failure: check {target}'s "
        f"host key and its data_address){': ' + tail if tail else ''}"
    )


# -- the memory: store values "hop-key:<host>" and "hop-pair:<src>><dst>" ----------------


def key_memory_key(host: str) -> str:
    return f"hop-key:{host}"


def pair_memory_key(source: str, target: str) -> str:
    return f"hop-pair:{source}>{target}"


def memory_value(usable: bool, now: float, detail: str) -> str:
    """The JSON value remembered for a host (its transfer keys work) or a pair (it connects)."""
    return json.dumps({"usable": usable, "at": now, "detail": detail}, sort_keys=True)


def read_memory(value: str | None, now: float, max_age_s: float) -> tuple[bool, str] | None:
    """What a remembered value says (usable, detail), or None when there is none, it is
    unreadable, or it is older than ``max_age_s`` (then the hop is tried again)."""
    if value is None:
        return None
    try:
        doc = json.loads(value)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    usable, at, detail = doc.get("usable"), doc.get("at"), doc.get("detail")
    if not isinstance(usable, bool) or isinstance(at, bool) or not isinstance(at, int | float):
        return None
    if now - at > max_age_s or at > now + 60:
        return None
    return usable, detail if isinstance(detail, str) else ""


# -- planning a chain ----------------------------------------------------------------------


def plan_relays(
    names: Sequence[str],
    first_pumped: bool,
    refused: Mapping[str, str],
    cut: Mapping[tuple[str, str], str],
) -> dict[int, RelayedHop]:
    """Which hops of the chain ``names`` (the source first) go through the operator:
    index ``i`` stands for the hop ``names[i-1] -> names[i]``.  ``refused``: hosts known to
    ignore transfer keys (host -> reason); ``cut``: pairs known not to connect.  The first
    hop is never relayed when the operator pumps it anyway (an end of it is local)."""
    relays: dict[int, RelayedHop] = {}
    for i in range(1, len(names)):
        if i == 1 and first_pumped:
            continue
        source, target = names[i - 1], names[i]
        reason = refused.get(target) or cut.get((source, target))
        if reason is not None:
            relays[i] = RelayedHop(source, target, OPERATOR, reason)
    return relays


def segments(length: int, starts: Sequence[int]) -> list[tuple[int, int]]:
    """Split receivers ``1..length`` into runs ``(first, last)`` that start at index 1 and
    at every index in ``starts`` (a hop relayed through the operator begins a new run)."""
    cuts = sorted({1, *(s for s in starts if 1 <= s <= length)})
    return [(s, (cuts[n + 1] - 1) if n + 1 < len(cuts) else length) for n, s in enumerate(cuts)]
