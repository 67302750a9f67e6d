// The lazy status record: how the validation ops (validate_mckp, validate_decision) report bad
// input without a host read. It is an int64 tensor of kStatusLen entries, written on the op's
// device and decoded on the host only when the caller asks (bidfcl.raise_if_failed), into the same
// message the eager check raises. Torch-free and usable from host and device code.
//
//   [kStatusCode]    0 = ok, else a core::Code value or one of the glue codes below
//   [kStatusRow]     first offending row (individual) or index (budget, multiplier), else -1
//   [kStatusCol]     option column for cell errors; M for kBadTreatment; the LossInput for
//                    kNonFiniteInput of the decision inputs; else -1
//   [kStatusValue]   the offending value: the bits of a double (std::bit_cast / __double_as_longlong),
//                    except for kBadTreatment, where it is the int64 label itself
//   [kStatusFamily]  which op's names the message uses (kFamily* below)
//
// The copy of this table on the Python side is in python/bidfcl/_validate.py (STATUS_*).
#pragma once

#include <cstdint>

namespace bidfcl::core {

constexpr int kStatusLen = 5;
constexpr int kStatusCode = 0, kStatusRow = 1, kStatusCol = 2, kStatusValue = 3, kStatusFamily = 4;

// Glue-level codes (checks the torch layer makes before the core sees the data). They continue
// core::Code's numbering at a distance so that new core codes never collide.
constexpr int64_t kCodeNonFiniteBudget = 20;  // budgets[k] is NaN or +-Inf
constexpr int64_t kCodeNegativeBudget = 21;   // budgets[k] < 0

// Families: the argument names the message uses.
constexpr int64_t kFamilySolve = 0;     // solve_mckp: values, costs, "total budgets"
constexpr int64_t kFamilyRct = 1;       // solve_mckp_rct: values, costs, cost_obs, "per-capita budgets"
constexpr int64_t kFamilyDecision = 2;  // decision losses: r_hat, c_hat, revenue, cost, lam, propensity

}  // namespace bidfcl::core
