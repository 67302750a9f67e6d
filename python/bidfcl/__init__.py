"""bidfcl: budget-constrained marketing allocation, learned for the decision.

The compiled core registers operators under ``torch.ops.bidfcl``; every op has a pure-PyTorch twin
in :mod:`bidfcl._reference`. Set ``BIDFCL_NO_EXTENSION=1`` to run the whole package on the twins
(no compiled code is loaded).
"""

from __future__ import annotations

__version__ = "0.1.0"

from ._ops import EXTENSION_LOADED, MAX_OPTIONS, build_info  # noqa: E402  (loads the ops first)
from ._validate import InputError, InputTypeError, raise_if_failed  # noqa: E402
from .solver import MckpSolution, RctSolution, budget_frontier, solve_mckp, solve_mckp_rct  # noqa: E402
from .allocation import AllocationSolution, solve_allocation  # noqa: E402
from . import data, implicit, linear_solve, losses, metrics  # noqa: E402,F401  (pyarrow is imported only when a loader runs)

__all__ = [
    "__version__",
    "EXTENSION_LOADED",
    "MAX_OPTIONS",
    "InputError",
    "InputTypeError",
    "raise_if_failed",
    "build_info",
    "MckpSolution",
    "AllocationSolution",
    "solve_allocation",
    "RctSolution",
    "budget_frontier",
    "solve_mckp",
    "solve_mckp_rct",
    "data",
    "implicit",
    "linear_solve",
    "losses",
    "metrics",
]
