"""Pure-PyTorch twins of every bidfcl operator.

Each function here has the same signature and returns the same tensors as ``torch.ops.bidfcl.<name>``.
They are the test oracle for the compiled kernels and the fallback when the package runs with
``BIDFCL_NO_EXTENSION=1``. They favour clarity over speed, but stay vectorised over individuals so
that they are usable on real sizes.

Conventions (shared with the compiled ops, see ``cpp/core/include/bidfcl/core/mckp.h``):

* The hull of individual i is the upper concave hull of its points ``(c[i, j], r[i, j])``, cheapest
  first, built by a monotone chain over options sorted by (cost asc, value desc, index asc); an
  option is kept only if it is worth strictly more than the last hull point, and the chain pops only
  on a strictly convex turn, so collinear points stay.
* Step s of individual i moves it from hull point s-1 to s; its breakpoint is
  ``bp = (r[h_s] - r[h_{s-1}]) / (c[h_s] - c[h_{s-1}])`` computed in the input dtype.
* The global order of steps is (bp descending, individual ascending, step ascending). The exact
  solver takes the longest prefix of that order whose total cost fits the budget; lam* is the
  breakpoint of the first step left out (0 when all fit).
"""

from __future__ import annotations

import heapq
import math

import torch

from ._constants import (
    AUCC_MIN_COST_GAP,
    BUDGET_SLACK,
    CODE_BAD_PROPENSITY,
    CODE_BAD_TREATMENT,
    CODE_NEGATIVE_BUDGET,
    CODE_NEGATIVE_COST,
    CODE_NON_FINITE_BUDGET,
    CODE_NON_FINITE_COST,
    CODE_NON_FINITE_INPUT,
    CODE_NON_FINITE_VALUE,
    FAMILY_DECISION,
    FAMILY_RCT,
    FAMILY_SOLVE,
    INPUT_COST,
    INPUT_LAM,
    INPUT_NONE,
    INPUT_REVENUE,
    MAX_LOSS_OPTIONS,
    MAX_OPTIONS,
    PIFD_ZERO_GAP_FLOOR,
    STATUS_CODE,
    STATUS_COL,
    STATUS_FAMILY,
    STATUS_INPUT,
    STATUS_LEN,
    STATUS_ROW,
    STATUS_VALUE,
)
from ._validate import InputError

_F64 = torch.float64

# MAX_OPTIONS (the solver's option limit, core kMaxOptions) and MAX_LOSS_OPTIONS (the losses', core
# kMaxLossOptions) come from _constants; :data:`bidfcl.MAX_OPTIONS` is the one the package checks.

#: Ops without a derivative: the solver's outputs (choices, lam, totals at a choice) are piecewise
#: constant in values and costs, and the metrics are evaluation estimates of a fixed policy. Their
#: outputs never require grad (here: computed under no_grad; compiled: an Autograd fallthrough).
NON_DIFFERENTIABLE_OPS: list = []


def _no_derivative(fn):
    NON_DIFFERENTIABLE_OPS.append(fn.__name__)
    return torch.no_grad()(fn)


# --------------------------------------------------------------------------------------------------
# input checks (the same rules as cpp/torch/checks.h, so the twins reject what the ops reject)
# --------------------------------------------------------------------------------------------------


def _check_matrix_pair(a: torch.Tensor, b: torch.Tensor, na: str, nb: str) -> None:
    """Two [N, M] float tensors of one dtype, device and shape (checks.h: check_problem)."""
    for name, t in ((na, a), (nb, b)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"bidfcl: {name} must be a tensor, got {type(t).__name__}")
        if t.dtype not in (torch.float32, torch.float64):
            raise InputError(f"bidfcl: {name} must be float32 or float64, got {t.dtype}")
        if t.dim() != 2:
            raise InputError(f"bidfcl: {name} must be 2-D [N individuals, M options], got shape {list(t.shape)}")
    if a.dtype != b.dtype:
        raise InputError(f"bidfcl: {na} and {nb} must have the same dtype, got {a.dtype} and {b.dtype}")
    if a.device != b.device:
        raise InputError(f"bidfcl: {na} and {nb} must be on the same device, got {a.device} and {b.device}")
    if a.shape != b.shape:
        raise InputError(f"bidfcl: {na} and {nb} must have the same shape, got {list(a.shape)} and {list(b.shape)}")


def _check_problem(values: torch.Tensor, costs: torch.Tensor, check_values: bool = True) -> None:
    _check_matrix_pair(values, costs, "values", "costs")
    if values.shape[1] < 1:
        raise InputError(f"bidfcl: values must have at least one option (M >= 1), got shape {list(values.shape)}")
    if values.shape[0] < 1:
        raise InputError(f"bidfcl: values must hold at least one individual (N >= 1), got shape {list(values.shape)}")
    if values.shape[1] > MAX_OPTIONS:
        raise InputError(f"bidfcl: at most {MAX_OPTIONS} options are supported, got M = {values.shape[1]}")
    if not check_values:
        return
    _first_bad(~torch.isfinite(values), values, "values must be finite")
    _first_bad(~torch.isfinite(costs), costs, "costs must be finite")
    _first_bad(costs < 0, costs, "costs must be >= 0")


def _first_bad(mask: torch.Tensor, t: torch.Tensor, what: str) -> None:
    if bool(mask.any()):
        pos = torch.nonzero(mask)[0].tolist()
        val = t[tuple(pos)].item()
        raise InputError(f"bidfcl: {what}, got {val:g} at {pos}")


def budget_limit(budget):
    """What a spend is compared against for ``budget`` (a float or a float64 tensor): ``budget * (1 + BUDGET_SLACK)``."""
    return budget * (1.0 + BUDGET_SLACK)


def _check_budgets(values: torch.Tensor, budgets: torch.Tensor, what: str, check_values: bool = True) -> None:
    if budgets.dtype != _F64:
        raise InputError(f"bidfcl: budgets must be float64, got {budgets.dtype}")
    if budgets.dim() != 1:
        raise InputError(f"bidfcl: budgets must be 1-D [K] ({what}), got shape {list(budgets.shape)}")
    if budgets.shape[0] < 1:
        raise InputError(f"bidfcl: budgets must hold at least one budget, got shape {list(budgets.shape)}")
    if budgets.device != values.device:
        raise InputError(
            f"bidfcl: values and budgets must be on the same device, got {values.device} and {budgets.device}"
        )
    if not check_values:
        return
    for k, b in enumerate(budgets.tolist()):
        if b != b or b in (float("inf"), float("-inf")):
            raise InputError(f"bidfcl: budgets must be finite, got {b:g} at index {k}")
        if b < 0:
            raise InputError(f"bidfcl: budgets must be >= 0 ({what}), got {b:g} at index {k}")


# --------------------------------------------------------------------------------------------------
# hulls and the global step order
# --------------------------------------------------------------------------------------------------


def _slope(r: torch.Tensor, c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(r[b] - r[a]) / (c[b] - c[a]) per row, with a, b option indices of shape [N, ...]."""
    ra, rb = r.gather(1, a), r.gather(1, b)
    ca, cb = c.gather(1, a), c.gather(1, b)
    return (rb - ra) / (cb - ca)


def hulls(values: torch.Tensor, costs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper concave hull of every row: option indices ``[N, M]`` (cheapest first) and lengths ``[N]``."""
    n, m = values.shape
    dev = values.device
    # sort by (cost asc, value desc, index asc) with two stable sorts
    o1 = torch.argsort(-values, dim=1, stable=True)
    o2 = torch.argsort(costs.gather(1, o1), dim=1, stable=True)
    order = o1.gather(1, o2)
    rows = torch.arange(n, device=dev)
    hull = torch.zeros((n, m), dtype=torch.long, device=dev)
    length = torch.zeros(n, dtype=torch.long, device=dev)
    for x in range(m):
        j = order[:, x : x + 1]
        last = hull.gather(1, (length - 1).clamp(min=0).unsqueeze(1))
        keep = (length == 0) | (values.gather(1, j) > values.gather(1, last)).squeeze(1)
        while True:
            a = hull.gather(1, (length - 2).clamp(min=0).unsqueeze(1))
            b = hull.gather(1, (length - 1).clamp(min=0).unsqueeze(1))
            convex = (_slope(values, costs, a, b) < _slope(values, costs, b, j)).squeeze(1)
            pop = keep & (length >= 2) & convex
            if not bool(pop.any()):
                break
            length = length - pop.long()
        pos = length.clamp(max=m - 1)
        hull[rows[keep], pos[keep]] = j.squeeze(1)[keep]
        length = length + keep.long()
    return hull, length


class _Steps:
    """All hull steps of all rows, in the global order (bp desc, individual asc, step asc)."""

    def __init__(self, values: torch.Tensor, costs: torch.Tensor):
        n, m = values.shape
        self.values, self.costs = values, costs
        self.hull, self.length = hulls(values, costs)
        h = self.hull
        if m > 1:
            a, b = h[:, :-1], h[:, 1:]
            bp = _slope(values, costs, a, b)  # [N, M-1], step s at column s-1
            dc = costs.gather(1, b).to(_F64) - costs.gather(1, a).to(_F64)
            dv = values.gather(1, b).to(_F64) - values.gather(1, a).to(_F64)
            valid = torch.arange(1, m, device=values.device).unsqueeze(0) < self.length.unsqueeze(1)
        else:
            bp = values.new_zeros((n, 0))
            dc = dv = values.new_zeros((n, 0), dtype=_F64)
            valid = torch.zeros((n, 0), dtype=torch.bool, device=values.device)
        self.bp_grid, self.valid = bp, valid
        flat_valid = valid.reshape(-1)
        ids = torch.nonzero(flat_valid).squeeze(1)  # row-major: (individual, step) ascending
        bp_flat = bp.reshape(-1)[ids]
        perm = torch.argsort(bp_flat, descending=True, stable=True)
        self.ids = ids[perm]  # flat index into the [N, M-1] grid
        self.bp = bp_flat[perm]
        self.dc = dc.reshape(-1)[self.ids]
        self.dv = dv.reshape(-1)[self.ids]
        self.individual = self.ids // max(m - 1, 1)
        self.step = self.ids % max(m - 1, 1) + 1
        # rank of each valid step in the order, on the [N, M-1] grid (P for invalid cells)
        rank = torch.full((n * max(m - 1, 0),), self.ids.numel(), dtype=torch.long, device=values.device)
        rank[self.ids] = torch.arange(self.ids.numel(), device=values.device)
        self.rank = rank.reshape(n, max(m - 1, 0))
        first = h[:, :1]
        self.base_spend = costs.gather(1, first).to(_F64).sum()
        self.base_value = values.gather(1, first).to(_F64).sum()

    def choice_after(self, taken_prefix: int) -> torch.Tensor:
        """Option per individual once the first ``taken_prefix`` steps of the order are applied."""
        taken = (self.rank < taken_prefix).sum(dim=1)
        return self.hull.gather(1, taken.unsqueeze(1)).squeeze(1)

    def lagrangian(self, lam: torch.Tensor) -> torch.Tensor:
        """sum_i max_j (r_ij - lam c_ij), evaluated at the hull point where bp > lam stops."""
        above = ((self.bp_grid > lam) & self.valid).sum(dim=1)
        j = self.hull.gather(1, above.unsqueeze(1))
        r = self.values.gather(1, j).to(_F64)
        c = self.costs.gather(1, j).to(_F64)
        return (r - lam.to(_F64) * c).sum()


def _totals(values: torch.Tensor, costs: torch.Tensor, choice: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    j = choice.unsqueeze(1)
    return costs.gather(1, j).to(_F64).sum(), values.gather(1, j).to(_F64).sum()


# --------------------------------------------------------------------------------------------------
# solver twins
# --------------------------------------------------------------------------------------------------


@_no_derivative
def solve_mckp(values: torch.Tensor, costs: torch.Tensor, budgets: torch.Tensor, check: bool = True):
    """Twin of ``bidfcl::solve_mckp``: the longest prefix of the step order that fits each budget.
    ``check=False``: bad input is not raised (:func:`validate_mckp` reports it); outputs are zeros then."""
    if not check and _failed(validate_mckp(values, costs, budgets, None, None, None)):
        return _zero_solution(values, budgets, 6)
    _check_problem(values, costs)
    _check_budgets(values, budgets, "total budgets")
    budgets = budget_limit(budgets)
    steps = _Steps(values, costs)
    cum = steps.base_spend + torch.cumsum(steps.dc, 0)  # spend after each step
    k, n = budgets.shape[0], values.shape[0]
    lam = values.new_empty(k)
    choice = torch.empty((k, n), dtype=torch.long, device=values.device)
    spend = values.new_empty(k, dtype=_F64)
    value = values.new_empty(k, dtype=_F64)
    dual = values.new_empty(k, dtype=_F64)
    feasible = torch.empty(k, dtype=torch.bool, device=values.device)
    for kk, b in enumerate(budgets.tolist()):
        if float(steps.base_spend) > b:
            choice[kk] = steps.choice_after(0)
            lam[kk] = float("inf")
            dual[kk] = float("-inf")
            feasible[kk] = False
        else:
            over = torch.nonzero(cum > b)
            e = int(over[0]) if over.numel() else steps.bp.numel()
            lam_k = steps.bp[e] if e < steps.bp.numel() else values.new_zeros(())
            choice[kk] = steps.choice_after(e)
            lam[kk] = lam_k
            dual[kk] = lam_k.to(_F64) * b + steps.lagrangian(lam_k)
            feasible[kk] = True
        spend[kk], value[kk] = _totals(values, costs, choice[kk])
    return lam, choice, spend, value, dual, feasible


@_no_derivative
def budget_frontier(values: torch.Tensor, costs: torch.Tensor):
    """Twin of ``bidfcl::budget_frontier``: (lam, spend, value) after each prefix of the step order."""
    _check_problem(values, costs)
    steps = _Steps(values, costs)
    inf = values.new_full((1,), float("inf"))
    lam = torch.cat([inf, steps.bp])
    spend = torch.cat([steps.base_spend.reshape(1), steps.base_spend + torch.cumsum(steps.dc, 0)])
    value = torch.cat([steps.base_value.reshape(1), steps.base_value + torch.cumsum(steps.dv, 0)])
    return lam, spend, value


def _policy_at(values: torch.Tensor, costs: torch.Tensor, lam: torch.Tensor):
    """argmax_j (r - lam c), ties to the lowest index; and sum of the max scores (float64)."""
    scores = values - lam * costs
    best, choice = scores.max(dim=1)  # max returns the first maximal index
    return choice, best.to(_F64).sum()


@_no_derivative
def solve_mckp_bisection(values: torch.Tensor, costs: torch.Tensor, budgets: torch.Tensor, max_iter: int, tol: float):
    """Twin of ``bidfcl::solve_mckp_bisection``: the paper's bisection on lam (eager, one pass per step).

    Bracket [0, max r/c] (doubled until the policy fits), then halve until ``hi - lo <= tol * hi`` or
    ``max_iter`` steps; returns the feasible end ``hi``. No tie upgrades.
    """
    _check_problem(values, costs)
    _check_budgets(values, budgets, "total budgets")
    if max_iter < 0:
        raise InputError(f"bidfcl: max_iter must be >= 0, got {max_iter}")
    if not (tol >= 0 and tol != float("inf")):
        raise InputError(f"bidfcl: tol must be finite and >= 0, got {tol}")
    budgets = budget_limit(budgets)
    dt = values.dtype
    pos = (costs > 0) & (values > 0)
    ratio = torch.where(pos, values / torch.where(pos, costs, torch.ones_like(costs)), torch.zeros_like(values))
    ratio_max = ratio.max()
    if not bool(ratio_max > 0):
        ratio_max = torch.ones((), dtype=dt, device=values.device)

    def spend_at(lam):
        choice, _ = _policy_at(values, costs, lam)
        return float(costs.gather(1, choice.unsqueeze(1)).to(_F64).sum())

    k, n = budgets.shape[0], values.shape[0]
    lam_out = values.new_empty(k)
    choice_out = torch.empty((k, n), dtype=torch.long, device=values.device)
    spend = values.new_empty(k, dtype=_F64)
    value = values.new_empty(k, dtype=_F64)
    dual = values.new_empty(k, dtype=_F64)
    feasible = torch.empty(k, dtype=torch.bool, device=values.device)
    zero = torch.zeros((), dtype=dt, device=values.device)
    for kk, b in enumerate(budgets.tolist()):
        lo, hi, ok = zero, ratio_max.clone(), True
        if spend_at(zero) <= b:
            hi = zero
        else:
            doublings = 0
            while spend_at(hi) > b:
                lo, hi = hi, hi * 2
                doublings += 1
                if doublings > 64 or not bool(torch.isfinite(hi)):
                    ok = False
                    break
            it = 0
            while ok and it < max_iter and bool((hi - lo) > tol * hi):
                mid = lo + (hi - lo) / 2
                if spend_at(mid) <= b:
                    hi = mid
                else:
                    lo = mid
                it += 1
        if not ok:
            hi = lo
        choice, lagr = _policy_at(values, costs, hi)
        choice_out[kk] = choice
        spend[kk], value[kk] = _totals(values, costs, choice)
        lam_out[kk] = hi if ok else float("inf")
        feasible[kk] = ok and float(spend[kk]) <= b
        dual[kk] = hi.to(_F64) * b + lagr if ok else float("-inf")
    return lam_out, choice_out, spend, value, dual, feasible


@_no_derivative
def solve_mckp_rct(values, costs, treatment, cost_obs, propensity, budgets, check: bool = True):
    """Twin of ``bidfcl::solve_mckp_rct``: the first crossing of the IPW spend estimate.

    ``spend(prefix) = (1/N) sum_i 1[choice_i = t_i] cost_obs_i / p_i``, walked along the step order
    from the cheapest policy; lam* is the breakpoint of the first step that pushes the estimate over
    the per-capita budget (0 when none does). ``check=False`` as in :func:`solve_mckp`.
    """
    if not check and _failed(validate_mckp(values, costs, budgets, treatment, cost_obs, propensity)):
        return _zero_solution(values, budgets, 4)
    _check_problem(values, costs)
    n, m = values.shape
    _check_rct_inputs(values, treatment, cost_obs, propensity)
    _check_budgets(values, budgets, "per-capita budgets")
    budgets = budget_limit(budgets)
    steps = _Steps(values, costs)
    w = cost_obs.to(_F64) / propensity.to(_F64) * (1.0 / n)
    t = treatment
    h = steps.hull
    base = (w * (h[:, 0] == t)).sum()
    if m > 1:
        ind, st = steps.individual, steps.step
        after = h[ind, st] == t[ind]
        before = h[ind, st - 1] == t[ind]
        delta = w[ind] * (after.to(_F64) - before.to(_F64))
    else:
        delta = w.new_zeros(0)
    cum = base + torch.cumsum(delta, 0)
    cummax = torch.cummax(cum, 0).values if cum.numel() else cum
    k = budgets.shape[0]
    lam = values.new_empty(k)
    choice = torch.empty((k, n), dtype=torch.long, device=values.device)
    spend = values.new_empty(k, dtype=_F64)
    feasible = torch.empty(k, dtype=torch.bool, device=values.device)
    for kk, b in enumerate(budgets.tolist()):
        if float(base) > b:
            lam[kk], choice[kk], spend[kk], feasible[kk] = float("inf"), steps.choice_after(0), base, False
            continue
        over = torch.nonzero(cummax > b)
        e = int(over[0]) if over.numel() else steps.bp.numel()
        lam[kk] = steps.bp[e] if e < steps.bp.numel() else 0.0
        choice[kk] = steps.choice_after(e)
        spend[kk] = cum[e - 1] if e > 0 else base
        feasible[kk] = True
    return lam, choice, spend, feasible


# --------------------------------------------------------------------------------------------------
# lazy checks (check=False): status records in the twins' own check order
# --------------------------------------------------------------------------------------------------


def _bits(v: float) -> int:
    """The int64 bit pattern of a float64 (the record's value slot)."""
    return int(torch.tensor([float(v)], dtype=_F64).view(torch.int64)[0])


def _record(device, family: int, found=None) -> torch.Tensor:
    """A status record (layout: _constants.STATUS_*): ``found`` is None (ok) or (code, row, col,
    value slot[, input])."""
    record = [-1] * STATUS_LEN  # every location and the input: none
    record[STATUS_CODE], record[STATUS_VALUE], record[STATUS_FAMILY] = 0, 0, family
    if found is not None:
        code, row, col, value, *which = found
        record[STATUS_CODE], record[STATUS_ROW], record[STATUS_COL], record[STATUS_VALUE] = code, row, col, value
        record[STATUS_INPUT] = which[0] if which else INPUT_NONE
    return torch.tensor(record, dtype=torch.long, device=device)


def _first_in(mask: torch.Tensor, t: torch.Tensor, code: int, col=None, which: int = INPUT_NONE):
    """(code, row, col, bits, input) of the first True of ``mask`` (row-major), or None. ``col`` None:
    the column of a 2-D mask (else -1); an int: that column. ``which``: the input (INPUT_*) of a
    non-finite-input record."""
    if mask.numel() == 0 or not bool(mask.any()):
        return None
    pos = torch.nonzero(mask)[0].tolist()
    c = (pos[1] if len(pos) > 1 else -1) if col is None else col
    return code, pos[0], c, _bits(t[tuple(pos)].item()), which


def _first_found(*thunks):
    for thunk in thunks:
        found = thunk()
        if found is not None:
            return found
    return None


def _bad_labels(treatment: torch.Tensor, m: int):
    bad = (treatment < 0) | (treatment >= m)
    if not bool(bad.any()):
        return None
    i = int(torch.nonzero(bad)[0])
    return CODE_BAD_TREATMENT, i, m, int(treatment[i])


def _bad_budgets(budgets: torch.Tensor):
    for k, b in enumerate(budgets.tolist()):
        if b != b or b in (float("inf"), float("-inf")):
            return CODE_NON_FINITE_BUDGET, k, -1, _bits(b)
        if b < 0:
            return CODE_NEGATIVE_BUDGET, k, -1, _bits(b)
    return None


def _failed(status: torch.Tensor) -> bool:
    return int(status[0]) != 0


def _zero_solution(values: torch.Tensor, budgets: torch.Tensor, fields: int):
    """The outputs of a check=False solve whose input failed its check: zeros (feasible False)."""
    k, n = budgets.shape[0], values.shape[0]
    lam, choice = values.new_zeros(k), torch.zeros((k, n), dtype=torch.long, device=values.device)
    totals = [values.new_zeros(k, dtype=_F64) for _ in range(fields - 3)]
    return (lam, choice, *totals, torch.zeros(k, dtype=torch.bool, device=values.device))


@_no_derivative
def validate_mckp(values, costs, budgets, treatment, cost_obs, propensity):
    """Twin of ``bidfcl::validate_mckp``: the first error the twin solver (and the wrapper's
    treatment check) would raise, as a status record; metadata errors raise at once."""
    _check_problem(values, costs, check_values=False)
    rct = treatment is not None
    if rct:
        _check_rct_inputs(values, treatment, cost_obs, propensity, check_values=False)
    _check_budgets(values, budgets, "per-capita budgets" if rct else "total budgets", check_values=False)
    m = values.shape[1]
    cells = (
        lambda: _first_in(~torch.isfinite(values), values, CODE_NON_FINITE_VALUE),
        lambda: _first_in(~torch.isfinite(costs), costs, CODE_NON_FINITE_COST),
        lambda: _first_in(costs < 0, costs, CODE_NEGATIVE_COST),
    )
    if rct:
        found = _first_found(
            lambda: _bad_labels(treatment, m),
            *cells,
            lambda: _first_in(~((propensity > 0) & (propensity <= 1)), propensity, CODE_BAD_PROPENSITY, -1),
            lambda: _first_in(~torch.isfinite(cost_obs), cost_obs, CODE_NON_FINITE_INPUT, -1),
            lambda: _bad_budgets(budgets),
        )
    else:
        found = _first_found(*cells, lambda: _bad_budgets(budgets))
    return _record(values.device, FAMILY_RCT if rct else FAMILY_SOLVE, found)


@_no_derivative
def validate_decision(r_hat, c_hat, treatment, revenue, cost, lam, propensity):
    """Twin of ``bidfcl::validate_decision``: the first error the twin losses (and the wrapper's
    treatment check) would raise, as a status record; metadata errors raise at once."""
    _check_decision(r_hat, c_hat, treatment, revenue, cost, lam, propensity, check_values=False)
    found = _first_found(
        lambda: _bad_labels(treatment, r_hat.shape[1]),
        lambda: _first_in(~torch.isfinite(lam), lam, CODE_NON_FINITE_INPUT, -1, INPUT_LAM),
        lambda: _first_in(~torch.isfinite(r_hat), r_hat, CODE_NON_FINITE_VALUE),
        lambda: _first_in(~torch.isfinite(c_hat), c_hat, CODE_NON_FINITE_COST),
        lambda: _first_in(~torch.isfinite(revenue), revenue, CODE_NON_FINITE_INPUT, -1, INPUT_REVENUE),
        lambda: None if cost is None else _first_in(~torch.isfinite(cost), cost, CODE_NON_FINITE_INPUT, -1, INPUT_COST),
        lambda: _first_in(~((propensity > 0) & (propensity <= 1)), propensity, CODE_BAD_PROPENSITY, -1),
    )
    return _record(r_hat.device, FAMILY_DECISION, found)


def _zero_loss(r_hat: torch.Tensor, c_hat: torch.Tensor) -> torch.Tensor:
    """0 that still depends on r_hat and c_hat (zero gradients, also through NaN entries)."""
    off = torch.zeros_like(r_hat, dtype=torch.bool)
    return (torch.where(off, r_hat, 0.0) + torch.where(off, c_hat, 0.0)).sum()


def _decision_failed(check, r_hat, c_hat, treatment, revenue, cost, lam, propensity) -> bool:
    return not check and _failed(validate_decision(r_hat, c_hat, treatment, revenue, cost, lam, propensity))


def _hull_steps(values: torch.Tensor, costs: torch.Tensor):
    """Hulls plus the [N, M-1] grid of step breakpoints (step s at column s-1) and its valid mask."""
    n, m = values.shape
    hull, length = hulls(values, costs)
    if m > 1:
        bp = _slope(values, costs, hull[:, :-1], hull[:, 1:])
        valid = torch.arange(1, m, device=values.device).unsqueeze(0) < length.unsqueeze(1)
    else:
        bp = values.new_zeros((n, 0))
        valid = torch.zeros((n, 0), dtype=torch.bool, device=values.device)
    return hull, length, bp, valid


def mckp_events(values, costs, treatment, weight):
    """Twin of ``bidfcl::mckp_events``: the steps of the order as events, in (individual, step) order.

    Without ``treatment`` every hull step (i, s) is an event with ``delta = c[h_s] - c[h_{s-1}]``
    and ``base`` is the cheapest policy's spend. With ``treatment`` and float64 ``weight`` (the IPW
    weights ``w_i``) only the steps where i's choice starts (``+w_i``) or stops (``-w_i``) matching
    ``t_i`` are events, and ``base = sum_i w_i [h_0(i) = t_i]``. ``id = individual * M + step``.
    """
    _check_problem(values, costs)
    n, m = values.shape
    if (treatment is None) != (weight is None):
        raise RuntimeError("bidfcl: mckp_events needs both treatment and weight, or neither")
    hull, length, bp, valid = _hull_steps(values, costs)
    dev = values.device
    if treatment is None:
        ii, ss = torch.nonzero(valid, as_tuple=True)  # row-major: (individual, step - 1) ascending
        a, b = hull[ii, ss], hull[ii, ss + 1]
        delta = costs[ii, b].to(_F64) - costs[ii, a].to(_F64)
        base = costs.gather(1, hull[:, :1]).to(_F64).sum()
        return bp[ii, ss], ii * m + ss + 1, delta, base
    if treatment.dtype != torch.long:
        raise RuntimeError(f"bidfcl: treatment must be int64, got {treatment.dtype}")
    if weight.dtype != _F64:
        raise RuntimeError(f"bidfcl: weight must be float64, got {weight.dtype}")
    for name, t in (("treatment", treatment), ("weight", weight)):
        if t.dim() != 1 or t.shape[0] != n:
            raise RuntimeError(
                f"bidfcl: {name} must have shape [{n}] (one entry per individual (row of values)), got {list(t.shape)}"
            )
    bad = (treatment < 0) | (treatment >= m)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise RuntimeError(f"bidfcl: treatment must be in [0, M) = [0, {m}), got {int(treatment[i])} at row {i}")
    pos = torch.arange(m, device=dev).unsqueeze(0)
    on_hull = (hull == treatment.unsqueeze(1)) & (pos < length.unsqueeze(1))
    q = torch.where(on_hull.any(1), on_hull.long().argmax(1), torch.full_like(length, -1))
    base = (weight * (q == 0)).sum()
    # candidate events per row: entering at step q (q >= 1), leaving at step q + 1 (q + 1 < len)
    enter = q >= 1
    leave = (q >= 0) & (q + 1 < length)
    rows = torch.arange(n, device=dev)
    step = torch.stack([q, q + 1], 1)  # [N, 2], already in step order per row
    keep = torch.stack([enter, leave], 1)
    d = torch.stack([weight, -weight], 1)
    ii = rows.unsqueeze(1).expand(n, 2)[keep]
    st = step[keep]
    ev_bp = bp[ii, st - 1] if bp.shape[1] else values.new_zeros(0)
    return ev_bp, ii * m + st, d[keep], base


def apply_mckp_cut(values, costs, lam, individual, step):
    """Twin of ``bidfcl::apply_mckp_cut``: the choices under K cuts and their totals.

    Step (i, s) is taken iff ``bp > lam[k]``, or ``bp == lam[k]`` and ``(i, s) < (individual[k],
    step[k])``; the choice is the hull point after the taken steps. The Lagrangian sum is
    ``sum_i r[h_a] - lam c[h_a]`` with ``a`` the number of steps whose bp is strictly above lam.
    """
    _check_problem(values, costs)
    n, m = values.shape
    if lam.dtype != values.dtype or lam.dim() != 1 or lam.shape[0] < 1:
        raise RuntimeError(f"bidfcl: lam must be 1-D [K >= 1] of the values' dtype, got {lam.dtype} {list(lam.shape)}")
    for name, t in (("individual", individual), ("step", step)):
        if t.dtype != torch.long:
            raise RuntimeError(f"bidfcl: {name} must be int64, got {t.dtype}")
        if t.dim() != 1 or t.shape[0] != lam.shape[0]:
            raise RuntimeError(
                f"bidfcl: {name} must have shape [{lam.shape[0]}] (one entry per cut (entry of lam)), "
                f"got {list(t.shape)}"
            )
    hull, length, bp, valid = _hull_steps(values, costs)
    k = lam.shape[0]
    rows = torch.arange(n, device=values.device).unsqueeze(1)
    steps = torch.arange(1, m, device=values.device).unsqueeze(0)
    choice = torch.empty((k, n), dtype=torch.long, device=values.device)
    spend = values.new_empty(k, dtype=_F64)
    value = values.new_empty(k, dtype=_F64)
    lagr = values.new_empty(k, dtype=_F64)
    for q in range(k):
        lq, iq, sq = lam[q], int(individual[q]), int(step[q])
        above = (bp > lq) & valid
        before = (rows < iq) | ((rows == iq) & (steps < sq))
        taken = (above | ((bp == lq) & before & valid)).sum(1)
        choice[q] = hull.gather(1, taken.unsqueeze(1)).squeeze(1)
        spend[q], value[q] = _totals(values, costs, choice[q])
        ja = hull.gather(1, above.sum(1).unsqueeze(1))
        lagr[q] = (values.gather(1, ja).to(_F64) - lq.to(_F64) * costs.gather(1, ja).to(_F64)).sum()
    return choice, spend, value, lagr


def _check_rct_inputs(values, treatment, cost_obs, propensity, check_values: bool = True) -> None:
    n, m = values.shape
    if treatment.dtype != torch.long:
        raise InputError(f"bidfcl: treatment must be int64, got {treatment.dtype}")
    for name, t in (("treatment", treatment), ("cost_obs", cost_obs), ("propensity", propensity)):
        if t.dim() != 1 or t.shape[0] != n:
            raise InputError(
                f"bidfcl: {name} must have shape [{n}] (one entry per individual (row of values)), got {list(t.shape)}"
            )
    for name, t in (("cost_obs", cost_obs), ("propensity", propensity)):
        if t.dtype != values.dtype:
            raise InputError(f"bidfcl: values and {name} must have the same dtype, got {values.dtype} and {t.dtype}")
    if not check_values:
        return
    bad = (treatment < 0) | (treatment >= m)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise InputError(f"bidfcl: treatment must be in [0, M) = [0, {m}), got {int(treatment[i])} at row {i}")
    bad = ~((propensity > 0) & (propensity <= 1))
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise InputError(f"bidfcl: propensity must be in (0, 1], got {float(propensity[i]):g} at row {i}")
    bad = ~torch.isfinite(cost_obs)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise InputError(f"bidfcl: cost_obs must be finite, got {float(cost_obs[i]):g} at row {i}")


# --------------------------------------------------------------------------------------------------
# decision losses, policy estimators and AUCC (METHOD.md sections 2-3; core: bidfcl/core/losses.h)
# --------------------------------------------------------------------------------------------------

# PIFD_ZERO_GAP_FLOOR (a zero flip gap without a clip) and AUCC_MIN_COST_GAP (the floor of the
# predicted cost gap in AUCC's ROI ranking) come from _constants, like the core's constants.h.


def _check_float_vector(t, name: str, like: torch.Tensor, n: int) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"bidfcl: {name} must be a tensor, got {type(t).__name__}")
    if t.dtype not in (torch.float32, torch.float64):
        raise InputError(f"bidfcl: {name} must be float32 or float64, got {t.dtype}")
    if t.dim() != 1 or t.shape[0] != n:
        raise InputError(f"bidfcl: {name} must have shape [{n}] (one entry per row), got {list(t.shape)}")
    if t.dtype != like.dtype:
        raise InputError(f"bidfcl: r_hat and {name} must have the same dtype, got {like.dtype} and {t.dtype}")
    if t.device != like.device:
        raise InputError(f"bidfcl: r_hat and {name} must be on the same device, got {like.device} and {t.device}")


def _check_treatment(treatment, like: torch.Tensor, n: int) -> None:
    if not isinstance(treatment, torch.Tensor):
        raise TypeError(f"bidfcl: treatment must be a tensor, got {type(treatment).__name__}")
    if treatment.dtype != torch.long:
        raise InputError(f"bidfcl: treatment must be int64, got {treatment.dtype}")
    if treatment.dim() != 1 or treatment.shape[0] != n:
        raise InputError(f"bidfcl: treatment must have shape [{n}] (one entry per row), got {list(treatment.shape)}")
    if treatment.device != like.device:
        raise InputError(
            f"bidfcl: r_hat and treatment must be on the same device, got {like.device} and {treatment.device}"
        )


def _first_bad_row(mask: torch.Tensor, t: torch.Tensor, what: str, where: str = "row") -> None:
    if bool(mask.any()):
        i = int(torch.nonzero(mask)[0])
        raise InputError(f"bidfcl: {what}, got {t[i].item():g} at {where} {i}")


def _check_decision(r_hat, c_hat, treatment, revenue, cost, lam, propensity, check_values: bool = True) -> None:
    """The checks of cpp/torch/losses_ops.h (check_decision_inputs) plus the core's value checks."""
    _check_matrix_pair(r_hat, c_hat, "r_hat", "c_hat")
    n, m = r_hat.shape
    if m < 2:
        raise InputError(f"bidfcl: r_hat must have at least two options (M >= 2), got shape {list(r_hat.shape)}")
    if m > MAX_LOSS_OPTIONS:
        raise InputError(f"bidfcl: at most {MAX_LOSS_OPTIONS} options are supported, got M = {m}")
    _check_treatment(treatment, r_hat, n)
    _check_float_vector(revenue, "revenue", r_hat, n)
    _check_float_vector(propensity, "propensity", r_hat, n)
    if cost is not None:
        _check_float_vector(cost, "cost", r_hat, n)
    if not isinstance(lam, torch.Tensor) or lam.dtype not in (torch.float32, torch.float64):
        raise InputError(f"bidfcl: lam must be a float32 or float64 tensor, got {getattr(lam, 'dtype', type(lam))}")
    if lam.dim() != 1 or lam.shape[0] < 1:
        raise InputError(f"bidfcl: lam must be 1-D [L >= 1] (one entry per multiplier), got shape {list(lam.shape)}")
    if lam.dtype != r_hat.dtype:
        raise InputError(f"bidfcl: r_hat and lam must have the same dtype, got {r_hat.dtype} and {lam.dtype}")
    if lam.device != r_hat.device:
        raise InputError(f"bidfcl: r_hat and lam must be on the same device, got {r_hat.device} and {lam.device}")
    if not check_values:
        return
    _first_bad_row(~torch.isfinite(lam), lam, "lam must be finite", "index")
    _first_bad(~torch.isfinite(r_hat), r_hat, "r_hat must be finite")
    _first_bad(~torch.isfinite(c_hat), c_hat, "c_hat must be finite")
    bad = (treatment < 0) | (treatment >= m)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise InputError(f"bidfcl: treatment must be in [0, M) = [0, {m}), got {int(treatment[i])} at row {i}")
    _first_bad_row(~torch.isfinite(revenue), revenue, "revenue must be finite")
    if cost is not None:
        _first_bad_row(~torch.isfinite(cost), cost, "cost must be finite")
    _first_bad_row(~((propensity > 0) & (propensity <= 1)), propensity, "propensity must be in (0, 1]")


def _check_tau(tau: float) -> None:
    if not (tau > 0 and tau != float("inf")):
        raise InputError(f"bidfcl: tau must be finite and > 0, got {tau}")


def _check_clip(clip) -> float:
    if clip is None:
        return 0.0
    if not (clip > 0 and clip != float("inf")):
        raise InputError(f"bidfcl: clip must be None or finite and > 0, got {clip}")
    return float(clip)


def _check_grad(grad: torch.Tensor, like: torch.Tensor) -> None:
    if grad.numel() != 1:
        raise InputError(f"bidfcl: grad must hold one element (the loss is a scalar), got shape {list(grad.shape)}")
    if grad.dtype != like.dtype:
        raise InputError(f"bidfcl: r_hat and grad must have the same dtype, got {like.dtype} and {grad.dtype}")


def _scores(r_hat: torch.Tensor, c_hat: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """a[l, i, j] = r_hat[i, j] - lam[l] c_hat[i, j]  ->  [L, N, M] (lam is a constant)."""
    return r_hat.unsqueeze(0) - lam.detach().view(-1, 1, 1) * c_hat.unsqueeze(0)


def _row_weights(revenue, cost, lam, propensity) -> torch.Tensor:
    """w[l, i] = reward[l, i] / (N p_i), reward = revenue (or revenue - lam[l] cost): [L, N]."""
    n = revenue.shape[0]
    lam = lam.detach().view(-1, 1)
    reward = revenue.unsqueeze(0) if cost is None else revenue.unsqueeze(0) - lam * cost.unsqueeze(0)
    return reward.expand(lam.shape[0], n) / (n * propensity).unsqueeze(0)


def _take_arm(x: torch.Tensor, treatment: torch.Tensor) -> torch.Tensor:
    """x[l, i, t_i] for an [L, N, M] tensor -> [L, N]."""
    idx = treatment.view(1, -1, 1).expand(x.shape[0], -1, 1)
    return x.gather(2, idx).squeeze(2)


def ppl_loss(r_hat, c_hat, treatment, revenue, cost, lam, propensity, tau: float, check: bool = True):
    """Twin of ``bidfcl::ppl_loss`` (differentiable by plain autograd; lam is a constant).

        L = -sum_l sum_i softmax(a[l, i, :] / tau)[t_i] * reward[l, i] / (N p_i)

    ``check=False``: bad input is not raised (:func:`validate_decision` reports it); the loss is 0 then.
    """
    if _decision_failed(check, r_hat, c_hat, treatment, revenue, cost, lam, propensity):
        _check_tau(tau)
        return _zero_loss(r_hat, c_hat)
    _check_decision(r_hat, c_hat, treatment, revenue, cost, lam, propensity)
    _check_tau(tau)
    z = torch.softmax(_scores(r_hat, c_hat, lam) / tau, dim=2)
    return -(_take_arm(z, treatment) * _row_weights(revenue, cost, lam, propensity)).sum()


def ppl_loss_backward(grad, r_hat, c_hat, treatment, revenue, cost, lam, propensity, tau: float, check: bool = True):
    """Twin of ``bidfcl::ppl_loss_backward``:
    dL/da[l,i,j] = -(w[l,i]/tau) z[l,i,t_i] (1[j == t_i] - z[l,i,j]);  dr = sum_l dL/da, dc = -sum_l lam dL/da.
    ``check=False``: zeros for bad input instead of an error.
    """
    if _decision_failed(check, r_hat, c_hat, treatment, revenue, cost, lam, propensity):
        _check_grad(grad, r_hat)
        _check_tau(tau)
        return torch.zeros_like(r_hat.detach()), torch.zeros_like(r_hat.detach())
    _check_decision(r_hat, c_hat, treatment, revenue, cost, lam, propensity)
    _check_grad(grad, r_hat)
    _check_tau(tau)
    with torch.no_grad():
        inv_tau = 1.0 / tau
        z = torch.softmax(_scores(r_hat, c_hat, lam) * inv_tau, dim=2)
        coef = -(_row_weights(revenue, cost, lam, propensity) * inv_tau) * _take_arm(z, treatment) * grad.reshape(())
        onehot = torch.nn.functional.one_hot(treatment, r_hat.shape[1]).to(r_hat.dtype).unsqueeze(0)
        g = coef.unsqueeze(2) * (onehot - z)
        return g.sum(0), -(lam.detach().view(-1, 1, 1) * g).sum(0)


def _flip_value(r_hat, c_hat, treatment, revenue, cost, lam, propensity) -> torch.Tensor:
    a = _scores(r_hat, c_hat, lam)
    chosen = a.argmax(dim=2)  # first maximal index: ties to the lowest option
    matched = chosen == treatment.unsqueeze(0)
    w = _row_weights(revenue, cost, lam, propensity)
    return -(w * matched.to(w.dtype)).sum()


def pifd_loss_backward(grad, r_hat, c_hat, treatment, revenue, cost, lam, propensity, clip, check: bool = True):
    """Twin of ``bidfcl::pifd_loss_backward``: the flip estimates of METHOD.md section 3.

    Per row with chosen k, runner-up s (first max among the others), C = w[l, i] * grad:
    matched (k == t): cell k gets -C/gap(a_k - a_s), every other cell j +C/gap(a_k - a_j);
    unmatched: cell t gets -C/gap(a_k - a_t), and cell k +C/gap(a_k - a_t) when s == t.
    gap(g): with clip h, g < h -> h and g > h -> cell zeroed; without, g == 0 -> PIFD_ZERO_GAP_FLOOR.
    ``check=False``: zeros for bad input instead of an error.
    """
    if _decision_failed(check, r_hat, c_hat, treatment, revenue, cost, lam, propensity):
        _check_grad(grad, r_hat)
        _check_clip(clip)
        return torch.zeros_like(r_hat.detach()), torch.zeros_like(r_hat.detach())
    _check_decision(r_hat, c_hat, treatment, revenue, cost, lam, propensity)
    _check_grad(grad, r_hat)
    h = _check_clip(clip)
    with torch.no_grad():
        a = _scores(r_hat, c_hat, lam)
        L, n, m = a.shape
        best, k = a.max(dim=2, keepdim=True)
        others = a.scatter(2, k, float("-inf"))
        second, s = others.max(dim=2, keepdim=True)
        t = treatment.view(1, n, 1).expand(L, n, 1)

        def inv_gap(gap):
            if h > 0:
                hh = torch.tensor(h, dtype=gap.dtype, device=gap.device)
                return torch.where(gap > hh, torch.zeros_like(gap), 1.0 / torch.maximum(gap, hh))
            floor = torch.tensor(1.0 / PIFD_ZERO_GAP_FLOOR, dtype=gap.dtype, device=gap.device)
            return torch.where(gap == 0, floor, 1.0 / gap)

        cw = (_row_weights(revenue, cost, lam, propensity) * grad.reshape(())).unsqueeze(2)  # [L, N, 1]
        matched = k == t
        cols = torch.arange(m, device=a.device).view(1, 1, m)
        is_k, is_t = cols == k, cols == t
        # matched rows
        g_matched = torch.where(is_k, -cw * inv_gap(best - second), cw * inv_gap(best - a))
        # unmatched rows
        ig_t = inv_gap(best - a.gather(2, t))
        g_unmatched = torch.where(is_t, -cw * ig_t, torch.zeros_like(a))
        g_unmatched = torch.where(is_k & (s == t), cw * ig_t, g_unmatched)
        g = torch.where(matched, g_matched, g_unmatched)
        return g.sum(0), -(lam.detach().view(-1, 1, 1) * g).sum(0)


class _FlipLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, r_hat, c_hat, treatment, revenue, cost, lam, propensity, clip):
        ctx.save_for_backward(r_hat, c_hat, treatment, revenue, lam, propensity)
        ctx.cost, ctx.clip = cost, clip
        return _flip_value(r_hat, c_hat, treatment, revenue, cost, lam, propensity)

    @staticmethod
    def backward(ctx, grad):
        r_hat, c_hat, treatment, revenue, lam, propensity = ctx.saved_tensors
        gr, gc = pifd_loss_backward(grad, r_hat, c_hat, treatment, revenue, ctx.cost, lam, propensity, ctx.clip)
        return gr, gc, None, None, None, None, None, None


def pifd_loss(r_hat, c_hat, treatment, revenue, cost, lam, propensity, clip, check: bool = True):
    """Twin of ``bidfcl::pifd_loss``: L = -sum_l sum_i 1[argmax_j a[l,i,j] == t_i] reward[l,i]/(N p_i),
    differentiable through :func:`pifd_loss_backward` (``clip`` only matters there). ``check=False``:
    the loss is 0 for bad input instead of an error."""
    if _decision_failed(check, r_hat, c_hat, treatment, revenue, cost, lam, propensity):
        _check_clip(clip)
        return _zero_loss(r_hat, c_hat)
    _check_decision(r_hat, c_hat, treatment, revenue, cost, lam, propensity)
    _check_clip(clip)
    if torch.is_grad_enabled() and (r_hat.requires_grad or c_hat.requires_grad):
        return _FlipLoss.apply(r_hat, c_hat, treatment, revenue, cost, lam, propensity, clip)
    return _flip_value(r_hat, c_hat, treatment, revenue, cost, lam, propensity)


@_no_derivative
def ppl_loss_with_grad(r_hat, c_hat, treatment, revenue, cost, lam, propensity, tau: float, check: bool = True):
    """Twin of ``bidfcl::ppl_loss_with_grad``: the loss and its gradient for a unit upstream gradient,
    ``(ppl_loss(...), *ppl_loss_backward(1, ...))`` (the fused forward autograd uses on CPU)."""
    unit = torch.ones((), dtype=r_hat.dtype, device=r_hat.device)
    return (
        ppl_loss(r_hat, c_hat, treatment, revenue, cost, lam, propensity, tau, check),
        *ppl_loss_backward(unit, r_hat, c_hat, treatment, revenue, cost, lam, propensity, tau, check),
    )


@_no_derivative
def pifd_loss_with_grad(r_hat, c_hat, treatment, revenue, cost, lam, propensity, clip, check: bool = True):
    """Twin of ``bidfcl::pifd_loss_with_grad``: ``(pifd_loss(...), *pifd_loss_backward(1, ...))``."""
    unit = torch.ones((), dtype=r_hat.dtype, device=r_hat.device)
    return (
        pifd_loss(r_hat, c_hat, treatment, revenue, cost, lam, propensity, clip, check),
        *pifd_loss_backward(unit, r_hat, c_hat, treatment, revenue, cost, lam, propensity, clip, check),
    )


@_no_derivative
def policy_value(choice, treatment, revenue, cost, propensity, hajek: bool):
    """Twin of ``bidfcl::policy_value`` (float64 [K] each).

    y_i = 1[choice_i == t_i] revenue_i / p_i.  ipw: V = mean(y), se = sqrt(var(y, ddof=1) / N).
    hajek: V = sum y / sum 1[match]/p, se = sqrt(N/(N-1) sum (1[match]/p)^2 (revenue - V)^2) / sum 1[match]/p.
    """
    if choice.dtype != torch.long or choice.dim() != 2:
        raise InputError(
            f"bidfcl: choice must be int64 2-D [K policies, N rows], got {choice.dtype} {list(choice.shape)}"
        )
    n = choice.shape[1]
    if treatment.dtype != torch.long:
        raise InputError(f"bidfcl: treatment must be int64, got {treatment.dtype}")
    for name, t in (("treatment", treatment), ("revenue", revenue), ("cost", cost), ("propensity", propensity)):
        if t.dim() != 1 or t.shape[0] != n:
            raise InputError(
                f"bidfcl: {name} must have shape [{n}] (one entry per row (column of choice)), got {list(t.shape)}"
            )
    for name, t in (("revenue", revenue), ("cost", cost), ("propensity", propensity)):
        if t.dtype not in (torch.float32, torch.float64):
            raise InputError(f"bidfcl: {name} must be float32 or float64, got {t.dtype}")
    for name, t in (("cost", cost), ("propensity", propensity)):
        if t.dtype != revenue.dtype:
            raise InputError(f"bidfcl: revenue and {name} must have the same dtype, got {revenue.dtype} and {t.dtype}")
    _first_bad_row(~torch.isfinite(revenue), revenue, "revenue must be finite")
    _first_bad_row(~torch.isfinite(cost), cost, "cost must be finite")
    _first_bad_row(~((propensity > 0) & (propensity <= 1)), propensity, "propensity must be in (0, 1]")
    nan = float("nan")
    match = (choice == treatment.unsqueeze(0)).to(_F64)
    inv_p = 1.0 / propensity.to(_F64)
    rev, cst = revenue.to(_F64), cost.to(_F64)
    y, x = match * (rev * inv_p), match * (cst * inv_p)
    wsum = (match * inv_p).sum(1)
    denom = wsum if hajek else torch.full_like(wsum, float(n))
    ok = (denom > 0) & (n > 0)
    value = torch.where(ok, y.sum(1) / denom, torch.full_like(denom, nan))
    cost_value = torch.where(ok, x.sum(1) / denom, torch.full_like(denom, nan))
    if hajek:
        ey = match * inv_p * (rev.unsqueeze(0) - value.unsqueeze(1))
        ex = match * inv_p * (cst.unsqueeze(0) - cost_value.unsqueeze(1))
        f = n / (n - 1) if n > 1 else nan
        value_se = torch.sqrt(f * (ey * ey).sum(1)) / wsum
        cost_se = torch.sqrt(f * (ex * ex).sum(1)) / wsum
    else:
        dy, dx = y - value.unsqueeze(1), x - cost_value.unsqueeze(1)
        value_se = torch.sqrt((dy * dy).sum(1) / (n - 1) / n) if n > 1 else torch.full_like(value, nan)
        cost_se = torch.sqrt((dx * dx).sum(1) / (n - 1) / n) if n > 1 else torch.full_like(value, nan)
    bad = ~ok | (n < 2)
    value_se = torch.where(bad, torch.full_like(value_se, nan), value_se)
    cost_se = torch.where(bad, torch.full_like(cost_se, nan), cost_se)
    return value, cost_value, value_se, cost_se


@_no_derivative
def aucc(r_hat, c_hat, treatment, revenue, cost, q: int):
    """Twin of ``bidfcl::aucc``: (aucc, cost_curve [q+1], revenue_curve [q+1]), float64.

    roi = (r1 - r0) / max(c1 - c0, AUCC_MIN_COST_GAP), ranked descending (ties by row index).
    C(k) = sum_{treated in top k} cost/n1 - sum_{control in top k} cost/n0 (R(k) likewise);
    k_q' = first k with cummax C(k) >= C(n) q'/q;  AUCC = sum_q' R(k_q') / (R(n) (q + 1)).
    """
    _check_problem_pair = _check_decision  # same shape/dtype rules, minus lam and propensity
    if r_hat.dim() != 2 or r_hat.shape[1] != 2:
        raise InputError(f"bidfcl: aucc needs exactly two options (control, treatment), got shape {list(r_hat.shape)}")
    n = r_hat.shape[0]
    ones = torch.ones(n, dtype=r_hat.dtype, device=r_hat.device)
    lam_unused = torch.zeros(1, dtype=r_hat.dtype, device=r_hat.device)
    _check_problem_pair(r_hat, c_hat, treatment, revenue, cost, lam_unused, ones)
    if q < 1:
        raise InputError(f"bidfcl: q must be >= 1, got {q}")
    if n == 0:
        z = torch.zeros(q + 1, dtype=_F64, device=r_hat.device)
        return torch.tensor(float("nan"), dtype=_F64, device=r_hat.device), z, z.clone()
    n1 = int((treatment == 1).sum())
    n0 = n - n1
    if n1 == 0 or n0 == 0:
        raise InputError(
            f"bidfcl: aucc needs rows in both arms (treatment 0 and 1), got none with treatment {1 if n1 == 0 else 0}"
        )
    dc = torch.clamp(c_hat[:, 1] - c_hat[:, 0], min=AUCC_MIN_COST_GAP)
    roi = (r_hat[:, 1] - r_hat[:, 0]) / dc + 0.0
    order = torch.argsort(roi, descending=True, stable=True)
    t = treatment[order] == 1
    c_o, r_o = cost[order].to(_F64), revenue[order].to(_F64)
    dcost = torch.where(t, c_o / n1, -(c_o / n0))
    drev = torch.where(t, r_o / n1, -(r_o / n0))
    zero = torch.zeros(1, dtype=_F64, device=r_hat.device)
    cum_c = torch.cat([zero, torch.cumsum(dcost, 0)])
    cum_r = torch.cat([zero, torch.cumsum(drev, 0)])
    max_c = torch.cummax(cum_c, 0).values
    c_tot, r_tot = cum_c[-1], cum_r[-1]
    levels = c_tot * (torch.arange(q + 1, dtype=_F64, device=r_hat.device) / q)
    k = torch.searchsorted(max_c, levels).clamp(max=n)
    cost_curve, revenue_curve = cum_c[k], cum_r[k]
    ok = (c_tot > 0) & (r_tot != 0)
    value = torch.where(ok, revenue_curve.sum() / (r_tot * (q + 1)), torch.full_like(r_tot, float("nan")))
    return value, cost_curve, revenue_curve


# --------------------------------------------------------------------------------------------------
# multi-constraint allocation (cpp/core/include/bidfcl/core/allocation.h)
# --------------------------------------------------------------------------------------------------
#
# Constraint j of a problem with K resources, M options and G groups: j < K global resource j;
# K <= j < K + M capacity of option j - K; j = K + M + k G + g budget of group g on resource k.


def _alloc_check(values, costs, eligible, groups, num_groups, lam, budgets=None, check=True) -> None:
    """The checks of cpp/torch/allocation_ops.h (ValueError, naming the argument and entry)."""
    for name, t in (("values", values), ("costs", costs), ("lam", lam)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"bidfcl: {name} must be a tensor, got {type(t).__name__}")
    for name, t in (("values", values), ("costs", costs)):
        if t.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"bidfcl: {name} must be float32 or float64, got {t.dtype}")
    if values.dim() != 2:
        raise ValueError(f"bidfcl: values must be 2-D [N users, M options], got shape {list(values.shape)}")
    if costs.dim() != 3:
        raise ValueError(f"bidfcl: costs must be 3-D [K resources, N users, M options], got shape {list(costs.shape)}")
    if values.dtype != costs.dtype:
        raise ValueError(f"bidfcl: values and costs must have the same dtype, got {values.dtype} and {costs.dtype}")
    if values.device != costs.device:
        raise ValueError(f"bidfcl: values and costs must be on the same device, got {values.device} and {costs.device}")
    n, m = values.shape
    k = costs.shape[0]
    if tuple(costs.shape[1:]) != (n, m):
        raise ValueError(
            f"bidfcl: costs must have shape [K, {n}, {m}] to match values {list(values.shape)}, got {list(costs.shape)}"
        )
    if not 1 <= m <= MAX_OPTIONS:
        raise ValueError(f"bidfcl: values must have 1 to {MAX_OPTIONS} options, got M = {m}")
    if not 1 <= k <= MAX_OPTIONS:
        raise ValueError(f"bidfcl: costs must hold 1 to {MAX_OPTIONS} resources, got K = {k}")
    if eligible is not None:
        if eligible.dtype != torch.bool:
            raise ValueError(f"bidfcl: eligible must be bool, got {eligible.dtype}")
        if tuple(eligible.shape) != (n, m):
            raise ValueError(f"bidfcl: eligible must have shape [{n}, {m}] like values, got {list(eligible.shape)}")
    if num_groups < 0:
        raise ValueError(f"bidfcl: num_groups must be >= 0, got {num_groups}")
    if groups is not None:
        if groups.dtype != torch.long:
            raise ValueError(f"bidfcl: groups must be int64, got {groups.dtype}")
        if tuple(groups.shape) != (n,):
            raise ValueError(f"bidfcl: groups must have shape [{n}] (one group per user), got {list(groups.shape)}")
        if num_groups < 1:
            raise ValueError(f"bidfcl: groups given but num_groups = {num_groups}")
    elif num_groups != 0:
        raise ValueError(f"bidfcl: num_groups = {num_groups} but no groups given")
    j_total = k + m + k * num_groups
    for name, t, allow_inf in (("lam", lam, False), ("budgets", budgets, True)):
        if t is None:
            continue
        if t.dtype != _F64:
            raise ValueError(f"bidfcl: {name} must be float64, got {t.dtype}")
        if tuple(t.shape) != (j_total,):
            raise ValueError(
                f"bidfcl: {name} must have shape [{j_total}] (K + M + K * G constraints), got {list(t.shape)}"
            )
        for j, x in enumerate(t.tolist()):
            if x != x or (not allow_inf and x in (float("inf"), float("-inf"))):
                raise ValueError(f"bidfcl: {name} must be {'non-NaN' if allow_inf else 'finite'}, got {x} at index {j}")
            if x < 0:
                raise ValueError(f"bidfcl: {name} must be >= 0, got {x} at index {j}")
    if not check:
        return
    for i, row in _first_rows(~torch.isfinite(values)):
        raise ValueError(f"bidfcl: values must be finite, got {values[i, row].item()} at [{i}, {row}]")
    bad = ~torch.isfinite(costs) | (costs < 0)
    if bool(bad.any()):
        # first offending user, then resource, then option (the core's row-major order per user)
        pos = torch.nonzero(bad.permute(1, 0, 2))[0].tolist()
        i, kk, j = pos
        x = costs[kk, i, j].item()
        what = "finite" if x != x or x in (float("inf"), float("-inf")) else ">= 0"
        # the core reports the first bad entry of a row: a non-finite one before a negative one only within its order
        raise ValueError(f"bidfcl: costs must be {what}, got {x} at [{kk}, {i}, {j}]")
    if eligible is not None:
        for i, _ in _first_rows(~eligible.any(dim=1, keepdim=True)):
            raise ValueError(f"bidfcl: eligible must allow at least one option per user, got none at row {i}")
    if groups is not None:
        for i, _ in _first_rows(((groups < 0) | (groups >= num_groups)).unsqueeze(1)):
            raise ValueError(f"bidfcl: groups must be in [0, G) = [0, {num_groups}), got {int(groups[i])} at row {i}")


def _first_rows(mask: torch.Tensor):
    """(row, col) of the first True entry of a 2-D mask, as a zero- or one-element list."""
    if not bool(mask.any()):
        return []
    return [tuple(torch.nonzero(mask)[0].tolist())]


def _alloc_scores(values, costs, groups, num_groups, lam, skip: int = -1) -> torch.Tensor:
    """Adjusted scores s [N, M] (allocation.h), leaving out multiplier `skip` (-1: none)."""
    n, m = values.shape
    k = costs.shape[0]
    lam = lam.to(values.device)
    glob = lam[:k].clone()
    if 0 <= skip < k:
        glob[skip] = 0.0
    w = glob.unsqueeze(0).expand(n, k)
    if groups is not None and num_groups > 0:
        grp = lam[k + m :].reshape(k, num_groups).clone()
        if skip >= k + m:
            grp.view(-1)[skip - k - m] = 0.0
        w = w + grp[:, groups].T
    w = w.to(values.dtype)
    s = values.clone()
    for kk in range(k):
        s = s - w[:, kk : kk + 1] * costs[kk]
    mu = lam[k : k + m].clone()
    if k <= skip < k + m:
        mu[skip - k] = 0.0
    return s - mu.to(values.dtype).unsqueeze(0)


def _alloc_spend(values, costs, groups, num_groups, choice) -> tuple[torch.Tensor, torch.Tensor]:
    """Spend per constraint [J] and value (0-d) of a choice, float64."""
    n, m = values.shape
    k = costs.shape[0]
    idx = choice.view(1, n, 1).expand(k, n, 1)
    chosen = costs.gather(2, idx).squeeze(2).to(_F64)  # [K, N]
    parts = [chosen.sum(dim=1), torch.bincount(choice, minlength=m).to(_F64)]
    if groups is not None and num_groups > 0:
        grp = torch.zeros((k, num_groups), dtype=_F64, device=values.device).index_add(1, groups, chosen)
        parts.append(grp.reshape(-1))
    value = values.gather(1, choice.unsqueeze(1)).to(_F64).sum()
    return torch.cat(parts), value


def allocation_policy(values, costs, eligible, groups, num_groups: int, lam):
    """Twin of ``bidfcl::allocation_policy``: argmax of the adjusted score over eligible options."""
    _alloc_check(values, costs, eligible, groups, num_groups, lam)
    s = _alloc_scores(values, costs, groups, num_groups, lam)
    masked = s if eligible is None else torch.where(eligible, s, torch.full_like(s, float("-inf")))
    best, choice = masked.max(dim=1)  # the first maximal index
    spend, value = _alloc_spend(values, costs, groups, num_groups, choice)
    return choice, spend, value, _alloc_dual_terms(values, costs, eligible, groups, num_groups, lam, best)


def _alloc_dual_terms(values, costs, eligible, groups, num_groups, lam, best_t):
    """sum_i max_m s_im with s in float64 (weights unrounded): the dual's user terms."""
    if values.dtype == _F64:
        return best_t.to(_F64).sum()
    s = _alloc_scores(values.to(_F64), costs.to(_F64), groups, num_groups, lam)
    if eligible is not None:
        s = torch.where(eligible, s, torch.full_like(s, float("-inf")))
    return s.max(dim=1).values.sum()


def _dominated_ineligible(v: torch.Tensor, c: torch.Tensor, eligible) -> tuple[torch.Tensor, torch.Tensor]:
    """Ineligible options get the row's largest eligible cost and a value below every eligible one."""
    if eligible is None:
        return v, c
    big = torch.finfo(v.dtype).max
    vmin = torch.where(eligible, v, torch.full_like(v, big)).min(dim=1, keepdim=True).values
    cmax = torch.where(eligible, c, torch.zeros_like(c)).max(dim=1, keepdim=True).values
    low = vmin - (1.0 + vmin.abs())
    low = torch.where(torch.isfinite(low), low, torch.full_like(low, torch.finfo(v.dtype).min))
    return torch.where(eligible, v, low.expand_as(v)), torch.where(eligible, c, cmax.expand_as(c))


def _allocation_line_search_impl(values, costs, eligible, groups, num_groups, lam, budgets, constraint, solve):
    """The exact coordinate minimiser; `solve` is a solve_mckp(values, costs, budgets) implementation
    (which applies the budget slack itself: it gets the budget as given, a capacity its limit)."""
    n, m = values.shape
    k = costs.shape[0]
    j = int(constraint)
    given = float(budgets[j])
    b = budget_limit(given)
    if b == float("inf"):
        return torch.zeros((), dtype=_F64, device=values.device)
    s = _alloc_scores(values, costs, groups, num_groups, lam, skip=j)
    if k <= j < k + m:  # capacity of option o
        o = j - k
        limit = n if b >= n else int(math.floor(b))
        other = s.clone()
        other[:, o] = float("-inf")
        if eligible is not None:
            other = torch.where(eligible, other, torch.full_like(other, float("-inf")))
        best_other = other.max(dim=1).values.to(_F64)
        d = s[:, o].to(_F64) - best_other  # +inf where no other option is eligible
        if eligible is not None:
            d = d[eligible[:, o]]
        d = d[d > 0]
        if d.numel() <= limit:
            return torch.zeros((), dtype=_F64, device=values.device)
        return torch.sort(d, descending=True).values[limit].clone()
    if j < k:
        kk, rows = j, None
    else:
        kk, g = divmod(j - k - m, num_groups)
        rows = torch.nonzero(groups == g).squeeze(1)
        if rows.numel() == 0:
            return torch.zeros((), dtype=_F64, device=values.device)
    c = costs[kk]
    el = eligible
    if rows is not None:
        s, c = s[rows], c[rows]
        el = None if eligible is None else eligible[rows]
    v2, c2 = _dominated_ineligible(s, c, el)
    lam_k, _, _, _, _, feasible = solve(
        v2.contiguous(), c2.contiguous(), torch.tensor([given], dtype=_F64, device=values.device)
    )
    if not bool(feasible[0]):
        return torch.full((), float("inf"), dtype=_F64, device=values.device)
    return lam_k[0].to(_F64)


def allocation_line_search(
    values, costs, eligible, groups, num_groups: int, lam, budgets, constraint: int, check: bool
):
    """Twin of ``bidfcl::allocation_line_search``: min over lam[constraint] >= 0 of the dual, exactly."""
    _alloc_check(values, costs, eligible, groups, num_groups, lam, budgets, check)
    if not 0 <= constraint < lam.shape[0]:
        raise ValueError(f"bidfcl: constraint must be in [0, {lam.shape[0]}), got {constraint}")
    return _allocation_line_search_impl(
        values, costs, eligible, groups, num_groups, lam, budgets, constraint, solve_mckp
    )


class _RepairState:
    """The repair heap's view of the problem, in float64 (exact for float32 inputs)."""

    def __init__(self, values, costs, eligible, groups, num_groups, lam, budgets):
        self.n, self.m = values.shape
        self.k = costs.shape[0]
        self.g = num_groups if groups is not None else 0
        self.v = values.detach().to("cpu", _F64)
        self.c = costs.detach().to("cpu", _F64)  # [K, N, M]
        self.el = None if eligible is None else eligible.detach().cpu()
        self.groups = None if groups is None else groups.detach().cpu()
        self.budget = budgets.detach().cpu().tolist()
        self.lam = [x if x != float("inf") else 0.0 for x in lam.detach().cpu().tolist()]
        self.spend = [0.0] * len(self.budget)
        self.violated = [False] * len(self.budget)
        self.weight = [0.0] * len(self.budget)

    def refresh(self):
        for j, (s, b) in enumerate(zip(self.spend, self.budget)):
            self.violated[j] = s > b
            self.weight[j] = 1.0 / s if s > b else 0.0

    def slots(self, i: int) -> list[tuple[int, int]]:
        """(resource, constraint) pairs in the visiting order: per resource its global, then its group."""
        gi = -1 if self.groups is None else int(self.groups[i])
        out = []
        for kk in range(self.k):
            out.append((kk, kk))
            if gi >= 0:
                out.append((kk, self.k + self.m + kk * self.g + gi))
        return out

    def best_move(self, choice: list, i: int, repair: bool):
        """(key, user, to) of user i's best move (allocation.h), or None."""
        x = choice[i]
        r = self.v[i].tolist()
        c = self.c[:, i, :].tolist()
        el = None if self.el is None else self.el[i].tolist()
        slots = self.slots(i)
        best = None
        for to in range(self.m):
            if to == x or (el is not None and not el[to]):
                continue
            ok, acc = True, 0.0
            deltas = [(j, c[kk][to] - c[kk][x]) for kk, j in slots]
            deltas += [(self.k + x, -1.0), (self.k + to, 1.0)]
            for j, d in deltas:
                if self.violated[j]:
                    if d > 0:
                        ok = False
                        break
                    if repair:
                        acc += self.weight[j] * -d
                elif d > 0 and self.spend[j] + d > self.budget[j]:
                    ok = False
                    break
                if not repair and self.lam[j] != 0:
                    acc += self.lam[j] * d
            if not ok:
                continue
            if repair:
                if not acc > 0:
                    continue
                key = (r[x] - r[to]) / acc
            else:
                gain = r[to] - r[x]
                if not gain > 0:
                    continue
                key = -(gain - acc)
            if best is None or key < best[0]:
                best = (key, i, to)
        return best

    def apply(self, choice: list, mv):
        _, i, to = mv
        x = choice[i]
        for kk, j in self.slots(i):
            self.spend[j] += self.c[kk, i, to].item() - self.c[kk, i, x].item()
        self.spend[self.k + x] -= 1.0
        self.spend[self.k + to] += 1.0
        choice[i] = to


def _repair_phase(st: _RepairState, choice: list, repair: bool) -> int:
    st.refresh()
    if repair and not any(st.violated):
        return 0

    def build():
        heap = [mv for mv in (st.best_move(choice, i, repair) for i in range(st.n)) if mv is not None]
        heapq.heapify(heap)
        return heap

    heap = build()
    moves = 0
    while heap:
        top = heapq.heappop(heap)
        now = st.best_move(choice, top[1], repair)
        if now is None:
            continue
        if now[0] != top[0] or now[2] != top[2]:
            heapq.heappush(heap, now)
            continue
        before = sum(st.violated)
        st.apply(choice, now)
        moves += 1
        if repair:
            st.refresh()
            after = sum(st.violated)
            if after == 0:
                break
            if after != before:
                heap = build()
                continue
        nxt = st.best_move(choice, top[1], repair)
        if nxt is not None:
            heapq.heappush(heap, nxt)
    return moves


def allocation_repair(values, costs, eligible, groups, num_groups: int, lam, budgets, choice, fill: bool, check: bool):
    """Twin of ``bidfcl::allocation_repair``: the same greedy moves, one heap, in Python."""
    _alloc_check(values, costs, eligible, groups, num_groups, lam, budgets, check)
    n = values.shape[0]
    if not isinstance(choice, torch.Tensor) or choice.dtype != torch.long:
        raise ValueError(f"bidfcl: choice must be int64, got {getattr(choice, 'dtype', type(choice).__name__)}")
    if tuple(choice.shape) != (n,):
        raise ValueError(f"bidfcl: choice must have shape [{n}] (one option per user), got {list(choice.shape)}")
    m = values.shape[1]
    ch = choice.detach().cpu()
    bad = (ch < 0) | (ch >= m)
    if eligible is not None and not bool(bad.any()):
        bad = ~eligible.detach().cpu().gather(1, ch.unsqueeze(1)).squeeze(1)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise ValueError(f"bidfcl: choice must be an eligible option in [0, M), got {int(ch[i])} at row {i}")
    st = _RepairState(values, costs, eligible, groups, num_groups, lam, budget_limit(budgets))
    cur = ch.tolist()
    moves = [0, 0]
    for _ in range(4):
        spend, _ = _alloc_spend(st.v, st.c, st.groups, st.g, torch.tensor(cur, dtype=torch.long))
        st.spend = spend.tolist()
        a = _repair_phase(st, cur, True)
        moves[0] += a
        b = 0
        if fill:
            spend, _ = _alloc_spend(st.v, st.c, st.groups, st.g, torch.tensor(cur, dtype=torch.long))
            st.spend = spend.tolist()
            b = _repair_phase(st, cur, False)
            moves[1] += b
        spend, _ = _alloc_spend(st.v, st.c, st.groups, st.g, torch.tensor(cur, dtype=torch.long))
        st.spend = spend.tolist()
        violated = any(s > bb for s, bb in zip(st.spend, st.budget))
        if not violated or (a == 0 and b == 0):
            break
    out = torch.tensor(cur, dtype=torch.long, device=values.device)
    spend, value = _alloc_spend(values, costs, groups, st.g, out)
    feasible = spend <= budgets.to(spend.device)
    return out, spend, value, feasible, torch.tensor(moves, dtype=torch.long, device=values.device)


def _alloc_use(values, costs, groups, num_groups) -> torch.Tensor:
    """a_j(i, m) as a dense float64 [N, M, J]: resources, capacities (one-hot), group budgets."""
    n, m = values.shape
    k = costs.shape[0]
    c = costs.to(_F64).permute(1, 2, 0)  # [N, M, K]
    parts = [c, torch.eye(m, dtype=_F64, device=values.device).unsqueeze(0).expand(n, m, m)]
    if groups is not None and num_groups > 0:
        onehot = torch.nn.functional.one_hot(groups, num_groups).to(_F64)  # [N, G]
        parts.append((c.unsqueeze(3) * onehot.view(n, 1, 1, num_groups)).reshape(n, m, k * num_groups))
    return torch.cat(parts, dim=2)


def allocation_smoothed(values, costs, eligible, groups, num_groups: int, lam, tau: float, check: bool):
    """Twin of ``bidfcl::allocation_smoothed``: the softmax-smoothed dual and its derivatives."""
    _alloc_check(values, costs, eligible, groups, num_groups, lam, None, check)
    if not (tau > 0 and math.isfinite(tau)):
        raise ValueError(f"bidfcl: tau must be finite and > 0, got {tau}")
    if lam.shape[0] > 128:
        raise ValueError(
            f"bidfcl: the smoothed dual supports at most 128 constraints (K + M + K G), got {lam.shape[0]}"
        )
    s = _alloc_scores(values, costs, groups, num_groups, lam).to(_F64)
    if eligible is not None:
        s = torch.where(eligible, s, torch.full_like(s, float("-inf")))
    mx = s.max(dim=1, keepdim=True).values
    z = (s - mx) / tau
    p = torch.softmax(z, dim=1)
    smoothed = (mx.squeeze(1) + tau * torch.logsumexp(z, dim=1)).sum()
    a = _alloc_use(values, costs, groups, num_groups)
    mean = torch.einsum("nm,nmj->nj", p, a)
    soft = (z > -40.0).sum(dim=1) > 1
    ps, as_, ms = p[soft], a[soft], mean[soft]
    hess = (torch.einsum("nm,nmj,nml->jl", ps, as_, as_) - ms.T @ ms) / tau
    lagr = _alloc_dual_terms(values, costs, eligible, groups, num_groups, lam, mx.squeeze(1))
    return smoothed, lagr, mean.sum(dim=0), hess, soft.sum()
