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

``check=False`` (exact solves): the value checks (finite values and costs, costs >= 0, budgets
finite and >= 0, treatment labels, propensities, cost_obs) are not raised but written into a small
int64 status tensor on the inputs' device, ``sol.status``, with no host read and (on CUDA) no
synchronisation, so the call can run in a training loop without per-step syncs or inside a CUDA
graph. :func:`bidfcl.raise_if_failed` (or ``sol.check()``) reads it later and raises the error the
default call would have raised, with the same message. Shape, dtype and device errors still raise
at once (they need no data). For valid input the numbers are identical to ``check=True``; after bad
input they are unspecified. Pass budgets (and propensities) as tensors on the inputs' device: a
Python list or a CPU tensor is copied to the device, which synchronises (a Python number does not:
it becomes a device fill).
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import torch

from . import _validate
from ._constants import BUDGET_SLACK  # noqa: F401  (re-exported: bidfcl.solver.BUDGET_SLACK)
from ._ops import ops
from ._validate import call_op
from .propensity import arm_propensity, row_propensity  # noqa: F401  (arm_propensity: public here before)

__all__ = ["MckpSolution", "RctSolution", "Frontier", "solve_mckp", "budget_frontier", "solve_mckp_rct"]


class _Checked:
    """``status`` and ``check()`` of a solver result (not tuple fields: unpacking is unchanged).

    ``status`` is None for a default (``check=True``) call, whose input was checked eagerly; for a
    ``check=False`` call it is the int64 status record of the lazy check, on the inputs' device.
    """

    status = None

    def check(self, *, require_feasible: bool = False):
        """:func:`bidfcl.raise_if_failed` on this result (one host read); returns the result."""
        _validate.raise_if_failed(self, require_feasible=require_feasible)
        return self


class _MckpFields(NamedTuple):
    lam: torch.Tensor  #: multiplier lam* (input dtype); +inf where infeasible
    choice: torch.Tensor  #: int64 option per individual
    spend: torch.Tensor  #: float64 total cost of ``choice``
    value: torch.Tensor  #: float64 total value of ``choice``
    dual_bound: torch.Tensor  #: float64 Lagrangian upper bound on the optimum; -inf where infeasible
    feasible: torch.Tensor  #: bool; False when the budget is below the cheapest policy's spend


class MckpSolution(_Checked, _MckpFields):
    """Result of :func:`solve_mckp`. Shapes are ``[K]`` / ``[K, N]``, or ``[]`` / ``[N]`` for one float budget.
    Fields: ``lam, choice, spend, value, dual_bound, feasible``; plus ``status`` and ``check()``
    for ``check=False`` calls (see the module docstring)."""


class _RctFields(NamedTuple):
    lam: torch.Tensor  #: multiplier lam* (input dtype); +inf where infeasible
    choice: torch.Tensor  #: int64 option per individual (from the predicted values and costs)
    spend: torch.Tensor  #: float64 IPW estimate of the per-capita spend of ``choice``
    feasible: torch.Tensor  #: bool; False when even the cheapest policy's estimate exceeds the budget


class RctSolution(_Checked, _RctFields):
    """Result of :func:`solve_mckp_rct`: ``lam, choice, spend, feasible``; plus ``status`` and
    ``check()`` for ``check=False`` calls."""


class Frontier(NamedTuple):
    """The whole budget curve from :func:`budget_frontier` (``P + 1`` points for ``P`` hull steps)."""

    lam: torch.Tensor  #: lam[0] = +inf (cheapest policy); lam[k] = breakpoint of the k-th step
    spend: torch.Tensor  #: float64 total cost after k steps (non-decreasing)
    value: torch.Tensor  #: float64 total value after k steps (non-decreasing)


def _as_tensor(x, name: str) -> torch.Tensor:
    return _validate.tensor(x, name)


def _budgets(budget, values: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Budgets as a float64 [K] tensor on values' device, and whether a scalar was given. The ops
    compare spends against ``budget * (1 + BUDGET_SLACK)`` themselves (``_reference.budget_limit``)."""
    if isinstance(budget, torch.Tensor):
        if budget.dtype == torch.bool or budget.is_complex():
            raise _validate.InputTypeError(
                f"bidfcl: budget must be a number or a 1-D real tensor, got dtype {budget.dtype}"
            )
        scalar = budget.dim() == 0
        b = budget.detach().reshape(1) if scalar else budget.detach()
        b = b.to(device=values.device, dtype=torch.float64)
    elif isinstance(budget, bool) or not isinstance(budget, numbers.Real):
        raise TypeError(f"bidfcl: budget must be a number or a 1-D tensor, got {type(budget).__name__}")
    else:  # a fill kernel, not a host-to-device copy: no synchronisation, capturable in a CUDA graph
        b, scalar = torch.full((1,), float(budget), dtype=torch.float64, device=values.device), True
    return b, scalar


def _squeeze(result, scalar: bool):
    if not scalar:
        return result
    squeezed = type(result)(*(t[0] for t in result))
    if result.status is not None:
        squeezed.status = result.status
    return squeezed


def _check_flag(check) -> bool:
    if not isinstance(check, bool):
        raise _validate.InputTypeError(f"bidfcl: check must be True or False, got {type(check).__name__} {check!r}")
    return check


def _lazily(result, status: torch.Tensor):
    result.status = status
    return result


def solve_mckp(
    values: torch.Tensor,
    costs: torch.Tensor,
    budget,
    *,
    method: str = "exact",
    max_iter: int = 50,
    tol: float = 1e-6,
    check: bool = True,
) -> MckpSolution:
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
        check: ``False`` reports bad values lazily through ``sol.status`` instead of raising, with
            no host read (see the module docstring); ``method="exact"`` only (bisection runs its
            loop on the host).

    Returns:
        :class:`MckpSolution`. With a number as budget every field drops the K dimension.
    """
    values, costs = _as_tensor(values, "values"), _as_tensor(costs, "costs")
    check = _check_flag(check)
    budgets, scalar = _budgets(budget, values)
    if not check and method != "exact":
        raise ValueError(
            f"bidfcl: check=False needs method='exact' (bisection reads the spend on the host at every "
            f"step), got method={method!r}"
        )
    if not check:
        status = call_op(ops.validate_mckp, values, costs, budgets, None, None, None)
        out = call_op(ops.solve_mckp, values, costs, budgets, False)
        return _squeeze(_lazily(MckpSolution(*out), status), scalar)
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


def solve_mckp_rct(
    values: torch.Tensor,
    costs: torch.Tensor,
    treatment: torch.Tensor,
    cost_obs: torch.Tensor,
    budget_per_capita,
    propensity=None,
    *,
    check: bool = True,
) -> RctSolution:
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
            probabilities (per-row wins when N == M); see :mod:`bidfcl.propensity`.
        check: ``False`` reports bad values (the treatment range included) lazily through
            ``sol.status`` instead of raising, with no host read (see the module docstring).
    """
    values, costs = _as_tensor(values, "values"), _as_tensor(costs, "costs")
    treatment, cost_obs = _as_tensor(treatment, "treatment"), _as_tensor(cost_obs, "cost_obs")
    if values.dim() != 2:
        raise _validate.InputError(
            f"bidfcl: values must be 2-D [N individuals, M options], got shape {list(values.shape)}"
        )
    n, m = values.shape
    check = _check_flag(check)
    treatment = _validate.treatment(treatment, n=n, m=m, length_of="individual (row of values)", check_labels=check)
    if not cost_obs.is_floating_point():
        raise _validate.InputTypeError(f"bidfcl: cost_obs must be a float tensor, got dtype {cost_obs.dtype}")
    budgets, scalar = _budgets(budget_per_capita, values)
    prop = row_propensity(propensity, treatment, num_options=m, dtype=values.dtype, device=values.device)
    cost_obs = cost_obs.to(values.dtype)
    if not check:
        status = call_op(ops.validate_mckp, values, costs, budgets, treatment, cost_obs, prop)
        out = call_op(ops.solve_mckp_rct, values, costs, treatment, cost_obs, prop, budgets, False)
        return _squeeze(_lazily(RctSolution(*out), status), scalar)
    out = call_op(ops.solve_mckp_rct, values, costs, treatment, cost_obs, prop, budgets)
    return _squeeze(RctSolution(*out), scalar)
