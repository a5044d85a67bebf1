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
from leptonctl.errors import AgentError, HostError, LeptonError
from leptonctl.inventory import Host, Inventory, fold_host_names
from leptonctl.remote.agent import AgentSessions
from leptonctl.remote.transport import Connection, TransportOptions
from leptonctl.services.reconcile import stored_facts
from leptonctl.store.sqlite import SqliteStore, StoredFacts

# A host's outcome in one step.  "down" and "unhealthy" make the run's exit code 3;
# "failed" (a command that exited non-zero, a refused removal) fails the step.
HOST_STATES = ("ok", "changed", "skipped", "unhealthy", "down", "failed")


@dataclass
class HostResult:
    status: str
    message: str = ""


@dataclass
class StepResult:
    planned: PlannedStep
    status: str = "ok"  # ok | changed | failed | skipped | check
    summary: str = ""
    hosts: dict[str, HostResult] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    started: float = 0.0
    ended: float = 0.0

    def settle(self) -> StepResult:
        """The step's status from its hosts: failed, changed or ok (a check stays a check)."""
        states = {h.status for h in self.hosts.values()}
        if self.error or "failed" in states:
            self.status = "failed"
        elif self.status not in ("check", "skipped"):
            self.status = "changed" if self.status == "changed" or "changed" in states else "ok"
        return self

    def problems(self) -> dict[str, str]:
        """Hosts that were down or unhealthy in this step -> why."""
        return {
            name: f"{h.status}: {h.message}"
            for name, h in self.hosts.items()
            if h.status in ("down", "unhealthy")
        }

    def to_json(self) -> dict[str, Any]:
        planned = self.planned
        return {
            "playbook": planned.playbook,
            "step": planned.step.index,
            "action": planned.action,
            "name": planned.step.name,
            "status": self.status,
            "summary": self.summary,
            "hosts": {n: {"status": h.status, "message": h.message} for n, h in self.hosts.items()},
            "details": self.details,
            "error": self.error,
            "started": self.started,
            "ended": self.ended,
        }


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
                document = await sessions.request(host, {"op": "probe"})
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
