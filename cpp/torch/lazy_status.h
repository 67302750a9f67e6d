// The lazy checks (check = false): the status record of bidfcl/core/status_record.h as a tensor,
// and the CPU validators behind the validate_mckp / validate_decision ops. They find the same
// first error, in the same order, as the eager path (the Python wrappers' treatment check, then the
// glue's budget check, then the core's per-row checks), so bidfcl.raise_if_failed can raise the
// eager message from the record alone.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>

#include "bidfcl/core/losses.h"
#include "bidfcl/core/status.h"
#include "bidfcl/core/status_record.h"

namespace bidfcl::lazy {

using Record = core::StatusRecord;

inline Record from_code(core::Code code, int64_t row, int64_t col, double value) {
  return core::to_record(core::Status{code, row, col, value}, 0);
}

// The record as an int64 [kStatusLen] tensor on the CPU; `family` names the op whose argument
// names the message uses.
inline at::Tensor to_tensor(Record r, int64_t family) {
  at::Tensor t = at::empty({core::kStatusLen}, at::TensorOptions().dtype(at::kLong));
  r.family = family;
  core::write_status_record(t.data_ptr<int64_t>(), r);
  return t;
}

// Python's _validate.treatment: the first label outside [0, m); the value is the label itself.
inline Record check_labels(const int64_t* t, int64_t n, int64_t m) {
  for (int64_t i = 0; i < n; ++i)
    if (t[i] < 0 || t[i] >= m) return {static_cast<int64_t>(core::Code::kBadTreatment), i, m, t[i]};
  return {};
}

// mckp_ops.h's check_budgets: the first budget that is not finite or is negative.
inline Record check_budget_values(const double* b, int64_t k) {
  for (int64_t x = 0; x < k; ++x) {
    if (!std::isfinite(b[x])) return {core::kCodeNonFiniteBudget, x, -1, core::double_bits(b[x])};
    if (b[x] < 0) return {core::kCodeNegativeBudget, x, -1, core::double_bits(b[x])};
  }
  return {};
}

// The solver core's check_row over all rows: the first bad cell in row-major order.
template <typename T>
Record check_cells(const T* r, const T* c, int64_t n, int64_t m) {
  for (int64_t q = 0; q < n * m; ++q) {
    if (!std::isfinite(r[q])) return from_code(core::Code::kNonFiniteValue, q / m, q % m, double(r[q]));
    if (!std::isfinite(c[q])) return from_code(core::Code::kNonFiniteCost, q / m, q % m, double(c[q]));
    if (c[q] < T(0)) return from_code(core::Code::kNegativeCost, q / m, q % m, double(c[q]));
  }
  return {};
}

// The RCT core's row check (labels already passed): propensity in (0, 1], finite cost_obs.
template <typename T>
Record check_rct_rows(const T* propensity, const T* cost_obs, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (!(propensity[i] > T(0) && propensity[i] <= T(1)))
      return from_code(core::Code::kBadPropensity, i, -1, double(propensity[i]));
    if (!std::isfinite(cost_obs[i])) return from_code(core::Code::kNonFiniteInput, i, -1, double(cost_obs[i]));
  }
  return {};
}

// The losses core's own checks (losses.h): lam first, then row by row.
template <typename T>
Record check_decision(const core::DecisionBatch<T>& in) {
  for (int64_t x = 0; x < in.l; ++x) {
    const core::Status s = core::check_lam_entry(in, x);
    if (!s.ok()) return core::to_record(s, core::kFamilyDecision);
  }
  for (int64_t i = 0; i < in.n; ++i) {
    const core::Status s = core::check_decision_row(in, i);
    if (!s.ok()) return core::to_record(s, core::kFamilyDecision);
  }
  return {};
}

}  // namespace bidfcl::lazy
