"""The classic ETC model: jobs x machines, each machine runs one job at a time.

``etc[j][m]`` is the expected time to compute job ``j`` on machine ``m`` (``math.inf``
where it cannot run); a machine's finish time is its ready time plus the sum of
the ETCs of its jobs; the makespan is the largest finish time. Here live the
textbook heuristics (Min-min, MCT, Sufferage; Braun et al. 2001) and the fast
delta-evaluated local search that :func:`plan_etc` and :func:`~.plan.plan` share.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence

Etc = Sequence[Sequence[float]]
Schedule = tuple[list[int], float]  # (machine of each job, makespan)

_EPS = 1e-9


def _ready(etc: Etc, ready: Sequence[float] | None) -> list[float]:
    machines = len(etc[0]) if etc else len(ready or ())
    return list(ready) if ready is not None else [0.0] * machines


def makespan_of(etc: Etc, assignment: Sequence[int], ready: Sequence[float] | None = None) -> float:
    loads = _ready(etc, ready)
    for job, machine in enumerate(assignment):
        loads[machine] += etc[job][machine]
    return max(loads, default=0.0)


def mct(etc: Etc, ready: Sequence[float] | None = None) -> Schedule:
    """Minimum Completion Time: each job, in order, to the machine that finishes it first."""
    loads = _ready(etc, ready)
    assignment = []
    for row in etc:
        best = min(range(len(loads)), key=lambda m: (loads[m] + row[m], m))
        loads[best] += row[best]
        assignment.append(best)
    return assignment, makespan_of(etc, assignment, ready)


def min_min(etc: Etc, ready: Sequence[float] | None = None) -> Schedule:
    """Min-min: repeatedly map the job whose earliest completion time is smallest."""
    loads = _ready(etc, ready)
    machines = range(len(loads))
    assignment = [-1] * len(etc)
    best: dict[int, tuple[float, int]] = {}
    for j, row in enumerate(etc):
        best[j] = min((loads[m] + row[m], m) for m in machines)
    while best:
        job = min(best, key=lambda j: (best[j], j))
        _, machine = best.pop(job)
        assignment[job] = machine
        loads[machine] += etc[job][machine]
        for j, (_, m) in best.items():
            if m == machine:  # only jobs that wanted this machine can change their choice
                row = etc[j]
                best[j] = min((loads[k] + row[k], k) for k in machines)
    return assignment, makespan_of(etc, assignment, ready)


def sufferage(etc: Etc, ready: Sequence[float] | None = None) -> Schedule:
    """Sufferage (Maheswaran et al. 1999): a machine goes to the job that would suffer most."""
    loads = _ready(etc, ready)
    machines = range(len(loads))
    assignment = [-1] * len(etc)
    unmapped = list(range(len(etc)))
    while unmapped:
        claimed: dict[int, tuple[float, int]] = {}  # machine -> (sufferage, job)
        for j in unmapped:
            row = etc[j]
            first = second = math.inf
            where = 0
            for m in machines:
                c = loads[m] + row[m]
                if c < first:
                    first, second, where = c, first, m
                elif c < second:
                    second = c
            value = second - first if second < math.inf else math.inf
            holder = claimed.get(where)
            if holder is None or value > holder[0]:
                claimed[where] = (value, j)
        for m, (_, j) in claimed.items():
            assignment[j] = m
            loads[m] += etc[j][m]
        taken = {j for _, j in claimed.values()}
        unmapped = [j for j in unmapped if j not in taken]
    return assignment, makespan_of(etc, assignment, ready)


class _State:
    """An assignment with per-machine loads and members, for O(1) move evaluation."""

    def __init__(self, etc: Etc, assignment: Sequence[int], ready: Sequence[float]) -> None:
        self.etc = etc
        self.assign = list(assignment)
        self.loads = list(ready)
        self.members: list[list[int]] = [[] for _ in ready]
        for j, m in enumerate(self.assign):
            self.loads[m] += etc[j][m]
            self.members[m].append(j)

    def copy(self) -> _State:
        other = _State.__new__(_State)
        other.etc = self.etc
        other.assign = list(self.assign)
        other.loads = list(self.loads)
        other.members = [list(ms) for ms in self.members]
        return other

    def makespan(self) -> float:
        return max(self.loads, default=0.0)

    def move(self, job: int, to: int) -> None:
        src = self.assign[job]
        row = self.etc[job]
        self.loads[src] -= row[src]
        self.loads[to] += row[to]
        self.members[src].remove(job)
        self.members[to].append(job)
        self.assign[job] = to

    def descend(self) -> None:
        """Improve until no move or swap lowers the most loaded machine without a new peak.

        Each step strictly decreases the loads sorted in descending order (lexicographic),
        so it terminates; a step costs O(jobs on the peak x jobs) at most.
        """
        loads = self.loads
        etc = self.etc
        machines = range(len(loads))
        while True:
            c = max(machines, key=loads.__getitem__)
            peak = loads[c]
            limit = peak - _EPS * max(1.0, peak)
            best_value = limit
            best_move: tuple[int, int, int] | None = None
            for j in self.members[c]:
                row = etc[j]
                rest = peak - row[c]
                for m in machines:
                    if m == c:
                        continue
                    new = loads[m] + row[m]
                    value = new if new > rest else rest
                    if value < best_value:
                        best_value, best_move = value, (j, m, -1)
            if best_move is None:
                for j in self.members[c]:
                    row = etc[j]
                    base = peak - row[c]
                    for m in machines:
                        if m == c:
                            continue
                        gain_room = loads[m] + row[m]
                        if gain_room == math.inf:
                            continue
                        for k in self.members[m]:
                            krow = etc[k]
                            new_c = base + krow[c]
                            if new_c >= best_value:
                                continue
                            new_m = gain_room - krow[m]
                            if new_m < best_value:
                                best_value = new_c if new_c > new_m else new_m
                                best_move = (j, m, k)
            if best_move is None:
                return
            j, m, k = best_move
            self.move(j, m)
            if k >= 0:
                self.move(k, c)


def search(
    etc: Etc,
    starts: Sequence[Sequence[int]],
    *,
    ready: Sequence[float] | None = None,
    budget_seconds: float = 2.0,
    seed: int = 0,
    rounds: int | None = None,
) -> Schedule:
    """Local search from the best of ``starts``: descent, then iterated perturbation + descent.

    Only improvements are kept, so the result is never worse than the best start. The
    search is a fixed sequence of steps for a given seed; it stops after ``rounds``
    perturbation rounds (if given), when ``budget_seconds`` of process time have passed,
    or after a long run of rounds without improvement.
    """
    loads0 = _ready(etc, ready)
    if not etc:
        return [], max(loads0, default=0.0)
    deadline = time.perf_counter() + budget_seconds
    states = [_State(etc, s, loads0) for s in starts]
    best = min(states, key=_State.makespan)
    start_value = best.makespan()
    current = best.copy()
    current.descend()
    if current.makespan() < start_value:
        best = current.copy()
    rng = random.Random(seed)
    machines = len(loads0)
    stale = 0
    done = 0
    patience = 2000 + 20 * len(etc)
    while machines > 1 and stale < patience:
        if rounds is not None and done >= rounds:
            break
        if rounds is None and time.perf_counter() >= deadline:
            break
        done += 1
        trial = current.copy()
        _perturb(trial, rng)
        trial.descend()
        value = trial.makespan()
        if value <= current.makespan() + _EPS * max(1.0, value):
            current = trial
            if value < best.makespan() - _EPS * max(1.0, value):
                best = trial.copy()
                stale = 0
                continue
        stale += 1
    # Loads drift by rounding under incremental moves: compare exact sums at the end.
    exact = [(makespan_of(etc, s, ready), i, list(s)) for i, s in enumerate(starts)]
    exact.append((makespan_of(etc, best.assign, ready), -1, best.assign))
    value, _, assignment = min(exact)
    return assignment, value


def _perturb(state: _State, rng: random.Random) -> None:
    """Kick a few jobs off the busiest machines to random feasible machines."""
    loads = state.loads
    machines = len(loads)
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.5:
            src = max(range(machines), key=loads.__getitem__)
        else:
            src = rng.randrange(machines)
        if not state.members[src]:
            continue
        job = rng.choice(state.members[src])
        row = state.etc[job]
        options = [m for m in range(machines) if m != src and row[m] < math.inf]
        if options:
            state.move(job, rng.choice(options))


def plan_etc(
    etc: Etc,
    budget_seconds: float = 2.0,
    seed: int = 0,
    *,
    ready: Sequence[float] | None = None,
    rounds: int | None = None,
) -> Schedule:
    """The planner on a plain ETC matrix: best of Min-min/MCT/Sufferage, then local search.

    Never worse than Min-min: Min-min is one of the starting points and only
    improvements are accepted.
    """
    began = time.perf_counter()
    starts = [h(etc, ready)[0] for h in (min_min, sufferage, mct)]
    left = budget_seconds - (time.perf_counter() - began)
    return search(etc, starts, ready=ready, budget_seconds=left, seed=seed, rounds=rounds)
