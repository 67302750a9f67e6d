// How core routines report bad input without knowing about torch or Python: they return a Status
// naming what was wrong and where; the torch layer turns it into a readable error message. Usable
// from host and device code (the CUDA kernels build the same Status the CPU core does).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define BIDFCL_HD __host__ __device__
#else
#define BIDFCL_HD
#endif

namespace bidfcl::core {

enum class Code : int {
  kOk = 0,
  kNonFiniteValue,    // a value (revenue) entry is NaN or +-Inf
  kNonFiniteCost,     // a cost entry is NaN or +-Inf
  kNegativeCost,      // a cost entry is < 0
  kBadTreatment,      // a treatment label is outside [0, M) (M in Status::col)
  kBadPropensity,     // a propensity is not in (0, 1]
  kNonFiniteInput,    // any other float input is NaN or +-Inf (which one: Status::input)
  kNoEligibleOption,  // a user (row) has no eligible option
  kBadGroup,          // a group label is outside [0, G) (G in Status::col)
  kEmptyArm,          // a metric needs rows in every arm and arm Status::arm has none (AUCC)
};

// Which input a kNonFiniteInput status refers to (kNone: the caller's one "other" input, e.g.
// cost_obs of the RCT solve).
enum class Input : int64_t { kNone = -1, kRevenue = 0, kCost = 1, kLam = 2, kPropensity = 3 };

struct Status {
  Code code = Code::kOk;
  int64_t row = -1;  // first offending row (individual), or index (multiplier), or -1
  int64_t col = -1;  // first offending column (option); the label bound M / G for kBadTreatment /
                     // kBadGroup; else -1
  double value = 0;  // the offending value, for the message
  Input input = Input::kNone;  // kNonFiniteInput: which input
  int64_t arm = -1;            // kEmptyArm: the arm without rows

  BIDFCL_HD bool ok() const { return code == Code::kOk; }
  BIDFCL_HD static Status Ok() { return {}; }
};

// Keeps the first error in row-major order, so the reported location does not depend on which
// thread found its error first.
inline void keep_first(Status& acc, const Status& s) {
  if (s.ok()) return;
  if (acc.ok() || s.row < acc.row || (s.row == acc.row && s.col < acc.col)) acc = s;
}

// isfinite in host and device code (std::isfinite is host-only).
template <typename T>
BIDFCL_HD inline bool is_finite(T x) {
#if defined(__CUDA_ARCH__)
  return isfinite(x);
#else
  return std::isfinite(x);
#endif
}

}  // namespace bidfcl::core
