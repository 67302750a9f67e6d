"""Implicit differentiation for bi-level problems (METHOD.md section 4).

For ``theta*(phi) = argmin_theta L_low(theta, phi)`` and an upper objective ``L_up(theta, phi)``, the
implicit function theorem at a stationary point ``theta*`` gives the hypergradient

    dL_up/dphi = grad_phi L_up - (d2 L_low / dphi dtheta) H^{-1} grad_theta L_up,
    H = d2 L_low / dtheta2 (+ damping I).

:func:`hypergradient` solves ``H v = grad_theta L_up`` by conjugate gradient with Hessian-vector
products (double backward) and returns ``grad_phi L_up - grad_phi (v . grad_theta L_low)``; by
default the CG loop runs in the compiled driver (``bidfcl._C.hessian_cg_from_grads``: no Python per
iteration, fused vector updates over all parameters), otherwise in the pure-PyTorch twin
(:mod:`bidfcl.linear_solve`), which produces the same iterates. :func:`neumann` replaces ``H^{-1}`` by a
truncated Neumann series and :func:`unrolled` differentiates through ``k`` explicit inner gradient
steps (the paper's ablations).

Curvature. ``hypergradient(..., curvature="gauss-newton")`` replaces ``H`` by the Gauss-Newton
matrix ``G = J' (d2 l / do2) J`` of a lower loss written as :class:`CompositeLoss`
``L_low(theta, phi) = l(o(theta), phi)`` (``o``: the inner model's outputs, ``J = do/dtheta``,
``l`` convex in ``o``). ``G`` is positive semi-definite wherever it is evaluated, so with damping
``mu > 0`` CG solves a positive definite system even away from a lower solution, where the full
network Hessian is indefinite (measured there: CG stopped by negative curvature after 1-15
iterations, and the resulting hypergradient uncorrelated with the true one). ``G = H`` when ``o``
is linear in ``theta``; in general the Gauss-Newton hypergradient is the exact hypergradient of
the lower problem with ``o`` linearised at the current ``theta``. Each product ``G v`` is two
reverse passes over graphs kept for the whole solve (``J v`` by the double-vjp trick, then
``J' (d2 l / do2) J v``), about half the time of an exact Hessian-vector product, and the mixed
term ``(d2 L_low / dphi dtheta) v = d/dphi <dl/do, J v>`` needs no double backward through the
inner model (:class:`_GaussNewton`).

Losses are callables of the parameter *lists*, ``lower_loss(inner, outer)`` and
``upper_loss(inner, outer)``, each returning a scalar tensor; ``upper_loss`` may also return None
where it is undefined (e.g. no multiplier meets the budget): it then counts as the constant 0 (zero
gradients) and the result says ``upper_defined=False``. ``inner``/``outer`` are passed in the
order of ``inner_params``/``outer_params``. The implicit variants call them with the given tensors
themselves; :func:`unrolled` calls ``lower_loss`` with the updated inner tensors. For an
``nn.Module`` use :func:`torch.func.functional_call`::

    names = [n for n, _ in target.named_parameters()]
    def lower(inner, outer):
        out = torch.func.functional_call(target, dict(zip(names, inner)), (x_obs,))
        return gated_distillation_loss(out, bridge_gates(outer), ...)

    res = bidfcl.implicit.hypergradient(lower, upper, list(target.parameters()), list(bridge.parameters()))
    for p, g in zip(bridge.parameters(), res.grads):
        p.grad = g
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple, Optional, Sequence

import torch

from . import _ops
from .linear_solve import STATUS_NAMES, CGResult, CGState, _check_options, _default_check_every, _run_flat, cg

__all__ = [
    "cg",
    "CompositeLoss",
    "CGState",
    "CGResult",
    "HypergradientResult",
    "solve_hessian",
    "hypergradient",
    "neumann",
    "unrolled",
    "NEUMANN_DIVERGENCE_FACTOR",
]

LossFn = Callable[[list, list], torch.Tensor]


class HypergradientResult(NamedTuple):
    """Result of :func:`hypergradient`, :func:`neumann` and :func:`unrolled`."""

    grads: list  #: one tensor per outer parameter, shaped like it (zeros where it has no influence)
    state: CGState  #: solver diagnostics (iter_num, error, status, num_matvec, backend)
    upper_loss: torch.Tensor  #: the upper loss at the given parameters (detached)
    #: the linear system's solution ``v`` (one tensor per inner parameter; :func:`hypergradient`
    #: only): pass it back as ``x0`` to warm-start the next solve
    solution: Optional[list] = None
    #: False when ``upper_loss`` returned None (undefined at these parameters): the upper loss then
    #: counts as the constant 0, so ``grads`` are zeros and ``v`` solves the system with ``b = 0``
    upper_defined: bool = True


class CompositeLoss:
    """A lower loss given as outputs and a loss of them: ``L(inner, outer) = loss(outputs(inner), outer)``.

    ``outputs(inner)`` returns one tensor (e.g. a model's outputs on a batch) and
    ``loss(o, outer)`` a scalar that is convex in ``o`` (a weighted squared error, a log-loss), so
    that the Gauss-Newton matrix ``J' (d2 loss / do2) J`` is positive semi-definite. Calling the
    object evaluates the composed loss, so it serves wherever a ``lower_loss`` callable does.
    """

    def __init__(self, outputs: Callable[[list], torch.Tensor], loss: Callable[[torch.Tensor, list], torch.Tensor]):
        if not callable(outputs) or not callable(loss):
            raise TypeError("bidfcl.implicit: expected CompositeLoss(outputs, loss) with two callables")
        self.outputs, self.loss = outputs, loss

    def __call__(self, inner: list, outer: list) -> torch.Tensor:
        return self.loss(self.outputs(inner), outer)


# --------------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------------


def _param_list(params, name: str, need_grad: bool = True) -> list[torch.Tensor]:
    if isinstance(params, torch.Tensor):
        params = [params]
    try:
        out = list(params)
    except TypeError:
        raise TypeError(f"bidfcl.implicit: expected {name} as a list of tensors, got {type(params).__name__}") from None
    if not out:
        raise ValueError(f"bidfcl.implicit: expected {name} to hold at least one tensor, got an empty list")
    for i, p in enumerate(out):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"bidfcl.implicit: expected {name}[{i}] to be a tensor, got {type(p).__name__}")
        if not p.dtype.is_floating_point:
            raise TypeError(f"bidfcl.implicit: expected floating-point {name}, got {name}[{i}] as {p.dtype}")
        if need_grad and not p.requires_grad:
            raise ValueError(f"bidfcl.implicit: expected {name}[{i}] to require grad (call .requires_grad_())")
    return out


def _same_dtype_device(params: list[torch.Tensor], name: str) -> None:
    dtype, device = params[0].dtype, params[0].device
    for i, p in enumerate(params):
        if p.dtype != dtype or p.device != device:
            raise TypeError(
                f"bidfcl.implicit: expected every tensor of {name} as {dtype} on {device} (CG runs on one flat "
                f"vector), got {name}[{i}] as {p.dtype} on {p.device}"
            )


def _check_disjoint(inner: list[torch.Tensor], outer: list[torch.Tensor]) -> None:
    ids = {id(p) for p in inner}
    for i, p in enumerate(outer):
        if id(p) in ids:
            raise ValueError(
                f"bidfcl.implicit: outer_params[{i}] is also in inner_params; the two lists must be disjoint"
            )


def _scalar(loss, name: str) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"bidfcl.implicit: expected {name} to return a tensor, got {type(loss).__name__}")
    if loss.numel() != 1:
        raise ValueError(f"bidfcl.implicit: expected {name} to return a scalar loss, got shape {tuple(loss.shape)}")
    if not loss.dtype.is_floating_point:
        raise TypeError(f"bidfcl.implicit: expected {name} to return a floating-point loss, got {loss.dtype}")
    return loss.reshape(())


def _backend(backend: str) -> str:
    if backend not in ("auto", "cpp", "python"):
        raise ValueError(f"bidfcl.implicit: expected backend 'auto', 'cpp' or 'python', got {backend!r}")
    if backend == "cpp" and not _ops.EXTENSION_LOADED:
        raise RuntimeError("bidfcl.implicit: backend='cpp' needs the compiled extension (unset BIDFCL_NO_EXTENSION)")
    if backend == "auto":
        return "cpp" if _ops.EXTENSION_LOADED else "python"
    return backend


def _grad_or_zeros(grads, params) -> list[torch.Tensor]:
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


# --------------------------------------------------------------------------------------------------
# CG on a Hessian given by first-order gradients with a graph
# --------------------------------------------------------------------------------------------------


def _hvp_into(grads: Sequence[Optional[torch.Tensor]], params: list[torch.Tensor]):
    """``matvec_into(p_views, out)`` writing ``H p = d/dtheta <grads, p>`` into the flat ``out``.

    Blocks whose gradient has no graph (the loss is at most linear in them) contribute nothing.
    """
    index = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    outputs = [grads[i] for i in index]
    zero_blocks = [p.new_zeros(p.numel()) for p in params]

    def matvec_into(p_views: list[torch.Tensor], out: torch.Tensor) -> None:
        if not outputs:
            out.zero_()
            return
        hp = torch.autograd.grad(
            outputs, params, grad_outputs=[p_views[i] for i in index], retain_graph=True, allow_unused=True
        )
        torch.cat([z if h is None else h.reshape(-1) for h, z in zip(hp, zero_blocks)], out=out)

    return matvec_into


def _cg_from_grads(
    grads, params, b, x0, max_iter, tol, damping, check_every, stop, backend, reduce=None
) -> tuple[list, CGState]:
    if check_every is None:
        check_every = _default_check_every(params[0].device)
    _check_options(max_iter, tol, damping, check_every)
    if x0 is not None:
        x0 = _param_list(x0, "x0", need_grad=False)
        if len(x0) != len(params) or any(u.shape != p.shape for u, p in zip(x0, params)):
            raise ValueError("bidfcl.implicit: expected x0 with one tensor per parameter, shaped like it")
    if backend == "cpp":
        solution, iters, matvecs, error, code = _ops._C.hessian_cg_from_grads(
            list(grads), params, b, x0, max_iter, float(tol), float(damping), check_every, bool(stop)
        )
        return list(solution), CGState(int(iters), float(error), STATUS_NAMES[int(code)], int(matvecs), "cpp")
    matvec_into = _hvp_into(grads, params)
    if reduce is not None:
        local_into = matvec_into

        def matvec_into(p_views, out):  # noqa: F811 (the summed product of every rank's part)
            local_into(p_views, out)
            out.copy_(reduce([out])[0])

    return _run_flat(matvec_into, b, x0, max_iter, float(tol), float(damping), check_every, bool(stop))


def solve_hessian(
    loss: torch.Tensor,
    params,
    b,
    max_iter: int = 50,
    tol: float = 1e-6,
    damping: float = 0.0,
    x0=None,
    check_every: Optional[int] = None,
    stop_on_nonpositive_curvature: bool = True,
    backend: str = "auto",
) -> CGResult:
    """Solve ``(H + damping I) v = b``, ``H = d2 loss / dparams2``, by CG with Hessian-vector products.

    ``loss`` is a scalar built from ``params`` (a list of tensors that require grad, one dtype and
    device); ``b`` is a list shaped like ``params``. ``backend='cpp'`` runs the whole loop in the
    compiled driver (default when the extension is loaded), ``'python'`` in the pure-PyTorch twin.
    Returns ``CGResult(solution list, CGState)``.
    """
    if callable(loss) and not isinstance(loss, torch.Tensor):
        raise TypeError(
            "bidfcl.implicit: solve_hessian takes the loss value, a scalar tensor computed from params "
            f"(e.g. loss = lower_loss(inner, outer)), got the {type(loss).__name__} {getattr(loss, '__name__', '')!s}"
            " itself; call it first, or pass loss functions to implicit.hypergradient"
        )
    if not isinstance(loss, torch.Tensor):
        raise TypeError(
            f"bidfcl.implicit: solve_hessian takes the loss as a scalar tensor computed from params, "
            f"got {type(loss).__name__}"
        )
    params = _param_list(params, "params")
    _same_dtype_device(params, "params")
    loss = _scalar(loss, "loss")
    b = _param_list(b, "b", need_grad=False)
    if len(b) != len(params):
        raise ValueError(f"bidfcl.implicit: expected b to have one tensor per parameter ({len(params)}), got {len(b)}")
    for i, (u, p) in enumerate(zip(b, params)):
        if u.shape != p.shape or u.dtype != p.dtype or u.device != p.device:
            raise ValueError(
                f"bidfcl.implicit: expected b[{i}] of shape {tuple(p.shape)} ({p.dtype}, {p.device}), got "
                f"{tuple(u.shape)} ({u.dtype}, {u.device})"
            )
    if not loss.requires_grad:
        raise ValueError("bidfcl.implicit: expected a loss that requires grad (built from params)")
    backend = _backend(backend)
    with torch.enable_grad():
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    solution, state = _cg_from_grads(
        grads,
        params,
        [u.detach() for u in b],
        x0,
        max_iter,
        tol,
        damping,
        check_every,
        stop_on_nonpositive_curvature,
        backend,
    )
    return CGResult(solution, state)


# --------------------------------------------------------------------------------------------------
# hypergradients
# --------------------------------------------------------------------------------------------------


def _prepare(lower_loss, upper_loss, inner_params, outer_params):
    if not callable(lower_loss) or not callable(upper_loss):
        raise TypeError(
            "bidfcl.implicit: expected lower_loss and upper_loss as callables (inner, outer) -> scalar loss"
        )
    inner = _param_list(inner_params, "inner_params")
    outer = _param_list(outer_params, "outer_params")
    _same_dtype_device(inner, "inner_params")
    _check_disjoint(inner, outer)
    return inner, outer


def _upper_value(upper_loss, inner, outer) -> Optional[torch.Tensor]:
    """``upper_loss(inner, outer)`` as a scalar, or None where the caller's upper loss is undefined."""
    up = upper_loss(inner, outer)
    return None if up is None else _scalar(up, "upper_loss")


def _upper_gradients(upper_loss, inner, outer):
    """``L_up``, ``grad_theta L_up`` (zeros where unused), ``grad_phi L_up`` (direct term) and
    whether ``L_up`` is defined. An ``upper_loss`` that returns None (undefined, e.g. no multiplier
    meets the budget) stands for the constant 0: a zero loss with zero gradients."""
    with torch.enable_grad():
        up = _upper_value(upper_loss, inner, outer)
        if up is not None and up.requires_grad:
            g = torch.autograd.grad(up, inner + outer, allow_unused=True)
        else:
            g = [None] * (len(inner) + len(outer))
    g = _grad_or_zeros(g, inner + outer)
    defined = up is not None
    up = inner[0].new_zeros(()) if up is None else up.detach()
    return up, [t.detach() for t in g[: len(inner)]], [t.detach() for t in g[len(inner) :]], defined


def _lower_gradients(lower_loss, inner, outer):
    with torch.enable_grad():
        low = _scalar(lower_loss(inner, outer), "lower_loss")
        if not low.requires_grad:
            raise ValueError(
                "bidfcl.implicit: expected lower_loss to depend on inner_params (it does not require grad)"
            )
        return torch.autograd.grad(low, inner, create_graph=True, allow_unused=True)


def _mixed_term(grads_low, v, outer) -> list[torch.Tensor]:
    """``grad_phi (v . grad_theta L_low)`` = (d2 L_low / dphi dtheta) v, zeros where phi has no influence."""
    index = [i for i, g in enumerate(grads_low) if g is not None and g.requires_grad]
    if not index:
        return [torch.zeros_like(p) for p in outer]
    mixed = torch.autograd.grad(
        [grads_low[i] for i in index], outer, grad_outputs=[v[i] for i in index], allow_unused=True
    )
    return _grad_or_zeros(mixed, outer)


class _GaussNewton:
    """The Gauss-Newton system of a :class:`CompositeLoss` ``l(o(theta), phi)`` at ``theta = inner``:

        matvec(v) = J' (d2 l / do2) J v,        mixed(v) = d/dphi <dl/do, J v> = (d2 L_low / dphi dtheta) v,

    ``J = do/dtheta``. Built once per solve: one forward pass through ``outputs`` (its graph kept),
    the output gradient ``dl/do`` with a graph (for the output-space curvature and, through the gates,
    for ``phi``) and ``J' u`` for a dummy ``u`` with a graph (the double-vjp trick: ``J v`` is the
    gradient of ``<J' u, v>`` with respect to ``u``). So each product is two reverse passes over
    the kept graphs (``J v``, then ``J' (D J v)``) and no forward pass, and the mixed term needs only
    ``J v`` and a reverse pass through ``l`` (no double backward through the inner model; it is exact:
    ``J`` does not depend on ``phi``).

    Every curvature product of the lower loss runs in :meth:`matvec`, its only mixed derivative in
    :meth:`mixed` (the places a data-parallel caller reduces across ranks).
    """

    def __init__(self, lower: CompositeLoss, inner: list, outer: list):
        self.point = [p.detach().requires_grad_(True) for p in inner]
        self.outer = outer
        with torch.enable_grad():
            o = lower.outputs(self.point)
            if not isinstance(o, torch.Tensor):
                raise TypeError(
                    f"bidfcl.implicit: expected CompositeLoss.outputs to return one tensor, got {type(o).__name__}"
                )
            if not o.requires_grad:
                raise ValueError(
                    "bidfcl.implicit: expected CompositeLoss.outputs to depend on inner_params "
                    "(its result does not require grad)"
                )
            self.o = o
            self.o_leaf = o.detach().requires_grad_(True)
            self.g_o = torch.autograd.grad(
                _scalar(lower.loss(self.o_leaf, outer), "CompositeLoss.loss"), self.o_leaf, create_graph=True
            )[0]
            self.u = torch.zeros_like(o, requires_grad=True)
            jtu = torch.autograd.grad(o, self.point, self.u, create_graph=True, allow_unused=True)
            self.index = [i for i, t in enumerate(jtu) if t is not None and t.requires_grad]
            self.jtu = [jtu[i] for i in self.index]

    def jvp(self, v) -> torch.Tensor:
        """``J v`` (zeros where the outputs do not depend on ``inner``)."""
        if not self.index:
            return torch.zeros_like(self.o_leaf)
        return torch.autograd.grad(self.jtu, self.u, [v[i] for i in self.index], retain_graph=True)[0]

    def matvec(self, v) -> list:
        if not self.g_o.requires_grad:  # l is linear in o: no curvature
            return [torch.zeros_like(p) for p in self.point]
        jv = self.jvp(v)
        hv = torch.autograd.grad(self.g_o, self.o_leaf, jv, retain_graph=True)[0]
        return _grad_or_zeros(
            torch.autograd.grad(self.o, self.point, hv, retain_graph=True, allow_unused=True), self.point
        )

    def mixed(self, v) -> list:
        if not self.g_o.requires_grad:
            return [torch.zeros_like(p) for p in self.outer]
        jv = self.jvp(v)
        return _grad_or_zeros(torch.autograd.grad(self.g_o, self.outer, jv, allow_unused=True), self.outer)


def hypergradient(
    lower_loss: LossFn,
    upper_loss: LossFn,
    inner_params,
    outer_params,
    max_iter: int = 50,
    tol: float = 1e-6,
    damping: float = 0.0,
    x0=None,
    check_every: Optional[int] = None,
    stop_on_nonpositive_curvature: bool = True,
    backend: str = "auto",
    curvature: str = "hessian",
    reduce: Optional[Callable[[list], list]] = None,
) -> HypergradientResult:
    """Implicit hypergradient at the current inner parameters (assumed stationary for ``L_low``):

        dL_up/dphi = grad_phi L_up - (d2 L_low / dphi dtheta) v,   (H + damping I) v = grad_theta L_up

    with ``v`` from conjugate gradient on Hessian-vector products (``max_iter``, relative ``tol``,
    ``damping``, ``check_every``, ``stop_on_nonpositive_curvature`` as in :func:`bidfcl.implicit.cg`;
    ``x0`` warm-starts CG, e.g. with the previous ``v``). ``lower_loss(inner, outer)`` and
    ``upper_loss(inner, outer)`` return scalar losses. Inner parameters share one dtype and device;
    parameters that a loss does not use get zero blocks. ``backend``: ``'auto'`` (compiled driver
    when loaded), ``'cpp'`` or ``'python'``.

    ``curvature``: ``"hessian"`` (``H`` by double backward), ``"gauss-newton"`` (``H`` replaced by
    the positive semi-definite Gauss-Newton matrix of a :class:`CompositeLoss` ``lower_loss``; CG
    then runs in the pure-PyTorch loop) or ``"auto"`` (the Hessian; where CG finds it not positive
    definite, i.e. the inner parameters are no lower solution, the Gauss-Newton system instead,
    from the same gradients, and ``state.status`` reports ``"nonpositive_curvature"``). Returns
    ``HypergradientResult(grads, state, upper_loss, solution)``, ``solution`` being ``v`` (a warm
    start for the next solve).

    ``reduce`` (data-parallel training): when both losses are sums of per-process parts, a
    function that sums a list of tensors over the processes (e.g. an all-reduce). It is applied to
    ``grad_theta L_up``, to every Hessian (or Gauss-Newton) vector product, to the upper loss and to
    the final gradients, so every process runs the same CG iterations on the global system and
    gets the global hypergradient (the CG loop then runs in PyTorch: the compiled driver cannot
    call back between products).
    """
    if curvature not in ("hessian", "gauss-newton", "auto"):
        raise ValueError(f"bidfcl.implicit: expected curvature 'hessian', 'gauss-newton' or 'auto', got {curvature!r}")
    if curvature != "hessian" and not isinstance(lower_loss, CompositeLoss):
        raise TypeError(
            f"bidfcl.implicit: curvature={curvature!r} needs lower_loss as a CompositeLoss(outputs, loss) "
            f"(the outputs whose Jacobian forms the Gauss-Newton matrix), got {type(lower_loss).__name__}"
        )
    inner, outer = _prepare(lower_loss, upper_loss, inner_params, outer_params)
    backend = _backend(backend)
    up, b, direct, defined = _upper_gradients(upper_loss, inner, outer)
    if reduce is not None:
        backend = "python"
        b = reduce(b)
        up = reduce([up])[0]
    grads_low = gauss_newton = None
    if curvature != "gauss-newton":
        grads_low = _lower_gradients(lower_loss, inner, outer)
        v, state = _cg_from_grads(
            grads_low, inner, b, x0, max_iter, tol, damping, check_every, stop_on_nonpositive_curvature, backend, reduce
        )
    if curvature == "gauss-newton" or (curvature == "auto" and state.status == "nonpositive_curvature"):
        if x0 is not None:
            x0 = _param_list(x0, "x0", need_grad=False)
        gauss_newton = _GaussNewton(lower_loss, inner, outer)
        matvec = gauss_newton.matvec
        if reduce is not None:
            matvec = lambda v: reduce(gauss_newton.matvec(v))  # noqa: E731
        v, state = cg(
            matvec,
            b,
            max_iter=max_iter,
            tol=tol,
            damping=damping,
            x0=x0,
            check_every=check_every,
            stop_on_nonpositive_curvature=stop_on_nonpositive_curvature,
        )
        if curvature == "auto":  # say that the Hessian was indefinite here and Gauss-Newton stood in
            state = dataclasses.replace(state, status="nonpositive_curvature")
    mixed = gauss_newton.mixed(v) if gauss_newton is not None else _mixed_term(grads_low, v, outer)
    grads = [d - m for d, m in zip(direct, mixed)]
    if reduce is not None:
        grads = reduce(grads)
    return HypergradientResult(grads, state, up, [t.detach() for t in v], defined)


#: :func:`neumann` stops as diverged once a series term is this many times larger than the first.
#: For ``0 < alpha < 2 / lambda_max`` and a positive definite ``H + damping I`` the symmetric
#: ``I - alpha (H + damping I)`` has spectral norm < 1, so no term ever exceeds the first; a term
#: 10x larger means an eigenvalue outside (0, 2 / alpha) and geometric growth from there on.
NEUMANN_DIVERGENCE_FACTOR = 10.0


def neumann(
    lower_loss: LossFn,
    upper_loss: LossFn,
    inner_params,
    outer_params,
    max_iter: int = 50,
    alpha: float = 1.0,
    damping: float = 0.0,
) -> HypergradientResult:
    """Hypergradient with ``H^{-1}`` replaced by a truncated Neumann series (``max_iter`` products):

        v = alpha sum_{j=0}^{K} (I - alpha (H + damping I))^j grad_theta L_up,   K = max_iter,

    which converges to ``(H + damping I)^{-1} grad_theta L_up`` when ``0 < alpha < 2 / lambda_max``
    and ``H + damping I`` is positive definite. ``state.error`` is the norm of the last series term
    relative to ``||grad_theta L_up||`` (how much the series still moved). Same conventions as
    :func:`hypergradient`.

    Divergence: the terms are ``t_j = (I - alpha A)^j b``; when a term's norm exceeds
    ``NEUMANN_DIVERGENCE_FACTOR * ||b||`` or is not finite (alpha too large for the curvature, or
    ``H`` not positive definite), the series stops there with ``state.status == "diverged"``:
    ``v`` is the sum of the terms before that one and ``state.error`` the offending term's
    relative norm (inf if it is not finite). The grads are then not a hypergradient: use a
    smaller ``alpha`` (below ``2 / lambda_max(H + damping I)``) or more damping. Otherwise the
    status is ``"max_iter"``.
    """
    inner, outer = _prepare(lower_loss, upper_loss, inner_params, outer_params)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"bidfcl.implicit: expected an integer max_iter >= 0, got {max_iter!r}")
    if isinstance(alpha, bool) or not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"bidfcl.implicit: expected a finite alpha > 0, got {alpha!r}")
    if isinstance(damping, bool) or not (isinstance(damping, (int, float)) and math.isfinite(damping) and damping >= 0):
        raise ValueError(f"bidfcl.implicit: expected a finite damping >= 0, got {damping!r}")
    up, b, direct, defined = _upper_gradients(upper_loss, inner, outer)
    grads_low = _lower_gradients(lower_loss, inner, outer)
    matvec_into = _hvp_into(grads_low, inner)
    shapes = [p.shape for p in inner]
    status, steps = "max_iter", max_iter
    with torch.no_grad():
        term = torch.cat([t.reshape(-1) for t in b])
        b_norm = float(torch.linalg.vector_norm(term))
        total = term.clone()
        hp = torch.empty_like(term)
        views = [term.narrow(0, o, n).view(s) for o, n, s in _offsets(shapes)]
        term_norm = b_norm
        for j in range(max_iter):
            matvec_into(views, hp)
            if damping:
                hp.add_(term, alpha=damping)
            term.add_(hp, alpha=-alpha)  # term <- (I - alpha A) term, in place (views follow)
            term_norm = float(torch.linalg.vector_norm(term))
            if not math.isfinite(term_norm) or term_norm > NEUMANN_DIVERGENCE_FACTOR * b_norm:
                status, steps = "diverged", j  # the growing term is left out of the sum
                break
            total.add_(term)
        total.mul_(alpha)
    v = [total.narrow(0, o, n).view(s) for o, n, s in _offsets(shapes)]
    mixed = _mixed_term(grads_low, v, outer)
    grads = [d - m for d, m in zip(direct, mixed)]
    if not math.isfinite(term_norm):
        error = math.inf
    else:
        error = term_norm / b_norm if b_norm > 0 else 0.0
    return HypergradientResult(
        grads, CGState(steps, error, status, steps + (status == "diverged"), "python"), up, upper_defined=defined
    )


def _offsets(shapes):
    offset = 0
    for s in shapes:
        n = math.prod(s)
        yield offset, n, s
        offset += n


def unrolled(
    lower_loss: LossFn,
    upper_loss: LossFn,
    inner_params,
    outer_params,
    max_iter: int = 5,
    lr: float = 0.1,
) -> HypergradientResult:
    """Hypergradient by differentiating through ``K = max_iter`` explicit gradient steps on ``L_low``:

        theta_0 = theta (detached copy),   theta_{k+1} = theta_k - lr grad_theta L_low(theta_k, phi),
        result = d/dphi L_up(theta_K(phi), phi).

    Started at a minimiser this tends to the implicit hypergradient as ``K -> inf`` when
    ``0 < lr < 2 / lambda_max(H)`` (its error is the Neumann tail of :func:`neumann` with
    ``alpha = lr``). ``state.error`` is ``||grad_theta L_low||`` at the last step taken. The given
    inner tensors are not modified. ``upper_loss`` is reported at ``theta_K``.
    """
    inner, outer = _prepare(lower_loss, upper_loss, inner_params, outer_params)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"bidfcl.implicit: expected an integer max_iter >= 0, got {max_iter!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"bidfcl.implicit: expected a finite lr > 0, got {lr!r}")
    last_norm = 0.0
    with torch.enable_grad():
        theta = [p.detach().requires_grad_(True) for p in inner]
        for _ in range(max_iter):
            low = _scalar(lower_loss(theta, outer), "lower_loss")
            if not low.requires_grad:
                raise ValueError(
                    "bidfcl.implicit: expected lower_loss to depend on inner_params (it does not require grad)"
                )
            g = torch.autograd.grad(low, theta, create_graph=True, allow_unused=True)
            last_norm = math.sqrt(sum(float(t.detach().pow(2).sum()) for t in g if t is not None))
            theta = [t if gi is None else t - lr * gi for t, gi in zip(theta, g)]
        up = _upper_value(upper_loss, theta, outer)
        if up is not None and up.requires_grad:
            grads = _grad_or_zeros(torch.autograd.grad(up, outer, allow_unused=True), outer)
        else:
            grads = [torch.zeros_like(p) for p in outer]
    state = CGState(max_iter, last_norm, "max_iter", max_iter, "python")
    defined = up is not None
    up = inner[0].new_zeros(()) if up is None else up.detach()
    return HypergradientResult([g.detach() for g in grads], state, up, upper_defined=defined)
