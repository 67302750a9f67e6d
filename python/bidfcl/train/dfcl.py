"""DFCL: decision-focused learning on RCT rows (METHOD.md section 3); ``alpha``, ``lams`` and
``decision_heads`` are keys of ``[dfcl]``, the loss and its options keys of ``[train]``.

After ``warm_start_epochs`` of the prediction loss (the warm-started model stays a candidate of the
validation selection, as "epoch 0" of the decision phase), each RCT mini-batch takes a step on

    L = L_decision(r_hat, c_hat; lam*) + alpha * L_mse

where lam* is the RCT-calibrated multiplier of the batch's own (detached) predictions at the
training budget (:func:`bidfcl.solve_mckp_rct`) and ``L_decision`` is ``train.loss``, a decision
loss registered in :mod:`bidfcl.objectives` (where the losses and their options are defined):

* ``ppl``  -- softmax policy value (``tau``), :func:`bidfcl.losses.ppl_loss`;
* ``pifd`` -- exact policy value with flip finite differences (``clip``), :func:`bidfcl.losses.pifd_loss`;
* ``dpl`` / ``mer`` / ``difd`` -- DFCL's dual losses over a fixed multiplier grid ``lams`` (default:
  lam* of the warm-started model on all RCT rows at 10%, 20%, ..., 50% of the largest arm cost).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..data import UpliftDataset
from ..models import MultiHeadMLP
from ..objectives import decision_loss, decision_loss_spec, decision_loss_terms, rct_lam
from .config import require, require_keys
from .datasets import max_arm_cost
from .loop import Phase, Trainer, factual_loss
from .registry import register_method

__all__ = ["DfclTrainer", "DfclConfig"]


@dataclass
class DfclConfig:
    """``[dfcl]``: read by DFCL only."""

    #: revenue = the decision loss reaches the revenue heads only and the cost heads keep
    #: their prediction loss (a cost model that stays calibrated); both = the paper's loss on both
    decision_heads: str = "revenue"
    lams: Optional[list] = None  #: dual-loss multiplier grid (None: lam* at 5 budget shares)
    alpha: float = 0.0  #: weight of the prediction (MSE) loss added to the decision loss


def check_dfcl_section(df: DfclConfig, cfg) -> None:
    """The checks of ``[dfcl]``."""
    require_keys("dfcl", df, lambda v: v >= 0, ">= 0", "alpha")
    if df.lams is not None:
        require(
            len(df.lams) > 0
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in df.lams),
            f"expected dfcl.lams to be numbers >= 0, got {df.lams!r}",
        )
    require(
        df.decision_heads in ("revenue", "both"),
        f"expected dfcl.decision_heads 'revenue' or 'both', got {df.decision_heads!r}",
    )


@register_method(
    "dfcl", decision_loss=True, doc="decision-focused learning on RCT rows", config=DfclConfig, check=check_dfcl_section
)
class DfclTrainer(Trainer):
    def __init__(self, cfg, data, *, warm_start: Optional[MultiHeadMLP] = None, **kw):
        self._given_warm = warm_start
        super().__init__(cfg, data, **kw)

    def build(self) -> None:
        self.model = self.new_model()
        if self._given_warm is not None:  # e.g. the TSM-on-RCT model of the same experiment seed
            self.model.load_state_dict(self._given_warm.state_dict())
        self.opt = self.adam(self.model)
        self.ddp = self.parallel.wrap(self.model)
        self.rows = self.data.rct
        self.cost_var = self._cost_variance()
        self.lams = None if self.cfg.dfcl.lams is None else [float(v) for v in self.cfg.dfcl.lams]
        self.loss_spec = decision_loss_spec(self.cfg.train.loss)
        self.loss_options = {k: getattr(self.cfg.train, k) for k in self.loss_spec.options}

    def _cost_variance(self) -> float:
        """Variance of the logged RCT costs (over every rank's rows), floored at 1e-12; 1 for one row."""
        cost = self.rows.cost.to(torch.float64)
        if not self.parallel.active:
            return max(float(cost.var()), 1e-12) if len(self.rows) > 1 else 1.0
        par = self.parallel
        n = self._rows("rct")
        mean = float(par.sum(cost.sum().reshape(1))[0]) / n
        dev = float(par.sum(((cost - mean) ** 2).sum().reshape(1))[0])
        return max(dev / (n - 1), 1e-12) if n > 1 else 1.0

    def extra_state(self) -> dict:
        return {"lams": self.lams}

    def load_extra_state(self, extra: dict) -> None:
        self.lams = extra.get("lams")

    def warm_step(self, batch: UpliftDataset, index: torch.Tensor) -> dict:
        self.opt.zero_grad(set_to_none=True)
        loss = factual_loss(*self.ddp(batch.x), batch)
        self.scaled(loss).backward()
        self.opt.step()
        return {"mse": loss.detach()}

    def _decision(self, r, c, batch) -> torch.Tensor:
        t = self.cfg.train
        return decision_loss(
            t.loss, r, c, batch, self.train_budgets, options=self.loss_options, lams=self.lams, parallel=self.parallel
        )

    def begin_main(self) -> None:
        if self.loss_spec.kind == "dual" and self.lams is None:
            r, c = self.model.predict(self.rows.x)
            top = max_arm_cost(self.rows, self.parallel)
            budgets = torch.tensor([top * f for f in (0.1, 0.2, 0.3, 0.4, 0.5)], dtype=torch.float64)
            self.lams = [float(v) for v in rct_lam(r, c, self.rows, budgets, self.parallel)]

    def step(self, batch: UpliftDataset, index: torch.Tensor) -> dict:
        """A decision-loss step, or a prediction-loss step where the decision loss is undefined (the
        predictions cannot meet any budget): chosen on the device with ``torch.where``, no host read.
        Losses are logged as ``(sum, count)`` so an undefined batch leaves the running means alone."""
        t, d = self.cfg.train, self.cfg.dfcl
        self.opt.zero_grad(set_to_none=True)
        r, c = self.ddp(batch.x)
        revenue_only = d.decision_heads == "revenue"
        # decision_heads = "revenue": the decision loss sees the cost predictions as constants and the
        # cost heads keep fitting the logged costs, so the budget calibration of the policy holds
        dl, defined = decision_loss_terms(
            t.loss,
            r,
            c.detach() if revenue_only else c,
            batch,
            self.train_budgets,
            options=self.loss_options,
            lams=self.lams,
            parallel=self.parallel,
            statuses=self.status_sink(),
        )
        w = defined.to(dl.dtype)
        out = {t.loss: (dl.detach() * w, w), "infeasible": 1.0 - w}
        fallback = factual_loss(r, c, batch)
        loss = dl
        if revenue_only:  # scale-free (divided by the logged costs' variance): as strong as the
            # decision loss whatever the cost unit, so the shared trunk cannot drift the cost heads
            cl = factual_loss(r, c, batch, heads="cost") / self.cost_var
            loss = loss + cl
            out["cost_mse"] = (cl.detach() * w, w)
        if d.alpha > 0:
            loss = loss + d.alpha * fallback
            out["mse"] = (fallback.detach() * w, w)
        self.scaled(torch.where(defined, loss, fallback)).backward()
        self.opt.step()
        return out

    def phases(self) -> list[Phase]:
        t = self.cfg.train
        warm = 0 if self._given_warm is not None else t.warm_start_epochs
        shard = self.shard_of("rct")
        return [
            Phase("dfcl-warm", warm, self.rows, self.warm_step, shard=shard),
            Phase(
                f"dfcl-{t.loss}",
                t.epochs,
                self.rows,
                self.step,
                select="model",
                begin=self.begin_main,
                select_initial=True,
                shard=shard,
            ),
        ]

    @torch.no_grad()
    def validation_loss(self, name: str) -> float:
        r, c = self.modules()[name].predict(self.val_ds.x)
        dl = self._decision(r, c, self.val_ds)
        return float("inf") if dl is None else self.split_mean(dl, self.val_ds, self.val_shard)
