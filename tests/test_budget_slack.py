"""The budget slack lives in the ops and the twins: a raw op call, a twin call and the wrapper agree.

Spends are compared against ``budget * (1 + BUDGET_SLACK)``. A budget a hair below a frontier point
(well inside the slack) must admit that point whether the caller goes through ``bidfcl.solve_mckp``,
``torch.ops.bidfcl.solve_mckp`` or the pure-PyTorch twin, with no slack added by hand.
"""

import pytest
import torch

import bidfcl
from bidfcl import _reference as ref
from bidfcl._ops import EXTENSION_LOADED, ops

F64 = torch.float64

BACKENDS = [pytest.param(ref, id="twin")]
if EXTENSION_LOADED:
    BACKENDS.append(pytest.param(torch.ops.bidfcl, id="op"))


def _problem(n=300, m=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(n, m, generator=g, dtype=F64).to(dtype)
    costs = torch.rand(n, m, generator=g, dtype=F64).to(dtype)
    return values, costs


def _same(wrapped, raw):
    """Choices, lam and feasibility exactly; the float64 totals to rounding (the twin sums in
    another order than the compiled core)."""
    assert len(wrapped) == len(raw)
    for field, a, b in zip(wrapped._fields, wrapped, raw):
        if field in ("spend", "value", "dual_bound"):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-9, msg=field)
        else:
            assert torch.equal(a, b), field


def _points(spend: torch.Tensor) -> list[int]:
    return [spend.numel() // 5, spend.numel() // 2, (4 * spend.numel()) // 5]


def _budgets_on_points(spend: torch.Tensor) -> list[float]:
    """Budgets just below some frontier points: inside the slack (2^-40), far outside rounding."""
    return [float(spend[k]) * (1 - 2.0**-42) for k in _points(spend)]


def test_slack_constant_matches_the_compiled_ops():
    assert bidfcl.solver.BUDGET_SLACK == ref.BUDGET_SLACK == 2.0**-40
    assert ref.budget_limit(1.0) == 1.0 + 2.0**-40
    assert torch.equal(ref.budget_limit(torch.tensor([2.0], dtype=F64)), torch.tensor([2.0 + 2.0**-39], dtype=F64))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_raw_call_at_a_frontier_point_agrees_with_solve_mckp(backend, dtype):
    values, costs = _problem(dtype=dtype)
    fr = bidfcl.budget_frontier(values, costs)
    budgets = _budgets_on_points(fr.spend)
    wrapped = bidfcl.solve_mckp(values, costs, torch.tensor(budgets, dtype=F64))
    raw = backend.solve_mckp(values, costs, torch.tensor(budgets, dtype=F64), True)
    _same(wrapped, raw)
    # the point is admitted although the budget is below its spend: the slack did it, in the op
    for q, (b, k) in enumerate(zip(budgets, _points(fr.spend))):
        spend = float(raw[2][q])
        assert b < spend <= ref.budget_limit(b)
        assert abs(spend - float(fr.spend[k])) <= 1e-13 * spend  # that point (summed in another order)


@pytest.mark.parametrize("backend", BACKENDS)
def test_raw_rct_and_bisection_calls_agree_with_the_wrappers(backend):
    values, costs = _problem(n=200, m=3)
    g = torch.Generator().manual_seed(1)
    treatment = torch.randint(0, 3, (200,), generator=g)
    cost_obs = torch.rand(200, generator=g, dtype=F64)
    prop = torch.full((200,), 1 / 3, dtype=F64)
    rct = bidfcl.solve_mckp_rct(values, costs, treatment, cost_obs, torch.tensor([0.2, 0.3], dtype=F64), prop)
    raw = backend.solve_mckp_rct(values, costs, treatment, cost_obs, prop, torch.tensor([0.2, 0.3], dtype=F64), True)
    _same(rct, raw)
    budgets = torch.tensor(_budgets_on_points(bidfcl.budget_frontier(values, costs).spend), dtype=F64)
    bis = bidfcl.solve_mckp(values, costs, budgets, method="bisection", max_iter=40, tol=1e-9)
    raw = backend.solve_mckp_bisection(values, costs, budgets, 40, 1e-9)
    _same(bis, raw)


@pytest.mark.skipif(not EXTENSION_LOADED, reason="compares the compiled op with its twin")
def test_lazy_path_applies_the_same_slack():
    values, costs = _problem()
    budgets = torch.tensor(_budgets_on_points(bidfcl.budget_frontier(values, costs).spend), dtype=F64)
    lazy = bidfcl.solve_mckp(values, costs, budgets, check=False)
    eager = ops.solve_mckp(values, costs, budgets, True)
    twin = ref.solve_mckp(values, costs, budgets, False)
    for field, a, b in zip(lazy._fields, lazy, eager):
        assert torch.equal(a, b), field  # the same compiled core: bit for bit
    _same(lazy, twin)
    lazy.check()
