"""Benchmark: the batch planner against Min-min, MCT and Sufferage on Braun et al. ETC instances.

Run from the repository root:

    python benchmarks/bench_planner.py --budget 2.0

Instances follow the range-based method of Braun et al. (2001), "A Comparison of
Eleven Static Heuristics for Mapping a Class of Independent Tasks onto
Heterogeneous Distributed Computing Systems": 512 tasks x 16 machines, a baseline
b_i ~ U[1, R_task) per task, etc[i][j] = b_i * U[1, R_mach); task heterogeneity
high/low (R_task 3000/100), machine heterogeneity high/low (R_mach 1000/10);
consistent (each row sorted), semi-consistent (even columns sorted among
themselves) and inconsistent; fixed seeds. The lower bound is the LP relaxation
of R||Cmax solved by scipy's HiGHS (``pip install scipy numpy``). Nothing here is
a test; nothing asserts.
"""

from __future__ import annotations

import argparse
import random
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from leptonctl.core.scheduler import mct, min_min, plan_etc, sufferage  # noqa: E402

TASKS, MACHINES = 512, 16
R_TASK = {"hi": 3000.0, "lo": 100.0}
R_MACH = {"hi": 1000.0, "lo": 10.0}
CONSISTENCY = {"c": "consistent", "s": "semi-consistent", "i": "inconsistent"}


def braun_instance(task: str, machine: str, kind: str, seed: int) -> list[list[float]]:
    rng = random.Random(seed)
    etc = []
    for _ in range(TASKS):
        base = rng.uniform(1, R_TASK[task])
        row = [base * rng.uniform(1, R_MACH[machine]) for _ in range(MACHINES)]
        if kind == "c":
            row.sort()
        elif kind == "s":
            row[0::2] = sorted(row[0::2])
        etc.append(row)
    return etc


def lp_bound(etc: list[list[float]]) -> float | None:
    try:
        import numpy as np
        from scipy.optimize import linprog
        from scipy.sparse import coo_matrix
    except ImportError:
        return None
    n, m = len(etc), len(etc[0])
    var = n * m  # x_ij at i*m + j, then C
    cost = np.zeros(var + 1)
    cost[-1] = 1.0
    rows, cols, vals = [], [], []
    for i in range(n):  # sum_j x_ij = 1
        for j in range(m):
            rows.append(i)
            cols.append(i * m + j)
            vals.append(1.0)
    a_eq = coo_matrix((vals, (rows, cols)), shape=(n, var + 1)).tocsr()
    rows, cols, vals = [], [], []
    for j in range(m):  # sum_i etc_ij x_ij - C <= 0
        for i in range(n):
            rows.append(j)
            cols.append(i * m + j)
            vals.append(etc[i][j])
        rows.append(j)
        cols.append(var)
        vals.append(-1.0)
    a_ub = coo_matrix((vals, (rows, cols)), shape=(m, var + 1)).tocsr()
    bounds = [(0.0, 1.0)] * var + [(0.0, None)]
    result = linprog(
        cost,
        A_ub=a_ub,
        b_ub=np.zeros(m),
        A_eq=a_eq,
        b_eq=np.ones(n),
        bounds=bounds,
        method="highs",
    )
    return float(result.fun) if result.success else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=2.0, help="planner seconds per instance")
    parser.add_argument("--seed", type=int, default=0, help="planner seed")
    args = parser.parse_args()
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv))
    print(
        f"python {sys.version.split()[0]}; {TASKS} tasks x {MACHINES} machines; "
        f"planner budget {args.budget:g} s, seed {args.seed}\n"
    )
    have_lp = lp_bound([[1.0]]) is not None
    if not have_lp:
        print("scipy is missing: `pip install scipy numpy` for the LP lower bound column\n")
    header = "| instance | Min-min | MCT | Sufferage | planner | planner/Min-min |"
    header += " LP bound | planner/LP |" if have_lp else ""
    header += " plan time (s) |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    ratios, lp_ratios = [], []
    for seed, (task, machine, kind) in enumerate(
        (t, m, k) for k in CONSISTENCY for t in R_TASK for m in R_MACH
    ):
        etc = braun_instance(task, machine, kind, 2001 + seed)
        mm = min_min(etc)[1]
        mc = mct(etc)[1]
        sf = sufferage(etc)[1]
        started = time.perf_counter()
        _, planned = plan_etc(etc, args.budget, args.seed)
        elapsed = time.perf_counter() - started
        ratios.append(planned / mm)
        name = f"u_{kind}_{task}{machine}"
        line = f"| {name} | {mm:.0f} | {mc:.0f} | {sf:.0f} | {planned:.0f} | {planned / mm:.3f} |"
        if have_lp:
            bound = lp_bound(etc)
            if bound:
                lp_ratios.append(planned / bound)
                line += f" {bound:.0f} | {planned / bound:.3f} |"
            else:
                line += " - | - |"
        line += f" {elapsed:.2f} |"
        print(line, flush=True)
    print(
        f"\nmean planner/Min-min: {statistics.fmean(ratios):.3f} "
        f"(worst {max(ratios):.3f}, best {min(ratios):.3f})"
    )
    if lp_ratios:
        print(f"mean planner/LP bound: {statistics.fmean(lp_ratios):.3f}")


if __name__ == "__main__":
    main()
