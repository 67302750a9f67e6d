// The lazy checks (check = false): the status record of bidfcl/core/status_record.h as a tensor,
// and the CPU validators behind the validate_mckp / validate_decision ops. They find the same
// first error, in the same order, as the eager path (the Python wrappers' treatment check, then the
// glue's budget check, then the core's per-row checks), so bidfcl.raise_if_failed can raise the
// eager message from the record alone.
#pragma once

#include <ATen/ATen.h>

#include <bit>
#include <cmath>
#include <cstdint>

#include "bidfcl/core/losses.h"
#include "bidfcl/core/status.h"
#include "bidfcl/core/status_record.h"

namespace bidfcl::lazy {

struct Record {
  int64_t code = 0, row = -1, col = -1, value = 0;
  bool ok() const { return code == 0; }
};

inline int64_t bits(double v) { return std::bit_cast<int64_t>(v); }

inline Record from_code(core::Code code, int64_t row, int64_t col, double value) {
  return {static_cast<int64_t>(code), row, col, bits(value)};
}

// The record as an int64 [kStatusLen] tensor on the CPU.
inline at::Tensor to_tensor(const Record& r, int64_t family) {
  at::Tensor t = at::empty({core::kStatusLen}, at::TensorOptions().dtype(at::kLong));
  int64_t* s = t.data_ptr<int64_t>();
  s[core::kStatusCode] = r.code;
  s[core::kStatusRow] = r.ok() ? -1 : r.row;
  s[core::kStatusCol] = r.ok() ? -1 : r.col;
  s[core::kStatusValue] = r.ok() ? 0 : r.value;
  s[core::kStatusFamily] = family;
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
    if (!std::isfinite(b[x])) return {core::kCodeNonFiniteBudget, x, -1, bits(b[x])};
    if (b[x] < 0) return {core::kCodeNegativeBudget, x, -1, bits(b[x])};
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

// The losses core's check_lam then check_decision_row, first row first.
template <typename T>
Record check_decision(const core::DecisionBatch<T>& in) {
  using core::Code;
  using core::LossInput;
  for (int64_t x = 0; x < in.l; ++x)
    if (!std::isfinite(in.lam[x]))
      return from_code(Code::kNonFiniteInput, x, static_cast<int64_t>(LossInput::kLam), double(in.lam[x]));
  for (int64_t i = 0; i < in.n; ++i) {
    const T* r = in.r_hat + i * in.m;
    const T* c = in.c_hat + i * in.m;
    for (int64_t j = 0; j < in.m; ++j) {
      if (!std::isfinite(r[j])) return from_code(Code::kNonFiniteValue, i, j, double(r[j]));
      if (!std::isfinite(c[j])) return from_code(Code::kNonFiniteCost, i, j, double(c[j]));
    }
    if (!std::isfinite(in.revenue[i]))
      return from_code(Code::kNonFiniteInput, i, static_cast<int64_t>(LossInput::kRevenue), double(in.revenue[i]));
    if (in.cost && !std::isfinite(in.cost[i]))
      return from_code(Code::kNonFiniteInput, i, static_cast<int64_t>(LossInput::kCost), double(in.cost[i]));
    const T p = in.propensity[i];
    if (!(p > T(0) && p <= T(1))) return from_code(Code::kBadPropensity, i, 0, double(p));
  }
  return {};
}

}  // namespace bidfcl::lazy
