"""Unbiased decision quality on randomised (RCT) data (METHOD.md section 2).

* :func:`policy_value` -- IPW (or Hajek) per-capita revenue and cost of a fixed policy, with
  standard errors.
* :func:`eom` / :func:`eom_curve` -- the expected outcome metric: lam* from the RCT-calibrated
  solve of the model's predictions at a per-capita budget, then :func:`policy_value` of that policy.
  Papers report it normalised by a baseline model's EOM (TSM-SL on RCT = 1.0000); divide yourself.
* :func:`aucc` / :func:`aucc_curve` -- area under the cost curve for two options (ROI ranking).
* :func:`qini` / :func:`auuc` -- uplift-ranking areas for users with a single outcome.

Propensity everywhere: ``None`` uses the arm shares ``p_t = N_t / N`` of the rows given; a per-row
``[N]`` or per-arm ``[M]`` tensor is accepted too (per-row wins when N == M). The one contract and
its checks are :mod:`bidfcl.propensity`'s.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import _validate
from ._ops import MAX_OPTIONS, ops
from ._validate import InputError, call_op
from .propensity import row_propensity
from .solver import solve_mckp_rct

__all__ = [
    "PolicyValue",
    "EomResult",
    "AuccCurve",
    "policy_value",
    "eom",
    "eom_curve",
    "aucc",
    "aucc_curve",
    "qini",
    "auuc",
    "MAX_CURVE_Q",
]

#: Largest ``q`` of :func:`aucc` / :func:`qini` / :func:`auuc`. Each curve point costs 8 bytes per
#: curve plus an index, so 10^6 points stay below 50 MB, and the curves are step functions with at
#: most N + 1 distinct points: past about N points a larger q only repeats them. The bound is fixed
#: rather than N so that the default q = 200 also works on small samples. (Unbounded, q = 10^9
#: asked for 16 GB.)
MAX_CURVE_Q = 1_000_000


class PolicyValue(NamedTuple):
    """Per-capita estimates, float64; ``[K]`` for K policies or 0-d for one."""

    value: torch.Tensor  #: revenue per capita of the policy
    cost: torch.Tensor  #: cost per capita of the policy
    value_se: torch.Tensor  #: standard error of ``value``
    cost_se: torch.Tensor  #: standard error of ``cost``


class EomResult(NamedTuple):
    """:func:`eom` at one budget (0-d fields) or :func:`eom_curve` at K budgets (``[K]`` fields)."""

    value: torch.Tensor  #: EOM: per-capita revenue of the lam* policy (float64)
    cost: torch.Tensor  #: its per-capita cost (float64)
    value_se: torch.Tensor
    cost_se: torch.Tensor
    lam: torch.Tensor  #: lam* of the RCT-calibrated solve (input dtype)
    feasible: torch.Tensor  #: False where even the cheapest policy exceeds the budget


class AuccCurve(NamedTuple):
    aucc: torch.Tensor  #: 0-d float64
    cost_curve: torch.Tensor  #: ``[q + 1]`` incremental per-capita cost at each point
    revenue_curve: torch.Tensor  #: ``[q + 1]`` incremental per-capita revenue at each point


def _tensor(x, name: str) -> torch.Tensor:
    return _validate.tensor(x, name)


def _outcome(x, name: str, dtype=None) -> torch.Tensor:
    """A real ``[N]`` outcome (revenue, cost, score), as ``dtype`` (default: float64 unless already float)."""
    x = _tensor(x, name)
    if x.is_complex():
        raise _validate.InputTypeError(f"bidfcl: {name} must be a real tensor, got dtype {x.dtype}")
    if dtype is None:
        dtype = x.dtype if x.is_floating_point() else torch.float64
    return x.to(dtype)


def _q(q) -> int:
    return _validate.integer(
        q, "q", lo=1, hi=MAX_CURVE_Q, why=" (curve points; bidfcl.metrics.MAX_CURVE_Q bounds the curve's memory)"
    )


def policy_value(
    choice: torch.Tensor,
    treatment: torch.Tensor,
    revenue: torch.Tensor,
    cost: torch.Tensor,
    propensity=None,
    normalize: str = "ipw",
    *,
    n_options=None,
) -> PolicyValue:
    """Unbiased per-capita revenue and cost of a fixed policy on RCT rows, with standard errors.

    With ``y_i = 1[choice_i == t_i] revenue_i / p_{t_i}`` (cost likewise):

    * ``normalize="ipw"``:   ``V = (1/N) sum_i y_i``,  ``se = sqrt(sum_i (y_i - V)^2 / (N - 1) / N)``;
    * ``normalize="hajek"``: ``V = sum_i y_i / W`` with ``W = sum_i 1[match_i] / p_{t_i}``, and the
      linearised ``se = sqrt(N/(N-1) sum_i (1[match_i]/p_i)^2 (revenue_i - V)^2) / W``.

    IPW is unbiased when the propensities are the true assignment probabilities; Hajek trades a
    small bias for lower variance. NaN where nothing can be estimated (N < 2 for the standard
    errors, no matched row for Hajek). The estimates are not differentiable (outputs never
    require grad).

    Args:
        choice: int64 ``[N]`` (one policy) or ``[K, N]`` (K policies on the same rows), each in
            ``[0, M)``: a choice outside the arms matches no row and would be scored 0, so it is
            rejected, naming the first bad row.
        treatment: int64 ``[N]`` randomised arm in ``[0, M)``; revenue, cost: ``[N]`` observed outcomes.
        n_options: M. Default: the length of a per-arm propensity, else ``max(treatment) + 1``
            (an arm the trial never assigned cannot be evaluated by IPW).
            ``cost`` may also be ``[K, N]`` (K resources, e.g. coupon and cash-back spend): then
            ``cost`` and ``cost_se`` get a trailing ``[K]`` axis, one per resource.
    """
    choice = _tensor(choice, "choice")
    if choice.dtype != torch.int64:
        raise _validate.InputTypeError(f"bidfcl: choice must be int64 (option indices), got dtype {choice.dtype}")
    if choice.dim() not in (1, 2):
        raise InputError(
            f"bidfcl: choice must be [N] (one policy) or [K, N] (K policies), got shape {list(choice.shape)}"
        )
    if normalize not in ("ipw", "hajek"):
        raise ValueError(f"bidfcl: normalize must be 'ipw' or 'hajek', got {normalize!r}")
    single = choice.dim() == 1
    choice2 = choice.unsqueeze(0) if single else choice
    n = choice2.shape[1]
    if n_options is not None:
        m = _validate.integer(n_options, "n_options", lo=1, hi=MAX_OPTIONS)
        treatment = _validate.treatment(treatment, n=n, m=m, length_of="row (column of choice)")
    else:
        treatment = _validate.treatment(treatment, n=n, length_of="row (column of choice)")
        is_per_arm = isinstance(propensity, torch.Tensor) and propensity.dim() == 1 and propensity.shape[0] != n
        m = int(propensity.shape[0]) if is_per_arm else (int(treatment.max()) + 1 if n else 0)
    bad = (choice2 < 0) | (choice2 >= m)
    if bad.any():
        k, i = torch.nonzero(bad)[0].tolist()
        at = f"row {i}" if single else f"[{k}, {i}] (policy {k}, row {i})"
        raise InputError(
            f"bidfcl: choice must be in [0, M) = [0, {m}) (the arms of treatment), got {int(choice2[k, i])} at {at}"
        )
    revenue = _outcome(revenue, "revenue")
    cost = _outcome(cost, "cost", revenue.dtype)
    # M unknown: a per-arm propensity defines it, and row_propensity checks the labels against it
    prop = row_propensity(propensity, treatment, num_options=None if n_options is None else m, dtype=revenue.dtype)
    if cost.dim() == 2:  # K resources: one cost (and standard error) per resource
        return _policy_value_resources(choice2, treatment, revenue, cost, prop, normalize == "hajek", single)
    out = call_op(ops.policy_value, choice2, treatment, revenue, cost, prop, normalize == "hajek")
    if single:
        out = tuple(t[0] for t in out)
    return PolicyValue(*out)


def _policy_value_resources(choice, treatment, revenue, cost, prop, hajek: bool, single: bool) -> PolicyValue:
    """policy_value with cost [K, N]: ``cost`` and ``cost_se`` get a trailing resource axis."""
    if cost.shape[1] != revenue.shape[0]:
        raise ValueError(
            f"bidfcl: cost must be [N] or [K, N] with N = {revenue.shape[0]} (one entry per row of "
            f"revenue), got shape {list(cost.shape)}"
        )
    if cost.shape[0] < 1:
        raise ValueError(f"bidfcl: cost [K, N] needs at least one resource, got shape {list(cost.shape)}")
    per = [
        ops.policy_value(choice, treatment, revenue, cost[kk].contiguous(), prop, hajek) for kk in range(cost.shape[0])
    ]
    value, value_se = per[0][0], per[0][2]
    cost_v = torch.stack([q[1] for q in per], dim=-1)  # [P, K]
    cost_se = torch.stack([q[3] for q in per], dim=-1)
    if single:
        value, cost_v, value_se, cost_se = value[0], cost_v[0], value_se[0], cost_se[0]
    return PolicyValue(value, cost_v, value_se, cost_se)


def eom_curve(
    r_hat: torch.Tensor,
    c_hat: torch.Tensor,
    treatment: torch.Tensor,
    revenue: torch.Tensor,
    cost: torch.Tensor,
    budgets,
    propensity=None,
    normalize: str = "ipw",
) -> EomResult:
    """Expected outcome metric at K per-capita budgets in one call.

    For each budget b, lam* and the policy ``argmax_j (r_hat - lam* c_hat)`` come from the exact
    RCT-calibrated solve (:func:`bidfcl.solve_mckp_rct`: the IPW spend estimate of the policy meets
    b), and EOM is that policy's :func:`policy_value` on the same rows.
    """
    r_hat, c_hat = _tensor(r_hat, "r_hat"), _tensor(c_hat, "c_hat")
    if r_hat.dim() != 2:
        raise InputError(f"bidfcl: r_hat must be 2-D [N individuals, M options], got shape {list(r_hat.shape)}")
    n, m = r_hat.shape
    treatment = _validate.treatment(treatment, n=n, m=m, length_of="row of r_hat")
    cost = _outcome(cost, "cost", r_hat.dtype)
    revenue = _outcome(revenue, "revenue", r_hat.dtype)
    prop = row_propensity(propensity, treatment, num_options=m, dtype=r_hat.dtype)
    # a number gives 0-d fields, a [K] tensor [K] fields (solve_mckp_rct squeezes the same way)
    sol = solve_mckp_rct(r_hat, c_hat, treatment, cost, budgets, prop)
    pv = policy_value(sol.choice, treatment, revenue, cost, prop, normalize, n_options=m)
    return EomResult(pv.value, pv.cost, pv.value_se, pv.cost_se, sol.lam, sol.feasible)


def eom(
    r_hat: torch.Tensor,
    c_hat: torch.Tensor,
    treatment: torch.Tensor,
    revenue: torch.Tensor,
    cost: torch.Tensor,
    budget_per_capita,
    propensity=None,
    normalize: str = "ipw",
) -> EomResult:
    """Expected outcome metric at one per-capita budget (see :func:`eom_curve`)."""
    return eom_curve(r_hat, c_hat, treatment, revenue, cost, budget_per_capita, propensity, normalize)


def aucc_curve(
    r_hat: torch.Tensor,
    c_hat: torch.Tensor,
    treatment: torch.Tensor,
    revenue: torch.Tensor,
    cost: torch.Tensor,
    q: int = 200,
) -> AuccCurve:
    """AUCC with its curve. See :func:`aucc` for the definition."""
    r_hat, c_hat = _tensor(r_hat, "r_hat"), _tensor(c_hat, "c_hat")
    if r_hat.dim() != 2 or r_hat.shape[1] != 2:
        raise InputError(
            f"bidfcl: aucc needs exactly two options (control, treatment): r_hat of shape [N, 2], "
            f"got shape {list(r_hat.shape)}"
        )
    treatment = _validate.treatment(treatment, n=r_hat.shape[0], m=2, length_of="row of r_hat")
    revenue = _outcome(revenue, "revenue", r_hat.dtype)
    cost = _outcome(cost, "cost", r_hat.dtype)
    return AuccCurve(*call_op(ops.aucc, r_hat, c_hat, treatment, revenue, cost, _q(q)))


def aucc(
    r_hat: torch.Tensor,
    c_hat: torch.Tensor,
    treatment: torch.Tensor,
    revenue: torch.Tensor,
    cost: torch.Tensor,
    q: int = 200,
) -> torch.Tensor:
    """Area under the cost curve for two options (0 = control, 1 = treatment), vectorised.

    Rows are ranked by predicted ROI ``(r_hat[:,1] - r_hat[:,0]) / max(c_hat[:,1] - c_hat[:,0], 1e-12)``,
    descending, ties by row index. Treating the top k rows of the ranking, the incremental cost and
    revenue per capita are estimated as treated minus control over the full arm sizes n1, n0:

        C(k) = sum_{treated in top k} cost / n1 - sum_{control in top k} cost / n0      (R(k) alike)

    The curve is read at q + 1 cost levels ``C(n) * q'/q`` (q' = 0..q): ``k_q'`` is the first k whose
    running maximum of C reaches the level, and

        AUCC = sum_q' R(k_q') / (R(n) (q + 1)).

    A random ranking gives about 0.5, a better ROI ranking more. NaN when C(n) <= 0 or R(n) == 0.
    ``q`` is an integer in ``[1, MAX_CURVE_Q]`` (see :data:`MAX_CURVE_Q` for why it is bounded).
    Returns a 0-d float64 tensor (not differentiable).
    """
    return aucc_curve(r_hat, c_hat, treatment, revenue, cost, q).aucc


def _uplift_cumulants(score: torch.Tensor, treatment: torch.Tensor, outcome: torch.Tensor, q: int):
    """Counts and outcome sums per arm among the top k_q' = floor(q' N / q) rows of the ranking."""
    score, outcome = _outcome(score, "score"), _outcome(outcome, "outcome")
    if score.dim() != 1:
        raise InputError(f"bidfcl: score must be 1-D [N] (one uplift score per row), got shape {list(score.shape)}")
    n = score.shape[0]
    if outcome.shape != (n,):
        raise InputError(
            f"bidfcl: outcome must have shape [{n}] (one entry per row of score), got {list(outcome.shape)}"
        )
    treatment = _validate.treatment(treatment, n=n, m=2, length_of="row of score")
    q = _q(q)
    _validate.finite(score, "score")
    _validate.finite(outcome, "outcome")
    order = torch.argsort(score, descending=True, stable=True)
    t = (treatment[order] == 1).to(torch.float64)
    y = outcome[order].to(torch.float64)
    zero = torch.zeros(1, dtype=torch.float64, device=score.device)
    n_t = torch.cat([zero, torch.cumsum(t, 0)])
    n_c = torch.cat([zero, torch.cumsum(1 - t, 0)])
    y_t = torch.cat([zero, torch.cumsum(t * y, 0)])
    y_c = torch.cat([zero, torch.cumsum((1 - t) * y, 0)])
    k = torch.div(torch.arange(q + 1, device=score.device) * n, q, rounding_mode="floor")
    return n_t[k], n_c[k], y_t[k], y_c[k]


def _normalised_area(curve: torch.Tensor, q: int) -> torch.Tensor:
    """sum of the q + 1 curve points / (last point * (q + 1)); NaN when the last point is 0."""
    last = curve[-1]
    nan = torch.full_like(last, float("nan"))
    return torch.where(last != 0, curve.sum() / (last * (q + 1)), nan)


def qini(score: torch.Tensor, treatment: torch.Tensor, outcome: torch.Tensor, q: int = 200) -> torch.Tensor:
    """Normalised area under the Qini curve of an uplift ranking (binary treatment).

    Rank rows by ``score`` (descending, ties by row index). Among the top ``k`` rows let
    ``N_T(k), N_C(k)`` be the treated/control counts and ``Y_T(k), Y_C(k)`` their outcome sums. The
    Qini curve is ``Q(k) = Y_T(k) - Y_C(k) N_T(k) / N_C(k)`` (``Y_T(k)`` while ``N_C(k) = 0``), read
    at ``k_q' = floor(q' N / q)``, q' = 0..q, and

        qini = sum_q' Q(k_q') / (Q(N) (q + 1)),

    so a random ranking gives about 0.5 (this normalisation, like AUCC's, differs from the Qini
    coefficient's "area minus the random diagonal"). 0-d float64; NaN when Q(N) == 0.
    """
    n_t, n_c, y_t, y_c = _uplift_cumulants(score, treatment, outcome, q)
    ratio = torch.where(n_c > 0, n_t / n_c.clamp(min=1), torch.zeros_like(n_t))
    curve = y_t - y_c * ratio
    return _normalised_area(curve, q)


def auuc(score: torch.Tensor, treatment: torch.Tensor, outcome: torch.Tensor, q: int = 200) -> torch.Tensor:
    """Normalised area under the uplift curve of an uplift ranking (binary treatment).

    With the notation of :func:`qini`, the uplift curve is
    ``U(k) = (Y_T(k) / N_T(k) - Y_C(k) / N_C(k)) * k`` (0 while either arm is empty in the top k),
    read at ``k_q' = floor(q' N / q)``, and

        auuc = sum_q' U(k_q') / (U(N) (q + 1))      (random ranking: about 0.5).

    0-d float64; NaN when U(N) == 0.
    """
    n_t, n_c, y_t, y_c = _uplift_cumulants(score, treatment, outcome, q)
    both = (n_t > 0) & (n_c > 0)
    lift = torch.where(both, y_t / n_t.clamp(min=1) - y_c / n_c.clamp(min=1), torch.zeros_like(y_t))
    curve = lift * (n_t + n_c)
    return _normalised_area(curve, q)
