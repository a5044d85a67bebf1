"""What the steps of one maintenance run share: the context, and what each step reports.

``RunContext`` is the run's ``ServiceContext`` (inventory, store, one pool of connections
and agent sessions for the whole run, never opened under ``--check``: no host is
contacted), and probes each host at most once per run.  ``StepResult`` (a step's
outcome, per host) lives in ``leptonctl.core.reports``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from leptonctl.core.facts import HostFacts, WireError, parse_facts
from leptonctl.core.playbook import PlannedStep
from leptonctl.core.records import StoredFacts
from leptonctl.core.reports import HOST_STATES as HOST_STATES
from leptonctl.core.reports import HostResult as HostResult
from leptonctl.core.reports import StepResult as StepResult
from leptonctl.errors import AgentError, HostError, LeptonError
from leptonctl.inventory import Host, Inventory, fold_host_names
from leptonctl.remote.agent import AgentSessions, wire
from leptonctl.remote.transport import Connection, TransportOptions
from leptonctl.services.context import ServiceContext
from leptonctl.services.jobs.reconcile import stored_facts
from leptonctl.store.interface import Store


class RunContext(ServiceContext):
    """What every action of one run shares: the service context of the run (its sessions
    are never opened under ``--check``: no host is contacted), the facts stored as the run
    began, and what this run probed and reached."""

    def __init__(
        self,
        inventory: Inventory,
        options: TransportOptions,
        store: Store,
        check: bool,
        clock: Callable[[], float],
        previous: Mapping[str, StoredFacts] | None = None,
    ) -> None:
        super().__init__(inventory, store=store, options=options, clock=clock)
        self.check = check
        self.previous: Mapping[str, StoredFacts] = previous or {}  # as the run began
        self.probes: dict[str, HostFacts | HostError] = {}  # this run's
        self.reached: dict[str, bool] = {}  # host -> answered in this run

    def hosts(self, names: Iterable[str]) -> list[Host]:
        return [self.inventory.host(n) for n in names]

    def live(self) -> AgentSessions:
        if self.check:
            raise LeptonError("internal error: a check run tried to contact a host")
        return self.sessions

    def live_among(self, names: Iterable[str]) -> ServiceContext:
        """The run's context acting on the hosts ``names`` (a step acts on its own hosts);
        like ``live``, never under ``--check``."""
        self.live()
        return self.among(self.hosts(names))

    def sub_inventory(self, names: Sequence[str]) -> Inventory:
        """The inventory restricted to ``names`` (a step acts on its hosts only)."""
        return self.restricted(names).inventory

    def live_within(self, names: Iterable[str]) -> ServiceContext:
        """The run's context on the inventory restricted to ``names``; like ``live``,
        never under ``--check``."""
        self.live()
        return self.restricted(names)

    def note_reached(self, outcomes: Mapping[str, object]) -> None:
        for name, outcome in outcomes.items():
            self.reached[name] = not isinstance(outcome, HostError)

    async def fresh_facts(self, names: Sequence[str]) -> dict[str, HostFacts | HostError]:
        """Probe the hosts not yet probed in this run (over their agent sessions), store
        the facts, and return this run's facts or error for every name."""
        missing = [h for h in self.hosts(names) if h.name not in self.probes]
        if missing:
            sessions = self.live()

            async def probe(host: Host, conn: Connection) -> tuple[HostFacts, dict[str, Any]]:
                document = await sessions.request(host, wire.Probe())
                try:
                    return parse_facts(document), dict(document)
                except WireError as exc:
                    raise AgentError(host.name, str(exc)) from exc

            outcomes = await sessions.pool.fan_out(missing, probe)
            documents = {n: o[1] for n, o in outcomes.items() if not isinstance(o, HostError)}
            if documents:
                self.store.save_facts(self.clock(), documents)
            for name, outcome in outcomes.items():
                self.probes[name] = outcome if isinstance(outcome, HostError) else outcome[0]
            self.note_reached(outcomes)
        return {n: self.probes[n] for n in names}

    def stored(self, names: Sequence[str]) -> dict[str, HostFacts | None]:
        """The last stored probe of each host (check mode's view of the hosts)."""
        known = stored_facts(self.store, self.hosts(names))
        return {n: known[n][1] if n in known else None for n in names}


def check_result(ctx: RunContext, planned: PlannedStep, **details: Any) -> StepResult:
    return StepResult(planned, "check", f"would {planned.describe()}", details=details)


def hosts_word(names: Iterable[str]) -> str:
    return fold_host_names(names) or "-"


def count_hosts(n: int) -> str:
    return f"{n} host{'' if n == 1 else 's'}"
