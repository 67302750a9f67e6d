"""Allocation under several constraints: global budgets, per-option capacities, eligibility, group budgets.

    max_x  sum_i r[i, x_i]                 x_i in E_i (the options user i is eligible for)
    s.t.   sum_i c_k[i, x_i]      <= B_k         k = 0 .. K-1      global resources
           #{i : x_i = m}         <= cap_m       m = 0 .. M-1      capacities
           sum_{i in g} c_k[i, x_i] <= B_{k, g}  k, g              group budgets

Constraint ``j`` lives in one vector of length ``J = K + M + K G``: ``j < K`` is resource ``j``,
``K + m`` the capacity of option ``m``, ``K + M + k G + g`` group ``g``'s budget on resource ``k``
(:func:`constraint_names` spells them out). An absent constraint has budget ``+inf``, multiplier 0.

Method (exact parts and approximate parts):

1. **Dual phase.** With multipliers ``lam >= 0`` the problem separates per user; the Lagrangian
   dual ``D(lam) = sum_i max_{m in E_i} (r_im - sum_j lam_j a_j[i, m]) + sum_j lam_j b_j`` is an
   upper bound on the LP relaxation, hence on the integer optimum. (a) One exact coordinate-descent
   sweep: each multiplier in turn minimises D with the others fixed, EXACTLY. For a resource or
   group budget that is today's single-budget problem on the adjusted values (the exact MCKP core,
   so lam_j is a breakpoint); for a capacity it is an order statistic of the users' margins for
   that option. (b) Coordinate descent alone stalls on this nonsmooth dual (hundreds of sweeps on
   coupled budgets and capacities), so a projected Newton method on the softmax-smoothed dual
   follows (:func:`_smoothed_newton`), its temperature cut tenfold per stage. (c) Exact sweeps then
   polish until D falls by less than ``tol`` (relative) in a sweep, or ``max_iter`` sweeps in all.
   The minimum of D is approached, not certified: ``dual_bound`` (the smallest D evaluated) is a
   valid bound wherever the phase stops, and ``gap`` says how far the answer can be from the optimum.
2. **Primal repair** (exact feasibility). The Lagrangian policy at the final lam may overshoot a
   constraint (users indifferent at lam). Users are moved one at a time to another eligible option,
   the move with the least value loss per unit of (relative) violation removed first, never raising
   a violated constraint or pushing a satisfied one over its budget; ties by user, then option.
3. **Fill.** Moves that gain value and keep every constraint within budget are then applied, the
   least reduced-cost loss ``gain - lam . delta`` first.

``gap = (dual_bound - value) / |dual_bound|`` bounds the relative distance to the integer optimum.
A constraint that even the cheapest eligible policy violates is reported infeasible (``feasible``
False, ``lam`` +inf), left out of the optimisation, and ``dual_bound`` is -inf.

The single-budget problem (``costs`` ``[N, M]`` or ``[1, N, M]``, one budget, no extras) is handed
to :func:`bidfcl.solve_mckp` and returns exactly its answer.
"""

from __future__ import annotations

import json
import math
from typing import NamedTuple

import numpy as np
import torch

from . import _reference
from ._ops import EXTENSION_LOADED, ops
from .solver import solve_mckp

__all__ = ["AllocationSolution", "solve_allocation", "constraint_names"]

_F64 = torch.float64
_DEBUG = bool(__import__("os").environ.get("BIDFCL_ALLOCATION_DEBUG"))


class AllocationSolution(NamedTuple):
    """Result of :func:`solve_allocation`. ``[J]`` fields follow the constraint layout (module doc)."""

    choice: torch.Tensor  #: int64 [N] option per user (always eligible)
    lam: torch.Tensor  #: float64 [J] multipliers; 0 for absent constraints, +inf for infeasible ones
    spend: torch.Tensor  #: float64 [J] spend of ``choice`` per constraint (a user count for capacities)
    budget: torch.Tensor  #: float64 [J] the limits as given (+inf where there is no constraint)
    feasible: torch.Tensor  #: bool [J] spend <= budget
    value: torch.Tensor  #: 0-d float64 total value of ``choice``
    dual_bound: torch.Tensor  #: 0-d float64 Lagrangian upper bound on the optimum (-inf if infeasible)
    gap: torch.Tensor  #: 0-d float64 (dual_bound - value) / |dual_bound|
    iterations: int  #: dual coordinate-descent sweeps
    newton_steps: int  #: Newton steps on the smoothed dual
    repair_moves: int  #: users moved by the repair
    fill_moves: int  #: users moved by the fill


def constraint_names(k: int, m: int, g: int = 0) -> list[str]:
    """Names of the ``J = K + M + K G`` constraints in layout order."""
    names = [f"budget[{kk}]" for kk in range(k)] + [f"capacity[{o}]" for o in range(m)]
    names += [f"group_budget[{kk}, {gg}]" for kk in range(k) for gg in range(g)]
    return names


def _tensor(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"bidfcl: {name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def _vector(x, name: str, length: int, what: str, allow_inf: bool) -> torch.Tensor:
    """A float64 CPU vector of `length` entries >= 0 (a number is accepted when length == 1)."""
    if isinstance(x, bool):
        raise TypeError(f"bidfcl: {name} must be a number or a tensor, got bool")
    if isinstance(x, (int, float)):
        t = torch.tensor([float(x)], dtype=_F64)
    elif isinstance(x, torch.Tensor):
        if x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"bidfcl: {name} must be a real tensor, got {x.dtype}")
        t = x.detach().to("cpu", _F64).reshape(-1) if x.dim() == 0 else x.detach().to("cpu", _F64)
    elif isinstance(x, (list, tuple)):
        t = torch.tensor([float(v) for v in x], dtype=_F64)
    else:
        raise TypeError(f"bidfcl: {name} must be a number, a list or a tensor, got {type(x).__name__}")
    if t.dim() != 1 or t.shape[0] != length:
        raise ValueError(f"bidfcl: {name} must have shape [{length}] ({what}), got {list(t.shape)}")
    for j, v in enumerate(t.tolist()):
        if v != v or (not allow_inf and math.isinf(v)):
            raise ValueError(
                f"bidfcl: {name} must be {'a number (inf allowed)' if allow_inf else 'finite'}, got {v} at index {j}"
            )
        if v < 0:
            raise ValueError(f"bidfcl: {name} must be >= 0, got {v} at index {j}")
    return t


class _Problem:
    """Validated inputs and the constraint vector of one call."""

    def __init__(self, values, costs, budgets, capacity, eligible, groups, group_budgets):
        values, costs = _tensor(values, "values"), _tensor(costs, "costs")
        if values.dim() != 2:
            raise ValueError(f"bidfcl: values must be 2-D [N users, M options], got shape {list(values.shape)}")
        n, m = values.shape
        if costs.dim() == 2:
            costs = costs.unsqueeze(0)
        if costs.dim() != 3 or tuple(costs.shape[1:]) != (n, m):
            raise ValueError(
                f"bidfcl: costs must have shape [K, {n}, {m}] (or [{n}, {m}] for one resource) to "
                f"match values {list(values.shape)}, got {list(costs.shape)}"
            )
        k = costs.shape[0]
        for name, t in (("values", values), ("costs", costs)):
            if t.dtype not in (torch.float32, torch.float64):
                raise ValueError(f"bidfcl: {name} must be float32 or float64, got {t.dtype}")
        if values.dtype != costs.dtype:
            raise ValueError(f"bidfcl: values and costs must have the same dtype, got {values.dtype} and {costs.dtype}")
        if values.device != costs.device:
            raise ValueError(
                f"bidfcl: values and costs must be on the same device, got {values.device} and {costs.device}"
            )
        self.scalar_budget = isinstance(budgets, (int, float)) and not isinstance(budgets, bool)
        b = _vector(
            budgets, "budgets", k, "one total budget per resource, the first dimension of costs", allow_inf=False
        )
        cap = None
        if capacity is not None:
            cap = _vector(
                capacity, "capacity", m, "the most users per option, one per column of values", allow_inf=True
            )
        if eligible is not None:
            eligible = _tensor(eligible, "eligible")
            if eligible.dtype != torch.bool:
                raise ValueError(f"bidfcl: eligible must be a bool tensor, got {eligible.dtype}")
            if tuple(eligible.shape) != (n, m):
                raise ValueError(f"bidfcl: eligible must have shape [{n}, {m}] like values, got {list(eligible.shape)}")
            eligible = eligible.to(values.device)
            if n and bool((~eligible.any(dim=1)).any()):
                i = int(torch.nonzero(~eligible.any(dim=1))[0])
                raise ValueError(f"bidfcl: eligible must allow at least one option per user, got none at row {i}")
        if (groups is None) != (group_budgets is None):
            raise ValueError(
                "bidfcl: groups and group_budgets go together: give both or neither "
                f"(got groups={'None' if groups is None else 'a tensor'}, "
                f"group_budgets={'None' if group_budgets is None else 'given'})"
            )
        g = 0
        gb = None
        if groups is not None:
            groups = _tensor(groups, "groups")
            if groups.dtype.is_floating_point or groups.dtype == torch.bool or groups.is_complex():
                raise ValueError(f"bidfcl: groups must be an integer tensor, got {groups.dtype}")
            if tuple(groups.shape) != (n,):
                raise ValueError(f"bidfcl: groups must have shape [{n}] (one group per user), got {list(groups.shape)}")
            groups = groups.to(device=values.device, dtype=torch.long)
            gbt = group_budgets if isinstance(group_budgets, torch.Tensor) else torch.tensor(group_budgets, dtype=_F64)
            gbt = gbt.detach().to("cpu", _F64)
            if gbt.dim() == 1 and k == 1:
                gbt = gbt.unsqueeze(0)
            if gbt.dim() != 2 or gbt.shape[0] != k or gbt.shape[1] < 1:
                raise ValueError(
                    f"bidfcl: group_budgets must have shape [K={k}, G] (one budget per resource and "
                    f"group; [G] when K = 1), got {list(gbt.shape)}"
                )
            g = gbt.shape[1]
            gb = _vector(gbt.reshape(-1), "group_budgets", k * g, "flattened [K, G]", allow_inf=True).reshape(k, g)
            if n and bool(((groups < 0) | (groups >= g)).any()):
                i = int(torch.nonzero((groups < 0) | (groups >= g))[0])
                raise ValueError(
                    f"bidfcl: groups must be in [0, G) = [0, {g}) (G = group_budgets.shape[1]), "
                    f"got {int(groups[i])} at row {i}"
                )
        self.values, self.costs, self.eligible, self.groups = values, costs, eligible, groups
        self.n, self.m, self.k, self.g = n, m, k, g
        inf = torch.full((m,), math.inf, dtype=_F64)
        parts = [b, cap if cap is not None else inf]
        if gb is not None:
            parts.append(gb.reshape(-1))
        self.budget = torch.cat(parts)  # as given
        # what spends are compared against (the ops apply the same slack to the budgets they get)
        self.limit = _reference.budget_limit(self.budget)
        self.single = k == 1 and cap is None and eligible is None and groups is None
        self.j = self.budget.shape[0]

    def args(self):
        return self.values, self.costs, self.eligible, self.groups, self.g


def _ops_for(device: torch.device):
    """(policy, line_search, repair) for tensors on `device`."""
    if not EXTENSION_LOADED:
        return _reference.allocation_policy, _reference.allocation_line_search, _reference.allocation_repair
    if device.type == "cpu":
        return ops.allocation_policy, ops.allocation_line_search, ops.allocation_repair

    def line_search(values, costs, eligible, groups, g, lam, budgets, j, check):
        # torch composition around the device's exact single-budget solver
        return _reference._allocation_line_search_impl(
            values, costs, eligible, groups, g, lam, budgets, j, ops.solve_mckp
        )

    def repair(values, costs, eligible, groups, g, lam, budgets, choice, fill, check):
        # sequential by nature: runs on the host
        cpu = lambda t: None if t is None else t.cpu()  # noqa: E731
        out = ops.allocation_repair(
            cpu(values), cpu(costs), cpu(eligible), cpu(groups), g, cpu(lam), cpu(budgets), cpu(choice), fill, check
        )
        return tuple(t.to(device) for t in out)

    return ops.allocation_policy, line_search, repair


def solve_allocation(
    values: torch.Tensor,
    costs: torch.Tensor,
    budgets,
    *,
    capacity=None,
    eligible=None,
    groups=None,
    group_budgets=None,
    max_iter: int = 50,
    tol: float = 1e-9,
    smooth: bool = True,
    tau_min: float = 1e-7,
    fill: bool = True,
) -> AllocationSolution:
    """Choose one eligible option per user, maximising total value under every constraint.

    Args:
        values: ``[N, M]`` float32/float64 value of giving option m to user i (any sign, finite).
        costs: ``[K, N, M]`` (or ``[N, M]`` for one resource), same dtype and device, finite, >= 0.
        budgets: ``[K]`` total budget per resource (a number when K = 1), finite, >= 0.
        capacity: ``[M]`` the most users per option (``inf`` = no limit; fractions act as their floor).
        eligible: bool ``[N, M]``; False options are never chosen; every user needs one True.
        groups: integer ``[N]`` group of each user in ``[0, G)``, with ``group_budgets`` ``[K, G]``
            (``[G]`` when K = 1): the most group g may spend of resource k (``inf`` = no limit).
        max_iter: most exact coordinate-descent sweeps; tol: relative decrease of the dual that ends them.
        smooth: run the Newton phase on the smoothed dual (at most 128 constraints), down to a
            temperature of ``tau_min`` times the median spread of a user's values.
        fill: run the fill phase after the repair.

    Returns:
        :class:`AllocationSolution` (see the module docstring for what is exact and what is not).
    """
    pb = _Problem(values, costs, budgets, capacity, eligible, groups, group_budgets)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"bidfcl: max_iter must be an int >= 0, got {max_iter!r}")
    if not (isinstance(tol, (int, float)) and tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"bidfcl: tol must be a finite number >= 0, got {tol!r}")
    if pb.n == 0:
        return _empty(pb)
    if pb.single:
        return _single_budget(pb)
    dev = pb.values.device
    policy, line_search, repair_op = _ops_for(dev)
    args = pb.args()
    budget = pb.budget.to(dev)  # the ops apply the slack themselves
    lam = [0.0] * pb.j

    def lam_tensor(v):
        return torch.tensor(v, dtype=_F64, device=dev)

    def dual_value(lagrangian, lam_v):
        return float(lagrangian) + sum(l * b for l, b in zip(lam_v, pb.limit.tolist()) if l > 0)

    _, _, _, lagr = policy(*args, lam_tensor(lam))  # validates every entry once
    best = [dual_value(lagr, lam), list(lam)]

    def offer(d, lam_v):  # every exact dual value seen is a bound; keep the smallest
        if d < best[0]:
            best[0], best[1] = d, list(lam_v)

    # constraints that can bind: a finite limit, and for a capacity one below the number of users
    active = [
        j
        for j in range(pb.j)
        if math.isfinite(pb.limit[j]) and not (pb.k <= j < pb.k + pb.m and float(pb.limit[j]) >= pb.n)
    ]
    infeasible = []

    def sweep():
        for j in list(active):
            lj = float(line_search(*args, lam_tensor(lam), budget, j, False))
            if math.isinf(lj):  # even the cheapest eligible policy violates j: leave it out
                infeasible.append(j)
                active.remove(j)
                lj = 0.0
            lam[j] = lj
        _, _, _, lg = policy(*args, lam_tensor(lam))
        d = dual_value(lg, lam)
        offer(d, lam)
        return d

    iterations = newton_steps = 0
    prev = best[0]
    if max_iter > 0:
        prev = sweep()  # also finds the constraints that cannot be met
        iterations = 1
    if smooth and active and len(lam) <= 128 and max_iter > 0:
        newton_steps = _smoothed_newton(pb, dev, lam, active, dual_value, offer, tau_min)
        lam[:] = best[1]
    for it in range(iterations, max_iter):
        d = sweep()
        iterations = it + 1
        if not active or prev - d <= tol * abs(d):
            break
        prev = d
    best_dual, best_lam = best
    lam_t = lam_tensor(best_lam)
    choice, _, _, _ = policy(*args, lam_t)
    choice, spend, value, feasible, moves = repair_op(*args, lam_t, budget, choice, fill, False)
    lam_out = lam_t.clone()
    if infeasible:
        lam_out[infeasible] = math.inf
        best_dual = -math.inf
    dual = torch.tensor(best_dual, dtype=_F64, device=dev)
    return AllocationSolution(
        choice,
        lam_out,
        spend,
        pb.budget.to(dev),
        feasible,
        value,
        dual,
        _gap(dual, value),
        iterations,
        newton_steps,
        int(moves[0]),
        int(moves[1]),
    )


def _smoothed_newton(pb: _Problem, dev, lam: list, active: list, dual_value, offer, tau_min: float) -> int:
    """Projected Newton on the softmax-smoothed dual, with the temperature cut tenfold per stage.

    D_tau(lam) = sum_i tau log sum_m exp(s_im / tau) + lam . b is smooth and convex, lies above D and
    within N tau log M of it; its gradient and Hessian come from one pass (allocation_smoothed).
    Newton steps over the free multipliers (lam_j > 0 or a negative gradient), projected onto
    lam >= 0 with an Armijo backtracking on D_tau, from tau = 0.02 S down to tau_min S (S: the
    spread of a user's values, median over users). Every pass also yields the exact dual value at its lam (offered as a
    bound). Updates `lam` in place; returns the number of Newton steps.
    """
    best_dual = [math.inf]

    def offer_and_track(d, lam_v):
        best_dual[0] = min(best_dual[0], d)
        offer(d, lam_v)

    smoothed = ops.allocation_smoothed if EXTENSION_LOADED and dev.type == "cpu" else _reference.allocation_smoothed
    values, costs, eligible, groups, g = pb.args()
    v = values.to(_F64)
    if eligible is not None:
        hi = torch.where(eligible, v, torch.full_like(v, -math.inf)).max(dim=1).values
        lo = torch.where(eligible, v, torch.full_like(v, math.inf)).min(dim=1).values
    else:
        hi, lo = v.max(dim=1).values, v.min(dim=1).values
    scale = float((hi - lo).median())  # an order statistic: the same for any thread count
    if not scale > 0:
        return 0
    act = torch.tensor(active, dtype=torch.long)
    b = pb.limit[act]
    lam_all = torch.tensor(lam, dtype=_F64)

    def evaluate(lam_vec, tau):
        sm, lg, ex, hess, soft = smoothed(values, costs, eligible, groups, g, lam_vec.to(dev), tau, False)
        offer_and_track(dual_value(lg, lam_vec.tolist()), lam_vec.tolist())
        la = lam_vec[act]
        f = float(sm) + float((la * b).sum())
        grad = b - ex.cpu()[act]
        return f, grad, hess.cpu()[act][:, act], int(soft)

    steps = 0
    tau = 0.02 * scale
    while tau >= tau_min * scale * (1 - 1e-9):
        cur = evaluate(lam_all, tau)
        if cur[3] < 4 * len(active):  # too few users near a tie: the smoothing no longer helps
            break
        for _ in range(20):
            f, grad, hess, soft = cur
            la = lam_all[act]
            free = (la > 0) | (grad < 0)
            if not bool(free.any()):
                break
            hf = hess[free][:, free]
            ridge = 1e-9 * float(hf.diagonal().abs().max()) + 1e-300
            step = torch.linalg.solve(hf + ridge * torch.eye(hf.shape[0], dtype=_F64), -grad[free])
            decrement = float(-(grad[free] * step).sum())
            if not decrement > max(1e-12 * abs(f), 0.1 * tau * max(soft, 1)):
                break
            t, accepted = 1.0, None
            while t > 1.0 / 64:
                trial = la.clone()
                trial[free] = (la[free] + t * step).clamp_min(0.0)
                cand = lam_all.clone()
                cand[act] = trial
                nxt = evaluate(cand, tau)
                if nxt[0] <= f + 1e-4 * float((grad * (trial - la)).sum()):
                    accepted = (cand, nxt)
                    break
                t *= 0.5
            if accepted is None:
                break
            lam_all, cur = accepted
            steps += 1
        if _DEBUG:
            print(f"tau {tau:.3g} steps {steps} soft {cur[3]} f {cur[0]:.10g} best {best_dual[0]:.10g}")
        tau *= 0.1
    lam[:] = lam_all.tolist()
    return steps


def _gap(dual: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    d, v = float(dual), float(value)
    if not math.isfinite(d):
        return torch.tensor(math.inf, dtype=_F64, device=dual.device)
    return torch.tensor((d - v) / abs(d) if d != 0 else (0.0 if d == v else math.inf), dtype=_F64, device=dual.device)


def _empty(pb: _Problem) -> AllocationSolution:
    """No users: nothing to choose, nothing spent."""
    dev = pb.values.device
    zero = torch.zeros((), dtype=_F64, device=dev)
    return AllocationSolution(
        torch.zeros(0, dtype=torch.long, device=dev),
        torch.zeros(pb.j, dtype=_F64, device=dev),
        torch.zeros(pb.j, dtype=_F64, device=dev),
        pb.budget.to(dev),
        torch.ones(pb.j, dtype=torch.bool, device=dev),
        zero,
        zero.clone(),
        zero.clone(),
        0,
        0,
        0,
        0,
    )


def _single_budget(pb: _Problem) -> AllocationSolution:
    """One resource, one budget, nothing else: exactly :func:`bidfcl.solve_mckp`'s answer."""
    sol = solve_mckp(pb.values, pb.costs[0], float(pb.budget[0]))
    dev = pb.values.device
    counts = torch.bincount(sol.choice, minlength=pb.m).to(_F64)
    lam = torch.cat([sol.lam.reshape(1).to(_F64), torch.zeros(pb.m, dtype=_F64, device=dev)])
    spend = torch.cat([sol.spend.reshape(1), counts])
    feasible = torch.cat([sol.feasible.reshape(1), torch.ones(pb.m, dtype=torch.bool, device=dev)])
    return AllocationSolution(
        sol.choice,
        lam,
        spend,
        pb.budget.to(dev),
        feasible,
        sol.value,
        sol.dual_bound,
        _gap(sol.dual_bound, sol.value),
        0,
        0,
        0,
        0,
    )


# --------------------------------------------------------------------------------------------------
# `bidfcl allocate` with extra constraints (the CLI's options are parsed here, not in cli.py)
# --------------------------------------------------------------------------------------------------

_RULE_OPS = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
}


def cli_constraints_given(args) -> bool:
    """True when `bidfcl allocate` was given any constraint beyond the one budget."""
    return bool(
        getattr(args, "extra_cost", None)
        or getattr(args, "capacity", None)
        or getattr(args, "eligible_columns", None)
        or getattr(args, "eligibility_rules", None)
        or getattr(args, "group_column", None)
    )


def _column(table, name: str, what: str):
    if name not in table.column_names:
        raise ValueError(f"bidfcl allocate: {what} column {name!r} is not in the input (has {table.column_names})")
    col = table.column(name).to_numpy(zero_copy_only=False)
    if col.dtype != np.bool_ and not np.issubdtype(col.dtype, np.number):
        raise ValueError(f"bidfcl allocate: {what} column {name!r} must be numeric or bool, got {col.dtype}")
    col = col.astype(np.float64)
    bad = ~np.isfinite(col)
    if bad.any():
        raise ValueError(
            f"bidfcl allocate: {what} column {name!r} has a missing or non-finite value at row "
            f"{int(np.flatnonzero(bad)[0])}"
        )
    return col


def _option_columns(spec: str, m: int) -> list[str]:
    """'PREFIX' -> PREFIX0 .. PREFIX{M-1}; 'A,B,C' -> exactly M named columns."""
    if "," in spec:
        cols = [c.strip() for c in spec.split(",")]
        if len(cols) != m:
            raise ValueError(
                f"bidfcl allocate: expected {m} comma-separated columns (one per option), got {len(cols)} in {spec!r}"
            )
        return cols
    return [f"{spec}{o}" for o in range(m)]


def _key_value(item: str, flag: str, key_what: str):
    if "=" not in item:
        raise ValueError(f"bidfcl allocate: {flag} expects {key_what}=NUMBER, got {item!r}")
    key, val = item.rsplit("=", 1)
    try:
        num = float(val)
    except ValueError:
        raise ValueError(f"bidfcl allocate: {flag} {item!r}: {val!r} is not a number") from None
    if num != num or num < 0:
        raise ValueError(f"bidfcl allocate: {flag} {item!r}: expected a number >= 0, got {val!r}")
    return key.strip(), num


def eligibility_from_rules(path: str, table, m: int):
    """Eligibility [N, M] from a JSON rule file: a list of {"option": m, "where": "COLUMN OP NUMBER"}
    (OP in == != < <= > >=). An option is eligible for a row when every rule naming it holds; an
    option without rules is eligible for everyone."""

    with open(path) as fh:
        try:
            rules = json.load(fh)
        except json.JSONDecodeError as exc:
            raise ValueError(f"bidfcl allocate: {path} is not valid JSON ({exc})") from None
    if not isinstance(rules, list):
        raise ValueError(f"bidfcl allocate: {path} must hold a JSON list of rules, got {type(rules).__name__}")
    eligible = np.ones((table.num_rows, m), dtype=bool)
    for q, rule in enumerate(rules):
        where = f"{path} rule {q}"
        if not isinstance(rule, dict) or set(rule) != {"option", "where"}:
            raise ValueError(f"bidfcl allocate: {where} must be an object with keys 'option' and 'where', got {rule!r}")
        o = rule["option"]
        if isinstance(o, bool) or not isinstance(o, int) or not 0 <= o < m:
            raise ValueError(f"bidfcl allocate: {where}: option must be an integer in [0, {m}), got {o!r}")
        parts = str(rule["where"]).split()
        if len(parts) != 3 or parts[1] not in _RULE_OPS:
            raise ValueError(
                f"bidfcl allocate: {where}: 'where' must read 'COLUMN OP NUMBER' with OP one of "
                f"{' '.join(_RULE_OPS)}, got {rule['where']!r}"
            )
        try:
            num = float(parts[2])
        except ValueError:
            raise ValueError(f"bidfcl allocate: {where}: {parts[2]!r} is not a number") from None
        eligible[:, o] &= _RULE_OPS[parts[1]](_column(table, parts[0], f"{where}'s"), num)
    return eligible


def allocate_table(table, r_hat: torch.Tensor, c_hat: torch.Tensor, total: float, args):
    """`bidfcl allocate` with constraints: resource 0 is the model's predicted cost with the total
    budget; ``--extra-cost SPEC=TOTAL`` adds a resource whose per-option costs are input columns
    (SPEC: a prefix of M columns PREFIX0..PREFIX{M-1}, or M comma-separated names);
    ``--capacity OPTION=COUNT``; ``--eligible-columns PREFIX`` (0/1 or bool columns per option) and/or
    ``--eligibility-rules FILE``; ``--group-column COL`` with ``--group-budget VALUE=TOTAL`` (on
    resource 0; groups without a budget are unconstrained). Returns (solution, printable lines)."""
    n, m = r_hat.shape
    dt = r_hat.dtype
    costs = [c_hat]
    budgets = [float(total)]
    for item in args.extra_cost or []:
        spec, budget = _key_value(item, "--extra-cost", "COLUMNS")
        cols = [_column(table, c, "--extra-cost") for c in _option_columns(spec, m)]
        costs.append(torch.from_numpy(np.stack(cols, axis=1)).to(dt))
        budgets.append(budget)
    capacity = None
    if args.capacity:
        capacity = [math.inf] * m
        for item in args.capacity:
            key, count = _key_value(item, "--capacity", "OPTION")
            if not key.isdigit() or int(key) >= m:
                raise ValueError(f"bidfcl allocate: --capacity {item!r}: OPTION must be an integer in [0, {m})")
            capacity[int(key)] = count
    eligible = None
    if args.eligible_columns:
        cols = [_column(table, c, "--eligible-columns") for c in _option_columns(args.eligible_columns, m)]
        eligible = np.stack(cols, axis=1) != 0
    if args.eligibility_rules:
        rules = eligibility_from_rules(args.eligibility_rules, table, m)
        eligible = rules if eligible is None else eligible & rules
    groups = group_budgets = None
    labels = []
    if args.group_column:
        raw = table.column(args.group_column) if args.group_column in table.column_names else None
        if raw is None:
            raise ValueError(
                f"bidfcl allocate: --group-column {args.group_column!r} is not in the input (has {table.column_names})"
            )
        vals = [str(x) for x in raw.to_pylist()]
        labels = sorted(set(vals))
        index = {v: q for q, v in enumerate(labels)}
        groups = torch.tensor([index[v] for v in vals], dtype=torch.long)
        group_budgets = torch.full((len(costs), len(labels)), math.inf, dtype=_F64)
        for item in args.group_budget or []:
            key, budget = _key_value(item, "--group-budget", "GROUP")
            if key not in index:
                raise ValueError(f"bidfcl allocate: --group-budget {item!r}: no row has {args.group_column} = {key!r}")
            group_budgets[0, index[key]] = budget
    elif args.group_budget:
        raise ValueError("bidfcl allocate: --group-budget needs --group-column")
    sol = solve_allocation(
        r_hat,
        torch.stack(costs),
        budgets,
        capacity=capacity,
        eligible=None if eligible is None else torch.from_numpy(eligible),
        groups=groups,
        group_budgets=group_budgets,
    )
    names = constraint_names(len(costs), m, len(labels))
    if labels:
        names[len(costs) + m :] = [
            f"group_budget[{kk}, {args.group_column}={lab}]" for kk in range(len(costs)) for lab in labels
        ]
    lines = [
        f"allocated {n:,} users under {len(costs)} budget(s): value {float(sol.value):,.4f}, dual bound "
        f"{float(sol.dual_bound):,.4f} (relative gap {float(sol.gap):.2e}), {sol.iterations} sweeps, "
        f"{sol.newton_steps} Newton steps"
    ]
    for j, name in enumerate(names):
        if math.isfinite(float(sol.budget[j])):
            lines.append(
                f"  {name:<28} spend {float(sol.spend[j]):,.4f} / {float(sol.budget[j]):,.4f}  "
                f"lam {float(sol.lam[j]):.6g}  {'ok' if bool(sol.feasible[j]) else 'INFEASIBLE'}"
            )
    return sol, lines
