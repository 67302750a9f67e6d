r"""Bi-DFCL (METHOD.md section 4, Algorithm 1): teacher, bridge and target.

* Teacher ``F_psi``: TSM on RCT rows (``teacher_epochs``, selected on validation), then frozen.
* Target ``F_theta``: warm-started on OBS with the prediction loss (``warm_start_epochs``), then
  trained on OBS with the gate-weighted distillation lower loss

      L_low = mean_i [ (r_i - r_hat[i,t_i])^2 + (c_i - c_hat[i,t_i])^2
                       + sum_{j != t_i} w_r[i,j] (r_psi[i,j] - r_hat[i,j])^2 + w_c[i,j] (c_psi[i,j] - c_hat[i,j])^2 ]

  with gates ``w = sigmoid(G_phi(x))`` of the bridge ``G_phi`` (one per individual, option and
  revenue|cost). ``bridge_mode = "weight"`` (ablation) uses one IPW-like sample weight per row
  instead, ``L_low = mean_i 2 sigmoid(G_phi(x_i)[t_i]) * factual_i`` (no distillation).
* Every ``k``-th OBS batch: copy theta (and its Adam state) to theta', take ``k`` steps of L_low on
  the batch (the assumed lower-level solve), evaluate the upper loss ``L_up`` (``ppl`` or ``pifd`` on
  RCT rows: ``rct_batch_size`` rows drawn at random, all with 0; lam* of theta' at the training
  budget) and take one bridge step along the implicit
  hypergradient (:func:`bidfcl.implicit.hypergradient`: CG with ``cg_iters`` Hessian-vector
  products, ``damping``). ``hypergradient = "unrolled"`` (ablation) differentiates instead through
  ``k`` SGD steps of size ``inner_lr`` from theta (:func:`bidfcl.implicit.unrolled`);
  ``curvature = "gauss-newton"`` solves with the (positive semi-definite) Gauss-Newton part of the
  lower loss's Hessian instead of the full Hessian, whose negative curvature stops CG early.
* Every batch: one Adam step of theta on L_low with the current (detached) gates.

The deployed model is the target, selected on validation like the others.
"""

from __future__ import annotations

import copy
import warnings
from typing import Optional

import torch
from torch.func import functional_call

from ..data import UpliftDataset
from ..models import MultiHeadMLP
from .datasets import factual_rows
from .dfcl import decision_loss
from .loop import Phase, Trainer, factual_loss

__all__ = ["BidfclTrainer", "lower_loss"]


def lower_loss(r_hat, c_hat, gate_r_logit, gate_c_logit, batch: UpliftDataset, teach_r, teach_c,
               mode: str = "gate") -> torch.Tensor:
    """The target's loss on OBS rows with bridge outputs (logits) ``gate_*_logit`` ``[N, M]``."""
    fact = factual_loss(r_hat, c_hat, batch, reduce=False)
    if mode == "weight":
        w = 2.0 * torch.sigmoid(gate_r_logit.gather(1, batch.treatment.unsqueeze(1)).squeeze(1))
        return (w * fact).mean()
    off = torch.ones_like(r_hat).scatter_(1, batch.treatment.unsqueeze(1), 0.0)
    distill = off * (torch.sigmoid(gate_r_logit) * (teach_r - r_hat) ** 2
                     + torch.sigmoid(gate_c_logit) * (teach_c - c_hat) ** 2)
    return (fact + distill.sum(1)).mean()


class BidfclTrainer(Trainer):
    method = "bidfcl"
    deployed_name = "target"

    def __init__(self, cfg, data, *, teacher: Optional[MultiHeadMLP] = None, **kw):
        self._given_teacher = teacher
        super().__init__(cfg, data, **kw)

    def build(self) -> None:
        from .config import ConfigError

        if self.data.obs is None:
            raise ConfigError("bidfcl: method 'bidfcl' needs OBS rows (data.obs)")
        t, m = self.cfg.train, self.cfg.model
        self.teacher = self.new_model()
        self.target = self.new_model()
        self.bridge = self.new_model(output="linear", hidden=m.bridge_hidden or m.hidden)
        if self._given_teacher is not None:
            self.teacher.load_state_dict(self._given_teacher.state_dict())
        self.teacher_opt = self.adam(self.teacher)
        self.opt = self.adam(self.target)
        self.bridge_opt = self.adam(self.bridge, lr=t.bridge_lr)
        self.rct_gen = torch.Generator().manual_seed(self.seed + 7919)
        self.obs_rows = factual_rows(self.data.obs)
        self.teach_r = self.teach_c = None
        self.t_names = [n for n, _ in self.target.named_parameters()]
        self.b_names = [n for n, _ in self.bridge.named_parameters()]
        self.cg_warm = None

    def modules(self) -> dict:
        return {"teacher": self.teacher, "target": self.target, "bridge": self.bridge}

    def optimizers(self) -> dict:
        return {"teacher": self.teacher_opt, "target": self.opt, "bridge": self.bridge_opt}

    def generators(self) -> dict:
        return {"rct": self.rct_gen}

    # -------------------------------------------------------------------------------- phases
    def teacher_step(self, batch: UpliftDataset, index: torch.Tensor) -> dict:
        self.teacher_opt.zero_grad(set_to_none=True)
        loss = factual_loss(*self.teacher(batch.x), batch)
        loss.backward()
        self.teacher_opt.step()
        return {"mse": loss.detach()}

    def warm_step(self, batch: UpliftDataset, index: torch.Tensor) -> dict:
        self.opt.zero_grad(set_to_none=True)
        loss = factual_loss(*self.target(batch.x), batch)
        loss.backward()
        self.opt.step()
        return {"mse": loss.detach()}

    def begin_bilevel(self) -> None:
        self.teacher.requires_grad_(False)
        self.teach_r, self.teach_c = self.teacher.predict(self.obs_rows.x)

    def rct_batch(self) -> UpliftDataset:
        n, bs = len(self.data.rct), self.cfg.train.rct_batch_size
        if bs == 0 or bs >= n:
            return self.data.rct
        idx = torch.randperm(n, generator=self.rct_gen)[:bs]
        return self.data.rct.subset(idx.sort().values)

    def _upper(self, r, c, batch: UpliftDataset) -> Optional[torch.Tensor]:
        t = self.cfg.train
        return decision_loss(t.loss, r, c, batch, self.train_budget, tau=t.tau, clip=t.clip)

    def _upper_or_zero(self, r, c, batch: UpliftDataset) -> torch.Tensor:
        """The upper loss, or a zero with a graph (no bridge update) where lam* is infinite."""
        up = self._upper(r, c, batch)
        return (r.sum() + c.sum()) * 0.0 if up is None else up

    def bilevel_step(self, batch: UpliftDataset, index: torch.Tensor) -> dict:
        from .. import implicit

        t = self.cfg.train
        tr, tc = self.teach_r[index], self.teach_c[index]
        out = {}
        if self.position["batch"] % t.k == 0:
            rct = self.rct_batch()

            def lower(inner, outer, model):
                r, c = functional_call(model, dict(zip(self.t_names, inner)), (batch.x,))
                gr, gc = functional_call(self.bridge, dict(zip(self.b_names, outer)), (batch.x,))
                return lower_loss(r, c, gr, gc, batch, tr, tc, t.bridge_mode)

            outer = list(self.bridge.parameters())
            if t.hypergradient == "cg":
                inner_model = copy.deepcopy(self.target)
                inner_opt = torch.optim.Adam(inner_model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
                inner_opt.load_state_dict(copy.deepcopy(self.opt.state_dict()))
                with torch.no_grad():
                    gr, gc = self.bridge(batch.x)
                for _ in range(t.k):
                    inner_opt.zero_grad(set_to_none=True)
                    lower_loss(*inner_model(batch.x), gr, gc, batch, tr, tc, t.bridge_mode).backward()
                    inner_opt.step()
                res = self.implicit_hypergradient(inner_model, batch, index, rct)
                out["cg_iters"] = float(res.state.iter_num)
                # share of solves stopped by negative curvature of the network's Hessian (see damping)
                out["cg_negcurv"] = float(res.state.status == "nonpositive_curvature")
            else:
                upper = lambda inner, outer: self._upper_or_zero(  # noqa: E731
                    *functional_call(self.target, dict(zip(self.t_names, inner)), (rct.x,)), rct)
                res = implicit.unrolled(lambda i, o: lower(i, o, self.target), upper, list(self.target.parameters()),
                                        outer, max_iter=t.k, lr=t.inner_lr)
            self.bridge_opt.zero_grad(set_to_none=True)
            for p, g in zip(outer, res.grads):
                p.grad = g.detach().clone()
            self.bridge_opt.step()
            out["up"] = float(res.upper_loss)
        with torch.no_grad():
            gr, gc = self.bridge(batch.x)
        self.opt.zero_grad(set_to_none=True)
        loss = lower_loss(*self.target(batch.x), gr, gc, batch, tr, tc, t.bridge_mode)
        loss.backward()
        self.opt.step()
        out["low"] = loss.detach()
        return out

    def implicit_hypergradient(self, inner_model: MultiHeadMLP, batch: UpliftDataset, index: torch.Tensor,
                               rct: UpliftDataset):
        """dL_up/dphi at the target parameters of ``inner_model`` (taken as the lower-level solution):
        CG on the full Hessian (``curvature = "hessian"``) or its Gauss-Newton part."""
        from .. import implicit

        t = self.cfg.train
        tr, tc = self.teach_r[index], self.teach_c[index]
        outer = list(self.bridge.parameters())

        def lower(inner, outer):
            r, c = functional_call(inner_model, dict(zip(self.t_names, inner)), (batch.x,))
            gr, gc = functional_call(self.bridge, dict(zip(self.b_names, outer)), (batch.x,))
            return lower_loss(r, c, gr, gc, batch, tr, tc, t.bridge_mode)

        def upper(inner, outer):
            return self._upper_or_zero(*functional_call(inner_model, dict(zip(self.t_names, inner)), (rct.x,)), rct)

        if t.curvature == "gauss-newton":
            return self._gauss_newton_hypergradient(inner_model, batch, lower, upper, outer)
        return implicit.hypergradient(lower, upper, list(inner_model.parameters()), outer, max_iter=t.cg_iters,
                                      tol=t.cg_tol, damping=t.damping)

    def _gauss_newton_hypergradient(self, inner_model, batch: UpliftDataset, lower, upper, outer):
        """The implicit hypergradient with the lower loss's Hessian replaced by its Gauss-Newton part.

        L_low is a weighted sum of squared residuals of the outputs o = [r_hat | c_hat],
        ``L_low = (1/N) sum_ik W_ik (o_ik - y_ik)^2`` (W: 1 on logged cells, the detached gates on the
        others), so ``G = J' diag(2 W / N) J`` (J = do/dtheta) is positive semi-definite: CG on
        ``(G + damping I) v = grad_theta L_up`` does not meet the negative curvature of the full
        network Hessian. Products ``G v`` are one forward-mode and one reverse-mode pass.
        """
        from .. import implicit

        t = self.cfg.train
        names = self.t_names
        inner = [p.detach() for p in inner_model.parameters()]
        x = batch.x

        def outputs(*ps):
            r, c = functional_call(inner_model, dict(zip(names, ps)), (x,))
            return torch.cat([r, c], 1)

        with torch.no_grad():
            gr, gc = self.bridge(x)
            n, m = gr.shape
            logged = torch.zeros_like(gr).scatter_(1, batch.treatment.unsqueeze(1), 1.0)
            if t.bridge_mode == "weight":
                w_row = 2.0 * torch.sigmoid(gr.gather(1, batch.treatment.unsqueeze(1)))
                weight = torch.cat([logged, logged], 1) * w_row
            else:
                weight = torch.cat([logged + (1 - logged) * torch.sigmoid(gr),
                                    logged + (1 - logged) * torch.sigmoid(gc)], 1)
            weight = weight * (2.0 / max(n, 1))
        _, vjp_fn = torch.func.vjp(outputs, *inner)

        def matvec(v):
            with warnings.catch_warnings():  # torch's forward-mode AD calls the deprecated torch.jit.script
                warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)
                _, jv = torch.func.jvp(outputs, tuple(inner), tuple(v))
            return list(vjp_fn(weight * jv))

        with torch.enable_grad():
            theta = [p.requires_grad_(True) for p in (q.clone() for q in inner)]
            up = upper(theta, outer)
            b = list(torch.autograd.grad(up, theta, allow_unused=True))
            b = [torch.zeros_like(p) if g is None else g for p, g in zip(theta, b)]
            sol = implicit.cg(matvec, b, max_iter=t.cg_iters, tol=t.cg_tol, damping=t.damping)
            low = lower(theta, outer)
            g_low = torch.autograd.grad(low, theta, create_graph=True)
            mixed = torch.autograd.grad(g_low, outer, grad_outputs=list(sol.solution), allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else -g for p, g in zip(outer, mixed)]
        return implicit.HypergradientResult(grads, sol.state, up.detach())

    def phases(self) -> list[Phase]:
        t = self.cfg.train
        teacher_epochs = 0 if self._given_teacher is not None else t.teacher_epochs
        return [Phase("teacher", teacher_epochs, factual_rows(self.data.rct), self.teacher_step, select="teacher"),
                Phase("target-warm", t.warm_start_epochs, self.obs_rows, self.warm_step),
                Phase(f"bidfcl-{t.loss}", t.epochs, self.obs_rows, self.bilevel_step, select="target",
                      begin=self.begin_bilevel)]

    @torch.no_grad()
    def validation_loss(self, name: str) -> float:
        model = self.modules()[name]
        r, c = model.predict(self.val_ds.x)
        if name == "teacher":
            return float(factual_loss(r, c, self.val_ds))
        up = self._upper(r, c, self.val_ds)
        return float("inf") if up is None else float(up)
