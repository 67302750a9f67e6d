"""Budget allocation: the multiple-choice knapsack of METHOD.md section 1, solved exactly.

    max_z  sum_ij z_ij r_ij   s.t.  sum_ij z_ij c_ij <= B,  sum_j z_ij = 1,  z binary

Per individual only the options on the upper concave hull of its (cost, value) points can ever be
chosen by a multiplier lam >= 0; the slopes between consecutive hull points ("breakpoints") are the
lam values where it switches option. The exact solver orders every step by (breakpoint descending,
individual ascending, step ascending) and takes the longest prefix whose total cost fits the budget:

* ``lam`` is the smallest multiplier whose Lagrangian policy ``argmax_j (r_ij - lam c_ij)`` fits
  (the breakpoint of the first step left out, or 0 when everything fits);
* individuals indifferent at ``lam`` are upgraded lowest index first while the budget allows;
* ties between options with equal (cost, value) go to the lowest option index; at a breakpoint
  the Lagrangian policy takes the cheaper option;
* the integer solution is within ``max_ij r_ij`` of the optimum, and
  ``dual_bound = lam B + sum_i max_j (r_ij - lam c_ij)`` is an upper bound on it.

Every solver output is piecewise constant in values and costs (it changes only where a choice
flips), so none has a useful derivative: outputs never require grad, also for inputs that do.
M is at most :data:`bidfcl.MAX_OPTIONS` (256, the compiled core's limit).
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import torch

from . import _validate
from ._ops import ops
from ._validate import call_op

__all__ = ["MckpSolution", "RctSolution", "Frontier", "solve_mckp", "budget_frontier", "solve_mckp_rct"]


class MckpSolution(NamedTuple):
    """Result of :func:`solve_mckp`. Shapes are ``[K]`` / ``[K, N]``, or ``[]`` / ``[N]`` for one float budget."""

    lam: torch.Tensor  #: multiplier lam* (input dtype); +inf where infeasible
    choice: torch.Tensor  #: int64 option per individual
    spend: torch.Tensor  #: float64 total cost of ``choice``
    value: torch.Tensor  #: float64 total value of ``choice``
    dual_bound: torch.Tensor  #: float64 Lagrangian upper bound on the optimum; -inf where infeasible
    feasible: torch.Tensor  #: bool; False when the budget is below the cheapest policy's spend


class RctSolution(NamedTuple):
    """Result of :func:`solve_mckp_rct`."""

    lam: torch.Tensor  #: multiplier lam* (input dtype); +inf where infeasible
    choice: torch.Tensor  #: int64 option per individual (from the predicted values and costs)
    spend: torch.Tensor  #: float64 IPW estimate of the per-capita spend of ``choice``
    feasible: torch.Tensor  #: bool; False when even the cheapest policy's estimate exceeds the budget


class Frontier(NamedTuple):
    """The whole budget curve from :func:`budget_frontier` (``P + 1`` points for ``P`` hull steps)."""

    lam: torch.Tensor  #: lam[0] = +inf (cheapest policy); lam[k] = breakpoint of the k-th step
    spend: torch.Tensor  #: float64 total cost after k steps (non-decreasing)
    value: torch.Tensor  #: float64 total value after k steps (non-decreasing)


def _as_tensor(x, name: str) -> torch.Tensor:
    return _validate.tensor(x, name)


#: Budgets are compared with this relative slack. Totals over millions of rows are float64 sums
#: whose last bits depend on the summation order (CPU chunks, GPU trees, the caller's own
#: ``torch.sum``); a budget computed as exactly the spend of a policy must admit that policy. The
#: returned spend can therefore exceed the budget by at most ~1e-12 of it.
BUDGET_SLACK = 2.0**-40


def _budgets(budget, values: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Budgets as a float64 [K] tensor on values' device (with the slack), and whether a scalar was given."""
    if isinstance(budget, torch.Tensor):
        if budget.dtype == torch.bool or budget.is_complex():
            raise _validate.InputTypeError(f"bidfcl: budget must be a number or a 1-D real tensor, got dtype {budget.dtype}")
        scalar = budget.dim() == 0
        b = budget.detach().reshape(1) if scalar else budget.detach()
        b = b.to(device=values.device, dtype=torch.float64)
    elif isinstance(budget, bool) or not isinstance(budget, numbers.Real):
        raise TypeError(f"bidfcl: budget must be a number or a 1-D tensor, got {type(budget).__name__}")
    else:
        b, scalar = torch.tensor([float(budget)], dtype=torch.float64, device=values.device), True
    return b * (1.0 + BUDGET_SLACK), scalar


def _squeeze(result, scalar: bool):
    if not scalar:
        return result
    return type(result)(*(t[0] for t in result))


def solve_mckp(values: torch.Tensor, costs: torch.Tensor, budget, *, method: str = "exact",
               max_iter: int = 50, tol: float = 1e-6) -> MckpSolution:
    """Solve ``max sum r[i, choice_i]  s.t.  sum c[i, choice_i] <= budget`` for one or many budgets.

    Args:
        values: ``[N, M]`` float32/float64 revenue of giving option j to individual i (any sign),
            ``1 <= M <= bidfcl.MAX_OPTIONS``.
        costs: ``[N, M]`` same dtype and device, finite and non-negative.
        budget: a number, or a ``[K]`` tensor of total budgets solved together (the per-individual
            work is shared).
        method: ``"exact"`` (breakpoint selection, no tolerance) or ``"bisection"`` (the paper's
            Alg. 2 on lam, kept for comparison: ``max_iter`` halvings or until ``hi - lo <= tol * hi``;
            no tie upgrades).

    Returns:
        :class:`MckpSolution`. With a number as budget every field drops the K dimension.
    """
    values, costs = _as_tensor(values, "values"), _as_tensor(costs, "costs")
    budgets, scalar = _budgets(budget, values)
    if method == "exact":
        out = call_op(ops.solve_mckp, values, costs, budgets)
    elif method == "bisection":
        max_iter = _validate.integer(max_iter, "max_iter", lo=0)
        tol = _validate.number(tol, "tol", nonnegative=True)
        out = call_op(ops.solve_mckp_bisection, values, costs, budgets, max_iter, tol)
    else:
        raise ValueError(f"bidfcl: method must be 'exact' or 'bisection', got {method!r}")
    return _squeeze(MckpSolution(*out), scalar)


def budget_frontier(values: torch.Tensor, costs: torch.Tensor) -> Frontier:
    """Spend, value and lam at every breakpoint: the whole budget curve, from one sort.

    Point 0 is the cheapest policy (every individual at its cheapest hull option); point k applies
    the first k steps of the order (breakpoint desc, individual asc, step asc). ``solve_mckp`` at a
    budget B returns exactly the last point whose spend is ``<= B``.
    """
    values, costs = _as_tensor(values, "values"), _as_tensor(costs, "costs")
    return Frontier(*call_op(ops.budget_frontier, values, costs))


def arm_propensity(treatment: torch.Tensor, num_options: int, dtype: torch.dtype) -> torch.Tensor:
    """Per-row propensity ``p_{t_i} = N_{t_i} / N`` from the arm shares of ``treatment``."""
    n = treatment.shape[0]
    safe = treatment.clamp(0, max(num_options - 1, 0))  # out-of-range labels are reported by the op
    counts = torch.zeros(num_options, dtype=dtype, device=treatment.device)
    counts = counts.index_add(0, safe, torch.ones(n, dtype=dtype, device=treatment.device))
    return (counts / max(n, 1))[safe]


def _row_propensity(propensity, treatment: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    n, m = values.shape
    if propensity is None:
        return arm_propensity(treatment, m, values.dtype)
    if isinstance(propensity, (list, tuple)):
        propensity = torch.tensor(propensity, dtype=values.dtype, device=values.device)
    propensity = _as_tensor(propensity, "propensity")
    if not propensity.is_floating_point():
        raise _validate.InputTypeError(f"bidfcl: propensity must be a float tensor of probabilities, got dtype {propensity.dtype}")
    if propensity.dim() == 1 and propensity.shape[0] == n:
        return propensity.to(values.dtype)
    if propensity.dim() == 1 and propensity.shape[0] == m:
        return propensity.to(device=values.device, dtype=values.dtype)[treatment.clamp(0, m - 1)]
    raise ValueError(
        f"bidfcl: propensity must be None, per-row [N={n}] or per-arm [M={m}], got shape {list(propensity.shape)}"
    )


def solve_mckp_rct(values: torch.Tensor, costs: torch.Tensor, treatment: torch.Tensor, cost_obs: torch.Tensor,
                   budget_per_capita, propensity=None) -> RctSolution:
    """RCT-calibrated allocation (the paper's Alg. 2 as used for training and evaluation), exact.

    Choices come from the predicted ``values``/``costs``; the spend of a policy is estimated from the
    randomised data by inverse propensity weighting,

        spend(lam) = (1/N) sum_i 1[choice_i(lam) = t_i] * cost_obs_i / p_{t_i},

    which is piecewise constant in lam and changes only at the hull breakpoints. Walking the step
    order from the cheapest policy, lam* is the breakpoint of the first step that pushes the
    estimate over ``budget_per_capita`` (the first crossing; 0 if none does).

    Args:
        treatment: integer ``[N]`` randomised arm of each row, in ``[0, M)`` (checked first: dtype,
            shape and range, naming the first bad row).
        cost_obs: ``[N]`` observed cost of each row under its arm.
        budget_per_capita: a number or a ``[K]`` tensor.
        propensity: None (arm shares of ``treatment``), per-row ``[N]`` or per-arm ``[M]``
            probabilities (per-row wins when N == M).
    """
    values, costs = _as_tensor(values, "values"), _as_tensor(costs, "costs")
    treatment, cost_obs = _as_tensor(treatment, "treatment"), _as_tensor(cost_obs, "cost_obs")
    if values.dim() != 2:
        raise _validate.InputError(f"bidfcl: values must be 2-D [N individuals, M options], got shape "
                                   f"{list(values.shape)}")
    n, m = values.shape
    treatment = _validate.treatment(treatment, n=n, m=m, length_of="individual (row of values)")
    if not cost_obs.is_floating_point():
        raise _validate.InputTypeError(f"bidfcl: cost_obs must be a float tensor, got dtype {cost_obs.dtype}")
    budgets, scalar = _budgets(budget_per_capita, values)
    prop = _row_propensity(propensity, treatment, values)
    out = call_op(ops.solve_mckp_rct, values, costs, treatment, cost_obs.to(values.dtype), prop, budgets)
    return _squeeze(RctSolution(*out), scalar)
