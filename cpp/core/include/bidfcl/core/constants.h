// Constants shared by the core, the torch glue and Python, defined once here. The `_C` module exports
// each one as an attribute (cpp/python/module.cpp); python/bidfcl/_constants.py holds the same
// values for BIDFCL_NO_EXTENSION=1, and tests/test_constants.py checks the two agree.
#pragma once

#include <cstdint>

namespace bidfcl::core {

// Largest option count M of the solver ops: hull indices are stored as uint8 (`_C.MAX_OPTIONS`).
constexpr int64_t kMaxOptions = 256;

// Budgets are compared with this relative slack: a policy fits budget B when its spend is at most
// the limit B (1 + kBudgetSlack). Totals over millions of rows are float64 sums whose last bits
// depend on the summation order (CPU chunks, GPU trees, the caller's own torch.sum); a budget
// computed as exactly the spend of a policy must admit that policy. The ops take budgets as given
// and the glue hands the routines the limits (cpp/torch/mckp_ops.h, budget_limits; the Python
// twin: _reference.budget_limit); the routines compare against what they get (`_C.BUDGET_SLACK`).
constexpr double kBudgetSlack = 0x1p-40;

// Largest option count M of the decision losses: per-row scratch lives on the stack
// (`_C.MAX_LOSS_OPTIONS`).
constexpr int64_t kMaxLossOptions = 256;

// Gap used by PIFD when a flip needs a score move of exactly zero (a tie at the top) and no clip
// is set: the move is taken as this many score units, so the estimate stays finite
// (`_C.PIFD_ZERO_GAP_FLOOR`).
constexpr double kPifdZeroGapFloor = 1e-6;

// Floor of the predicted cost gap c_hat[i, 1] - c_hat[i, 0] in AUCC's ROI ranking
// (`_C.AUCC_MIN_COST_GAP`).
constexpr double kAuccMinCostGap = 1e-12;

// Why the conjugate-gradient driver (cpp/python/implicit.cpp) stopped (`_C.CG_MAX_ITER`, ...).
enum CgStatus : int64_t {
  kCgMaxIter = 0,              // ran max_iter iterations without reaching the tolerance
  kCgConverged = 1,            // ||r|| <= tol ||b||
  kCgNonPositiveCurvature = 2  // p'(H + damping I)p <= 0 (or NaN): the iterate before that step is returned
};

}  // namespace bidfcl::core
