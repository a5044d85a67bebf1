"""What the steps of one maintenance run share: the context, and what each step reports.

``RunContext`` holds the inventory, the store and one pool of connections and agent
sessions for the whole run (``None`` under ``--check``: no host is contacted), and
probes each host at most once per run.  ``StepResult`` is a step's outcome, per host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from leptonctl.core.facts import HostFacts, WireError, parse_facts
from leptonctl.core.playbook import PlannedStep
from leptonctl.core.reports import HOST_STATES as HOST_STATES
from leptonctl.core.reports import HostResult as HostResult
from leptonctl.core.reports import StepResult as StepResult
from leptonctl.errors import AgentError, HostError, LeptonError
from leptonctl.inventory import Host, Inventory, fold_host_names
from leptonctl.remote.agent import AgentSessions, wire
from leptonctl.remote.transport import Connection, TransportOptions
from leptonctl.services.reconcile import stored_facts
from leptonctl.store.sqlite import SqliteStore, StoredFacts


@dataclass
class RunContext:
    """What every action of one run shares."""

    inventory: Inventory
    options: TransportOptions
    store: SqliteStore
    check: bool
    clock: Callable[[], float]
    sessions: AgentSessions | None  # None in check mode: no host is contacted
    previous: Mapping[str, StoredFacts] = field(default_factory=dict)  # as the run began
    probes: dict[str, HostFacts | HostError] = field(default_factory=dict)  # this run's
    reached: dict[str, bool] = field(default_factory=dict)  # host -> answered in this run

    def hosts(self, names: Iterable[str]) -> list[Host]:
        return [self.inventory.host(n) for n in names]

    def live(self) -> AgentSessions:
        if self.sessions is None:
            raise LeptonError("internal error: a check run tried to contact a host")
        return self.sessions

    def sub_inventory(self, names: Sequence[str]) -> Inventory:
        """The inventory restricted to ``names`` (a step acts on its hosts only)."""
        keep = set(names)
        return Inventory(
            source=self.inventory.source,
            hosts=tuple(h for h in self.inventory.hosts if h.name in keep),
            groups={g: tuple(h for h in m if h in keep) for g, m in self.inventory.groups.items()},
        )

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
                    return parse_facts(document), document
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
