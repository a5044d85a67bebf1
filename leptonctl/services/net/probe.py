"""``net probe``: measure bandwidth and round-trip time of directed host pairs.

Each pair is measured over the channel transfers use (OpenSSH with a one-shot
key, the agent at both ends), for about ``seconds`` each.  Pairs run in
rounds; within a round no host takes part twice, so measurements do not
disturb each other.  A total ``budget`` stops starting new rounds; pairs left
over keep their previous measurement.  On large fleets ``sample`` measures
only that many peers per host (rotating, so repeated probes cover every pair).

A pair whose receiver ignores transfer keys (central keys) or that cannot connect is
recorded as *relayed* (transfers between them go through the operator): the reason is
its measurement's error, so routes avoid it, and the report lists it in ``relayed``.
A host key that does not match the operator's stays an error, never a relay.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from leptonctl.core.hops import OPERATOR, RelayedHop, classify_hop_error, host_key_error
from leptonctl.core.netgraph import RELAYED_PREFIX, LinkMeasurement
from leptonctl.core.probeplan import probe_rounds
from leptonctl.core.reports import ProbeReport
from leptonctl.errors import HostError
from leptonctl.inventory.model import Host
from leptonctl.remote.transfer import Transfers
from leptonctl.services.context import ServiceContext

MAX_BYTES = 1 << 30


async def probe_links(
    ctx: ServiceContext,
    *,
    seconds: float = 1.0,
    budget: float | None = None,
    sample: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ProbeReport:
    """Measure the selected hosts' links and store them; hosts the operator cannot
    reach are reported, never fatal."""
    sessions, store, hosts = ctx.sessions, ctx.store, ctx.selected
    clock = ctx.clock
    started = time.monotonic()
    report = ProbeReport()
    remote = [h for h in hosts if not h.is_local]

    async def ping(host: Host) -> HostError | None:
        try:
            await sessions.get(host)
        except HostError as exc:
            return exc
        return None

    errors = await asyncio.gather(*(ping(h) for h in remote))
    live = []
    for host, error in zip(remote, errors, strict=True):
        if error is None:
            live.append(host)
        else:
            report.unreachable_hosts[host.name] = error.message
    by_name = {h.name: h for h in live}
    rounds = probe_rounds([h.name for h in live], sample, seed=int(clock()) // 3600)
    total = sum(len(r) for r in rounds)
    transfers = Transfers(sessions, store, clock)

    async def one(a: str, b: str) -> LinkMeasurement:
        try:
            doc = await transfers.probe(by_name[a], by_name[b], seconds, MAX_BYTES)
        except HostError as exc:
            return LinkMeasurement(a, b, clock(), None, None, exc.message)
        error = doc.get("error")
        if error:
            error = _relayed_or_error(transfers, report, a, b, str(error))
        return LinkMeasurement(
            a,
            b,
            clock(),
            None if error else doc.get("bandwidth_bps"),
            None if error else doc.get("rtt_s"),
            error,
        )

    done = 0
    for pairs in rounds:
        if budget is not None and time.monotonic() - started + seconds * 1.5 > budget:
            report.skipped_pairs += len(pairs)
            continue
        results = await asyncio.gather(*(one(a, b) for a, b in pairs))
        store.links.save(results)
        report.measured += results
        done += len(pairs)
        if progress is not None:
            progress(done, total)
    report.seconds = time.monotonic() - started
    return report


def _relayed_or_error(
    transfers: Transfers, report: ProbeReport, source: str, target: str, error: str
) -> str:
    """A failed pair's recorded error: "relayed by the operator: why" when transfers relay
    it (remembered for them), the host-key message when it failed on the host key."""
    verdict = classify_hop_error(error)
    if verdict is None:
        return error
    kind, detail = verdict
    if kind == "host_key":
        return host_key_error(source, target, error)
    if kind == "key_refused":
        reason = transfers.memory.remember_refused(target)
    else:
        reason = transfers.memory.remember_cut(source, target, detail)
    report.relayed.append(RelayedHop(source, target, OPERATOR, reason).to_dict())
    return RELAYED_PREFIX + reason
