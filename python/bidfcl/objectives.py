r"""Training objectives shared by the trainers (METHOD.md sections 3 and 4): the decision losses
with their registry, the RCT-calibrated multiplier, and Bi-DFCL's gate-weighted lower loss.

The trainers in :mod:`bidfcl.train` hold loops; the numbers they minimise are defined here, once.

Decision losses. Each is registered with :func:`register_decision_loss` under a name (the value of
``train.loss``), with its function, its *kind* and the config keys it reads:

* ``kind = "primal"``: ``fn(r_hat, c_hat, treatment, revenue, lam, propensity, **options, check=)``
  at the RCT-calibrated multiplier ``lam*`` of the batch's own detached predictions at each
  training budget (:func:`bidfcl.solve_mckp_rct`), averaged over the budgets where ``lam*`` is
  finite (``ppl``, ``pifd``);
* ``kind = "dual"``: ``fn(r_hat, c_hat, treatment, revenue, cost, lams, propensity, **options, check=)``
  over a fixed multiplier grid ``lams`` (``dpl``, ``mer``, ``difd``; DFCL only).

``options`` name the ``[train]`` keys that the loss reads (e.g. ``("tau",)``);
``methods`` the training methods that accept the loss (Bi-DFCL needs a primal loss as its upper
objective). Config validation, experiment presets and error messages read :data:`DECISION_LOSSES`,
so a new loss is one :func:`register_decision_loss` call next to its function.

Propensity. :func:`decision_loss_terms` resolves the per-row propensity once per call (the batch's
given propensity, else its arm shares) and passes the same tensor to the solve and to the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from . import losses
from .data import UpliftDataset
from .distributed import solve_mckp_rct as solve_sharded
from .propensity import arm_counts, row_propensity
from .solver import solve_mckp_rct

__all__ = [
    "DecisionLoss",
    "DECISION_LOSSES",
    "register_decision_loss",
    "decision_loss_spec",
    "decision_losses_for",
    "decision_loss_terms",
    "decision_loss",
    "rct_lam",
    "LAM_CAP",
    "lower_targets",
    "weighted_squared_error",
    "gated_distillation",
    "lower_loss",
]

#: lam used when even the cheapest predicted policy overspends (the solve reports +inf)
LAM_CAP = 1e6

KINDS = ("primal", "dual")


@dataclass(frozen=True)
class DecisionLoss:
    """A registered decision loss (see the module doc for the call convention of each ``kind``)."""

    name: str
    fn: Callable[..., torch.Tensor]
    kind: str  #: "primal" (at lam* of each training budget) | "dual" (over a multiplier grid)
    options: tuple = ()  #: ``[train]`` keys passed to ``fn`` as keywords
    methods: tuple = ("dfcl", "bidfcl")  #: training methods that accept this loss
    doc: str = ""  #: one line for listings and error messages


#: name -> :class:`DecisionLoss`, in registration order
DECISION_LOSSES: dict[str, DecisionLoss] = {}


def register_decision_loss(
    name: str,
    fn: Callable[..., torch.Tensor],
    *,
    kind: str,
    options: Sequence[str] = (),
    methods: Sequence[str] = ("dfcl", "bidfcl"),
    doc: str = "",
    replace: bool = False,
) -> DecisionLoss:
    """Register ``fn`` as decision loss ``name`` (``kind`` "primal" or "dual"; ``options``: config
    keys it reads; ``methods``: methods that accept it). A second registration of a name raises
    ``ValueError`` unless ``replace``. Returns the :class:`DecisionLoss`."""
    if not isinstance(name, str) or not name or "-" in name:
        raise ValueError(
            f"bidfcl.objectives: expected a decision-loss name as a non-empty string without '-' "
            f"(experiment presets are '<method>-<loss>'), got {name!r}"
        )
    if not callable(fn):
        raise TypeError(
            f"bidfcl.objectives: expected the function of decision loss {name!r} to be callable, "
            f"got {type(fn).__name__}"
        )
    if kind not in KINDS:
        raise ValueError(f"bidfcl.objectives: expected kind in {list(KINDS)} for decision loss {name!r}, got {kind!r}")
    if kind == "dual" and "bidfcl" in methods:
        raise ValueError(
            f"bidfcl.objectives: decision loss {name!r} is dual (a fixed multiplier grid); Bi-DFCL's "
            f"upper loss needs a primal one: leave 'bidfcl' out of methods"
        )
    if name in DECISION_LOSSES and not replace:
        raise ValueError(f"bidfcl.objectives: decision loss {name!r} is already registered (pass replace=True)")
    spec = DecisionLoss(name, fn, kind, tuple(options), tuple(methods), doc)
    DECISION_LOSSES[name] = spec
    return spec


def decision_losses_for(method: str) -> list[str]:
    """Names of the registered decision losses that ``method`` accepts."""
    return [n for n, s in DECISION_LOSSES.items() if method in s.methods]


def decision_loss_spec(name: str) -> DecisionLoss:
    """The registered :class:`DecisionLoss` ``name``; ValueError listing the known names otherwise."""
    try:
        return DECISION_LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"bidfcl: unknown decision loss {name!r} (registered: {', '.join(DECISION_LOSSES)})") from None


register_decision_loss(
    "ppl", losses.ppl_loss, kind="primal", options=("tau",), doc="softmax policy value at lam* (temperature tau)"
)
register_decision_loss(
    "pifd",
    losses.pifd_loss,
    kind="primal",
    options=("clip",),
    doc="exact policy value with flip finite differences at lam* (gap clip)",
)
register_decision_loss(
    "dpl", losses.dpl_loss, kind="dual", methods=("dfcl",), doc="DFCL dual policy loss over the multiplier grid lams"
)
register_decision_loss(
    "mer",
    losses.mer_loss,
    kind="dual",
    options=("tau",),
    methods=("dfcl",),
    doc="DFCL maximum-entropy regulariser over lams (temperature tau)",
)
register_decision_loss(
    "difd",
    losses.difd_loss,
    kind="dual",
    options=("clip",),
    methods=("dfcl",),
    doc="DFCL dual flip finite differences over lams (gap clip)",
)


# -------------------------------------------------------------------------------- the RCT solve
def _resolved_propensity(batch: UpliftDataset, like: torch.Tensor, parallel=None) -> torch.Tensor:
    """Per-row propensities ``[N]`` of ``batch`` in ``like``'s dtype, resolved once: the batch's own
    (per-row or per-arm), else its arm shares; over every rank's rows with an active ``parallel``."""
    m = like.shape[1]
    counts = None
    if parallel is not None and parallel.active and batch.propensity is None:
        counts = parallel.sum(arm_counts(batch.treatment, m))
    return row_propensity(batch.propensity, batch.treatment, num_options=m, dtype=like.dtype, counts=counts)


def _rct_solve(r_hat, c_hat, batch: UpliftDataset, budget_per_capita, propensity, parallel=None, statuses=None):
    """The RCT-calibrated exact solve of detached predictions (predicted costs below zero count as
    zero) with per-row ``propensity``, over every rank's rows with an active ``parallel`` (the same
    lam* as one process on the union of the rows)."""
    r, c = r_hat.detach(), c_hat.detach().clamp_min(0.0)
    if parallel is None or not parallel.active:
        sol = solve_mckp_rct(
            r, c, batch.treatment, batch.cost, budget_per_capita, propensity=propensity, check=statuses is None
        )
        if statuses is not None:
            statuses.append(sol.status)
        return sol

    return solve_sharded(
        r, c, batch.treatment, batch.cost, budget_per_capita, propensity=propensity, group=parallel.group
    )


def rct_lam(
    r_hat: torch.Tensor, c_hat: torch.Tensor, batch: UpliftDataset, budget_per_capita, parallel=None
) -> torch.Tensor:
    """lam* of the RCT-calibrated exact solve on detached predictions (finite: capped at ``LAM_CAP``;
    predicted costs below zero count as zero)."""
    prop = batch.propensity if parallel is None or not parallel.active else _resolved_propensity(batch, r_hat, parallel)
    sol = _rct_solve(r_hat, c_hat, batch, budget_per_capita, prop, parallel)
    return torch.nan_to_num(sol.lam, posinf=LAM_CAP).clamp(max=LAM_CAP)


_BUDGETS: dict = {}


def _budget_tensor(budget_per_capita, device: torch.device) -> torch.Tensor:
    """The budget(s) as a float64 ``[K]`` tensor on ``device``, made once per (budgets, device): a
    host-to-device copy every step would synchronise with the GPU."""
    values = tuple(
        float(b) for b in (budget_per_capita if isinstance(budget_per_capita, (list, tuple)) else [budget_per_capita])
    )
    key = (values, str(device))
    if key not in _BUDGETS:
        if len(_BUDGETS) > 64:
            _BUDGETS.clear()
        _BUDGETS[key] = torch.tensor(values, dtype=torch.float64, device=device)
    return _BUDGETS[key]


def _lazy(loss_fn, statuses: Optional[list], *args, **kwargs) -> torch.Tensor:
    """``loss_fn(*args)``: eagerly checked, or with a ``statuses`` list ``check=False`` with its status kept."""
    if statuses is None:
        return loss_fn(*args, **kwargs)
    out = loss_fn(*args, **kwargs, check=False)
    statuses.append(out.status)
    return out.loss


# -------------------------------------------------------------------------------- decision losses
def decision_loss_terms(
    name: str,
    r_hat,
    c_hat,
    batch: UpliftDataset,
    budget_per_capita,
    *,
    options: Optional[dict] = None,
    lams=None,
    parallel=None,
    statuses: Optional[list] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Registered decision loss ``name`` on an RCT batch, as ``(loss, defined)`` tensors with no
    host synchronisation; ``options`` holds the keys the loss reads (e.g. ``{"tau": 1.0}``; missing
    ones take the function's defaults).

    Primal losses: ``budget_per_capita`` is a number or a list of K budgets; the loss is averaged
    over the budgets, each with its own RCT-calibrated lam* (one K-budget solve). Budgets where even
    the cheapest policy of the predictions overspends (lam* infinite) are left out: no multiplier
    makes the loss meaningful there, and a capped huge lam would send ``-lam * g`` into the cost
    heads. ``defined`` (a bool tensor) is false when that holds for every budget; ``loss`` is then a
    finite stand-in (lam = 0) that callers replace, e.g. by a prediction loss. Dual losses use
    ``lams`` and are always defined.

    With an active ``parallel`` the batch is this rank's part of a global batch: lam* and the arm
    shares are those of the global batch, and ``loss`` is the mean over this rank's rows (the
    caller weighs it by its share of the batch, :meth:`bidfcl.train.loop.Trainer.scaled`).

    ``statuses`` (a list; one process only): the solve and the losses run with ``check=False``
    (no host read, e.g. on a GPU) and append their status records to it, for the caller to check
    later (:func:`bidfcl.raise_if_failed`); the numbers are those of the eager checks.
    """
    spec = decision_loss_spec(name)
    kw = {k: v for k, v in (options or {}).items() if k in spec.options}
    t, rev = batch.treatment, batch.revenue
    if spec.kind == "primal":
        budgets = _budget_tensor(budget_per_capita, r_hat.device)
        if parallel is not None and parallel.active:
            statuses = None  # the sharded solve checks eagerly (its collectives synchronise anyway)
        prop = _resolved_propensity(batch, r_hat, parallel)
        sol = _rct_solve(r_hat, c_hat, batch, budgets, prop, parallel, statuses)
        # lam* can also be infinite on a feasible budget: when predicted costs of paid options
        # underflow to 0, the "cheapest" policy already gives those users a paid option
        ok = (sol.feasible & torch.isfinite(sol.lam)).reshape(-1)
        lam = torch.where(ok, sol.lam.reshape(-1), torch.zeros_like(sol.lam.reshape(-1)))
        parts = [_lazy(spec.fn, statuses, r_hat, c_hat, t, rev, lam[k], prop, **kw) for k in range(lam.numel())]
        w = ok.to(parts[0].dtype)
        n = w.sum()
        loss = parts[0] * w[0] if len(parts) == 1 else (torch.stack(parts) * w).sum() / n.clamp_min(1.0)
        return loss, n > 0
    prop = batch.propensity
    if parallel is not None and parallel.active and prop is None:
        prop = _resolved_propensity(batch, r_hat, parallel)
    loss = _lazy(spec.fn, statuses, r_hat, c_hat, t, rev, batch.cost, lams, prop, **kw)
    return loss, torch.ones((), dtype=torch.bool, device=loss.device)


def decision_loss(
    name: str,
    r_hat,
    c_hat,
    batch: UpliftDataset,
    budget_per_capita,
    *,
    options: Optional[dict] = None,
    lams=None,
    parallel=None,
) -> Optional[torch.Tensor]:
    """:func:`decision_loss_terms` as one loss, or None where it is undefined (reads ``defined``)."""
    loss, defined = decision_loss_terms(
        name, r_hat, c_hat, batch, budget_per_capita, options=options, lams=lams, parallel=parallel
    )
    return loss if bool(defined) else None


# -------------------------------------------------------------------------------- Bi-DFCL lower loss
def lower_targets(
    batch: UpliftDataset, teach_r, teach_c, gate_r_logit, gate_c_logit, mode: str = "gate", gate_factual: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets ``y`` and weights ``W`` ``[N, 2M]`` (revenue cells first) of the lower loss
    ``L_low = mean_i sum_j W[i, j] (o[i, j] - y[i, j])^2``, ``o = [r_hat | c_hat]``.

    ``mode = "gate"``: ``y`` is the logged outcome on the factual cell ``t_i`` and the teacher's
    prediction elsewhere; ``W = sigmoid(logit)`` on counterfactual cells and, on the factual cell,
    1 (the paper) or ``2 sigmoid(logit)`` with ``gate_factual`` (1 at a zero logit, so the bridge
    can also down- or up-weight a biased logged label). ``mode = "weight"``: one sample weight
    ``2 sigmoid(logit[i, t_i])`` on the factual cells, nothing elsewhere (the paper's ablation).
    """
    t = batch.treatment.unsqueeze(1)
    factual = torch.zeros_like(teach_r).scatter_(1, t, 1.0)
    y_r = torch.where(factual > 0, batch.revenue.to(teach_r.dtype).unsqueeze(1), teach_r)
    y_c = torch.where(factual > 0, batch.cost.to(teach_c.dtype).unsqueeze(1), teach_c)
    if mode == "weight":
        w = factual * 2.0 * torch.sigmoid(gate_r_logit.gather(1, t))
        return torch.cat([y_r, y_c], 1), torch.cat([w, w], 1)
    g_r, g_c = torch.sigmoid(gate_r_logit), torch.sigmoid(gate_c_logit)
    if gate_factual:  # 2 sigmoid on the factual cell, sigmoid elsewhere
        w_r, w_c = (1 + factual) * g_r, (1 + factual) * g_c
    else:
        w_r = factual + (1 - factual) * g_r
        w_c = factual + (1 - factual) * g_c
    return torch.cat([y_r, y_c], 1), torch.cat([w_r, w_c], 1)


def weighted_squared_error(outputs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``mean_i sum_j W[i, j] (o[i, j] - y[i, j])^2`` (convex in ``o``; its Gauss-Newton matrix is exact)."""
    return (weights * (outputs - targets) ** 2).sum(1).mean()


def gated_distillation(
    outputs: torch.Tensor,
    gate_r_logit,
    gate_c_logit,
    batch: UpliftDataset,
    teach_r,
    teach_c,
    mode: str = "gate",
    gate_factual: bool = False,
) -> torch.Tensor:
    """Bi-DFCL's lower loss of the concatenated outputs ``o = [r_hat | c_hat]`` ``[N, 2M]``: the
    :func:`weighted_squared_error` of :func:`lower_targets` (the one formula every caller uses: the
    target's steps, the inner solve and the hypergradient's :class:`bidfcl.implicit.CompositeLoss`)."""
    y, w = lower_targets(batch, teach_r, teach_c, gate_r_logit, gate_c_logit, mode, gate_factual)
    return weighted_squared_error(outputs, y, w)


def lower_loss(
    r_hat,
    c_hat,
    gate_r_logit,
    gate_c_logit,
    batch: UpliftDataset,
    teach_r,
    teach_c,
    mode: str = "gate",
    gate_factual: bool = False,
) -> torch.Tensor:
    """:func:`gated_distillation` of the heads' outputs ``r_hat``, ``c_hat`` ``[N, M]``."""
    return gated_distillation(
        torch.cat([r_hat, c_hat], 1), gate_r_logit, gate_c_logit, batch, teach_r, teach_c, mode, gate_factual
    )
