"""Loads the compiled core and registers what torch needs around it: fake kernels (for
``torch.compile`` and meta tensors) and, for differentiable ops, autograd formulas.

``ops`` is the namespace the rest of the package calls: ``torch.ops.bidfcl`` when the extension is
loaded, or the pure-PyTorch twins of :mod:`bidfcl._reference` when ``BIDFCL_NO_EXTENSION=1``.
"""

from __future__ import annotations

import os
import types

import torch

from . import _reference

_NO_EXT = os.environ.get("BIDFCL_NO_EXTENSION", "").strip().lower() not in ("", "0", "false", "no")

if _NO_EXT:
    _C = None
else:
    try:
        from . import _C  # noqa: F401  (registers torch.ops.bidfcl.* as a side effect)
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "bidfcl: the compiled extension bidfcl._C could not be loaded "
            f"({exc}). Reinstall with `pip install --no-build-isolation .` against the torch you run "
            "(torch " + torch.__version__ + "), or set BIDFCL_NO_EXTENSION=1 to use the pure-PyTorch "
            "implementation."
        ) from exc

EXTENSION_LOADED: bool = _C is not None

#: Largest option count M (columns of values / r_hat, arms of a dataset) that every op accepts:
#: the compiled core's own limit when it is loaded, else the twins' (the same number). Every
#: Python-side check of an option count reads it from here.
MAX_OPTIONS: int = int(_C.build_info().get("max_options", _reference.MAX_OPTIONS)) if _C is not None \
    else _reference.MAX_OPTIONS


def build_info() -> dict:
    """How the package was built: version, torch it was compiled against, CUDA kernels in or out."""
    from . import __version__

    if _C is None:
        return {
            "version": __version__,
            "torch_version": None,
            "cuda": False,
            "extension": False,
            "runtime_torch_version": torch.__version__,
        }
    info = dict(_C.build_info())
    info["extension"] = True
    info["runtime_torch_version"] = torch.__version__
    return info


class _ReferenceOps(types.SimpleNamespace):
    """Looks like ``torch.ops.bidfcl`` but calls the twins."""

    def __getattr__(self, name):
        try:
            return getattr(_reference, name)
        except AttributeError:
            raise AttributeError(f"bidfcl: no reference implementation for op {name!r}") from None


ops = torch.ops.bidfcl if EXTENSION_LOADED else _ReferenceOps()


# --------------------------------------------------------------------------------------------------
# fake kernels: shapes and dtypes only, for torch.compile / FakeTensor / meta
# --------------------------------------------------------------------------------------------------

if EXTENSION_LOADED:

    def _solve_outputs(values: torch.Tensor, budgets: torch.Tensor):
        k, n = budgets.shape[0], values.shape[0]
        return (
            values.new_empty(k),
            values.new_empty((k, n), dtype=torch.long),
            values.new_empty(k, dtype=torch.float64),
            values.new_empty(k, dtype=torch.float64),
            values.new_empty(k, dtype=torch.float64),
            values.new_empty(k, dtype=torch.bool),
        )

    @torch.library.register_fake("bidfcl::solve_mckp")
    def _solve_mckp_fake(values, costs, budgets):
        return _solve_outputs(values, budgets)

    @torch.library.register_fake("bidfcl::solve_mckp_bisection")
    def _solve_mckp_bisection_fake(values, costs, budgets, max_iter, tol):
        return _solve_outputs(values, budgets)

    @torch.library.register_fake("bidfcl::budget_frontier")
    def _budget_frontier_fake(values, costs):
        # one point per hull step plus the cheapest policy: known only after the hulls are built
        p = torch.library.get_ctx().new_dynamic_size()
        return (
            values.new_empty(p),
            values.new_empty(p, dtype=torch.float64),
            values.new_empty(p, dtype=torch.float64),
        )

    @torch.library.register_fake("bidfcl::solve_mckp_rct")
    def _solve_mckp_rct_fake(values, costs, treatment, cost_obs, propensity, budgets):
        k, n = budgets.shape[0], values.shape[0]
        return (
            values.new_empty(k),
            values.new_empty((k, n), dtype=torch.long),
            values.new_empty(k, dtype=torch.float64),
            values.new_empty(k, dtype=torch.bool),
        )


# --------------------------------------------------------------------------------------------------
# ops without a derivative: an Autograd fallthrough, so inputs that require grad give outputs that
# do not (no grad_fn, no "autograd kernel was not registered" warning, no silent zero gradient)
# --------------------------------------------------------------------------------------------------

if EXTENSION_LOADED:
    _AUTOGRAD_LIB = torch.library.Library("bidfcl", "IMPL")
    for _name in _reference.NON_DIFFERENTIABLE_OPS:
        _AUTOGRAD_LIB.impl(_name, torch.library.fallthrough_kernel, "Autograd")


# --------------------------------------------------------------------------------------------------
# decision losses, policy estimators and AUCC: fake kernels and autograd
# --------------------------------------------------------------------------------------------------

if EXTENSION_LOADED:

    @torch.library.register_fake("bidfcl::ppl_loss")
    def _ppl_loss_fake(r_hat, c_hat, treatment, revenue, cost, lam, propensity, tau):
        return r_hat.new_empty(())

    @torch.library.register_fake("bidfcl::ppl_loss_backward")
    def _ppl_loss_backward_fake(grad, r_hat, c_hat, treatment, revenue, cost, lam, propensity, tau):
        return r_hat.new_empty(r_hat.shape), r_hat.new_empty(r_hat.shape)

    @torch.library.register_fake("bidfcl::pifd_loss")
    def _pifd_loss_fake(r_hat, c_hat, treatment, revenue, cost, lam, propensity, clip):
        return r_hat.new_empty(())

    @torch.library.register_fake("bidfcl::pifd_loss_backward")
    def _pifd_loss_backward_fake(grad, r_hat, c_hat, treatment, revenue, cost, lam, propensity, clip):
        return r_hat.new_empty(r_hat.shape), r_hat.new_empty(r_hat.shape)

    @torch.library.register_fake("bidfcl::policy_value")
    def _policy_value_fake(choice, treatment, revenue, cost, propensity, hajek):
        k = choice.shape[0]
        return tuple(revenue.new_empty(k, dtype=torch.float64) for _ in range(4))

    @torch.library.register_fake("bidfcl::aucc")
    def _aucc_fake(r_hat, c_hat, treatment, revenue, cost, q):
        return (
            r_hat.new_empty((), dtype=torch.float64),
            r_hat.new_empty(q + 1, dtype=torch.float64),
            r_hat.new_empty(q + 1, dtype=torch.float64),
        )

    @torch.library.register_fake("bidfcl::ppl_loss_with_grad")
    def _ppl_loss_with_grad_fake(r_hat, c_hat, treatment, revenue, cost, lam, propensity, tau):
        return r_hat.new_empty(()), r_hat.new_empty(r_hat.shape), r_hat.new_empty(r_hat.shape)

    @torch.library.register_fake("bidfcl::pifd_loss_with_grad")
    def _pifd_loss_with_grad_fake(r_hat, c_hat, treatment, revenue, cost, lam, propensity, clip):
        return r_hat.new_empty(()), r_hat.new_empty(r_hat.shape), r_hat.new_empty(r_hat.shape)

    # Autograd: gradients flow to r_hat and c_hat only; labels, propensities and lam are constants.
    #
    # On CPU the forward is fused: <loss>_with_grad returns the loss and its gradient for a unit
    # upstream gradient in one pass over the rows (the loss bit for bit the forward op's), and the
    # backward only scales the saved gradients by the upstream one:
    #     dL/dr_hat = grad * G_r,   dL/dc_hat = grad * G_c     (G = <loss>_backward(1, ...))
    # Elsewhere (CUDA) the forward op runs and the backward op recomputes from the saved inputs.
    # Both are one autograd.Function on the Autograd key, like register_autograd builds, with the
    # choice made per call from the input's device.

    def _fused_forward_kernel(name):
        forward_op = getattr(torch.ops.bidfcl, name).default
        fused_op = getattr(torch.ops.bidfcl, name + "_with_grad").default
        backward_op = getattr(torch.ops.bidfcl, name + "_backward").default

        class _DecisionLoss(torch.autograd.Function):
            @staticmethod
            def forward(ctx, keyset, r_hat, c_hat, treatment, revenue, cost, lam, propensity, extra):
                below = keyset & torch._C._after_autograd_keyset
                with torch._C._AutoDispatchBelowAutograd():
                    if r_hat.device.type == "cpu":
                        loss, gr, gc = fused_op.redispatch(below, r_hat, c_hat, treatment, revenue, cost, lam,
                                                           propensity, extra)
                        # held outside save_for_backward so the first backward may scale them in place
                        # (no new [N, M] buffers); the inputs stay saved for any later backward
                        ctx.unit_grads = (gr, gc)
                    else:
                        loss = forward_op.redispatch(below, r_hat, c_hat, treatment, revenue, cost, lam, propensity,
                                                     extra)
                        ctx.unit_grads = None
                ctx.save_for_backward(r_hat, c_hat, treatment, revenue, cost, lam, propensity)
                ctx.extra = extra  # tau (PPL) or clip (PIFD)
                return loss

            @staticmethod
            def backward(ctx, grad):
                if ctx.unit_grads is not None:
                    gr, gc = ctx.unit_grads
                    ctx.unit_grads = None  # consumed: a second backward (retain_graph) recomputes below
                    if grad.requires_grad:  # create_graph: keep the product differentiable in grad
                        return None, gr * grad, gc * grad, None, None, None, None, None, None
                    return None, gr.mul_(grad), gc.mul_(grad), None, None, None, None, None, None
                gr, gc = backward_op(grad, *ctx.saved_tensors, ctx.extra)
                return None, gr, gc, None, None, None, None, None, None

        _DecisionLoss.__name__ = f"_{name}_autograd"

        def autograd_kernel(keyset, r_hat, c_hat, treatment, revenue, cost, lam, propensity, extra):
            if torch.is_grad_enabled() and torch._C._any_requires_grad(r_hat, c_hat, treatment, revenue, cost, lam,
                                                                         propensity):
                return _DecisionLoss.apply(keyset, r_hat, c_hat, treatment, revenue, cost, lam, propensity, extra)
            with torch._C._AutoDispatchBelowAutograd():
                return forward_op.redispatch(keyset & torch._C._after_autograd_keyset, r_hat, c_hat, treatment,
                                             revenue, cost, lam, propensity, extra)

        return autograd_kernel

    _LOSS_AUTOGRAD_LIB = torch.library.Library("bidfcl", "IMPL")
    for _name in ("ppl_loss", "pifd_loss"):
        _LOSS_AUTOGRAD_LIB.impl(_name, _fused_forward_kernel(_name), "Autograd", with_keyset=True)
