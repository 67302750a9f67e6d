"""DFCL: decision-focused learning on RCT rows (METHOD.md section 3).

After ``warm_start_epochs`` of the prediction loss (the warm-started model stays a candidate of the
validation selection, as "epoch 0" of the decision phase), each RCT mini-batch takes a step on

    L = L_decision(r_hat, c_hat; lam*) + alpha * L_mse

where lam* is the RCT-calibrated multiplier of the batch's own (detached) predictions at the
training budget (:func:`bidfcl.solve_mckp_rct`) and ``L_decision`` is ``train.loss``:

* ``ppl``  -- softmax policy value (``tau``), :func:`bidfcl.losses.ppl_loss`;
* ``pifd`` -- exact policy value with flip finite differences (``clip``), :func:`bidfcl.losses.pifd_loss`;
* ``dpl`` / ``mer`` / ``difd`` -- DFCL's dual losses over a fixed multiplier grid ``lams`` (default:
  lam* of the warm-started model on all RCT rows at 10%, 20%, ..., 50% of the largest arm cost).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..data import UpliftDataset
from ..models import MultiHeadMLP
from ..solver import solve_mckp_rct
from .loop import Phase, Trainer, factual_loss

__all__ = ["DfclTrainer", "rct_lam", "decision_loss", "decision_loss_terms"]

#: lam used when even the cheapest predicted policy overspends (the solve reports +inf)
LAM_CAP = 1e6


def _rct_solve(r_hat, c_hat, batch: UpliftDataset, budget_per_capita, parallel=None, statuses=None):
    """The RCT-calibrated exact solve of detached predictions (predicted costs below zero count as
    zero), over every rank's rows with an active ``parallel`` (the same lam* as one process on the
    union of the rows), with the propensities the losses then use (None: the batch's arm shares)."""
    r, c = r_hat.detach(), c_hat.detach().clamp_min(0.0)
    if parallel is None or not parallel.active:
        sol = solve_mckp_rct(r, c, batch.treatment, batch.cost, budget_per_capita, propensity=batch.propensity,
                             check=statuses is None)
        if statuses is not None:
            statuses.append(sol.status)
        return sol, batch.propensity
    from ..distributed import solve_mckp_rct as solve_sharded
    from .evaluate import global_row_propensity

    prop = global_row_propensity(batch, parallel).to(r.dtype)
    return solve_sharded(r, c, batch.treatment, batch.cost, budget_per_capita, propensity=prop,
                         group=parallel.group), prop


def rct_lam(r_hat: torch.Tensor, c_hat: torch.Tensor, batch: UpliftDataset, budget_per_capita,
            parallel=None) -> torch.Tensor:
    """lam* of the RCT-calibrated exact solve on detached predictions (finite: capped at ``LAM_CAP``;
    predicted costs below zero count as zero)."""
    sol, _ = _rct_solve(r_hat, c_hat, batch, budget_per_capita, parallel)
    return torch.nan_to_num(sol.lam, posinf=LAM_CAP).clamp(max=LAM_CAP)


def decision_loss_terms(kind: str, r_hat, c_hat, batch: UpliftDataset, budget_per_capita, *, tau: float = 1.0,
                        clip=None, lams=None, parallel=None, statuses: Optional[list] = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """One of the decision losses of :mod:`bidfcl.losses` on an RCT batch (see the module doc), as
    ``(loss, defined)`` tensors with no host synchronisation.

    ``budget_per_capita`` is a number or a list of K budgets: ``ppl``/``pifd`` then average the loss
    over the budgets, each with its own RCT-calibrated lam* (one K-budget solve). Budgets where even
    the cheapest policy of the predictions overspends (lam* infinite) are left out: no multiplier
    makes the loss meaningful there, and a capped huge lam would send ``-lam * g`` into the cost
    heads. ``defined`` (a bool tensor) is false when that holds for every budget; ``loss`` is then a
    finite stand-in (lam = 0) that callers replace, e.g. by a prediction loss.

    With an active ``parallel`` the batch is this rank's part of a global batch: lam* and the arm
    shares are those of the global batch, and ``loss`` is the mean over this rank's rows (the
    caller weighs it by its share of the batch, :meth:`bidfcl.train.loop.Trainer.scaled`).

    ``statuses`` (a list; one process only): the solve and the losses run with ``check=False``
    (no host read, e.g. on a GPU) and append their status records to it, for the caller to check
    later (:func:`bidfcl.raise_if_failed`); the numbers are those of the eager checks.
    """
    from .. import losses

    t, rev, prop = batch.treatment, batch.revenue, batch.propensity
    if kind in ("ppl", "pifd"):
        budgets = _budget_tensor(budget_per_capita, r_hat.device)
        if parallel is not None and parallel.active:
            statuses = None  # the sharded solve checks eagerly (its collectives synchronise anyway)
        sol, prop = _rct_solve(r_hat, c_hat, batch, budgets, parallel, statuses)
        # lam* can also be infinite on a feasible budget: when predicted costs of paid options
        # underflow to 0, the "cheapest" policy already gives those users a paid option
        ok = (sol.feasible & torch.isfinite(sol.lam)).reshape(-1)
        lam = torch.where(ok, sol.lam.reshape(-1), torch.zeros_like(sol.lam.reshape(-1)))
        if kind == "ppl":
            parts = [_lazy(losses.ppl_loss, statuses, r_hat, c_hat, t, rev, lam[k], prop, tau=tau)
                     for k in range(lam.numel())]
        else:
            parts = [_lazy(losses.pifd_loss, statuses, r_hat, c_hat, t, rev, lam[k], prop, clip=clip)
                     for k in range(lam.numel())]
        w = ok.to(parts[0].dtype)
        n = w.sum()
        loss = parts[0] * w[0] if len(parts) == 1 else (torch.stack(parts) * w).sum() / n.clamp_min(1.0)
        return loss, n > 0
    if parallel is not None and parallel.active and prop is None:
        from .evaluate import global_row_propensity

        prop = global_row_propensity(batch, parallel).to(r_hat.dtype)
    if kind == "dpl":
        loss = _lazy(losses.dpl_loss, statuses, r_hat, c_hat, t, rev, batch.cost, lams, prop)
    elif kind == "mer":
        loss = _lazy(losses.mer_loss, statuses, r_hat, c_hat, t, rev, batch.cost, lams, prop, tau=tau)
    elif kind == "difd":
        loss = _lazy(losses.difd_loss, statuses, r_hat, c_hat, t, rev, batch.cost, lams, prop, clip=clip)
    else:
        raise ValueError(f"bidfcl: unknown decision loss {kind!r}")
    return loss, torch.ones((), dtype=torch.bool, device=loss.device)


def _lazy(loss_fn, statuses: Optional[list], *args, **kwargs) -> torch.Tensor:
    """``loss_fn(*args)``: eagerly checked, or with a ``statuses`` list ``check=False`` with its status kept."""
    if statuses is None:
        return loss_fn(*args, **kwargs)
    out = loss_fn(*args, **kwargs, check=False)
    statuses.append(out.status)
    return out.loss


_BUDGETS: dict = {}


def _budget_tensor(budget_per_capita, device: torch.device) -> torch.Tensor:
    """The budget(s) as a float64 ``[K]`` tensor on ``device``, made once per (budgets, device): a
    host-to-device copy every step would synchronise with the GPU."""
    values = tuple(float(b) for b in (budget_per_capita if isinstance(budget_per_capita, (list, tuple))
                                      else [budget_per_capita]))
    key = (values, str(device))
    if key not in _BUDGETS:
        if len(_BUDGETS) > 64:
            _BUDGETS.clear()
        _BUDGETS[key] = torch.tensor(values, dtype=torch.float64, device=device)
    return _BUDGETS[key]


def decision_loss(kind: str, r_hat, c_hat, batch: UpliftDataset, budget_per_capita, *, tau: float = 1.0,
                  clip=None, lams=None, parallel=None) -> Optional[torch.Tensor]:
    """:func:`decision_loss_terms` as one loss, or None where it is undefined (reads ``defined``)."""
    loss, defined = decision_loss_terms(kind, r_hat, c_hat, batch, budget_per_capita, tau=tau, clip=clip, lams=lams,
                                        parallel=parallel)
    return loss if bool(defined) else None


class DfclTrainer(Trainer):
    method = "dfcl"

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
        self.lams = None if self.cfg.train.lams is None else [float(v) for v in self.cfg.train.lams]

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
        return decision_loss(t.loss, r, c, batch, self.train_budgets, tau=t.tau, clip=t.clip, lams=self.lams,
                             parallel=self.parallel)

    def begin_main(self) -> None:
        if self.cfg.train.loss in ("dpl", "mer", "difd") and self.lams is None:
            from .datasets import max_arm_cost

            r, c = self.model.predict(self.rows.x)
            top = max_arm_cost(self.rows, self.parallel)
            budgets = torch.tensor([top * f for f in (0.1, 0.2, 0.3, 0.4, 0.5)], dtype=torch.float64)
            self.lams = [float(v) for v in rct_lam(r, c, self.rows, budgets, self.parallel)]

    def step(self, batch: UpliftDataset, index: torch.Tensor) -> dict:
        """A decision-loss step, or a prediction-loss step where the decision loss is undefined (the
        predictions cannot meet any budget): chosen on the device with ``torch.where``, no host read.
        Losses are logged as ``(sum, count)`` so an undefined batch leaves the running means alone."""
        t = self.cfg.train
        self.opt.zero_grad(set_to_none=True)
        r, c = self.ddp(batch.x)
        revenue_only = t.decision_heads == "revenue"
        # decision_heads = "revenue": the decision loss sees the cost predictions as constants and the
        # cost heads keep fitting the logged costs, so the budget calibration of the policy holds
        dl, defined = decision_loss_terms(t.loss, r, c.detach() if revenue_only else c, batch, self.train_budgets,
                                          tau=t.tau, clip=t.clip, lams=self.lams, parallel=self.parallel,
                                          statuses=self.status_sink())
        w = defined.to(dl.dtype)
        out = {t.loss: (dl.detach() * w, w), "infeasible": 1.0 - w}
        fallback = factual_loss(r, c, batch)
        loss = dl
        if revenue_only:  # scale-free (divided by the logged costs' variance): as strong as the
            # decision loss whatever the cost unit, so the shared trunk cannot drift the cost heads
            cl = factual_loss(r, c, batch, heads="cost") / self.cost_var
            loss = loss + cl
            out["cost_mse"] = (cl.detach() * w, w)
        if t.alpha > 0:
            loss = loss + t.alpha * fallback
            out["mse"] = (fallback.detach() * w, w)
        self.scaled(torch.where(defined, loss, fallback)).backward()
        self.opt.step()
        return out

    def phases(self) -> list[Phase]:
        t = self.cfg.train
        warm = 0 if self._given_warm is not None else t.warm_start_epochs
        shard = self.shard_of("rct")
        return [Phase("dfcl-warm", warm, self.rows, self.warm_step, shard=shard),
                Phase(f"dfcl-{t.loss}", t.epochs, self.rows, self.step, select="model", begin=self.begin_main,
                      select_initial=True, shard=shard)]

    @torch.no_grad()
    def validation_loss(self, name: str) -> float:
        r, c = self.modules()[name].predict(self.val_ds.x)
        dl = self._decision(r, c, self.val_ds)
        return float("inf") if dl is None else self.split_mean(dl, self.val_ds, self.val_shard)
