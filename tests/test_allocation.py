"""Tests for bidfcl.solve_allocation (several budgets, capacities, eligibility, group budgets).

Oracles: scipy's MILP solver (the integer optimum) on a seeded sweep of small instances, the
single-budget solver (K = 1 must return exactly its answer), the pure-PyTorch twins of the ops
(float64), and properties the method guarantees (feasibility, bound, determinism).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import bidfcl
from bidfcl import _reference as ref
from bidfcl.allocation import constraint_names
from conftest import DTYPES, F64, needs_cuda, needs_ext

#: The documented quality (README, allocation.py): the value is within this many users' value
#: ranges of the integer optimum, per constraint that can bind, plus one.
USERS_PER_CONSTRAINT = 1.0


def instance(seed: int, n: int | None = None):
    """A random small instance with every kind of constraint and awkward data (ties, zero costs,
    dominated options). Option 0 is free and eligible for all, so it is always feasible."""
    rng = np.random.default_rng(seed)
    n = n or int(rng.integers(5, 61))
    m = int(rng.integers(2, 7))
    k = int(rng.integers(1, 4))
    kind = seed % 3
    if kind == 0:  # integers: many ties in values, costs and breakpoints
        v = rng.integers(-2, 8, (n, m)).astype(float)
        c = rng.integers(0, 4, (k, n, m)).astype(float)
    else:
        v = rng.random((n, m))
        c = rng.random((k, n, m))
        c[c < 0.15] = 0.0  # zero costs
        if kind == 2:  # dominated options: costlier and worth less than option 1
            v[:, -1] = v[:, 1] - 0.1
            c[:, :, -1] = c[:, :, 1] + 0.1
    c[:, :, 0] = 0.0
    budgets = (c.max(axis=2).sum(axis=1) * rng.uniform(0.1, 0.6, k)).tolist()
    capacity = None
    if rng.random() < 0.6:
        capacity = [math.inf] + [float(rng.integers(0, n // 2 + 2)) for _ in range(m - 1)]
    eligible = None
    if rng.random() < 0.6:
        eligible = rng.random((n, m)) < 0.7
        eligible[:, 0] = True
    groups = group_budgets = None
    if rng.random() < 0.5:
        g = int(rng.integers(1, 4))
        groups = rng.integers(0, g, n)
        group_budgets = np.full((k, g), math.inf)
        for kk in range(k):
            for gg in range(g):
                if rng.random() < 0.7:
                    group_budgets[kk, gg] = float(
                        c[kk][groups == gg].max(axis=1, initial=0).sum() * rng.uniform(0.1, 0.6)
                    )
    return dict(
        values=torch.tensor(v, dtype=F64),
        costs=torch.tensor(c, dtype=F64),
        budgets=budgets,
        capacity=capacity,
        eligible=None if eligible is None else torch.tensor(eligible),
        groups=None if groups is None else torch.tensor(groups),
        group_budgets=None if group_budgets is None else torch.tensor(group_budgets),
    )


def constraint_rows(p):
    """(A [J', N*M], b [J']) of every finite constraint, in layout order, and their layout indices."""
    v, c = p["values"].numpy(), p["costs"].numpy()
    n, m = v.shape
    k = c.shape[0]
    rows, ub, idx = [], [], []
    for kk in range(k):
        rows.append(c[kk].reshape(-1))
        ub.append(p["budgets"][kk])
        idx.append(kk)
    if p["capacity"] is not None:
        for o in range(m):
            if math.isfinite(p["capacity"][o]):
                r = np.zeros((n, m))
                r[:, o] = 1
                rows.append(r.reshape(-1))
                ub.append(p["capacity"][o])
                idx.append(k + o)
    if p["groups"] is not None:
        gb = p["group_budgets"].numpy()
        grp = p["groups"].numpy()
        for kk in range(k):
            for gg in range(gb.shape[1]):
                if math.isfinite(gb[kk, gg]):
                    rows.append((c[kk] * (grp == gg)[:, None]).reshape(-1))
                    ub.append(gb[kk, gg])
                    idx.append(k + m + kk * gb.shape[1] + gg)
    return np.array(rows), np.array(ub), idx


def milp_optimum(p):
    from scipy.optimize import Bounds, LinearConstraint, milp

    v = p["values"].numpy()
    n, m = v.shape
    a, b, _ = constraint_rows(p)
    hi = np.ones(n * m) if p["eligible"] is None else p["eligible"].numpy().reshape(-1).astype(float)
    cons = [LinearConstraint(a, -np.inf, b * (1 + 1e-12)), LinearConstraint(np.kron(np.eye(n), np.ones((1, m))), 1, 1)]
    res = milp(-v.reshape(-1), constraints=cons, integrality=np.ones(n * m), bounds=Bounds(0, hi))
    assert res.status == 0, res.message
    return -res.fun


def solve(p, **kw):
    return bidfcl.solve_allocation(
        p["values"],
        p["costs"],
        p["budgets"],
        capacity=p["capacity"],
        eligible=p["eligible"],
        groups=p["groups"],
        group_budgets=p["group_budgets"],
        **kw,
    )


def check_solution(p, sol):
    """The reported totals are those of the choice, and every constraint holds."""
    v = p["values"]
    n, m = v.shape
    rows = torch.arange(n)
    if p["eligible"] is not None:
        assert bool(p["eligible"][rows, sol.choice].all())
    assert math.isclose(float(v[rows, sol.choice].sum()), float(sol.value), rel_tol=1e-12, abs_tol=1e-9)
    a, b, idx = constraint_rows(p)
    x = np.zeros((n, m))
    x[np.arange(n), sol.choice.numpy()] = 1
    spend = a @ x.reshape(-1)
    np.testing.assert_allclose(spend, sol.spend[idx].numpy(), rtol=1e-12, atol=1e-9)
    assert np.all(spend <= b * (1 + 1e-12) + 1e-12), (spend, b)
    assert bool(sol.feasible.all())


def value_range(p):
    v = p["values"]
    if p["eligible"] is not None:
        hi = torch.where(p["eligible"], v, torch.full_like(v, -math.inf)).max(1).values
        lo = torch.where(p["eligible"], v, torch.full_like(v, math.inf)).min(1).values
    else:
        hi, lo = v.max(1).values, v.min(1).values
    return float((hi - lo).max())


# --------------------------------------------------------------------------------------------------
# against the integer optimum
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", range(8))
def test_milp_sweep(block):
    """25 instances per block, 200 in all: feasible, bounded by the dual, within the documented gap."""
    for seed in range(block * 25, block * 25 + 25):
        p = instance(seed)
        sol = solve(p)
        check_solution(p, sol)
        opt = milp_optimum(p)
        n_binding = len(constraint_rows(p)[2])
        assert float(sol.value) <= opt + 1e-9, seed
        assert float(sol.dual_bound) >= opt - 1e-7 * max(1.0, abs(opt)), (seed, float(sol.dual_bound), opt)
        allowed = (USERS_PER_CONSTRAINT * n_binding + 1) * value_range(p)
        assert float(sol.value) >= opt - allowed - 1e-9, (seed, float(sol.value), opt, allowed)
        assert float(sol.gap) >= -1e-12


@pytest.mark.parametrize("seed", range(3))
def test_milp_larger(seed):
    p = instance(1000 + seed, n=200)
    sol = solve(p)
    check_solution(p, sol)
    opt = milp_optimum(p)
    assert float(sol.dual_bound) >= opt - 1e-7 * abs(opt)
    assert float(sol.value) >= opt - (len(constraint_rows(p)[2]) + 1) * value_range(p)


# --------------------------------------------------------------------------------------------------
# special cases
# --------------------------------------------------------------------------------------------------


def _rand(n, m, k, seed, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    v = torch.rand(n, m, generator=g, dtype=F64)
    c = torch.rand(k, n, m, generator=g, dtype=F64)
    c[:, :, 0] = 0
    return v.to(dtype), c.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ["2d", "3d"])
def test_single_budget_is_solve_mckp(dtype, shape):
    v, c = _rand(500, 5, 1, 0, dtype)
    budget = float(c.sum()) * 0.1
    ref_sol = bidfcl.solve_mckp(v, c[0], budget)
    sol = bidfcl.solve_allocation(v, c[0] if shape == "2d" else c, budget)
    assert torch.equal(sol.choice, ref_sol.choice)
    assert float(sol.lam[0]) == float(ref_sol.lam)
    assert float(sol.spend[0]) == float(ref_sol.spend)
    assert float(sol.value) == float(ref_sol.value)
    assert float(sol.dual_bound) == float(ref_sol.dual_bound)
    assert bool(sol.feasible[0]) == bool(ref_sol.feasible)
    assert torch.equal(sol.spend[1:], torch.bincount(sol.choice, minlength=5).to(F64))


def test_never_binding_capacity_changes_nothing():
    v, c = _rand(800, 4, 2, 1)
    b = (c.sum(dim=(1, 2)) * 0.1).tolist()
    plain = bidfcl.solve_allocation(v, c, b)
    capped = bidfcl.solve_allocation(v, c, b, capacity=[800, 1e9, math.inf, 800])
    assert torch.equal(plain.choice, capped.choice)
    assert torch.equal(plain.lam, capped.lam)
    assert float(plain.value) == float(capped.value)
    assert float(plain.dual_bound) == float(capped.dual_bound)


def test_binding_capacity_is_respected():
    v, c = _rand(1000, 4, 2, 2)
    b = (c.sum(dim=(1, 2)) * 0.2).tolist()
    sol = bidfcl.solve_allocation(v, c, b, capacity=[math.inf, 30, 30, 30])
    counts = torch.bincount(sol.choice, minlength=4)
    assert bool((counts[1:] <= 30).all())
    assert bool(sol.feasible.all())
    assert float(sol.lam[2:5].max()) > 0  # some capacity binds


def test_infeasible_constraint_is_reported_per_constraint():
    v, c = _rand(300, 4, 2, 3)
    c[1] += 1.0  # every option of resource 1 costs >= 1: 300 users need >= 300
    sol = bidfcl.solve_allocation(v, c, [float(c[0].sum()) * 0.1, 100.0])
    names = constraint_names(2, 4)
    assert names[1] == "budget[1]"
    assert bool(sol.feasible[0]) and not bool(sol.feasible[1])
    assert math.isinf(float(sol.lam[1]))
    assert float(sol.dual_bound) == -math.inf
    assert bool(sol.feasible[2:].all())


def test_eligibility_is_never_violated_and_no_option_user_is_named():
    v, c = _rand(200, 4, 2, 4)
    el = torch.rand(200, 4, generator=torch.Generator().manual_seed(0)) < 0.5
    el[:, 0] = True
    sol = bidfcl.solve_allocation(v, c, [5.0, 5.0], eligible=el)
    assert bool(el[torch.arange(200), sol.choice].all())
    el[17] = False
    with pytest.raises(ValueError, match="eligible must allow at least one option per user, got none at row 17"):
        bidfcl.solve_allocation(v, c, [5.0, 5.0], eligible=el)


def test_group_budgets():
    v, c = _rand(600, 3, 1, 5)
    groups = torch.arange(600) % 3
    gb = torch.tensor([[5.0, 10.0, math.inf]])
    sol = bidfcl.solve_allocation(v, c, float(c.sum()), groups=groups, group_budgets=gb)
    spend = torch.zeros(3, dtype=F64).index_add(0, groups, c[0, torch.arange(600), sol.choice])
    assert float(spend[0]) <= 5.0 * (1 + 1e-12) and float(spend[1]) <= 10.0 * (1 + 1e-12)
    assert torch.allclose(sol.spend[1 + 3 :], spend, rtol=1e-12)
    assert bool(sol.feasible.all())
    one_d = bidfcl.solve_allocation(v, c, float(c.sum()), groups=groups, group_budgets=gb[0])  # [G] when K = 1
    assert torch.equal(one_d.choice, sol.choice)


def test_empty_and_non_contiguous_inputs():
    v, c = _rand(0, 3, 2, 6)
    sol = bidfcl.solve_allocation(v, c, [1.0, 1.0], capacity=[1, 1, 1])
    assert sol.choice.shape == (0,) and float(sol.value) == 0 and bool(sol.feasible.all())
    v, c = _rand(400, 4, 2, 7)
    b = (c.sum(dim=(1, 2)) * 0.15).tolist()
    cap = [math.inf, 40, 40, 40]
    base = bidfcl.solve_allocation(v.contiguous(), c.contiguous(), b, capacity=cap)
    v_nc = v.t().contiguous().t()  # same values, column-major strides
    c_nc = c.permute(2, 1, 0).contiguous().permute(2, 1, 0)
    assert not v_nc.is_contiguous() and not c_nc.is_contiguous()
    sol = bidfcl.solve_allocation(v_nc, c_nc, b, capacity=cap)
    assert torch.equal(sol.choice, base.choice)
    assert float(sol.value) == float(base.value)


def test_deterministic_across_thread_counts():
    v, c = _rand(60_000, 6, 3, 8, torch.float32)
    b = (c.double().sum(dim=(1, 2)) * 0.12).tolist()
    cap = [math.inf] + [4000.0] * 5
    groups = torch.arange(60_000) % 4
    gb = torch.full((3, 4), math.inf)
    gb[0, 1] = b[0] / 8
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = bidfcl.solve_allocation(v, c, b, capacity=cap, groups=groups, group_budgets=gb)
        torch.set_num_threads(2)
        b2 = bidfcl.solve_allocation(v, c, b, capacity=cap, groups=groups, group_budgets=gb)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(a.choice, b2.choice)
    assert torch.equal(a.lam, b2.lam)
    assert torch.equal(a.spend, b2.spend)
    assert float(a.value) == float(b2.value) and float(a.dual_bound) == float(b2.dual_bound)
    assert bool(a.feasible.all())


def test_relative_gap_is_small_at_scale():
    v, c = _rand(50_000, 8, 2, 9, torch.float32)
    b = (c.double().sum(dim=(1, 2)) * 0.1).tolist()
    sol = bidfcl.solve_allocation(v, c, b, capacity=[math.inf] + [3000.0] * 7)
    assert bool(sol.feasible.all())
    assert 0 <= float(sol.gap) < 1e-3


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------


def _bad(**over):
    v, c = _rand(20, 3, 2, 10)
    kw = dict(values=v, costs=c, budgets=[1.0, 1.0])
    kw.update(over)
    values, costs, budgets = kw.pop("values"), kw.pop("costs"), kw.pop("budgets")
    return lambda: bidfcl.solve_allocation(values, costs, budgets, **kw)


def _nan_at(t, idx):
    t = t.clone()
    t[idx] = math.nan
    return t


@pytest.mark.parametrize(
    "case,match",
    [
        (lambda v, c: _bad(costs=c[:, :10]), r"costs must have shape \[K, 20, 3\]"),
        (lambda v, c: _bad(budgets=[1.0]), r"budgets must have shape \[2\]"),
        (lambda v, c: _bad(capacity=[1, 2]), r"capacity must have shape \[3\]"),
        (lambda v, c: _bad(capacity=[1, -2, 3]), r"capacity must be >= 0, got -2.0 at index 1"),
        (lambda v, c: _bad(capacity=[1, math.nan, 3]), r"capacity must be a number .* at index 1"),
        (lambda v, c: _bad(eligible=torch.ones(20, 4, dtype=torch.bool)), r"eligible must have shape \[20, 3\]"),
        (lambda v, c: _bad(eligible=torch.ones(20, 3)), r"eligible must be a bool tensor"),
        (lambda v, c: _bad(budgets=[1.0, math.nan]), r"budgets must be finite, got nan at index 1"),
        (lambda v, c: _bad(budgets=[1.0, -1.0]), r"budgets must be >= 0, got -1.0 at index 1"),
        (lambda v, c: _bad(values=_nan_at(v, (4, 2))), r"values must be finite, got nan at \[4, 2\]"),
        (lambda v, c: _bad(costs=_nan_at(c, (1, 7, 0))), r"costs must be finite, got nan at \[1, 7, 0\]"),
        (lambda v, c: _bad(costs=c - 2.0), r"costs must be >= 0"),
        (lambda v, c: _bad(groups=torch.zeros(20, dtype=torch.long)), r"groups and group_budgets go together"),
        (
            lambda v, c: _bad(groups=torch.zeros(19, dtype=torch.long), group_budgets=torch.ones(2, 2)),
            r"groups must have shape \[20\]",
        ),
        (
            lambda v, c: _bad(groups=torch.full((20,), 5), group_budgets=torch.ones(2, 2)),
            r"groups must be in \[0, G\) = \[0, 2\).* got 5 at row 0",
        ),
        (
            lambda v, c: _bad(groups=torch.zeros(20, dtype=torch.long), group_budgets=torch.ones(3, 2)),
            r"group_budgets must have shape \[K=2, G\]",
        ),
        (
            lambda v, c: _bad(
                groups=torch.zeros(20, dtype=torch.long), group_budgets=torch.tensor([[1.0, math.nan]] * 2)
            ),
            r"group_budgets must be a number .* at index 1",
        ),
    ],
)
def test_bad_input_raises_clear_value_error(case, match):
    v, c = _rand(20, 3, 2, 10)
    with pytest.raises(ValueError, match=match):
        case(v, c)()


def test_bad_types():
    v, c = _rand(20, 3, 2, 10)
    with pytest.raises(TypeError, match="values must be a torch.Tensor"):
        bidfcl.solve_allocation(v.numpy(), c, [1.0, 1.0])
    with pytest.raises(TypeError, match="budgets must be a number"):
        bidfcl.solve_allocation(v, c, {"a": 1})
    with pytest.raises(ValueError, match="values and costs must have the same dtype"):
        bidfcl.solve_allocation(v, c.float(), [1.0, 1.0], capacity=[1, 1, 1])


# --------------------------------------------------------------------------------------------------
# the ops: compiled core against the twins, opcheck
# --------------------------------------------------------------------------------------------------


def _op_args(seed, with_groups=True):
    v, c = _rand(300, 5, 2, seed)
    el = torch.rand(300, 5, generator=torch.Generator().manual_seed(seed)) < 0.7
    el[:, 0] = True
    groups = torch.arange(300) % 3 if with_groups else None
    g = 3 if with_groups else 0
    j = 2 + 5 + 2 * g
    lam = torch.rand(j, generator=torch.Generator().manual_seed(seed + 1), dtype=F64) * 0.3
    budgets = torch.full((j,), 20.0, dtype=F64)
    budgets[2:7] = 40.0
    return v, c, el, groups, g, lam, budgets


@needs_ext
@pytest.mark.parametrize("seed", range(3))
def test_ops_match_twins_float64(seed):
    ops = torch.ops.bidfcl
    v, c, el, groups, g, lam, budgets = _op_args(seed)
    a, b = ops.allocation_policy(v, c, el, groups, g, lam), ref.allocation_policy(v, c, el, groups, g, lam)
    assert torch.equal(a[0], b[0])
    for x, y in zip(a[1:], b[1:]):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
    for j in range(lam.shape[0]):
        x = ops.allocation_line_search(v, c, el, groups, g, lam, budgets, j, True)
        y = ref.allocation_line_search(v, c, el, groups, g, lam, budgets, j, True)
        assert float(x) == float(y), j
    for tau in (1.0, 0.01):
        x = ops.allocation_smoothed(v, c, el, groups, g, lam, tau, True)
        y = ref.allocation_smoothed(v, c, el, groups, g, lam, tau, True)
        torch.testing.assert_close(x[0], y[0], rtol=1e-12, atol=0)
        torch.testing.assert_close(x[2], y[2], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(x[3], y[3], rtol=1e-6, atol=1e-6 * float(y[3].abs().max()))
    choice = a[0]
    x = ops.allocation_repair(v, c, el, groups, g, lam, budgets, choice, True, True)
    y = ref.allocation_repair(v, c, el, groups, g, lam, budgets, choice, True, True)
    assert torch.equal(x[0], y[0]) and torch.equal(x[3], y[3]) and torch.equal(x[4], y[4])
    torch.testing.assert_close(x[1], y[1], rtol=1e-12, atol=1e-12)


@needs_ext
def test_solve_matches_twin_end_to_end(monkeypatch):
    import bidfcl.allocation as A

    p = instance(7, n=150)
    compiled = solve(p)
    monkeypatch.setattr(A, "EXTENSION_LOADED", False)
    twin = solve(p)
    assert torch.equal(compiled.choice, twin.choice)
    assert math.isclose(float(compiled.dual_bound), float(twin.dual_bound), rel_tol=1e-9)


@needs_ext
@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck(dtype):
    ops = torch.ops.bidfcl
    v, c, el, groups, g, lam, budgets = _op_args(0)
    v, c = v.to(dtype), c.to(dtype)
    torch.library.opcheck(ops.allocation_policy, (v, c, el, groups, g, lam))
    torch.library.opcheck(ops.allocation_policy, (v, c, None, None, 0, lam[:7].contiguous()))
    torch.library.opcheck(ops.allocation_line_search, (v, c, el, groups, g, lam, budgets, 0, True))
    torch.library.opcheck(ops.allocation_smoothed, (v, c, el, groups, g, lam, 0.1, True))
    choice = ops.allocation_policy(v, c, el, groups, g, lam)[0]
    torch.library.opcheck(ops.allocation_repair, (v, c, el, groups, g, lam, budgets, choice, True, True))


@needs_ext
def test_ops_bad_input_name_argument_and_position():
    ops = torch.ops.bidfcl
    v, c, el, groups, g, lam, budgets = _op_args(1)
    with pytest.raises(ValueError, match=r"lam must have shape \[13\]"):
        ops.allocation_policy(v, c, el, groups, g, lam[:5])
    with pytest.raises(ValueError, match=r"groups must be in \[0, G\) = \[0, 3\), got 7 at row 2"):
        bad = groups.clone()
        bad[2] = 7
        ops.allocation_policy(v, c, el, bad, g, lam)
    with pytest.raises(ValueError, match="eligible must allow at least one option per user, got none at row 9"):
        bad = el.clone()
        bad[9] = False
        ops.allocation_policy(v, c, bad, groups, g, lam)
    with pytest.raises(ValueError, match=r"choice must be an eligible option"):
        ops.allocation_repair(v, c, el, groups, g, lam, budgets, torch.full((300,), 9), True, True)


# --------------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU)
# --------------------------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.skipif(bidfcl.EXTENSION_LOADED and not bidfcl.build_info().get("cuda", False), reason="no CUDA kernels")
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_policy_matches_cpu(dtype):
    ops = torch.ops.bidfcl
    v, c, el, groups, g, lam, budgets = _op_args(2)
    v, c = v.to(dtype), c.to(dtype)
    a = ops.allocation_policy(v, c, el, groups, g, lam)
    b = ops.allocation_policy(v.cuda(), c.cuda(), el.cuda(), groups.cuda(), g, lam.cuda())
    assert torch.equal(a[0], b[0].cpu())
    for x, y in zip(a[1:], b[1:]):
        torch.testing.assert_close(x, y.cpu(), rtol=1e-12, atol=1e-9)
    p = instance(3, n=200)
    cpu = solve(p)
    gpu = bidfcl.solve_allocation(
        p["values"].cuda(),
        p["costs"].cuda(),
        p["budgets"],
        capacity=p["capacity"],
        eligible=None if p["eligible"] is None else p["eligible"].cuda(),
        groups=None if p["groups"] is None else p["groups"].cuda(),
        group_budgets=p["group_budgets"],
    )
    assert bool(gpu.feasible.all())
    assert math.isclose(float(gpu.dual_bound), float(cpu.dual_bound), rel_tol=1e-9)


# --------------------------------------------------------------------------------------------------
# evaluation and the command line
# --------------------------------------------------------------------------------------------------


def test_policy_value_reports_spend_per_resource():
    g = torch.Generator().manual_seed(0)
    n, m = 400, 3
    treatment = torch.randint(0, m, (n,), generator=g)
    revenue = torch.rand(n, generator=g, dtype=F64)
    cost = torch.rand(2, n, generator=g, dtype=F64)
    choice = torch.randint(0, m, (n,), generator=g)
    multi = bidfcl.metrics.policy_value(choice, treatment, revenue, cost)
    assert multi.cost.shape == (2,) and multi.cost_se.shape == (2,)
    for kk in range(2):
        one = bidfcl.metrics.policy_value(choice, treatment, revenue, cost[kk])
        assert float(one.cost) == float(multi.cost[kk]) and float(one.cost_se) == float(multi.cost_se[kk])
        assert float(one.value) == float(multi.value)
    many = bidfcl.metrics.policy_value(torch.stack([choice, choice.flip(0)]), treatment, revenue, cost)
    assert many.cost.shape == (2, 2)
    with pytest.raises(ValueError, match=r"cost must be \[N\] or \[K, N\] with N = 400"):
        bidfcl.metrics.policy_value(choice, treatment, revenue, cost[:, :10])


def test_cli_allocate_with_constraints(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    import json

    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from bidfcl.cli import main

    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        "[data]\nn_rct = 400\nn_obs = 400\nn_val = 200\nn_test = 200\n[model]\nhidden = [8]\n"
        '[train]\nmethod = "tsm"\nepochs = 1\nbatch_size = 256\n[tsm]\ndata = "rct"\n[output]\n'
        f'progress = "none"\ndir = "{tmp_path / "run"}"\n'
    )
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--config", str(cfg)]) == 0
        d = bidfcl.data.make_marketing(n_rct=300, n_obs=0, n_val=0, n_test=0, seed=4)
        m = d.n_options
        cols = {f"x{j}": d.rct.x[:, j].numpy() for j in range(d.n_features)}
        rng = np.random.default_rng(0)
        for o in range(m):
            cols[f"cash{o}"] = (rng.random(300) * o).tolist()
        cols["new_user"] = (rng.random(300) < 0.5).astype(int).tolist()
        cols["city"] = [["north", "south"][i % 2] for i in range(300)]
        pq.write_table(pa.table(cols), str(tmp_path / "users.parquet"))
        rules = tmp_path / "rules.json"
        rules.write_text(json.dumps([{"option": m - 1, "where": "new_user == 1"}]))
        out = tmp_path / "plan.csv"
        argv = [
            "allocate",
            "--model",
            str(tmp_path / "run" / "model.pt"),
            "--input",
            str(tmp_path / "users.parquet"),
            "--output",
            str(out),
            "--budget",
            "0.3",
            "--extra-cost",
            "cash=40",
            "--capacity",
            "1=20",
            "--eligibility-rules",
            str(rules),
            "--group-column",
            "city",
            "--group-budget",
            "north=20",
        ]
        assert main(argv) == 0
        text = capsys.readouterr().out
        assert "budget[1]" in text and "capacity[1]" in text and "city=north" in text and "INFEASIBLE" not in text
        plan = pacsv.read_csv(str(out))
        option = np.array(plan.column("option").to_pylist())
        assert (option == 1).sum() <= 20
        assert not np.any((option == m - 1) & (np.array(cols["new_user"]) == 0))
        cash = np.array([cols[f"cash{o}"][i] for i, o in enumerate(option)])
        assert cash.sum() <= 40 * (1 + 1e-9)
        rules.write_text(json.dumps([{"option": m, "where": "new_user == 1"}]))
        assert main(argv) == 2
        assert f"option must be an integer in [0, {m})" in capsys.readouterr().err
        assert main(argv[:-6] + ["--capacity", "x=3"]) == 2
        assert "OPTION must be an integer" in capsys.readouterr().err
    finally:
        torch.set_num_threads(old)
