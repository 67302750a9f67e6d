"""The paper's "Hybrid" OBS/RCT protocol on any randomised data (METHOD.md section 6).

All rows come from one RCT. They are shuffled once (``seed``) and cut into consecutive blocks:

=============  =======  ==========================================================================
block          default  use
=============  =======  ==========================================================================
targeting      5%       fits a two-stage model (per-arm ridge T-learner of revenue and cost)
policy         50%      the model's budgeted policy is applied; a row is kept only where the
                        logged (random) treatment equals the policy's choice -> the biased OBS set
rct (train)    5%       RCT training data
val            10%      RCT validation data
test           30%      RCT test data
=============  =======  ==========================================================================

Shares may sum to less than 1 (the remaining rows are left out). Because the logged treatment was
random, keeping the rows where it matches a targeting policy makes the kept log look as if that
policy had assigned it: treatment now depends on the features, as in observational data.

The targeting model (unless a ``policy`` callable is given) is a T-learner: for every arm j, ridge
regressions ``revenue ~ [1, x]`` and ``cost ~ [1, x]`` on the targeting rows with ``t = j``,

    w_j = argmin_w ||y_j - X_j w||^2 + ridge ||w_{1:}||^2      (intercept not penalised),

giving predictions ``r_hat, c_hat`` ``[n, M]`` (``c_hat`` clamped at 0). The policy is the exact
knapsack allocation :func:`bidfcl.solve_mckp` of ``r_hat, c_hat`` under a total budget
``budget_per_capita * n``; by default the budget is ``budget_fraction`` of the way from the
cheapest to the most expensive predicted policy, ``sum_i min_j c_hat + f * (sum_i max_j c_hat -
sum_i min_j c_hat)``. For two options this is the ranking by predicted ROI
``(r_hat_1 - r_hat_0) / (c_hat_1 - c_hat_0)``, treating the top users until the budget is spent
(users with a predicted loss are never treated, those whose treatment is predicted to save cost
and gain revenue always are).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..solver import solve_mckp
from .dataset import DataError, UpliftDataset

__all__ = ["hybrid_split", "HybridSplit", "RidgeTLearner"]


class RidgeTLearner:
    """Per-arm ridge regressions of revenue and cost on ``[1, x]`` (closed form, float64)."""

    def __init__(self, ridge: float = 1.0):
        if not ridge >= 0:
            raise ValueError(f"bidfcl.data: expected ridge >= 0, got {ridge}")
        self.ridge = float(ridge)
        self.coef_revenue: Optional[torch.Tensor] = None  # [M, F + 1]
        self.coef_cost: Optional[torch.Tensor] = None

    def fit(self, data: UpliftDataset) -> "RidgeTLearner":
        m = data.n_options
        data.check_arms()
        x = data.x.to(torch.float64)
        design = torch.cat([torch.ones(len(data), 1, dtype=torch.float64, device=x.device), x], dim=1)
        penalty = torch.eye(design.shape[1], dtype=torch.float64, device=x.device) * self.ridge
        penalty[0, 0] = 0.0
        coef_r, coef_c = [], []
        for j in range(m):
            mask = data.treatment == j
            xj = design[mask]
            gram = xj.T @ xj + penalty
            # a tiny jitter keeps arms with fewer rows than features solvable when ridge = 0
            gram += torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device) * 1e-9
            rhs = torch.stack([data.revenue[mask].to(torch.float64), data.cost[mask].to(torch.float64)], dim=1)
            sol = torch.linalg.solve(gram, xj.T @ rhs)
            coef_r.append(sol[:, 0])
            coef_c.append(sol[:, 1])
        self.coef_revenue, self.coef_cost = torch.stack(coef_r), torch.stack(coef_c)
        return self

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted revenue and cost ``[n, M]`` (in x's dtype; cost clamped at 0)."""
        if self.coef_revenue is None:
            raise RuntimeError("bidfcl.data: RidgeTLearner.predict called before fit")
        x64 = x.to(torch.float64)
        r = x64 @ self.coef_revenue[:, 1:].T + self.coef_revenue[:, 0]
        c = (x64 @ self.coef_cost[:, 1:].T + self.coef_cost[:, 0]).clamp_min(0.0)
        return r.to(x.dtype), c.to(x.dtype)


@dataclass
class HybridSplit:
    """Result of :func:`hybrid_split`: the biased ``obs`` set and the RCT ``rct``/``val``/``test`` sets."""

    obs: UpliftDataset
    rct: UpliftDataset
    val: UpliftDataset
    test: UpliftDataset
    targeting: UpliftDataset  #: rows the targeting model was fitted on
    indices: dict  #: int64 row indices into the input for every block (obs: after filtering)
    policy_choice: torch.Tensor  #: the targeting policy's choice on every row of the policy block
    model: Optional[RidgeTLearner]  #: the fitted targeting model (None when ``policy`` was given)

    @property
    def match_rate(self) -> float:
        """Share of policy-block rows kept in ``obs``."""
        return len(self.obs) / max(int(self.policy_choice.shape[0]), 1)


def _shares(**shares) -> dict:
    for k, v in shares.items():
        if not (isinstance(v, (int, float)) and 0 <= v <= 1):
            raise ValueError(f"bidfcl.data: expected {k} in [0, 1], got {v!r}")
    total = sum(shares.values())
    if total > 1 + 1e-9:
        raise ValueError(f"bidfcl.data: expected the shares to sum to at most 1, got {total:.6g} ({shares})")
    return shares


def hybrid_split(
    rct: UpliftDataset,
    *,
    targeting_share: float = 0.05,
    policy_share: float = 0.50,
    train_share: float = 0.05,
    val_share: float = 0.10,
    test_share: float = 0.30,
    policy: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    budget_per_capita: Optional[float] = None,
    budget_fraction: float = 0.5,
    ridge: float = 1.0,
    seed: int = 0,
) -> HybridSplit:
    """Build the paper's biased OBS set and RCT train/validation/test sets from one RCT.

    Args:
        rct: randomised rows (every arm non-empty).
        targeting_share, policy_share, train_share, val_share, test_share: block shares (in this
            order after one shuffle; defaults 5/50/5/10/30% as in the paper).
        policy: optional callable ``x [n, F] -> choice int64 [n]`` used instead of the fitted
            targeting model (the targeting block is still set aside).
        budget_per_capita: per-capita budget of the targeting policy on the policy block (in the
            units of ``cost``); default: ``budget_fraction`` between the cheapest and the most
            expensive predicted policy.
        ridge: L2 penalty of the targeting T-learner.
        seed: the shuffle (a ``torch.Generator`` seeded with it).

    Returns:
        :class:`HybridSplit`. ``obs.propensity`` is None (the kept log is treated as observational);
        the RCT blocks keep the input's ``propensity``.
    """
    if not isinstance(rct, UpliftDataset):
        raise TypeError(f"bidfcl.data: expected an UpliftDataset, got {type(rct).__name__}")
    rct.validate(require_all_arms=True)
    shares = _shares(
        targeting_share=targeting_share,
        policy_share=policy_share,
        train_share=train_share,
        val_share=val_share,
        test_share=test_share,
    )
    if not 0 <= budget_fraction <= 1:
        raise ValueError(f"bidfcl.data: expected budget_fraction in [0, 1], got {budget_fraction}")
    n = len(rct)
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen)
    names = ["targeting", "policy", "rct", "val", "test"]
    sizes = [int(shares[k] * n) for k in ("targeting_share", "policy_share", "train_share", "val_share", "test_share")]
    blocks, start = {}, 0
    for name, size in zip(names, sizes):
        blocks[name] = perm[start : start + size].sort().values  # sorted: friendly to memory-mapped data
        start += size
    targeting = rct.subset(blocks["targeting"])
    policy_rows = rct.subset(blocks["policy"])

    model = None
    if policy is None:
        try:
            targeting.check_arms()
        except DataError as exc:
            raise DataError(
                f"bidfcl.data: the targeting block ({len(targeting)} rows) needs every arm: {exc}"
            ) from None
        model = RidgeTLearner(ridge).fit(targeting)
        r_hat, c_hat = model.predict(policy_rows.x)
        k = len(policy_rows)
        if budget_per_capita is None:
            lo = c_hat.min(dim=1).values.to(torch.float64).sum()
            hi = c_hat.max(dim=1).values.to(torch.float64).sum()
            budget = float(lo + budget_fraction * (hi - lo))
        else:
            budget = float(budget_per_capita) * k
        choice = solve_mckp(r_hat, c_hat, budget).choice if k else torch.zeros(0, dtype=torch.int64)
    else:
        choice = torch.as_tensor(policy(policy_rows.x))
        if choice.shape != (len(policy_rows),) or choice.dtype != torch.int64:
            raise DataError(
                f"bidfcl.data: expected policy(x) to return int64 [n={len(policy_rows)}], got "
                f"{choice.dtype} {list(choice.shape)}"
            )
        if choice.numel() and (int(choice.min()) < 0 or int(choice.max()) >= rct.n_options):
            raise DataError(
                f"bidfcl.data: expected policy choices in [0, {rct.n_options}), got "
                f"[{int(choice.min())}, {int(choice.max())}]"
            )
    choice = choice.to(policy_rows.treatment.device)
    keep = policy_rows.treatment == choice
    obs_idx = blocks["policy"][keep.to(blocks["policy"].device)]
    obs = policy_rows.subset(keep)
    obs = obs._replace(propensity=None)
    indices = dict(blocks)
    indices["obs"] = obs_idx
    return HybridSplit(
        obs=obs,
        rct=rct.subset(blocks["rct"]),
        val=rct.subset(blocks["val"]),
        test=rct.subset(blocks["test"]),
        targeting=targeting,
        indices=indices,
        policy_choice=choice,
        model=model,
    )
