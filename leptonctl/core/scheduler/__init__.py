"""The scheduling core: pure functions from queue, nodes and running jobs to decisions.

- :func:`dispatch` — one pass: what starts now on which devices (best fit or MCT,
  strict priority with EASY backfill), why the rest waits, what can never run.
- :func:`plan` — predicted start/end of a batch minimising makespan (``--dry-run``).
- :func:`min_min`, :func:`mct`, :func:`sufferage`, :func:`plan_etc` — the same on a
  plain ETC matrix, for benchmarks against the textbook heuristics.
"""

from leptonctl.core.scheduler.dispatch import dispatch
from leptonctl.core.scheduler.etc import makespan_of, mct, min_min, plan_etc, sufferage
from leptonctl.core.scheduler.model import (
    Allocation,
    Blocked,
    Core,
    Dispatch,
    Fpga,
    Gpu,
    Job,
    Node,
    Placement,
    Plan,
    Request,
    Running,
    estimate_for,
)
from leptonctl.core.scheduler.plan import DEFAULT_DURATION, plan

__all__ = [
    "DEFAULT_DURATION",
    "Allocation",
    "Blocked",
    "Core",
    "Dispatch",
    "Fpga",
    "Gpu",
    "Job",
    "Node",
    "Placement",
    "Plan",
    "Request",
    "Running",
    "dispatch",
    "estimate_for",
    "makespan_of",
    "mct",
    "min_min",
    "plan",
    "plan_etc",
    "sufferage",
]
