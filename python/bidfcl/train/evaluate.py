r"""Decision quality of a trained model (METHOD.md section 2).

At ``n_budgets`` per-capita budgets ``b_k = k / (n + 1) * C_max`` (k = 1..n, ``C_max`` the largest
arm's mean observed cost on the split: the feasible range from "nobody treated" to "everybody gets
the dearest option"), lam* comes from the RCT-calibrated exact solve of the model's predictions
(:func:`bidfcl.solve_mckp_rct`), and the policy ``choice = argmax_j (r_hat - lam* c_hat)`` is scored:

* **EOM** (IPW): ``V = (1/N) sum_i 1[choice_i = t_i] revenue_i / p_{t_i}`` with its standard error;
  ``eom_mean`` is the mean over the budgets (normalise by the TSM-SL-on-RCT run to compare methods);
* **true value** (synthetic data): ``(1/N) sum_i r_true[i, choice_i]`` and the true cost, and the
  share of the oracle's gain ``(V - V_0) / (V_oracle(b) - V_0)`` (``V_0``: nobody treated);
* where even the model's cheapest policy overspends a budget (``feasible`` false: lam* = inf), the
  model cannot allocate that budget: the result says so per budget (``feasible``, and
  ``n_infeasible``, which every report prints) and the policy scored there is the feasible fallback
  "everyone gets the cheapest arm" (lowest mean observed cost), never the model's;
* **AUCC** when M = 2 (:func:`bidfcl.metrics.aucc`).
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import budgets as budget_units
from ..data import MarketingData, UpliftDataset
from ..distributed import solve_mckp_rct as solve_sharded
from ..metrics import aucc, policy_value
from ..propensity import arm_counts, row_propensity
from ..solver import solve_mckp_rct
from .config import BUDGET_UNITS
from .datasets import arm_cost_means, max_arm_cost

__all__ = [
    "budget_levels",
    "eval_budgets",
    "per_capita_budgets",
    "BUDGET_UNITS",
    "ipw_value",
    "global_row_propensity",
    "evaluate_predictions",
    "evaluate_model",
]


def budget_levels(ds: UpliftDataset, n_budgets: int, parallel=None) -> list[float]:
    """``n_budgets`` per-capita budgets evenly spaced strictly inside ``(0, C_max)``."""
    top = max_arm_cost(ds, parallel)
    return [top * k / (n_budgets + 1) for k in range(1, n_budgets + 1)]


def per_capita_budgets(
    values, unit: str, ds: UpliftDataset, parallel=None, n_rows: Optional[int] = None
) -> list[float]:
    """Budgets ``values`` in ``unit`` as per-capita budgets on the rows ``ds`` (the one conversion):
    ``share`` of ``C_max`` (the largest arm's mean observed cost on ``ds``), ``per_capita`` as given,
    ``total`` spread over ``len(ds)`` rows (``n_rows``: the global count of a sharded split)."""
    unit = budget_units.budget_unit(unit)
    ref = max_arm_cost(ds, parallel) if unit is budget_units.BudgetUnit.SHARE else None
    return budget_units.convert(
        list(values),
        unit,
        budget_units.BudgetUnit.PER_CAPITA,
        reference_cost=ref,
        n_rows=len(ds) if n_rows is None else n_rows,
    )


def eval_budgets(ev, ds: UpliftDataset, parallel=None, n_rows: Optional[int] = None) -> list[float]:
    """The per-capita budgets of an ``[eval]`` section on split ``ds``: ``eval.budgets`` converted from
    ``eval.budget_unit`` (:func:`per_capita_budgets`), else the ``eval.n_budgets`` levels of
    :func:`budget_levels`."""
    if ev.budgets is None:
        return budget_levels(ds, ev.n_budgets, parallel)
    return per_capita_budgets(ev.budgets, ev.budget_unit, ds, parallel, n_rows)


def cheapest_arm(ds: UpliftDataset, parallel=None) -> int:
    """The arm with the lowest mean observed cost (the fallback policy when a model cannot allocate)."""
    means = [float("inf") if v is None else v for v in arm_cost_means(ds, parallel)]
    return int(min(range(len(means)), key=means.__getitem__))


def ipw_value(
    choice: torch.Tensor, ds: UpliftDataset, parallel=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IPW per-capita revenue, cost and revenue standard error of policies ``choice`` ``[K, N]``
    (:func:`bidfcl.metrics.policy_value` with the rows' propensities, or their arm shares). With an
    active ``parallel`` the rows are this rank's shard and the estimates are those of all ranks'
    rows: ``V = S_1 / N``, ``se = sqrt((S_2 - N V^2) / (N - 1) / N)`` from all-reduced sums
    ``S_k = sum_i y_i^k`` and global arm shares."""
    if parallel is None or not parallel.active:
        pv = policy_value(choice, ds.treatment, ds.revenue, ds.cost, ds.propensity)
        return pv.value, pv.cost, pv.value_se
    prop = global_row_propensity(ds, parallel).to(torch.float64)
    match = (choice == ds.treatment.unsqueeze(0)).to(torch.float64) / prop
    y = match * ds.revenue.to(torch.float64)
    z = match * ds.cost.to(torch.float64)
    sums = parallel.sum(
        torch.stack(
            [
                y.sum(1),
                (y * y).sum(1),
                z.sum(1),
                torch.full((y.shape[0],), float(len(ds)), dtype=torch.float64, device=y.device),
            ]
        )
    )
    n = sums[3]
    value, cost = sums[0] / n, sums[2] / n
    var = (sums[1] - n * value * value).clamp_min(0.0) / (n - 1)
    se = torch.where(n > 1, (var / n).sqrt(), torch.full_like(n, float("nan")))
    return value, cost, se


def global_row_propensity(ds: UpliftDataset, parallel) -> torch.Tensor:
    """Per-row propensities of a shard (float64): the rows' own, else the arm shares of every
    rank's rows ``p_t = N_t / N`` (:func:`bidfcl.propensity.row_propensity` with all-reduced counts)."""
    counts = None if ds.propensity is not None else parallel.sum(arm_counts(ds.treatment, ds.n_options))
    return row_propensity(ds.propensity, ds.treatment, num_options=ds.n_options, dtype=torch.float64, counts=counts)


def evaluate_predictions(
    r_hat: torch.Tensor,
    c_hat: torch.Tensor,
    ds: UpliftDataset,
    budgets: list[float],
    *,
    truth: Optional[MarketingData] = None,
    split: Optional[str] = None,
    parallel=None,
) -> dict:
    """Score the lam*-policies of predictions ``r_hat, c_hat`` ``[N, M]`` on the RCT-like rows ``ds``.

    Returns a JSON-ready dict: ``budgets``, ``eom``, ``eom_se``, ``eom_cost``, ``lam``, ``eom_mean``,
    and with ``truth``/``split`` also ``true_value``, ``true_cost``, ``oracle_value``,
    ``none_value``, ``gain_share``, ``true_value_mean``, ``gain_share_mean``; ``aucc`` when M = 2.

    With an active ``parallel`` (:class:`~bidfcl.train.parallel.Parallel`) ``ds`` and the
    predictions are this rank's shard and every number is that of all ranks' rows: lam* from
    :func:`bidfcl.distributed.solve_mckp_rct`, IPW sums all-reduced, the ground truth scored on
    the gathered choices (synthetic truth is held whole by every rank). ``aucc`` is left out there
    (it ranks all rows at once).
    """
    active = parallel is not None and parallel.active
    b = torch.tensor(budgets, dtype=torch.float64)
    c_hat = c_hat.clamp_min(0.0)  # an unconstrained cost head may dip below zero; costs are >= 0
    if active:
        sol = solve_sharded(
            r_hat,
            c_hat,
            ds.treatment,
            ds.cost,
            b,
            propensity=global_row_propensity(ds, parallel).to(r_hat.dtype),
            group=parallel.group,
        )
    else:
        sol = solve_mckp_rct(r_hat, c_hat, ds.treatment, ds.cost, b, propensity=ds.propensity)
    choice = sol.choice
    if not bool(sol.feasible.all()):
        # even the cheapest policy by the model's costs overspends: the model cannot allocate this
        # budget; score the feasible fallback of giving everyone the cheapest arm (by observed cost)
        choice = torch.where(sol.feasible.unsqueeze(1), choice, torch.full_like(choice, cheapest_arm(ds, parallel)))
    value, cost, se = ipw_value(choice, ds, parallel)
    out = {
        "budgets": [float(v) for v in budgets],
        "eom": value.tolist(),
        "eom_se": se.tolist(),
        "eom_cost": cost.tolist(),
        "lam": [float(v) for v in sol.lam],
        "feasible": sol.feasible.tolist(),
        "n_infeasible": int((~sol.feasible).sum()),
        "eom_mean": float(value.mean()),
    }
    if truth is not None and split is not None:
        choice = choice.cpu()  # the ground truth lives on the CPU
        if active:
            choice = torch.cat(parallel.gather_objects(choice), 1)
        tv, tc = truth.true_value(choice, split)
        oracle = truth.oracle(b, split)
        none_v, _ = truth.true_value(torch.zeros(choice.shape[-1], dtype=torch.int64), split)
        gain = (tv - none_v) / (oracle.value - none_v).clamp_min(1e-300)
        out.update(
            true_value=tv.tolist(),
            true_cost=tc.tolist(),
            oracle_value=oracle.value.tolist(),
            none_value=float(none_v),
            gain_share=gain.tolist(),
            true_value_mean=float(tv.mean()),
            oracle_value_mean=float(oracle.value.mean()),
            gain_share_mean=float(gain.mean()),
        )
    if r_hat.shape[1] == 2 and not active:
        out["aucc"] = float(aucc(r_hat, c_hat, ds.treatment, ds.revenue, ds.cost))
    return out


def evaluate_model(
    model,
    ds: UpliftDataset,
    budgets: list[float],
    *,
    truth: Optional[MarketingData] = None,
    split: Optional[str] = None,
    parallel=None,
) -> dict:
    """:func:`evaluate_predictions` of ``model.predict(ds.x)``."""
    r_hat, c_hat = model.predict(ds.x)
    return evaluate_predictions(r_hat, c_hat, ds, budgets, truth=truth, split=split, parallel=parallel)
