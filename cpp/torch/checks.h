// One place for input checks. Every message says what was expected and what arrived, and names
// the argument, so users can fix their call without reading our source.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <sstream>
#include <string>

#include "bidfcl/core/status.h"

namespace bidfcl::checks {

inline std::string shape_str(const at::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

inline void check_defined(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.defined(), "bidfcl: ", name, " must be a tensor, got None");
}

inline void check_float(const at::Tensor& t, const char* name) {
  check_defined(t, name);
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, "bidfcl: ", name,
              " must be float32 or float64, got ", t.scalar_type());
}

inline void check_dim(const at::Tensor& t, int64_t dim, const char* name, const char* layout) {
  TORCH_CHECK(t.dim() == dim, "bidfcl: ", name, " must be ", dim, "-D ", layout, ", got shape ", shape_str(t));
}

inline void check_same_dtype(const at::Tensor& a, const at::Tensor& b, const char* na, const char* nb) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "bidfcl: ", na, " and ", nb, " must have the same dtype, got ",
              a.scalar_type(), " and ", b.scalar_type());
}

inline void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* na, const char* nb) {
  TORCH_CHECK(a.device() == b.device(), "bidfcl: ", na, " and ", nb, " must be on the same device, got ", a.device(),
              " and ", b.device());
}

inline void check_same_shape(const at::Tensor& a, const at::Tensor& b, const char* na, const char* nb) {
  TORCH_CHECK(a.sizes() == b.sizes(), "bidfcl: ", na, " and ", nb, " must have the same shape, got ", shape_str(a),
              " and ", shape_str(b));
}

inline void check_length(const at::Tensor& t, int64_t n, const char* name, const char* of) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == n, "bidfcl: ", name, " must have shape [", n, "] (one entry per ", of,
              "), got ", shape_str(t));
}

// A [N, M] problem matrix pair: float, 2-D, same dtype/device/shape, at least one option.
inline void check_problem(const at::Tensor& values, const at::Tensor& costs, const char* nv = "values",
                          const char* nc = "costs") {
  check_float(values, nv);
  check_float(costs, nc);
  check_dim(values, 2, nv, "[N individuals, M options]");
  check_dim(costs, 2, nc, "[N individuals, M options]");
  check_same_dtype(values, costs, nv, nc);
  check_same_device(values, costs, nv, nc);
  check_same_shape(values, costs, nv, nc);
  TORCH_CHECK(values.size(1) >= 1, "bidfcl: ", nv, " must have at least one option (M >= 1), got shape ",
              shape_str(values));
}

// The argument name of a kNonFiniteInput status: its Status::input, or `other` for Input::kNone.
inline const char* input_name(core::Input input, const char* other) {
  switch (input) {
    case core::Input::kRevenue: return "revenue";
    case core::Input::kCost: return "cost";
    case core::Input::kLam: return "lam";
    case core::Input::kPropensity: return "propensity";
    case core::Input::kNone: break;
  }
  return other;
}

// Turns a core Status into a clear error (the CPU and CUDA glue of every family raise through
// here, the CUDA launchers' Status decoded from their device status record). The names say which argument the core was looking at.
inline void raise_if_error(const core::Status& s, const char* values_name = "values", const char* costs_name = "costs",
                           const char* other_name = "input") {
  using core::Code;
  switch (s.code) {
    case Code::kOk: return;
    case Code::kNonFiniteValue:
      TORCH_CHECK(false, "bidfcl: ", values_name, " must be finite, got ", s.value, " at [", s.row, ", ", s.col, "]");
    case Code::kNonFiniteCost:
      TORCH_CHECK(false, "bidfcl: ", costs_name, " must be finite, got ", s.value, " at [", s.row, ", ", s.col, "]");
    case Code::kNegativeCost:
      TORCH_CHECK(false, "bidfcl: ", costs_name, " must be >= 0, got ", s.value, " at [", s.row, ", ", s.col, "]");
    case Code::kBadTreatment:
      TORCH_CHECK(false, "bidfcl: treatment must be in [0, M) = [0, ", s.col, "), got ", s.value, " at row ", s.row);
    case Code::kBadPropensity:
      TORCH_CHECK(false, "bidfcl: propensity must be in (0, 1], got ", s.value, " at row ", s.row);
    case Code::kNonFiniteInput:
      TORCH_CHECK(false, "bidfcl: ", input_name(s.input, other_name), " must be finite, got ", s.value,
                  s.input == core::Input::kLam ? " at index " : " at row ", s.row);
    case Code::kNoEligibleOption:
      TORCH_CHECK(false, "bidfcl: eligible must allow at least one option per user, got none at row ", s.row);
    case Code::kBadGroup:
      TORCH_CHECK(false, "bidfcl: groups must be in [0, G) = [0, ", s.col, "), got ", s.value, " at row ", s.row);
    case Code::kEmptyArm:
      TORCH_CHECK(false, "bidfcl: aucc needs rows in both arms (treatment 0 and 1), got none with treatment ", s.arm);
  }
  TORCH_CHECK(false, "bidfcl: unknown error code ", static_cast<int>(s.code));
}

}  // namespace bidfcl::checks
