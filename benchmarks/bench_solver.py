"""Allocation solver speed: bidfcl's exact solve vs the peers it must beat, in the same run.

    PYTHONPATH=python python -m pytest benchmarks/bench_solver.py -q

Per N (M = 8, float32, one budget at 30% of the way from the cheapest to the dearest policy):
  exact        bidfcl.solve_mckp(method="exact")
  stream       one streaming pass over the inputs, values.sum() + costs.sum() (the memory floor)
  twin_bisect  the pure-PyTorch twin's eager 50-step bisection (what a user would write)
  numpy_bisect the same bisection in NumPy
  highs        SciPy's HiGHS on the LP relaxation (N = 1e4 only)
Also (issue 12): exact / stream for float32 and float64 x M in {2, 4, 8, 16} at N = 1e6 and 4e6
(bench.bench_case, median of 7), and K = 16 budgets in one call vs 16 calls at N = 1e6, M = 8 for
budgets spread over 10%..90% of the spend range and clustered at 29%..31% (bench.bench_budget_batch).
The problem and the peers are bidfcl.bench's, the code behind `bidfcl bench`.
Targets (issue 2): exact >= 50x faster than twin_bisect at N = 1e6, and <= 10x the stream pass.
Targets (issue 12): exact <= 10x stream at 1e6 and <= 6x at 4e6 for every dtype and M; K = 16 in
one call >= 8x cheaper than 16 calls.
Correctness is checked first: the exact solution is feasible and matches the twin's choices.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import bidfcl
from bidfcl import _reference as ref
from bidfcl import bench
from bidfcl.bench import random_allocation_problem

SIZES = [100_000, 1_000_000, 4_000_000]
M = 8


@pytest.fixture(scope="module", params=SIZES, ids=lambda n: f"N={n:.0e}")
def problem(request):
    n = request.param
    values, costs = random_allocation_problem(n, M, seed=0, dtype=torch.float32)
    low, high = float(costs.min(1).values.double().sum()), float(costs.max(1).values.double().sum())
    budget = low + 0.3 * (high - low)
    return n, values, costs, budget


def test_exact(benchmark, record, problem):
    n, values, costs, budget = problem
    sol = bidfcl.solve_mckp(values, costs, budget)
    assert bool(sol.feasible) and float(sol.spend) <= budget * (1 + 1e-11)
    if n <= 100_000:  # the twin is slow; check it where it is cheap
        twin = ref.solve_mckp(values, costs, torch.tensor([budget], dtype=torch.float64))  # applies the slack itself
        assert torch.equal(twin[1][0], sol.choice)
    benchmark.pedantic(bidfcl.solve_mckp, args=(values, costs, budget), rounds=7, warmup_rounds=1)
    record(f"solver N={n:.0e}", "exact", benchmark)


def test_stream(benchmark, record, problem):
    n, values, costs, _ = problem
    benchmark.pedantic(bench.stream_pass, args=(values, costs), rounds=15, warmup_rounds=2)
    record(f"solver N={n:.0e}", "stream", benchmark)


def test_twin_eager_bisection(benchmark, record, problem):
    n, values, costs, budget = problem
    budgets = torch.tensor([budget], dtype=torch.float64)
    rounds = 3 if n <= 1_000_000 else 1
    out = benchmark.pedantic(
        ref.solve_mckp_bisection, args=(values, costs, budgets, 50, 0.0), rounds=rounds, warmup_rounds=0
    )
    assert bool(out[5][0])
    record(f"solver N={n:.0e}", "twin_bisect", benchmark)


def test_numpy_bisection(benchmark, record, problem):
    n, values, costs, budget = problem
    v, c = values.numpy(), costs.numpy()
    lam, value = bench.numpy_bisection(v, c, budget)
    assert value <= float(bidfcl.solve_mckp(values, costs, budget).dual_bound) * (1 + 1e-9)
    benchmark.pedantic(bench.numpy_bisection, args=(v, c, budget), rounds=1, warmup_rounds=0)
    record(f"solver N={n:.0e}", "numpy_bisect", benchmark)


@pytest.fixture(scope="module")
def small_problem():
    values, costs = random_allocation_problem(10_000, M, seed=0)
    return values, costs, bench.budgets_between(costs, 1, 0.3, 0.3)[0]


def test_exact_small(benchmark, record, small_problem):
    values, costs, budget = small_problem
    benchmark.pedantic(bidfcl.solve_mckp, args=(values, costs, budget), rounds=7, warmup_rounds=1)
    record("solver N=1e4", "exact", benchmark)


def test_highs_lp_relaxation(benchmark, record, small_problem):
    """The generic LP solver on the relaxation, where it finishes (N = 1e4, tens of seconds)."""
    values, costs, budget = small_problem
    sol = bidfcl.solve_mckp(values, costs, budget)
    v, c = values.double().numpy(), costs.double().numpy()
    lp = benchmark.pedantic(bench.highs_lp_relaxation, args=(v, c, budget), rounds=1, warmup_rounds=0)
    assert float(sol.value) - 1e-6 <= lp <= float(sol.dual_bound) + 1e-6
    record("solver N=1e4", "highs_lp", benchmark)


def test_exact_k_budgets(benchmark, record):
    """K = 16 budgets in one call vs 16 single calls (the per-user work is shared)."""
    values, costs = random_allocation_problem(1_000_000, M, seed=1)
    low, high = float(costs.min(1).values.double().sum()), float(costs.max(1).values.double().sum())
    budgets = torch.linspace(low, high, 16, dtype=torch.float64)
    benchmark.pedantic(bidfcl.solve_mckp, args=(values, costs, budgets), rounds=3, warmup_rounds=1)
    record("solver K=16 N=1e6", "one call", benchmark)


def test_exact_k_budgets_one_at_a_time(benchmark, record):
    values, costs = random_allocation_problem(1_000_000, M, seed=1)
    low, high = float(costs.min(1).values.double().sum()), float(costs.max(1).values.double().sum())
    budgets = torch.linspace(low, high, 16, dtype=torch.float64).tolist()
    benchmark.pedantic(lambda: [bidfcl.solve_mckp(values, costs, b) for b in budgets], rounds=3, warmup_rounds=1)
    record("solver K=16 N=1e6", "16 calls", benchmark)


def test_frontier(benchmark, record):
    values, costs = random_allocation_problem(1_000_000, M, seed=2)
    benchmark.pedantic(bidfcl.budget_frontier, args=(values, costs), rounds=3, warmup_rounds=1)
    record("frontier N=1e6", "frontier", benchmark)


def _as_benchmark(seconds: float):
    """bench.* report medians; record() reads .stats.min, so hand it the median under that name."""
    return SimpleNamespace(stats=SimpleNamespace(min=seconds))


GRID = [(dt, m) for dt in (torch.float32, torch.float64) for m in (2, 4, 8, 16)]


@pytest.mark.parametrize("n", [1_000_000, 4_000_000], ids=lambda n: f"N={n:.0e}")
@pytest.mark.parametrize("dtype,m", GRID, ids=[f"{str(d).replace('torch.', '')}-M{m}" for d, m in GRID])
def test_exact_vs_stream_grid(record, n, dtype, m):
    """exact / stream (medians of 7, same run) for each dtype and M; bench_case checks the answer."""
    rows = {r.impl: r for r in bench.bench_case(n, m, dtype=dtype, peers=("exact", "stream"), repeats=7)}
    group = f"grid N={n:.0e} {str(dtype).replace('torch.', '')} M={m} (median)"
    record(group, "exact", _as_benchmark(rows["exact"].seconds))
    record(group, "stream", _as_benchmark(rows["stream"].seconds))


@pytest.mark.parametrize("spread", [(0.1, 0.9), (0.29, 0.31)], ids=["spread", "clustered"])
def test_k_budgets_one_call_vs_single_calls(record, spread):
    out = bench.bench_budget_batch(1_000_000, M, 16, budget_range=spread, repeats=3, seed=1)
    group = f"K=16 N=1e6 budgets {spread[0]:.2f}..{spread[1]:.2f} (median)"
    record(group, "one call", _as_benchmark(out["one_call"]))
    record(group, "16 calls", _as_benchmark(out["single_calls"]))
