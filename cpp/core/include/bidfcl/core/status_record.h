// The status record: a Status as kStatusLen int64 entries, so that it can live in device memory.
// The validation ops (validate_mckp, validate_decision) return one as a tensor without a host read
// (decoded on the host only when the caller asks: bidfcl.raise_if_failed), and the CUDA launchers of
// the losses and metrics write one on the device and read it back once when they check eagerly
// (from_record below): either way the message comes from the same Status the CPU core returns.
// Torch-free and usable from host and device code.
//
//   [kStatusCode]    0 = ok, else a core::Code value or one of the glue codes below
//   [kStatusRow]     Status::row: first offending row (individual) or index (budget, multiplier), else -1
//   [kStatusCol]     Status::col: option column of cell errors; the label bound M of kBadTreatment; else -1
//   [kStatusValue]   the offending value: the bits of a double (std::bit_cast / __double_as_longlong),
//                    except for kBadTreatment, where it is the int64 label itself
//   [kStatusFamily]  which op's names the message uses (kFamily* below)
//   [kStatusInput]   Status::input (core::Input) of kNonFiniteInput, else -1
//   [kStatusArm]     Status::arm of kEmptyArm, else -1
//
// The copy of this table on the Python side is python/bidfcl/_constants.py (STATUS_*, CODE_*,
// FAMILY_*, INPUT_*), checked against the `_C` attributes by tests/test_constants.py.
#pragma once

#include <cstdint>
#include <cstring>

#include "bidfcl/core/status.h"

namespace bidfcl::core {

constexpr int kStatusLen = 7;
constexpr int kStatusCode = 0, kStatusRow = 1, kStatusCol = 2, kStatusValue = 3, kStatusFamily = 4, kStatusInput = 5,
              kStatusArm = 6;

// Glue-level codes (checks the torch layer makes before the core sees the data). They continue
// core::Code's numbering at a distance so that new core codes never collide.
constexpr int64_t kCodeNonFiniteBudget = 20;  // budgets[k] is NaN or +-Inf
constexpr int64_t kCodeNegativeBudget = 21;   // budgets[k] < 0

// Families: the argument names the message uses.
constexpr int64_t kFamilySolve = 0;     // solve_mckp: values, costs, "total budgets"
constexpr int64_t kFamilyRct = 1;       // solve_mckp_rct: values, costs, cost_obs, "per-capita budgets"
constexpr int64_t kFamilyDecision = 2;  // decision losses: r_hat, c_hat, revenue, cost, lam, propensity
constexpr int64_t kFamilyMetrics = 3;   // policy_value, aucc (eager only: their CUDA error record)

// One record, field by field (value already in its int64 form).
struct StatusRecord {
  int64_t code = 0, row = -1, col = -1, value = 0, family = 0, input = -1, arm = -1;
  BIDFCL_HD bool ok() const { return code == 0; }
};

BIDFCL_HD inline int64_t double_bits(double v) {
#if defined(__CUDA_ARCH__)
  return __double_as_longlong(v);
#else
  int64_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
#endif
}

// The record of a core Status (ok: code 0 and every location -1).
BIDFCL_HD inline StatusRecord to_record(const Status& s, int64_t family) {
  StatusRecord r;
  r.family = family;
  if (s.ok()) return r;
  r.code = static_cast<int64_t>(s.code);
  r.row = s.row;
  r.col = s.col;
  r.value = s.code == Code::kBadTreatment ? static_cast<int64_t>(s.value) : double_bits(s.value);
  r.input = static_cast<int64_t>(s.input);
  r.arm = s.arm;
  return r;
}

// Writes `r` into out[0 .. kStatusLen) (host or device memory); an ok record has no location.
BIDFCL_HD inline void write_status_record(int64_t* out, const StatusRecord& r) {
  const bool ok = r.code == 0;
  out[kStatusCode] = r.code;
  out[kStatusRow] = ok ? -1 : r.row;
  out[kStatusCol] = ok ? -1 : r.col;
  out[kStatusValue] = ok ? 0 : r.value;
  out[kStatusFamily] = r.family;
  out[kStatusInput] = ok ? -1 : r.input;
  out[kStatusArm] = ok ? -1 : r.arm;
}

// The core Status of a record of core codes (host side of the CUDA launchers' eager check).
inline Status from_record(const int64_t* rec) {
  Status s;
  s.code = static_cast<Code>(rec[kStatusCode]);
  if (s.ok()) return s;
  s.row = rec[kStatusRow];
  s.col = rec[kStatusCol];
  if (s.code == Code::kBadTreatment) {
    s.value = static_cast<double>(rec[kStatusValue]);
  } else {
    std::memcpy(&s.value, &rec[kStatusValue], sizeof s.value);
  }
  s.input = static_cast<Input>(rec[kStatusInput]);
  s.arm = rec[kStatusArm];
  return s;
}

}  // namespace bidfcl::core
