"""The CUDA solver kernels against the CPU ops (the reference for the device code).

Everything here runs only where a GPU exists (``@pytest.mark.cuda``). The rules:

* choices, ``feasible`` and ``lam`` equal the CPU op's exactly; spend, value and dual bound agree to
  rounding (the device sums in a different, but fixed, order);
* on integer-valued data every float64 sum is exact, so there even budgets placed exactly on a
  frontier point (ties between the budget and a cumulative spend) must give the same cut;
* bad input raises the same message on both devices.

``BIDFCL_CUDA_TEST_DEVICE=cpu`` runs the same checks with the CPU standing in for the device (a
self-test of this file on machines without a GPU; it then compares the CPU op with itself).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bidfcl
from conftest import CUDA_FILE_MARKS, CUDA_TEST_DEVICE, DTYPES, F64

DEV = CUDA_TEST_DEVICE

pytestmark = CUDA_FILE_MARKS

ops = torch.ops.bidfcl


# --------------------------------------------------------------------------------------------------
# instances
# --------------------------------------------------------------------------------------------------


def integer_instance(n: int, m: int, dtype: torch.dtype, seed: int, min_cost: int = 0):
    """Integer values (some negative) and costs (zeros allowed), duplicate and dominated options."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(-5, 40, (n, m), generator=g).to(dtype)
    costs = torch.randint(min_cost, 12, (n, m), generator=g).to(dtype)
    if m >= 3:
        # duplicate option 1 into the last column for a third of the rows; equal costs elsewhere
        rows = torch.arange(n) % 3 == 0
        values[rows, m - 1] = values[rows, 1]
        costs[rows, m - 1] = costs[rows, 1]
        costs[torch.arange(n) % 5 == 0, 2] = costs[torch.arange(n) % 5 == 0, 0]
    return values, costs


def float_instance(n: int, m: int, dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    costs = torch.rand((n, m), generator=g, dtype=F64).mul(3.0).to(dtype)
    values = (torch.rand((n, m), generator=g, dtype=F64) * 4.0 - 0.5).to(dtype)
    costs[:, 0] = 0  # a free option for everyone
    return values, costs


def budgets_for(values: torch.Tensor, costs: torch.Tensor, exact_points: bool) -> torch.Tensor:
    """0, below the cheapest policy, on and between frontier points, and above the most expensive."""
    _, spend, _ = ops.budget_frontier(values, costs)
    spend = spend.tolist()
    base, top = spend[0], spend[-1]
    picks = [0.0, top + 1.0, top * 10.0 + 5.0]
    if base > 0:
        picks.append(base * 0.5)
    idx = np.linspace(0, len(spend) - 1, 9).round().astype(int)
    for q in idx:
        if q + 1 < len(spend):
            picks.append(0.5 * (spend[q] + spend[q + 1]))  # strictly between two points
        if exact_points:
            picks.append(spend[q])  # exactly on a point: the cut must be the same step
    return torch.tensor(picks, dtype=F64)


def to_dev(*ts):
    return tuple(t.to(DEV) for t in ts)


def rtol_for(dtype: torch.dtype) -> float:
    return 1e-9 if dtype == F64 else 1e-5


def assert_same(a: torch.Tensor, b: torch.Tensor, what: str):
    a, b = a.cpu(), b.cpu()
    assert a.dtype == b.dtype and a.shape == b.shape, f"{what}: {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}"
    if a.is_floating_point():
        same = (a == b) | (torch.isnan(a) & torch.isnan(b))
        assert bool(same.all()), (
            f"{what} differs at {torch.nonzero(~same)[:5].tolist()}: {a[~same][:5]} vs {b[~same][:5]}"
        )
    else:
        assert torch.equal(a, b), f"{what} differs at {torch.nonzero(a != b)[:5].tolist()}"


def assert_close(a: torch.Tensor, b: torch.Tensor, rtol: float, what: str):
    a, b = a.cpu(), b.cpu()
    assert a.dtype == b.dtype and a.shape == b.shape, what
    assert torch.allclose(a, b, rtol=rtol, atol=0.0), f"{what}: {a} vs {b}"


def check_solve(values, costs, budgets, exact_sums: bool):
    cpu = ops.solve_mckp(values, costs, budgets)
    dev = ops.solve_mckp(*to_dev(values, costs, budgets))
    for t in dev:
        assert t.device.type == torch.device(DEV).type
    names = ("lam", "choice", "spend", "value", "dual_bound", "feasible")
    for name, a, b in zip(names, cpu, dev):
        if name in ("lam", "choice", "feasible") or exact_sums and name in ("spend", "value"):
            assert_same(b, a, name)
        else:
            assert_close(b, a, rtol_for(values.dtype), name)
    return cpu, dev


# --------------------------------------------------------------------------------------------------
# exact solve
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [1, 2, 8, 64])
@pytest.mark.parametrize("seed", [0, 1])
def test_solve_matches_cpu_integer_data(dtype, m, seed):
    values, costs = integer_instance(700, m, dtype, seed)
    check_solve(values, costs, budgets_for(values, costs, exact_points=True), exact_sums=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [1, 2, 8, 64])
def test_solve_matches_cpu_float_data(dtype, m):
    values, costs = float_instance(900, m, dtype, seed=10 + m)
    check_solve(values, costs, budgets_for(values, costs, exact_points=False), exact_sums=False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_solve_infeasible_and_zero_budget(dtype):
    values, costs = integer_instance(300, 4, dtype, seed=3, min_cost=1)  # cheapest policy costs >= 300
    budgets = torch.tensor([0.0, 1.0, 299.0, 1e9], dtype=F64)
    cpu, dev = check_solve(values, costs, budgets, exact_sums=True)
    assert dev[5].cpu().tolist() == [False, False, False, True]
    assert bool(torch.isinf(dev[0][:3]).all()) and float(dev[0][3]) == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_solve_all_ties(dtype):
    # every individual identical: all breakpoints equal, the cut is decided by the individual index
    values = torch.tensor([[0.0, 3.0, 5.0]], dtype=dtype).repeat(2500, 1)
    costs = torch.tensor([[0.0, 1.0, 2.0]], dtype=dtype).repeat(2500, 1)
    budgets = torch.tensor([0.0, 1.0, 7.0, 1234.0, 2500.0, 2501.0, 4999.0, 5000.0, 6000.0], dtype=F64)
    check_solve(values, costs, budgets, exact_sums=True)


def test_solve_non_contiguous_and_deterministic():
    values, costs = float_instance(3000, 8, F64, seed=5)
    vt, ct = values.t().contiguous().t(), costs.t().contiguous().t()
    budgets = budgets_for(values, costs, exact_points=False)
    check_solve(vt, ct, budgets, exact_sums=False)
    a = ops.solve_mckp(*to_dev(vt, ct, budgets))
    b = ops.solve_mckp(*to_dev(values, costs, budgets))
    for x, y, name in zip(a, b, ("lam", "choice", "spend", "value", "dual_bound", "feasible")):
        assert_same(x, y, name)  # bit-identical run to run


@pytest.mark.slow
def test_solve_large_multi_tile():
    # ~6e6 steps: several rounds of the tile-sum scan, grid-stride loops in the reductions
    values, costs = integer_instance(2_000_000, 8, torch.float32, seed=7)
    _, spend, _ = ops.budget_frontier(values, costs)
    picks = [0.0, float(spend[len(spend) // 3]), float(spend[-1]) * 0.9, float(spend[-1]) + 1]
    check_solve(values, costs, torch.tensor(picks, dtype=F64), exact_sums=True)


# --------------------------------------------------------------------------------------------------
# frontier
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [1, 2, 8, 64])
def test_frontier_matches_cpu(dtype, m):
    values, costs = integer_instance(600, m, dtype, seed=20 + m)
    cpu = ops.budget_frontier(values, costs)
    dev = ops.budget_frontier(*to_dev(values, costs))
    for name, a, b in zip(("lam", "spend", "value"), cpu, dev):
        assert_same(b, a, name)
    values, costs = float_instance(600, m, dtype, seed=30 + m)
    cpu = ops.budget_frontier(values, costs)
    dev = ops.budget_frontier(*to_dev(values, costs))
    assert_same(dev[0], cpu[0], "lam")
    assert_close(dev[1], cpu[1], rtol_for(dtype), "spend")
    assert_close(dev[2], cpu[2], rtol_for(dtype), "value")


# --------------------------------------------------------------------------------------------------
# RCT-calibrated solve
# --------------------------------------------------------------------------------------------------


def rct_instance(n: int, m: int, dtype: torch.dtype, seed: int):
    values, costs = integer_instance(n, m, dtype, seed)
    g = torch.Generator().manual_seed(seed + 100)
    treatment = torch.randint(0, m, (n,), generator=g)
    cost_obs = torch.randint(0, 9, (n,), generator=g).to(dtype)
    propensity = torch.tensor([0.5, 0.25, 1.0], dtype=dtype)[torch.randint(0, 3, (n,), generator=g)]
    return values, costs, treatment, cost_obs, propensity


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [1, 2, 8, 64])
def test_rct_matches_cpu(dtype, m):
    # n a power of two: every IPW weight cost_obs / p / n is dyadic, so the estimates are exact sums
    args = rct_instance(512, m, dtype, seed=40 + m)
    w_total = float((args[3].to(F64) / args[4].to(F64)).sum() / 512)
    budgets = [0.0, w_total * 2 + 1] + [w_total * f for f in np.linspace(0.05, 1.0, 12)]
    budgets = torch.tensor(budgets, dtype=F64)
    cpu = ops.solve_mckp_rct(*args, budgets)
    # also budgets exactly on the estimates the CPU reports (ties with the running estimate)
    budgets = torch.cat([budgets, cpu[2][torch.isfinite(cpu[2])]])
    cpu = ops.solve_mckp_rct(*args, budgets)
    dev = ops.solve_mckp_rct(*to_dev(*args, budgets))
    for name, a, b in zip(("lam", "choice", "spend", "feasible"), cpu, dev):
        assert_same(b, a, name)


def test_rct_float_data_close():
    values, costs = float_instance(1000, 8, F64, seed=50)
    g = torch.Generator().manual_seed(51)
    treatment = torch.randint(0, 8, (1000,), generator=g)
    cost_obs = torch.rand(1000, generator=g, dtype=F64) * 3
    propensity = torch.full((1000,), 0.125, dtype=F64)
    budgets = torch.tensor([0.0, 0.3, 0.77, 1.31, 2.9, 100.0], dtype=F64)
    args = (values, costs, treatment, cost_obs, propensity, budgets)
    cpu = ops.solve_mckp_rct(*args)
    dev = ops.solve_mckp_rct(*to_dev(*args))
    assert_same(dev[0], cpu[0], "lam")
    assert_same(dev[1], cpu[1], "choice")
    assert_close(dev[2], cpu[2], 1e-9, "spend")
    assert_same(dev[3], cpu[3], "feasible")


# --------------------------------------------------------------------------------------------------
# bisection
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [1, 2, 8, 64])
def test_bisection_matches_cpu(dtype, m):
    values, costs = integer_instance(500, m, dtype, seed=60 + m, min_cost=1)
    budgets = budgets_for(values, costs, exact_points=True)
    cpu = ops.solve_mckp_bisection(values, costs, budgets, 50, 1e-7)
    dev = ops.solve_mckp_bisection(*to_dev(values, costs, budgets), 50, 1e-7)
    # integer data: every spend the loop compares is an exact sum, so the loops take the same path
    for name, a, b in zip(("lam", "choice", "spend", "value", "dual_bound", "feasible"), cpu, dev):
        if name == "dual_bound":
            assert_close(b, a, rtol_for(dtype), name)
        else:
            assert_same(b, a, name)


def test_bisection_float_data_close():
    values, costs = float_instance(2000, 8, F64, seed=70)
    budgets = budgets_for(values, costs, exact_points=False)
    cpu = ops.solve_mckp_bisection(values, costs, budgets, 60, 1e-9)
    dev = ops.solve_mckp_bisection(*to_dev(values, costs, budgets), 60, 1e-9)
    assert_close(dev[0], cpu[0], 1e-6, "lam")
    assert_close(dev[3], cpu[3], 1e-6, "value")
    assert_same(dev[5], cpu[5], "feasible")


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------


def first_line_of_error(fn, *args) -> str:
    with pytest.raises(RuntimeError) as info:
        fn(*args)
    return str(info.value).splitlines()[0]


def bad_problems():
    values, costs = integer_instance(50, 4, F64, seed=80)
    out = []
    v = values.clone()
    v[7, 2] = float("nan")
    v[9, 0] = float("inf")
    out.append((v, costs))
    c = costs.clone()
    c[3, 1] = float("inf")
    out.append((values, c))
    c = costs.clone()
    c[3, 3] = -1.0
    c[4, 0] = float("nan")
    out.append((values, c))
    v, c = values.clone(), costs.clone()
    v[12, 2] = float("-inf")
    c[12, 1] = -2.0  # same row, earlier column: the cost error is reported
    out.append((v, c))
    return out


@pytest.mark.parametrize("case", range(4))
def test_bad_problem_same_errors(case):
    values, costs = bad_problems()[case]
    budgets = torch.tensor([10.0], dtype=F64)
    dv, dc, db = to_dev(values, costs, budgets)
    assert first_line_of_error(ops.solve_mckp, dv, dc, db) == first_line_of_error(
        ops.solve_mckp, values, costs, budgets
    )
    assert first_line_of_error(ops.budget_frontier, dv, dc) == first_line_of_error(ops.budget_frontier, values, costs)
    assert first_line_of_error(ops.solve_mckp_bisection, dv, dc, db, 20, 1e-6) == first_line_of_error(
        ops.solve_mckp_bisection, values, costs, budgets, 20, 1e-6
    )
    t = torch.zeros(50, dtype=torch.long)
    co = torch.ones(50, dtype=F64)
    p = torch.ones(50, dtype=F64)
    assert first_line_of_error(ops.solve_mckp_rct, dv, dc, *to_dev(t, co, p, budgets)) == first_line_of_error(
        ops.solve_mckp_rct, values, costs, t, co, p, budgets
    )


def test_bad_rct_inputs_same_errors():
    values, costs = integer_instance(40, 3, F64, seed=81)
    budgets = torch.tensor([1.0], dtype=F64)
    good_t = torch.zeros(40, dtype=torch.long)
    good_co = torch.ones(40, dtype=F64)
    good_p = torch.full((40,), 0.5, dtype=F64)
    cases = []
    t = good_t.clone()
    t[11] = 3
    t[20] = -1
    cases.append((t, good_co, good_p))
    p = good_p.clone()
    p[5] = 0.0
    p[30] = 1.5
    cases.append((good_t, good_co, p))
    co = good_co.clone()
    co[17] = float("nan")
    cases.append((good_t, co, good_p))
    t, p, co = good_t.clone(), good_p.clone(), good_co.clone()
    co[8] = float("inf")
    p[8] = 2.0  # same row: the propensity error is reported first
    t[9] = 7
    cases.append((t, co, p))
    for t, co, p in cases:
        want = first_line_of_error(ops.solve_mckp_rct, values, costs, t, co, p, budgets)
        got = first_line_of_error(ops.solve_mckp_rct, *to_dev(values, costs, t, co, p, budgets))
        assert got == want


def test_shape_and_device_errors():
    values, costs = integer_instance(10, 3, F64, seed=82)
    dv, dc = to_dev(values, costs)
    budgets = torch.tensor([1.0], dtype=F64)
    if DEV != "cpu":
        with pytest.raises(RuntimeError, match="same device"):
            ops.solve_mckp(dv, dc, budgets)  # budgets left on the CPU
        with pytest.raises(RuntimeError, match="same device"):
            ops.solve_mckp(dv, costs, budgets.to(DEV))
    with pytest.raises(RuntimeError, match="budgets must be >= 0"):
        ops.solve_mckp(dv, dc, torch.tensor([-1.0], dtype=F64, device=DEV))
    with pytest.raises(RuntimeError, match="at least one individual"):
        ops.solve_mckp(dv[:0], dc[:0], budgets.to(DEV))


# --------------------------------------------------------------------------------------------------
# public API and torch.compile on the device
# --------------------------------------------------------------------------------------------------


def test_public_api_on_device():
    values, costs = integer_instance(400, 6, F64, seed=90)
    cpu = bidfcl.solve_mckp(values, costs, 500.0)
    dev = bidfcl.solve_mckp(values.to(DEV), costs.to(DEV), 500.0)
    assert_same(dev.choice, cpu.choice, "choice")
    assert_same(dev.lam, cpu.lam, "lam")


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    values, costs = integer_instance(800, 8, torch.float32, seed=91)
    budgets = budgets_for(values, costs, exact_points=True)
    dv, dc, db = to_dev(values, costs, budgets)

    @torch.compile(fullgraph=True)
    def solve_then_score(v, c, b):
        lam, choice, spend, value, dual, feasible = torch.ops.bidfcl.solve_mckp(v, c, b)
        picked = torch.gather(v, 1, choice[-1].unsqueeze(1)).sum()
        return lam, choice, spend, picked

    lam, choice, spend, picked = solve_then_score(dv, dc, db)
    eager = ops.solve_mckp(values, costs, budgets)
    assert_same(lam, eager[0], "lam")
    assert_same(choice, eager[1], "choice")
    assert_same(spend, eager[2], "spend")
    assert float(picked) == float(values.gather(1, eager[1][-1].unsqueeze(1)).sum())

    t = torch.randint(0, 8, (800,), generator=torch.Generator().manual_seed(1))
    co = torch.ones(800, dtype=torch.float32)
    p = torch.full((800,), 0.5, dtype=torch.float32)
    rct = torch.compile(torch.ops.bidfcl.solve_mckp_rct, fullgraph=True)
    got = rct(dv, dc, *to_dev(t, co, p), db)
    want = ops.solve_mckp_rct(values, costs, t, co, p, budgets)
    for name, a, b in zip(("lam", "choice", "spend", "feasible"), want, got):
        assert_same(b, a, name)


def test_opcheck_on_device():
    values, costs = integer_instance(64, 5, F64, seed=92)
    budgets = torch.tensor([0.0, 40.0, 1e6], dtype=F64)
    dv, dc, db = to_dev(values, costs, budgets)
    t = torch.randint(0, 5, (64,), generator=torch.Generator().manual_seed(2))
    rct_args = (dv, dc, *to_dev(t, torch.ones(64, dtype=F64), torch.full((64,), 0.2, dtype=F64)), db)
    for op, args in (
        (torch.ops.bidfcl.solve_mckp.default, (dv, dc, db)),
        (torch.ops.bidfcl.solve_mckp_bisection.default, (dv, dc, db, 30, 1e-6)),
        (torch.ops.bidfcl.budget_frontier.default, (dv, dc)),
        (torch.ops.bidfcl.solve_mckp_rct.default, rct_args),
    ):
        torch.library.opcheck(op, args)
