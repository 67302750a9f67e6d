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
