"""Benchmark of bidfcl.solve_allocation (several budgets + capacities) against the HiGHS LP relaxation.

    python benchmarks/bench_allocation.py --quick          # N = 1e5, K in {2, 4}, with HiGHS
    python benchmarks/bench_allocation.py --n 1000000 --k 4 --no-lp

For each size: correctness first (every constraint holds, the choice's totals match the reported
ones, dual_bound >= value), then time, sweeps, the relative gap (dual_bound - value) / |dual_bound|,
the HiGHS LP relaxation (scipy.optimize.linprog, method='highs') where it is run: its time, its
optimum and the gap of our value to it, and the cost of one dual iteration (a coordinate-descent
sweep or a Newton step) and of the whole solve relative to one single-budget solve
(bidfcl.solve_mckp on the same values and resource 0).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import bidfcl


def make_problem(n: int, m: int, k: int, seed: int = 0, dtype=torch.float32):
    """Marketing-shaped: option 0 free; K resources whose costs grow with the option at per-user
    rates; values with diminishing returns; budgets at 30% of the spread between the cheapest and
    the dearest policy; capacities on options 1 .. M-1 at N / (2 M) users (binding)."""
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    level = torch.arange(m, dtype=f64).unsqueeze(0)
    resp = torch.rand(n, 1, generator=g, dtype=f64) * 2.0
    values = torch.rand(n, 1, generator=g, dtype=f64) + resp * torch.log1p(level) * (
        0.8 + 0.4 * torch.rand(n, m, generator=g, dtype=f64)
    )
    costs = []
    for kk in range(k):
        # resource kk is spent mainly by a band of options (coupons vs cash-back)
        weight = 0.2 + torch.exp(-((level - (kk + 1) * (m - 1) / (k + 1)) ** 2) / 4.0)
        unit = 0.5 + torch.rand(n, 1, generator=g, dtype=f64)
        c = unit * level * weight * (1.0 + 0.1 * torch.rand(n, m, generator=g, dtype=f64))
        costs.append(c)
    costs = torch.stack(costs)
    lo, hi = costs.min(dim=2).values.sum(dim=1), costs.max(dim=2).values.sum(dim=1)
    budgets = (lo + 0.3 * (hi - lo)).tolist()
    capacity = [math.inf] + [n / (2 * m)] * (m - 1)
    return values.to(dtype), costs.to(dtype), budgets, capacity


def highs_lp(values, costs, budgets, capacity, time_limit: float):
    """Optimum of the LP relaxation by HiGHS, and the wall time (None if it did not finish)."""
    import numpy as np
    import scipy.sparse as sp
    from scipy.optimize import linprog

    n, m = values.shape
    k = costs.shape[0]
    rows = [sp.csr_matrix(costs[kk].double().reshape(1, -1).numpy()) for kk in range(k)]
    ub = list(budgets)
    for o in range(m):
        if math.isfinite(capacity[o]):
            rows.append(
                sp.csr_matrix((np.ones(n), (np.zeros(n, dtype=np.int64), np.arange(n) * m + o)), shape=(1, n * m))
            )
            ub.append(capacity[o])
    a_ub = sp.vstack(rows).tocsr()
    a_eq = sp.kron(sp.eye(n, format="csr"), np.ones((1, m)), format="csr")
    t0 = time.perf_counter()
    res = linprog(
        -values.double().reshape(-1).numpy(),
        A_ub=a_ub,
        b_ub=ub,
        A_eq=a_eq,
        b_eq=np.ones(n),
        bounds=(0, 1),
        method="highs",
        options={"time_limit": time_limit},
    )
    t = time.perf_counter() - t0
    if res.status != 0:
        return None, t
    return -res.fun, t


def run(n: int, m: int, k: int, lp: bool, time_limit: float, repeats: int) -> dict:
    values, costs, budgets, capacity = make_problem(n, m, k)
    bidfcl.solve_allocation(
        values[:2000], costs[:, :2000], [b * 2000 / n for b in budgets], capacity=[c * 2000 / n for c in capacity]
    )  # warm-up
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        sol = bidfcl.solve_allocation(values, costs, budgets, capacity=capacity)
        best = min(best, time.perf_counter() - t0)
    # correctness first
    rows = torch.arange(n)
    spend = costs[:, rows, sol.choice].double().sum(dim=1)
    assert bool(sol.feasible.all()), sol.feasible
    assert torch.allclose(spend, sol.spend[:k], rtol=1e-9), (spend, sol.spend[:k])
    assert float(sol.dual_bound) >= float(sol.value)
    counts = torch.bincount(sol.choice, minlength=m).double()
    cap_t = torch.tensor(capacity, dtype=torch.float64)
    assert bool((counts <= cap_t).all())
    t1 = math.inf
    for _ in range(max(repeats, 3)):
        t0 = time.perf_counter()
        bidfcl.solve_mckp(values, costs[0], budgets[0])
        t1 = min(t1, time.perf_counter() - t0)
    iters = sol.iterations + sol.newton_steps
    out = {
        "n": n,
        "m": m,
        "k": k,
        "time_s": best,
        "sweeps": sol.iterations,
        "newton": sol.newton_steps,
        "gap": float(sol.gap),
        "value": float(sol.value),
        "dual_bound": float(sol.dual_bound),
        "single_solve_s": t1,
        "iter_over_single": best / max(iters, 1) / t1,
        "total_over_single": best / t1,
        "repair_moves": sol.repair_moves,
        "fill_moves": sol.fill_moves,
    }
    if lp:
        opt, t_lp = highs_lp(values, costs, budgets, capacity, time_limit)
        out["highs_s"] = t_lp
        out["highs_finished"] = opt is not None
        if opt is not None:
            out["highs_lp"] = opt
            out["gap_to_lp"] = (opt - float(sol.value)) / abs(opt)
            out["speedup"] = t_lp / best
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N in {1e4, 3e4, 1e5}, K in {2, 4}, HiGHS on all")
    ap.add_argument("--n", type=int, nargs="*", default=None)
    ap.add_argument("--k", type=int, nargs="*", default=None)
    ap.add_argument("--m", type=int, default=8)
    ap.add_argument("--no-lp", action="store_true", help="skip HiGHS")
    ap.add_argument("--lp-time-limit", type=float, default=300.0, help="HiGHS time limit (s)")
    ap.add_argument("--lp-max-n", type=int, default=100_000, help="run HiGHS only up to this N")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ns = args.n or ([10_000, 30_000, 100_000] if args.quick else [100_000, 1_000_000])
    ks = args.k or [2, 4]
    print(
        f"bidfcl {bidfcl.__version__}, {torch.get_num_threads()} threads, float32, M = {args.m}, "
        "capacities N/(2M) on options 1..M-1"
    )
    head = (
        f"{'N':>9} {'K':>2} {'time':>8} {'sweeps':>6} {'newton':>6} {'gap':>9} {'iter/solve':>10} "
        f"{'all/solve':>9} {'HiGHS LP':>9} {'gap to LP':>9} {'speedup':>8}"
    )
    print(head)
    for n in ns:
        for k in ks:
            r = run(
                n,
                args.m,
                k,
                lp=not args.no_lp and n <= args.lp_max_n,
                time_limit=args.lp_time_limit,
                repeats=args.repeats,
            )
            lp_t = f"{r['highs_s']:8.2f}s" if "highs_s" in r else f"{'-':>9}"
            if "highs_s" in r and not r["highs_finished"]:
                lp_t = f">{r['highs_s']:7.0f}s"
            g_lp = f"{r['gap_to_lp']:9.2e}" if "gap_to_lp" in r else f"{'-':>9}"
            sp_ = f"{r['speedup']:7.1f}x" if "speedup" in r else f"{'-':>8}"
            print(
                f"{n:9d} {k:2d} {r['time_s']:7.3f}s {r['sweeps']:6d} {r['newton']:6d} {r['gap']:9.2e} "
                f"{r['iter_over_single']:9.1f}x {r['total_over_single']:8.1f}x {lp_t} {g_lp} {sp_}",
                flush=True,
            )


if __name__ == "__main__":
    main()
