// How core routines report bad input without knowing about torch or Python: they return a Status
// naming what was wrong and where; the torch layer turns it into a readable error message.
#pragma once

#include <cstdint>

namespace bidfcl::core {

enum class Code : int {
  kOk = 0,
  kNonFiniteValue,    // a value (revenue) entry is NaN or +-Inf
  kNonFiniteCost,     // a cost entry is NaN or +-Inf
  kNegativeCost,      // a cost entry is < 0
  kBadTreatment,      // a treatment label is outside [0, M)
  kBadPropensity,     // a propensity is not in (0, 1]
  kNonFiniteInput,    // any other float input is NaN or +-Inf
  kNoEligibleOption,  // a user (row) has no eligible option
  kBadGroup,          // a group label is outside [0, G)
};

struct Status {
  Code code = Code::kOk;
  int64_t row = -1;  // first offending row (individual), or -1
  int64_t col = -1;  // first offending column (option), or -1
  double value = 0;  // the offending value, for the message

  bool ok() const { return code == Code::kOk; }
  static Status Ok() { return {}; }
};

// Keeps the first error in row-major order, so the reported location does not depend on which
// thread found its error first.
inline void keep_first(Status& acc, const Status& s) {
  if (s.ok()) return;
  if (acc.ok() || s.row < acc.row || (s.row == acc.row && s.col < acc.col)) acc = s;
}

}  // namespace bidfcl::core
