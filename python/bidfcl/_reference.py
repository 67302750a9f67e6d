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

import torch

_F64 = torch.float64


# --------------------------------------------------------------------------------------------------
# input checks (the same rules as cpp/torch/checks.h, so the twins reject what the ops reject)
# --------------------------------------------------------------------------------------------------


def _check_problem(values: torch.Tensor, costs: torch.Tensor) -> None:
    for name, t in (("values", values), ("costs", costs)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"bidfcl: {name} must be a tensor, got {type(t).__name__}")
        if t.dtype not in (torch.float32, torch.float64):
            raise RuntimeError(f"bidfcl: {name} must be float32 or float64, got {t.dtype}")
        if t.dim() != 2:
            raise RuntimeError(f"bidfcl: {name} must be 2-D [N individuals, M options], got shape {list(t.shape)}")
    if values.dtype != costs.dtype:
        raise RuntimeError(f"bidfcl: values and costs must have the same dtype, got {values.dtype} and {costs.dtype}")
    if values.device != costs.device:
        raise RuntimeError(f"bidfcl: values and costs must be on the same device, got {values.device} and {costs.device}")
    if values.shape != costs.shape:
        raise RuntimeError(
            f"bidfcl: values and costs must have the same shape, got {list(values.shape)} and {list(costs.shape)}"
        )
    if values.shape[1] < 1:
        raise RuntimeError(f"bidfcl: values must have at least one option (M >= 1), got shape {list(values.shape)}")
    if values.shape[0] < 1:
        raise RuntimeError(f"bidfcl: values must hold at least one individual (N >= 1), got shape {list(values.shape)}")
    if values.shape[1] > 256:
        raise RuntimeError(f"bidfcl: at most 256 options are supported, got M = {values.shape[1]}")
    _first_bad(~torch.isfinite(values), values, "values must be finite")
    _first_bad(~torch.isfinite(costs), costs, "costs must be finite")
    _first_bad(costs < 0, costs, "costs must be >= 0")


def _first_bad(mask: torch.Tensor, t: torch.Tensor, what: str) -> None:
    if bool(mask.any()):
        pos = torch.nonzero(mask)[0].tolist()
        val = t[tuple(pos)].item()
        raise RuntimeError(f"bidfcl: {what}, got {val:g} at {pos}")


def _check_budgets(values: torch.Tensor, budgets: torch.Tensor, what: str) -> None:
    if budgets.dtype != _F64:
        raise RuntimeError(f"bidfcl: budgets must be float64, got {budgets.dtype}")
    if budgets.dim() != 1:
        raise RuntimeError(f"bidfcl: budgets must be 1-D [K] ({what}), got shape {list(budgets.shape)}")
    if budgets.shape[0] < 1:
        raise RuntimeError(f"bidfcl: budgets must hold at least one budget, got shape {list(budgets.shape)}")
    if budgets.device != values.device:
        raise RuntimeError(f"bidfcl: values and budgets must be on the same device, got {values.device} and {budgets.device}")
    for k, b in enumerate(budgets.tolist()):
        if b != b or b in (float("inf"), float("-inf")):
            raise RuntimeError(f"bidfcl: budgets must be finite, got {b:g} at index {k}")
        if b < 0:
            raise RuntimeError(f"bidfcl: budgets must be >= 0 ({what}), got {b:g} at index {k}")


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


def solve_mckp(values: torch.Tensor, costs: torch.Tensor, budgets: torch.Tensor):
    """Twin of ``bidfcl::solve_mckp``: the longest prefix of the step order that fits each budget."""
    _check_problem(values, costs)
    _check_budgets(values, budgets, "total budgets")
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


def solve_mckp_bisection(values: torch.Tensor, costs: torch.Tensor, budgets: torch.Tensor, max_iter: int, tol: float):
    """Twin of ``bidfcl::solve_mckp_bisection``: the paper's bisection on lam (eager, one pass per step).

    Bracket [0, max r/c] (doubled until the policy fits), then halve until ``hi - lo <= tol * hi`` or
    ``max_iter`` steps; returns the feasible end ``hi``. No tie upgrades.
    """
    _check_problem(values, costs)
    _check_budgets(values, budgets, "total budgets")
    if max_iter < 0:
        raise RuntimeError(f"bidfcl: max_iter must be >= 0, got {max_iter}")
    if not (tol >= 0 and tol != float("inf")):
        raise RuntimeError(f"bidfcl: tol must be finite and >= 0, got {tol}")
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


def solve_mckp_rct(values, costs, treatment, cost_obs, propensity, budgets):
    """Twin of ``bidfcl::solve_mckp_rct``: the first crossing of the IPW spend estimate.

    ``spend(prefix) = (1/N) sum_i 1[choice_i = t_i] cost_obs_i / p_i``, walked along the step order
    from the cheapest policy; lam* is the breakpoint of the first step that pushes the estimate over
    the per-capita budget (0 when none does).
    """
    _check_problem(values, costs)
    n, m = values.shape
    _check_rct_inputs(values, treatment, cost_obs, propensity)
    _check_budgets(values, budgets, "per-capita budgets")
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


def _check_rct_inputs(values, treatment, cost_obs, propensity) -> None:
    n, m = values.shape
    if treatment.dtype != torch.long:
        raise RuntimeError(f"bidfcl: treatment must be int64, got {treatment.dtype}")
    for name, t in (("treatment", treatment), ("cost_obs", cost_obs), ("propensity", propensity)):
        if t.dim() != 1 or t.shape[0] != n:
            raise RuntimeError(f"bidfcl: {name} must have shape [{n}] (one entry per individual (row of values)), got {list(t.shape)}")
    for name, t in (("cost_obs", cost_obs), ("propensity", propensity)):
        if t.dtype != values.dtype:
            raise RuntimeError(f"bidfcl: values and {name} must have the same dtype, got {values.dtype} and {t.dtype}")
    bad = (treatment < 0) | (treatment >= m)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise RuntimeError(f"bidfcl: treatment must be in [0, M) = [0, {m}), got {int(treatment[i])} at row {i}")
    bad = ~((propensity > 0) & (propensity <= 1))
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise RuntimeError(f"bidfcl: propensity must be in (0, 1], got {float(propensity[i]):g} at row {i}")
    bad = ~torch.isfinite(cost_obs)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise RuntimeError(f"bidfcl: cost_obs must be finite, got {float(cost_obs[i]):g} at row {i}")
