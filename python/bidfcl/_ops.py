"""Loads the compiled core and registers what torch needs around it: fake kernels (for
``torch.compile`` and meta tensors) and, for differentiable ops, autograd formulas.

``ops`` is the namespace the rest of the package calls: ``torch.ops.bidfcl`` when the extension is
loaded, or the pure-PyTorch twins of :mod:`bidfcl._reference` when ``BIDFCL_NO_EXTENSION=1``.
"""

from __future__ import annotations

import os
import re
import types
from typing import Optional

import torch

from . import _constants, _reference
from ._constants import STATUS_LEN


class ExtensionMismatchError(ImportError):
    """The compiled extension was built against a torch that is not the one installed (it would fail
    in the dynamic loader with an undefined symbol, or crash later)."""


def _major_minor(version: str) -> Optional[tuple[int, int]]:
    """(major, minor) of a torch version such as ``2.13.0+cpu`` or ``2.14.0.dev20250101``; None if
    the string does not start with ``X.Y``."""
    m = re.match(r"\s*(\d+)\.(\d+)", str(version))
    return (int(m.group(1)), int(m.group(2))) if m else None


def torch_mismatch(
    built_torch: str, built_with_cuda: bool, running_torch: str, running_cuda: Optional[str]
) -> Optional[str]:
    """Why an extension built against ``built_torch`` cannot load under ``running_torch``, or None.

    The extension links torch's C++ libraries, whose ABI changes between minor releases, so it loads
    only under the ``X.Y.*`` of the torch it was compiled against (the wheel pins ``torch==X.Y.*`` in
    its metadata for the same reason); an extension with CUDA kernels also needs a CUDA build of
    torch (``running_cuda``, i.e. ``torch.version.cuda``, not None). The message is one line: the
    torch it was built for, the torch installed, and the three ways out.
    """
    built, running = _major_minor(built_torch), _major_minor(running_torch)
    want = f"{built[0]}.{built[1]}.*" if built else str(built_torch)
    if built is not None and running is not None and built != running:
        return (
            f"bidfcl: its compiled extension was built against torch {built_torch}, but torch "
            f"{running_torch} is installed, and it loads only under torch {want}: "
            + _ways_out(f"install that torch (pip install 'torch=={want}')")
        )
    if built_with_cuda and not running_cuda:
        return (
            f"bidfcl: its compiled extension has CUDA kernels (built against torch {built_torch}), but the "
            f"installed torch {running_torch} is a CPU-only build: "
            + _ways_out(f"install a CUDA build of torch {want}")
        )
    return None


def _ways_out(install: str) -> str:
    return (
        f"{install}, rebuild bidfcl against the installed torch (pip install --no-build-isolation "
        "--force-reinstall --no-deps on the bidfcl source; ./bidfcl-dev does it by itself in a checkout), "
        "or set BIDFCL_NO_EXTENSION=1 to run on the pure-PyTorch twins"
    )


def _load_extension():
    """Import ``bidfcl._C`` after checking its build record (``_build_record.py``, written by CMake
    next to it) against the running torch. Returns the module."""
    try:
        from . import _build_record as record  # noqa: PLC0415 (the compiled extension and build record load once, in order)
    except ImportError:  # a build from before the record existed: nothing to check against
        record = None
    if record is not None:
        problem = torch_mismatch(record.TORCH_VERSION, record.WITH_CUDA, torch.__version__, torch.version.cuda)
        if problem:
            raise ExtensionMismatchError(problem)
    try:
        from . import _C as module  # registers torch.ops.bidfcl.* as a side effect  # noqa: PLC0415 (the compiled extension and build record load once, in order)
    except ImportError as exc:  # pragma: no cover - depends on the installation
        built = f" (it was built against torch {record.TORCH_VERSION})" if record is not None else ""
        raise ImportError(
            f"bidfcl: the compiled extension bidfcl._C could not be loaded{built}: {exc}. Reinstall with "
            "`pip install --no-build-isolation .` against the torch you run (torch " + torch.__version__ + "), "
            "or set BIDFCL_NO_EXTENSION=1 to use the pure-PyTorch implementation."
        ) from exc
    return module


_NO_EXT = os.environ.get("BIDFCL_NO_EXTENSION", "").strip().lower() not in ("", "0", "false", "no")

_C = None if _NO_EXT else _load_extension()


EXTENSION_LOADED: bool = _C is not None

#: Largest option count M (columns of values / r_hat, arms of a dataset) that every op accepts:
#: the compiled core's own limit when it is loaded, else the twins' (the same number). Every
#: Python-side check of an option count reads it from here.
MAX_OPTIONS: int = (
    int(_C.build_info().get("max_options", _constants.MAX_OPTIONS))
    if _C is not None
    else min(_constants.MAX_OPTIONS, _constants.MAX_LOSS_OPTIONS)
)


def build_info() -> dict:
    """How the package was built: version, torch it was compiled against, CUDA kernels in or out."""
    from . import __version__  # noqa: PLC0415 (the compiled extension and build record load once, in order)

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
    def _solve_mckp_fake(values, costs, budgets, check=True):
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
    def _solve_mckp_rct_fake(values, costs, treatment, cost_obs, propensity, budgets, check=True):
        k, n = budgets.shape[0], values.shape[0]
        return (
            values.new_empty(k),
            values.new_empty((k, n), dtype=torch.long),
            values.new_empty(k, dtype=torch.float64),
            values.new_empty(k, dtype=torch.bool),
        )

    # the lazy checks: one int64 status record on the inputs' device
    @torch.library.register_fake("bidfcl::validate_mckp")
    def _validate_mckp_fake(values, costs, budgets, treatment, cost_obs, propensity):
        return values.new_empty(STATUS_LEN, dtype=torch.long)

    @torch.library.register_fake("bidfcl::validate_decision")
    def _validate_decision_fake(r_hat, c_hat, treatment, revenue, cost, lam, propensity):
        return r_hat.new_empty(STATUS_LEN, dtype=torch.long)

    @torch.library.register_fake("bidfcl::mckp_events")
    def _mckp_events_fake(values, costs, treatment, weight):
        e = torch.library.get_ctx().new_dynamic_size()  # known only after the hulls are built
        return (
            values.new_empty(e),
            values.new_empty(e, dtype=torch.long),
            values.new_empty(e, dtype=torch.float64),
            values.new_empty((), dtype=torch.float64),
        )

    @torch.library.register_fake("bidfcl::apply_mckp_cut")
    def _apply_mckp_cut_fake(values, costs, lam, individual, step):
        k, n = lam.shape[0], values.shape[0]
        return (
            values.new_empty((k, n), dtype=torch.long),
            values.new_empty(k, dtype=torch.float64),
            values.new_empty(k, dtype=torch.float64),
            values.new_empty(k, dtype=torch.float64),
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
    def _ppl_loss_fake(r_hat, c_hat, treatment, revenue, cost, lam, propensity, tau, check=True):
        return r_hat.new_empty(())

    @torch.library.register_fake("bidfcl::ppl_loss_backward")
    def _ppl_loss_backward_fake(grad, r_hat, c_hat, treatment, revenue, cost, lam, propensity, tau, check=True):
        return r_hat.new_empty(r_hat.shape), r_hat.new_empty(r_hat.shape)

    @torch.library.register_fake("bidfcl::pifd_loss")
    def _pifd_loss_fake(r_hat, c_hat, treatment, revenue, cost, lam, propensity, clip, check=True):
        return r_hat.new_empty(())

    @torch.library.register_fake("bidfcl::pifd_loss_backward")
    def _pifd_loss_backward_fake(grad, r_hat, c_hat, treatment, revenue, cost, lam, propensity, clip, check=True):
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
    def _ppl_loss_with_grad_fake(r_hat, c_hat, treatment, revenue, cost, lam, propensity, tau, check=True):
        return r_hat.new_empty(()), r_hat.new_empty(r_hat.shape), r_hat.new_empty(r_hat.shape)

    @torch.library.register_fake("bidfcl::pifd_loss_with_grad")
    def _pifd_loss_with_grad_fake(r_hat, c_hat, treatment, revenue, cost, lam, propensity, clip, check=True):
        return r_hat.new_empty(()), r_hat.new_empty(r_hat.shape), r_hat.new_empty(r_hat.shape)

    # Autograd: gradients flow to r_hat and c_hat only; labels, propensities and lam are constants.
    #
    # On CPU the forward is fused: <loss>_with_grad returns the loss and its gradient for a unit
    # upstream gradient in one pass over the rows (the loss bit for bit the forward op's), and the
    # backward only scales the saved gradients by the upstream one:
    #     dL/dr_hat = grad * G_r,   dL/dc_hat = grad * G_c     (G = <loss>_backward(1, ...))
    # Elsewhere (CUDA) the forward op runs and the backward op recomputes from the saved inputs.
    # `check` (False: no value checks, no host synchronisation) goes to every op of the pair.
    # Both are one autograd.Function on the Autograd key, like register_autograd builds, with the
    # choice made per call from the input's device.

    def _fused_forward_kernel(name):
        forward_op = getattr(torch.ops.bidfcl, name).default
        fused_op = getattr(torch.ops.bidfcl, name + "_with_grad").default
        backward_op = getattr(torch.ops.bidfcl, name + "_backward").default

        class _DecisionLoss(torch.autograd.Function):
            @staticmethod
            def forward(ctx, keyset, r_hat, c_hat, treatment, revenue, cost, lam, propensity, extra, check):
                below = keyset & torch._C._after_autograd_keyset
                with torch._C._AutoDispatchBelowAutograd():
                    if r_hat.device.type == "cpu":
                        loss, gr, gc = fused_op.redispatch(
                            below, r_hat, c_hat, treatment, revenue, cost, lam, propensity, extra, check
                        )
                        # held outside save_for_backward so the first backward may scale them in place
                        # (no new [N, M] buffers); the inputs stay saved for any later backward
                        ctx.unit_grads = (gr, gc)
                    else:
                        loss = forward_op.redispatch(
                            below, r_hat, c_hat, treatment, revenue, cost, lam, propensity, extra, check
                        )
                        ctx.unit_grads = None
                ctx.save_for_backward(r_hat, c_hat, treatment, revenue, cost, lam, propensity)
                ctx.extra = extra  # tau (PPL) or clip (PIFD)
                ctx.check = check
                return loss

            @staticmethod
            def backward(ctx, grad):
                if ctx.unit_grads is not None:
                    gr, gc = ctx.unit_grads
                    ctx.unit_grads = None  # consumed: a second backward (retain_graph) recomputes below
                    if grad.requires_grad:  # create_graph: keep the product differentiable in grad
                        return None, gr * grad, gc * grad, None, None, None, None, None, None, None
                    return None, gr.mul_(grad), gc.mul_(grad), None, None, None, None, None, None, None
                gr, gc = backward_op(grad, *ctx.saved_tensors, ctx.extra, ctx.check)
                return None, gr, gc, None, None, None, None, None, None, None

        _DecisionLoss.__name__ = f"_{name}_autograd"

        def autograd_kernel(keyset, r_hat, c_hat, treatment, revenue, cost, lam, propensity, extra, check=True):
            if torch.is_grad_enabled() and torch._C._any_requires_grad(
                r_hat, c_hat, treatment, revenue, cost, lam, propensity
            ):
                return _DecisionLoss.apply(
                    keyset, r_hat, c_hat, treatment, revenue, cost, lam, propensity, extra, check
                )
            with torch._C._AutoDispatchBelowAutograd():
                return forward_op.redispatch(
                    keyset & torch._C._after_autograd_keyset,
                    r_hat,
                    c_hat,
                    treatment,
                    revenue,
                    cost,
                    lam,
                    propensity,
                    extra,
                    check,
                )

        return autograd_kernel

    _LOSS_AUTOGRAD_LIB = torch.library.Library("bidfcl", "IMPL")
    for _name in ("ppl_loss", "pifd_loss"):
        _LOSS_AUTOGRAD_LIB.impl(_name, _fused_forward_kernel(_name), "Autograd", with_keyset=True)


# --------------------------------------------------------------------------------------------------
# multi-constraint allocation: fake kernels (no autograd: choices are discrete)
# --------------------------------------------------------------------------------------------------

if EXTENSION_LOADED:

    @torch.library.register_fake("bidfcl::allocation_policy")
    def _allocation_policy_fake(values, costs, eligible, groups, num_groups, lam):
        return (
            values.new_empty(values.shape[0], dtype=torch.long),
            values.new_empty(lam.shape[0], dtype=torch.float64),
            values.new_empty((), dtype=torch.float64),
            values.new_empty((), dtype=torch.float64),
        )

    @torch.library.register_fake("bidfcl::allocation_line_search")
    def _allocation_line_search_fake(values, costs, eligible, groups, num_groups, lam, budgets, constraint, check):
        return values.new_empty((), dtype=torch.float64)

    @torch.library.register_fake("bidfcl::allocation_repair")
    def _allocation_repair_fake(values, costs, eligible, groups, num_groups, lam, budgets, choice, fill, check):
        return (
            values.new_empty(values.shape[0], dtype=torch.long),
            values.new_empty(lam.shape[0], dtype=torch.float64),
            values.new_empty((), dtype=torch.float64),
            values.new_empty(lam.shape[0], dtype=torch.bool),
            values.new_empty(2, dtype=torch.long),
        )

    @torch.library.register_fake("bidfcl::allocation_smoothed")
    def _allocation_smoothed_fake(values, costs, eligible, groups, num_groups, lam, tau, check):
        j = lam.shape[0]
        return (
            values.new_empty((), dtype=torch.float64),
            values.new_empty((), dtype=torch.float64),
            values.new_empty(j, dtype=torch.float64),
            values.new_empty((j, j), dtype=torch.float64),
            values.new_empty((), dtype=torch.long),
        )
