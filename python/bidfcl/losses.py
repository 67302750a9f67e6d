"""Surrogate decision losses: gradients through the allocation argmax (METHOD.md section 3).

Every loss scores options with ``a[i, j] = r_hat[i, j] - lam * c_hat[i, j]`` (lam a constant: no
gradient flows into it) and is estimated without bias on randomised (RCT) rows
``(t_i, revenue_i[, cost_i])`` by inverse propensity weighting, ``w_i = reward_i / (N p_{t_i})``.

Primal losses (one multiplier, reward = revenue):

* :func:`ppl_loss` -- softmax policy: ``L = -(1/N) sum_i softmax(a_i / tau)[t_i] revenue_i / p_{t_i}``.
* :func:`pifd_loss` -- the exact discrete loss ``-V(argmax policy)`` with flip-based finite
  differences as its gradient (see its docstring).

DFCL's dual losses (a grid of multipliers ``lams``, reward = ``revenue - lam * cost``, summed over
the grid): :func:`dpl_loss` (softmax, tau = 1), :func:`mer_loss` (softmax with temperature tau),
:func:`difd_loss` (finite differences).

Propensity: ``None`` uses the arm shares of the batch, ``p_t = N_t / N``; a per-row ``[N]`` or
per-arm ``[M]`` tensor is accepted too (per-row wins when N == M).

``check=False`` (every loss here): the value checks (finite r_hat, c_hat, revenue, cost and lam,
treatment labels in range, propensities in (0, 1]) are not raised but written into a small int64
status tensor on the inputs' device, with no host read and (on CUDA) no synchronisation in the
forward or the backward, so a training step can run without per-step syncs or inside a CUDA graph.
The call then returns :class:`LossWithStatus` ``(loss, status)``; :func:`bidfcl.raise_if_failed`
reads the status later and raises the error the default call would have raised, with the same
message. Shape, dtype and device errors still raise at once. For valid input the loss and its
gradients are identical to ``check=True``; after bad input they are unspecified. Pass ``lam`` as a
tensor (e.g. ``sol.lam`` of a ``check=False`` solve) or a number (a device fill); a list is copied
from the host.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch

from . import _validate
from ._constants import PIFD_ZERO_GAP_FLOOR
from ._ops import ops
from ._validate import call_op
from .propensity import row_propensity

__all__ = ["ppl_loss", "pifd_loss", "dpl_loss", "mer_loss", "difd_loss", "LossWithStatus", "PIFD_ZERO_GAP_FLOOR"]


class LossWithStatus(NamedTuple):
    """What a loss returns with ``check=False``: the loss (differentiable as usual) and the int64
    status record of the lazy input check, on the inputs' device (see the module docstring)."""

    loss: torch.Tensor
    status: torch.Tensor

    def check(self) -> torch.Tensor:
        """:func:`bidfcl.raise_if_failed` on the status (one host read); returns the loss."""
        _validate.raise_if_failed(self)
        return self.loss


def _check_tensor(x, name: str) -> torch.Tensor:
    return _validate.tensor(x, name)


def _float_vector(x, name: str, like: torch.Tensor) -> torch.Tensor:
    """A real [N] outcome in like's dtype (integers and bools are converted; complex is refused)."""
    x = _check_tensor(x, name)
    if x.is_complex():
        raise _validate.InputTypeError(f"bidfcl: {name} must be a real tensor, got dtype {x.dtype}")
    return x.to(like.dtype)


def _lam_grid(lam, like: torch.Tensor, name: str, single: bool) -> torch.Tensor:
    """lam as a detached 1-D tensor in like's dtype and device."""
    if isinstance(lam, torch.Tensor):
        grid = lam.detach().to(device=like.device, dtype=like.dtype).reshape(-1)
    elif isinstance(lam, (int, float)) and not isinstance(lam, bool):  # a device fill, not a host copy
        grid = torch.full((1,), float(lam), dtype=like.dtype, device=like.device)
    elif isinstance(lam, (list, tuple)):
        grid = torch.tensor(
            [_validate.number(v, f"{name}[{k}]") for k, v in enumerate(lam)], dtype=like.dtype, device=like.device
        )
    else:
        raise TypeError(f"bidfcl: {name} must be a number or a tensor, got {type(lam).__name__}")
    if single and grid.shape[0] != 1:
        raise ValueError(f"bidfcl: {name} must hold one multiplier, got {grid.shape[0]}")
    return grid


def _prepare(r_hat, c_hat, treatment, revenue, cost, lam, propensity, *, single: bool, check: bool = True):
    r_hat, c_hat = _check_tensor(r_hat, "r_hat"), _check_tensor(c_hat, "c_hat")
    treatment, revenue = _check_tensor(treatment, "treatment"), _check_tensor(revenue, "revenue")
    if r_hat.dim() != 2:
        raise _validate.InputError(
            f"bidfcl: r_hat must be 2-D [N individuals, M options], got shape {list(r_hat.shape)}"
        )
    if r_hat.shape[1] < 2:
        raise _validate.InputError(
            f"bidfcl: r_hat must have at least two options (M >= 2), got shape {list(r_hat.shape)}"
        )
    treatment = _validate.treatment(
        treatment, n=r_hat.shape[0], m=r_hat.shape[1], length_of="row of r_hat", check_labels=check
    )
    revenue = _float_vector(revenue, "revenue", r_hat)
    if cost is not None:
        cost = _float_vector(cost, "cost", r_hat)
    grid = _lam_grid(lam, r_hat, "lam" if single else "lams", single)
    prop = row_propensity(propensity, treatment, num_options=r_hat.shape[1], dtype=r_hat.dtype, device=r_hat.device)
    return r_hat, c_hat, treatment, revenue, cost, grid, prop


def _check_flag(check) -> bool:
    if not isinstance(check, bool):
        raise _validate.InputTypeError(f"bidfcl: check must be True or False, got {type(check).__name__} {check!r}")
    return check


def _run(op, args: tuple, check: bool):
    """``op(*args)`` (eagerly checked), or with check=False the lazy check and the unchecked op."""
    if check:
        return call_op(op, *args)
    status = call_op(ops.validate_decision, *args[:7])
    return LossWithStatus(call_op(op, *args, False), status)


def _decision(op, inputs: tuple, option, *, single: bool, check):
    """Every decision loss: ``inputs = (r_hat, c_hat, treatment, revenue, cost, lam, propensity)``
    checked once (:func:`_prepare`), then ``option()`` (the family's last argument, tau or clip,
    checked after the tensors), then ``op`` (``ppl_loss``: the softmax family; ``pifd_loss``: the
    flip family) eagerly or lazily (:func:`_run`)."""
    check = _check_flag(check)
    args = _prepare(*inputs, single=single, check=check)
    return _run(op, (*args, option()), check)


def _tau(tau) -> float:
    return _validate.number(tau, "tau", positive=True)


def ppl_loss(
    r_hat: torch.Tensor,
    c_hat: torch.Tensor,
    treatment: torch.Tensor,
    revenue: torch.Tensor,
    lam,
    propensity=None,
    tau: float = 1.0,
    *,
    check: bool = True,
) -> torch.Tensor:
    """Primal policy learning loss (DFCL's PPL): the softened decision loss.

        z[i, :] = softmax((r_hat[i, :] - lam c_hat[i, :]) / tau)
        L = -(1/N) sum_i z[i, t_i] * revenue_i / p_{t_i}

    Args:
        r_hat, c_hat: ``[N, M]`` predicted revenue and cost per option (M >= 2), float32/float64.
        treatment: int64 ``[N]`` randomised arm of each row.
        revenue: ``[N]`` observed revenue under that arm.
        lam: the multiplier (number or one-element tensor), e.g. lam* from ``solve_mckp_rct``;
            treated as a constant.
        propensity: None (arm shares), per-row ``[N]`` or per-arm ``[M]``.
        tau: softmax temperature (> 0).
        check: ``False``: lazy input checks, no host read (see the module docstring).

    Returns:
        0-d loss in the input dtype, differentiable w.r.t. ``r_hat`` and ``c_hat``
        (``dL/dc_hat = -lam dL/dr_hat``); with ``check=False`` a :class:`LossWithStatus`.
    """
    inputs = (r_hat, c_hat, treatment, revenue, None, lam, propensity)
    return _decision(ops.ppl_loss, inputs, lambda: _tau(tau), single=True, check=check)


def pifd_loss(
    r_hat: torch.Tensor,
    c_hat: torch.Tensor,
    treatment: torch.Tensor,
    revenue: torch.Tensor,
    lam,
    propensity=None,
    clip=None,
    *,
    check: bool = True,
) -> torch.Tensor:
    """Primal improved finite difference loss (DFCL's PIFD): the exact decision loss.

    Forward: ``L = -V = -(1/N) sum_i 1[argmax_j a_ij == t_i] revenue_i / p_{t_i}`` with
    ``a = r_hat - lam c_hat`` (ties to the lowest option).

    Backward: per cell, the change of the exact V when only ``a[i, j]`` moves by the smallest amount
    that changes row i's decision, divided by that move (chosen k, runner-up s, C = revenue/(N p)):

    * matched row (k == t_i): ``dL/da_ik = -C/(a_k - a_s)``, ``dL/da_ij = +C/(a_k - a_j)`` for j != k;
    * unmatched row: ``dL/da_it = -C/(a_k - a_t)``; and ``dL/da_ik = +C/(a_k - a_t)`` when s == t;
      every other cell 0.

    ``dL/dr_hat = dL/da`` and ``dL/dc_hat = -lam dL/da``. With ``clip = h`` gaps below h count as h
    and cells whose gap exceeds h get 0 (DFCL used 0.3); without a clip a gap of exactly zero (a
    tie at the top) counts as ``PIFD_ZERO_GAP_FLOOR`` = 1e-6.

    ``check=False``: lazy input checks, no host read; returns a :class:`LossWithStatus`.
    """
    inputs = (r_hat, c_hat, treatment, revenue, None, lam, propensity)
    return _decision(ops.pifd_loss, inputs, lambda: _clip(clip), single=True, check=check)


def mer_loss(
    r_hat: torch.Tensor,
    c_hat: torch.Tensor,
    treatment: torch.Tensor,
    revenue: torch.Tensor,
    cost: torch.Tensor,
    lams,
    propensity=None,
    tau: float = 1.0,
    *,
    check: bool = True,
) -> torch.Tensor:
    """DFCL's maximum-entropy-regularised dual loss over a grid of multipliers:

        L = -sum_l (1/N) sum_i softmax(a_l[i, :] / tau)[t_i] * (revenue_i - lam_l cost_i) / p_{t_i}

    with ``a_l = r_hat - lam_l c_hat``. ``lams``: numbers or a 1-D tensor (constants).
    ``check=False``: lazy input checks, no host read; returns a :class:`LossWithStatus`.
    """
    inputs = (r_hat, c_hat, treatment, revenue, cost, lams, propensity)
    return _decision(ops.ppl_loss, inputs, lambda: _tau(tau), single=False, check=check)


def dpl_loss(
    r_hat: torch.Tensor,
    c_hat: torch.Tensor,
    treatment: torch.Tensor,
    revenue: torch.Tensor,
    cost: torch.Tensor,
    lams,
    propensity=None,
    *,
    check: bool = True,
) -> torch.Tensor:
    """DFCL's dual policy learning loss: :func:`mer_loss` with tau = 1."""
    return mer_loss(r_hat, c_hat, treatment, revenue, cost, lams, propensity, tau=1.0, check=check)


def difd_loss(
    r_hat: torch.Tensor,
    c_hat: torch.Tensor,
    treatment: torch.Tensor,
    revenue: torch.Tensor,
    cost: torch.Tensor,
    lams,
    propensity=None,
    clip=None,
    *,
    check: bool = True,
) -> torch.Tensor:
    """DFCL's dual improved finite difference loss: :func:`pifd_loss` per multiplier of the grid with
    reward ``revenue - lam_l cost``, summed over the grid (same flip gradient, same clip rule).
    ``check=False``: lazy input checks, no host read; returns a :class:`LossWithStatus`."""
    inputs = (r_hat, c_hat, treatment, revenue, cost, lams, propensity)
    return _decision(ops.pifd_loss, inputs, lambda: _clip(clip), single=False, check=check)


def _clip(clip):
    """PIFD/DIFD clip: None or a finite number > 0."""
    if clip is None:
        return None
    if isinstance(clip, bool) or not isinstance(clip, numbers.Real):
        raise _validate.InputTypeError(f"bidfcl: clip must be None or a number, got {type(clip).__name__} {clip!r}")
    if not (math.isfinite(clip) and clip > 0):
        raise _validate.InputError(f"bidfcl: clip must be None or finite and > 0, got {clip!r}")
    return float(clip)
