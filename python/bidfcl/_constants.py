"""Constants shared with the compiled core, in Python.

The C++ side defines each of them once: ``cpp/core/include/bidfcl/core/constants.h`` (limits,
numerical floors, CG status codes) and ``status.h`` / ``status_record.h`` (the status record
layout and its codes). The ``_C`` extension exports every one as a module attribute of the same
name; this module holds the same values so the package also works without the extension
(``BIDFCL_NO_EXTENSION=1``), and ``tests/test_constants.py`` checks that the two agree.
"""

from __future__ import annotations

#: Largest option count M of the solver ops (hull indices are stored as uint8).
MAX_OPTIONS = 256
#: Largest option count M of the decision losses (per-row scratch lives on the stack).
MAX_LOSS_OPTIONS = 256
#: Budgets are compared with this relative slack: a policy fits budget B when its spend is at most
#: B (1 + BUDGET_SLACK), so a budget computed as a policy's float64 spend admits it whatever the
#: summation order. The ops and the twins apply it (``_reference.budget_limit``).
BUDGET_SLACK = 2.0**-40
#: PIFD: a flip needing a score move of exactly zero (a tie at the top), without a clip, is taken
#: as a move of this many score units, so the estimate stays finite.
PIFD_ZERO_GAP_FLOOR = 1e-6
#: AUCC: floor of the predicted cost gap ``c_hat[:, 1] - c_hat[:, 0]`` in the ROI ranking.
AUCC_MIN_COST_GAP = 1e-12

#: Why the conjugate-gradient solve stopped (``CGState.status`` names them, see STATUS_NAMES of
#: bidfcl.linear_solve).
CG_MAX_ITER, CG_CONVERGED, CG_NONPOSITIVE_CURVATURE = 0, 1, 2

#: The status record of the lazy checks (``check=False``): an int64 tensor of STATUS_LEN entries.
#: code (0 = ok), row (or index), col (option column; the label bound M of a bad treatment), value
#: (the bits of a float64; the label itself for a bad treatment), family (whose argument names to
#: use), input (which input of a non-finite-input error, INPUT_*), arm (the empty arm of
#: CODE_EMPTY_ARM).
STATUS_LEN = 7
STATUS_CODE, STATUS_ROW, STATUS_COL, STATUS_VALUE, STATUS_FAMILY, STATUS_INPUT, STATUS_ARM = range(STATUS_LEN)

#: Codes: core::Code of status.h, and the glue's budget codes of status_record.h.
CODE_OK, CODE_NON_FINITE_VALUE, CODE_NON_FINITE_COST, CODE_NEGATIVE_COST, CODE_BAD_TREATMENT = 0, 1, 2, 3, 4
CODE_BAD_PROPENSITY, CODE_NON_FINITE_INPUT, CODE_NO_ELIGIBLE_OPTION, CODE_BAD_GROUP, CODE_EMPTY_ARM = 5, 6, 7, 8, 9
CODE_NON_FINITE_BUDGET, CODE_NEGATIVE_BUDGET = 20, 21

#: Families: which op's argument names a message uses.
FAMILY_SOLVE, FAMILY_RCT, FAMILY_DECISION, FAMILY_METRICS = 0, 1, 2, 3

#: Inputs (core::Input): the ``input`` entry of a CODE_NON_FINITE_INPUT record.
INPUT_NONE, INPUT_REVENUE, INPUT_COST, INPUT_LAM, INPUT_PROPENSITY = -1, 0, 1, 2, 3
#: Their argument names.
INPUT_NAMES = {INPUT_REVENUE: "revenue", INPUT_COST: "cost", INPUT_LAM: "lam", INPUT_PROPENSITY: "propensity"}

#: Every constant the ``_C`` module exports (tests/test_constants.py compares them one by one).
EXPORTED = (
    "MAX_OPTIONS",
    "MAX_LOSS_OPTIONS",
    "BUDGET_SLACK",
    "PIFD_ZERO_GAP_FLOOR",
    "AUCC_MIN_COST_GAP",
    "CG_MAX_ITER",
    "CG_CONVERGED",
    "CG_NONPOSITIVE_CURVATURE",
    "STATUS_LEN",
    "STATUS_CODE",
    "STATUS_ROW",
    "STATUS_COL",
    "STATUS_VALUE",
    "STATUS_FAMILY",
    "STATUS_INPUT",
    "STATUS_ARM",
    "CODE_OK",
    "CODE_NON_FINITE_VALUE",
    "CODE_NON_FINITE_COST",
    "CODE_NEGATIVE_COST",
    "CODE_BAD_TREATMENT",
    "CODE_BAD_PROPENSITY",
    "CODE_NON_FINITE_INPUT",
    "CODE_NO_ELIGIBLE_OPTION",
    "CODE_BAD_GROUP",
    "CODE_EMPTY_ARM",
    "CODE_NON_FINITE_BUDGET",
    "CODE_NEGATIVE_BUDGET",
    "FAMILY_SOLVE",
    "FAMILY_RCT",
    "FAMILY_DECISION",
    "FAMILY_METRICS",
    "INPUT_NONE",
    "INPUT_REVENUE",
    "INPUT_COST",
    "INPUT_LAM",
    "INPUT_PROPENSITY",
)
