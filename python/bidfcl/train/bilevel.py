r"""Bi-DFCL (METHOD.md section 4, Algorithm 1): teacher, bridge and target (keys of ``[bidfcl]``
unless they say ``train.``).

* Teacher ``F_psi``: TSM on RCT rows (``teacher_epochs``, selected on validation), then frozen.
* Target ``F_theta``: warm-started on OBS with the prediction loss (``warm_start_epochs``), then
  trained on OBS with the gate-weighted distillation lower loss (:func:`bidfcl.objectives.lower_targets`)

      L_low = mean_i [ v_r[i] (r_i - r_hat[i,t_i])^2 + v_c[i] (c_i - c_hat[i,t_i])^2
                       + sum_{j != t_i} w_r[i,j] (r_psi[i,j] - r_hat[i,j])^2 + w_c[i,j] (c_psi[i,j] - c_hat[i,j])^2 ]

  with gates ``w = sigmoid(G_phi(x))`` of the bridge ``G_phi`` (one per individual, option and
  revenue|cost) and factual weights ``v = 2 sigmoid(G_phi(x)[t_i])`` (``gate_factual``; else 1).
  The bridge's output layer starts at zero: gates 1/2, factual weight 1. ``bridge_mode = "weight"``
  (ablation) uses one IPW-like sample weight per row instead (no distillation).
* Every batch: one Adam step of theta on L_low with the current (detached) gates.
* Every ``bridge_every``-th batch (``learn_bridge``): one bridge step along the implicit hypergradient of the
  upper loss ``L_up`` (``ppl`` or ``pifd`` on ``rct_batch_size`` RCT rows, lam* of the target's
  predictions at the training budget(s)), taken at the target itself: the persistent lower solution
  (single loop; ``inner_steps > 0`` first takes that many Adam steps of a copy, the paper's k-step
  inner solve). :func:`bidfcl.implicit.hypergradient` solves ``(C + damping I) v = grad L_up`` by
  ``cg_iters`` CG iterations warm-started from the previous step's ``v`` (``cg_warm_start``), with
  ``C`` the Gauss-Newton matrix ``J' (d2 l / do2) J`` of :func:`bidfcl.objectives.weighted_squared_error`
  (``curvature = "gauss-newton"``, the default), the exact Hessian (``"hessian"``), or the Hessian
  where CG finds it positive definite and Gauss-Newton elsewhere (``"auto"``, the default before
  issue 12). ``damping`` is the weight of a proximal term ``mu/2 ||theta - theta_t||^2`` that makes
  the lower problem well posed around the current target. Defaults (``bridge_every = 20``, ``cg_iters = 3``,
  ``bridge_lr = 4e-3``, Gauss-Newton) keep one epoch within about 2x of a pooled-TSM epoch;
  ``bridge_every = 5, cg_iters = 10, bridge_lr = 1e-3, curvature = "auto"`` (the ``bidfcl-ppl-auto-k5``
  preset) is the schedule before (docs/decision-quality.md section 5).
  ``hypergradient = "unrolled"`` (ablation) differentiates through ``unrolled_steps`` SGD steps of size
  ``inner_lr`` from theta (:func:`bidfcl.implicit.unrolled`). docs/decision-quality.md gives the
  measurements behind each of these choices.

The deployed model is the target, selected on validation like the others.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import torch
from torch.func import functional_call

from .. import implicit
from ..data import UpliftDataset
from ..implicit import CompositeLoss
from ..models import MultiHeadMLP
from ..objectives import decision_loss, decision_loss_spec, gated_distillation, lower_loss
from .config import ConfigError, require, require_keys
from .datasets import factual_rows
from .loop import Phase, Trainer, factual_loss
from .registry import register_method

__all__ = ["BidfclTrainer", "BidfclConfig"]


#: Bi-DFCL's experiment presets beyond ``bidfcl-<loss>`` (:func:`bidfcl.train.registry.presets`)
ABLATIONS = {
    "bidfcl-ppl-weight": {"train.method": "bidfcl", "train.loss": "ppl", "bidfcl.bridge_mode": "weight"},
    "bidfcl-ppl-unrolled": {"train.method": "bidfcl", "train.loss": "ppl", "bidfcl.hypergradient": "unrolled"},
    "bidfcl-ppl-k1": {"train.method": "bidfcl", "train.loss": "ppl", "bidfcl.bridge_every": 1},
    # ablations of the bridge design (docs/decision-quality.md): gates fixed at their start (1/2,
    # factual weight 1); the full Hessian instead of Gauss-Newton; no gates on factual cells; CG from
    # zero each step; and the literal Algorithm 1 (k = 5 Adam steps of a copy, full Hessian, no
    # damping, counterfactual gates only, cold CG)
    "bidfcl-ppl-fixed": {"train.method": "bidfcl", "train.loss": "ppl", "bidfcl.learn_bridge": False},
    "bidfcl-ppl-hessian": {"train.method": "bidfcl", "train.loss": "ppl", "bidfcl.curvature": "hessian"},
    "bidfcl-ppl-gn": {"train.method": "bidfcl", "train.loss": "ppl", "bidfcl.curvature": "gauss-newton"},
    "bidfcl-ppl-cg50": {"train.method": "bidfcl", "train.loss": "ppl", "bidfcl.cg_iters": 50},
    "bidfcl-ppl-lr1e-2": {"train.method": "bidfcl", "train.loss": "ppl", "bidfcl.bridge_lr": 1e-2},
    "bidfcl-ppl-inner5": {"train.method": "bidfcl", "train.loss": "ppl", "bidfcl.inner_steps": 5},
    "bidfcl-ppl-nofactual": {"train.method": "bidfcl", "train.loss": "ppl", "bidfcl.gate_factual": False},
    "bidfcl-ppl-coldcg": {"train.method": "bidfcl", "train.loss": "ppl", "bidfcl.cg_warm_start": False},
    "bidfcl-ppl-paper": {
        "train.method": "bidfcl",
        "train.loss": "ppl",
        "bidfcl.inner_steps": 5,
        "bidfcl.curvature": "hessian",
        "bidfcl.damping": 0.0,
        "bidfcl.cg_warm_start": False,
        "bidfcl.gate_factual": False,
        "bidfcl.cg_iters": 50,
        "bidfcl.bridge_every": 5,
        "bidfcl.bridge_lr": 1e-3,
    },
    # the default before issue 12 (docs/decision-quality.md section 5): auto curvature, CG(10), a
    # bridge step every 5 batches at lr 1e-3
    "bidfcl-ppl-auto-k5": {
        "train.method": "bidfcl",
        "train.loss": "ppl",
        "bidfcl.curvature": "auto",
        "bidfcl.cg_iters": 10,
        "bidfcl.bridge_every": 5,
        "bidfcl.bridge_lr": 1e-3,
    },
}


@dataclass
class BidfclConfig:
    """``[bidfcl]``: read by Bi-DFCL only."""

    teacher_epochs: int = 20  #: epochs of the RCT teacher (TSM on RCT)
    #: a bridge step every this many target batches (was 5; docs/decision-quality.md section 5)
    bridge_every: int = 20
    #: hypergradient = "unrolled": differentiated inner SGD steps (``inner_lr``) per bridge step
    unrolled_steps: int = 20
    inner_steps: int = 0  #: cg: Adam steps of L_low from a copy of the target before the hypergradient (paper: 5)
    cg_iters: int = 3  #: CG iterations per bridge step (warm-started: the solve continues across steps; was 10)
    cg_tol: float = 1e-6
    damping: float = 0.1  #: added to the curvature in the CG solve (the lower problem's proximal weight)
    cg_warm_start: bool = True  #: start each CG solve from the previous bridge step's solution
    bridge_lr: float = (
        4e-3  #: Adam step of the bridge (was 1e-3 at bridge_every = 5; 1e-2: see docs/decision-quality.md)
    )
    learn_bridge: bool = True  #: false: gates stay at their start (1/2; factual weight 1), no bridge steps
    gate_factual: bool = True  #: gates on the factual (logged) cells too: weight 2 sigmoid(logit), 1 at start
    hypergradient: str = "cg"  #: cg | unrolled
    #: cg: gauss-newton (the PSD Gauss-Newton matrix; the default since it was what "auto" used in
    #: 92% of bridge steps) | auto (the exact Hessian where CG finds it positive definite, i.e. at a
    #: lower solution; else Gauss-Newton; the default before) | hessian (exact double backward)
    curvature: str = "gauss-newton"
    inner_lr: float = 0.01  #: unrolled: SGD step of the differentiated inner steps
    bridge_mode: str = "gate"  #: gate (per cell distillation gates) | weight (per-row sample weights)
    rct_batch_size: int = 4096  #: RCT rows drawn per upper-loss evaluation (0 = all RCT rows)


def check_bidfcl_section(bi: BidfclConfig, cfg) -> None:
    """The checks of ``[bidfcl]``."""
    require_keys("bidfcl", bi, lambda v: v > 0, "> 0", "bridge_lr", "inner_lr")
    require_keys("bidfcl", bi, lambda v: v >= 0, ">= 0", "damping", "cg_tol")
    require_keys(
        "bidfcl",
        bi,
        lambda v: v >= 0,
        ">= 0",
        "teacher_epochs",
        "cg_iters",
        "rct_batch_size",
        "inner_steps",
        "unrolled_steps",
    )
    require(bi.bridge_every >= 1, f"expected bidfcl.bridge_every >= 1, got {bi.bridge_every}")
    require(
        bi.hypergradient in ("cg", "unrolled"),
        f"expected bidfcl.hypergradient 'cg' or 'unrolled', got {bi.hypergradient!r}",
    )
    require(
        bi.curvature in ("auto", "hessian", "gauss-newton"),
        f"expected bidfcl.curvature 'auto', 'hessian' or 'gauss-newton', got {bi.curvature!r}",
    )
    require(
        bi.bridge_mode in ("gate", "weight"), f"expected bidfcl.bridge_mode 'gate' or 'weight', got {bi.bridge_mode!r}"
    )


@register_method(
    "bidfcl",
    decision_loss=True,
    presets=ABLATIONS,
    doc="Bi-DFCL: teacher, bridge and target",
    config=BidfclConfig,
    check=check_bidfcl_section,
    # train.k meant both before the sections
    renamed={
        "k": {
            "bridge_every": "a bridge step every k target batches",
            "unrolled_steps": "the unrolled hypergradient's inner steps",
        }
    },
)
class BidfclTrainer(Trainer):
    deployed_name = "target"

    def __init__(self, cfg, data, *, teacher: Optional[MultiHeadMLP] = None, **kw):
        self._given_teacher = teacher
        super().__init__(cfg, data, **kw)

    def build(self) -> None:
        if self.data.obs is None:
            raise ConfigError("bidfcl: method 'bidfcl' needs OBS rows (data.obs)")
        t, b, m = self.cfg.train, self.cfg.bidfcl, self.cfg.model
        self.teacher = self.new_model()
        self.target = self.new_model()
        self.bridge = self.new_model(output="linear", hidden=m.bridge_hidden or m.hidden)
        with torch.no_grad():  # gates start at exactly 1/2 (factual weight 1): the fixed-gate model
            self.bridge.heads.weight.zero_()
            self.bridge.heads.bias.zero_()
        if self._given_teacher is not None:
            self.teacher.load_state_dict(self._given_teacher.state_dict())
        self.teacher_opt = self.adam(self.teacher)
        self.opt = self.adam(self.target)
        self.bridge_opt = self.adam(self.bridge, lr=b.bridge_lr)
        # prediction-loss steps average gradients over ranks (DDP); the bridge's hypergradient is
        # summed over ranks inside bidfcl.implicit.hypergradient (reduce=)
        self.teacher_ddp, self.target_ddp = self.parallel.wrap(self.teacher), self.parallel.wrap(self.target)
        self._rct_rows: Optional[tuple[int, int]] = None  #: (this rank's, all) rows of the RCT batch
        self.rct_gen = torch.Generator().manual_seed(self.seed + 7919)
        self.obs_rows = factual_rows(self.data.obs)
        self.teach_r = self.teach_c = None
        self.t_names = [n for n, _ in self.target.named_parameters()]
        self.b_names = [n for n, _ in self.bridge.named_parameters()]
        self.cg_warm: Optional[list] = None  # the previous bridge step's CG solution (warm start)
        self.upper_options = {k: getattr(t, k) for k in decision_loss_spec(t.loss).options}

    def modules(self) -> dict:
        return {"teacher": self.teacher, "target": self.target, "bridge": self.bridge}

    def optimizers(self) -> dict:
        return {"teacher": self.teacher_opt, "target": self.opt, "bridge": self.bridge_opt}

    def generators(self) -> dict:
        return {"rct": self.rct_gen}

    def extra_state(self) -> dict:
        return {"cg_warm": None if self.cg_warm is None else [v.clone() for v in self.cg_warm]}

    def load_extra_state(self, extra: dict) -> None:
        self.cg_warm = extra.get("cg_warm")

    # -------------------------------------------------------------------------------- phases
    def teacher_step(self, batch: UpliftDataset, index: torch.Tensor) -> dict:
        self.teacher_opt.zero_grad(set_to_none=True)
        loss = factual_loss(*self.teacher_ddp(batch.x), batch)
        self.scaled(loss).backward()
        self.teacher_opt.step()
        return {"mse": loss.detach()}

    def warm_step(self, batch: UpliftDataset, index: torch.Tensor) -> dict:
        self.opt.zero_grad(set_to_none=True)
        loss = factual_loss(*self.target_ddp(batch.x), batch)
        self.scaled(loss).backward()
        self.opt.step()
        return {"mse": loss.detach()}

    def begin_bilevel(self) -> None:
        self.teacher.requires_grad_(False)
        self.teach_r, self.teach_c = self.teacher.predict(self.obs_rows.x)

    def rct_batch(self) -> UpliftDataset:
        """``rct_batch_size`` RCT rows drawn without replacement (all with 0); in a data-parallel run
        the same global draw on every rank, of which each keeps the rows it holds."""
        n, bs = self._rows("rct"), self.cfg.bidfcl.rct_batch_size
        shard = self.shard_of("rct")
        if bs == 0 or bs >= n:
            self._rct_rows = (len(self.data.rct), n)
            return self.data.rct
        idx = torch.randperm(n, generator=self.rct_gen)[:bs].sort().values
        if shard is not None:
            idx = shard.local(idx)
        self._rct_rows = (int(idx.numel()), bs)
        return self.data.rct.subset(idx)

    def _upper(self, r, c, batch: UpliftDataset) -> Optional[torch.Tensor]:
        """The upper loss ``train.loss`` at lam* of the training budget(s), None where lam* is
        infinite (:func:`bidfcl.implicit.hypergradient` then reports ``upper_defined`` false)."""
        return decision_loss(
            self.cfg.train.loss, r, c, batch, self.train_budgets, options=self.upper_options, parallel=self.parallel
        )

    def _gates(self, x: torch.Tensor, outer=None):
        if outer is None:
            return self.bridge(x)
        return functional_call(self.bridge, dict(zip(self.b_names, outer)), (x,))

    def lower_objective(self, model: MultiHeadMLP, batch: UpliftDataset, index: torch.Tensor):
        """``L_low(theta, phi)`` on an OBS batch as a :class:`bidfcl.implicit.CompositeLoss`:
        outputs ``[r_hat | c_hat]`` of ``model`` with parameters ``theta``, and the gate-weighted
        squared error of :func:`bidfcl.objectives.lower_targets` with bridge parameters ``phi``."""
        b = self.cfg.bidfcl
        tr, tc = self.teach_r[index], self.teach_c[index]

        def outputs(inner):
            return torch.cat(functional_call(model, dict(zip(self.t_names, inner)), (batch.x,)), 1)

        obs_rows = self.batch_rows

        def loss(o, outer):
            low = gated_distillation(o, *self._gates(batch.x, outer), batch, tr, tc, b.bridge_mode, b.gate_factual)
            return self.scaled(low, averaged=False, rows=obs_rows)

        return CompositeLoss(outputs, loss)

    def _inner_solution(self, batch: UpliftDataset, index: torch.Tensor) -> MultiHeadMLP:
        """The paper's assumed lower solve: ``inner_steps`` Adam steps of L_low from a copy of the target."""
        t, b = self.cfg.train, self.cfg.bidfcl
        inner_model = copy.deepcopy(self.target)
        inner_opt = torch.optim.Adam(inner_model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        inner_opt.load_state_dict(copy.deepcopy(self.opt.state_dict()))
        with torch.no_grad():
            gr, gc = self.bridge(batch.x)
        tr, tc = self.teach_r[index], self.teach_c[index]
        for _ in range(b.inner_steps):
            inner_opt.zero_grad(set_to_none=True)
            low = lower_loss(*inner_model(batch.x), gr, gc, batch, tr, tc, b.bridge_mode, b.gate_factual)
            self.scaled(low, averaged=False).backward()
            if self.parallel.active:  # the global batch's gradient: the sum of the ranks' parts
                params = list(inner_model.parameters())
                for p, g in zip(params, self.parallel.sum_list([p.grad for p in params])):
                    p.grad = g
            inner_opt.step()
        return inner_model

    def bridge_step(self, batch: UpliftDataset, index: torch.Tensor) -> dict:
        """One step of the bridge along the hypergradient of ``L_up(theta*(phi))`` (see the module doc)."""
        b = self.cfg.bidfcl
        rct = self.rct_batch()
        out = {}
        if b.hypergradient == "cg":
            model = self.target if b.inner_steps == 0 else self._inner_solution(batch, index)
            res = self.implicit_hypergradient(model, batch, index, rct)
            if b.cg_warm_start:
                self.cg_warm = res.solution
            out["cg_iters"] = float(res.state.iter_num)
            # share of solves stopped by negative curvature (full Hessian away from a lower solution)
            out["cg_negcurv"] = float(res.state.status == "nonpositive_curvature")
        else:
            lower = self.lower_objective(self.target, batch, index)
            upper = lambda inner, outer: self._upper(  # noqa: E731
                *functional_call(self.target, dict(zip(self.t_names, inner)), (rct.x,)), rct
            )
            res = implicit.unrolled(
                lower,
                upper,
                list(self.target.parameters()),
                list(self.bridge.parameters()),
                max_iter=b.unrolled_steps,
                lr=b.inner_lr,
            )
        out["up"] = float(res.upper_loss)
        if not res.upper_defined:  # the predictions' cheapest policy overspends: no step
            out["skipped"] = 1.0
            return out
        if not all(bool(torch.isfinite(g).all()) for g in res.grads):
            out["skipped"] = 1.0  # a breakdown of the linear solve: keep the bridge as it is
            self.cg_warm = None
            return out
        self.bridge_opt.zero_grad(set_to_none=True)
        for p, g in zip(self.bridge.parameters(), res.grads):
            p.grad = g.detach().clone()
        self.bridge_opt.step()
        out["skipped"] = 0.0
        return out

    def bilevel_step(self, batch: UpliftDataset, index: torch.Tensor) -> dict:
        b = self.cfg.bidfcl
        out = {}
        if b.learn_bridge and self.position["batch"] % b.bridge_every == 0:
            out.update(self.bridge_step(batch, index))
        with torch.no_grad():
            gr, gc = self.bridge(batch.x)
        self.opt.zero_grad(set_to_none=True)
        loss = lower_loss(
            *self.target_ddp(batch.x),
            gr,
            gc,
            batch,
            self.teach_r[index],
            self.teach_c[index],
            b.bridge_mode,
            b.gate_factual,
        )
        self.scaled(loss).backward()
        self.opt.step()
        out["low"] = loss.detach()
        return out

    def implicit_hypergradient(
        self, inner_model: MultiHeadMLP, batch: UpliftDataset, index: torch.Tensor, rct: UpliftDataset
    ):
        """dL_up/dphi with the parameters of ``inner_model`` taken as the lower-level solution:
        CG (``cg_iters``, ``damping``, warm-started from the previous solution with ``cg_warm_start``)
        on the Gauss-Newton matrix (``curvature = "gauss-newton"``, the default), the full Hessian
        (``"hessian"``), or the Hessian where CG finds it positive definite and Gauss-Newton
        elsewhere (``"auto"``). The lower loss goes in as a
        :class:`bidfcl.implicit.CompositeLoss` (outputs of the target, gate-weighted squared error
        of them), so that the Gauss-Newton products and the mixed term need no double backward
        through the target."""
        b = self.cfg.bidfcl
        inner = [p.detach().clone().requires_grad_(True) for p in inner_model.parameters()]
        outer = list(self.bridge.parameters())

        rct_rows = self._rct_rows

        def upper(theta, phi):
            up = self._upper(*functional_call(inner_model, dict(zip(self.t_names, theta)), (rct.x,)), rct)
            return None if up is None else self.scaled(up, averaged=False, rows=rct_rows)

        x0 = self.cg_warm if b.cg_warm_start else None
        if x0 is not None and any(a.shape != p.shape or a.dtype != p.dtype for a, p in zip(x0, inner)):
            x0 = None
        return implicit.hypergradient(
            self.lower_objective(inner_model, batch, index),
            upper,
            inner,
            outer,
            max_iter=b.cg_iters,
            tol=b.cg_tol,
            damping=b.damping,
            x0=x0,
            curvature=b.curvature,
            reduce=self.parallel.sum_list if self.parallel.active else None,
        )

    def phases(self) -> list[Phase]:
        t, b = self.cfg.train, self.cfg.bidfcl
        teacher_epochs = 0 if self._given_teacher is not None else b.teacher_epochs
        rct, obs = self.shard_of("rct"), self.shard_of("obs")
        return [
            Phase(
                "teacher", teacher_epochs, factual_rows(self.data.rct), self.teacher_step, select="teacher", shard=rct
            ),
            Phase("target-warm", t.warm_start_epochs, self.obs_rows, self.warm_step, shard=obs),
            Phase(
                f"bidfcl-{t.loss}",
                t.epochs,
                self.obs_rows,
                self.bilevel_step,
                select="target",
                begin=self.begin_bilevel,
                shard=obs,
            ),
        ]

    @torch.no_grad()
    def validation_loss(self, name: str) -> float:
        model = self.modules()[name]
        r, c = model.predict(self.val_ds.x)
        if name == "teacher":
            return self.split_mean(factual_loss(r, c, self.val_ds), self.val_ds, self.val_shard)
        up = self._upper(r, c, self.val_ds)
        return float("inf") if up is None else self.split_mean(up, self.val_ds, self.val_shard)
