// The allocation family's glue builder, shared by the CPU and CUDA glue (cpu/allocation_ops_cpu.cpp,
// cuda/allocation_ops_cuda.cpp): checks, contiguous inputs, outputs and the params structs of
// bidfcl/core/allocation.h. Bad input raises ValueError (TORCH_CHECK_VALUE) naming the argument
// and, for entries, the position.
#pragma once

#include <ATen/ATen.h>

#include <cmath>

#include "bidfcl/core/allocation.h"
#include "bidfcl/core/mckp.h"
#include "checks.h"
#include "mckp_ops.h"

namespace bidfcl::allocation {

// values [N, M], costs [K, N, M], eligible [N, M] bool or None, groups [N] int64 or None with
// num_groups = G, lam [J = K + M + K G] float64 (and budgets [J] float64 when given).
inline void check_inputs(const at::Tensor& values, const at::Tensor& costs, const std::optional<at::Tensor>& eligible,
                         const std::optional<at::Tensor>& groups, int64_t num_groups, const at::Tensor& lam,
                         const at::Tensor* budgets) {
  using checks::shape_str;
  checks::check_float(values, "values");
  checks::check_float(costs, "costs");
  TORCH_CHECK_VALUE(values.dim() == 2, "bidfcl: values must be 2-D [N users, M options], got shape ",
                    shape_str(values));
  TORCH_CHECK_VALUE(costs.dim() == 3, "bidfcl: costs must be 3-D [K resources, N users, M options], got shape ",
                    shape_str(costs));
  checks::check_same_dtype(values, costs, "values", "costs");
  checks::check_same_device(values, costs, "values", "costs");
  const int64_t n = values.size(0), m = values.size(1), k = costs.size(0);
  TORCH_CHECK_VALUE(costs.size(1) == n && costs.size(2) == m, "bidfcl: costs must have shape [K, ", n, ", ", m,
                    "] to match values ", shape_str(values), ", got ", shape_str(costs));
  TORCH_CHECK_VALUE(m >= 1 && m <= core::kMaxOptions, "bidfcl: values must have 1 to ", core::kMaxOptions,
                    " options, got M = ", m);
  TORCH_CHECK_VALUE(k >= 1 && k <= core::kMaxOptions, "bidfcl: costs must hold 1 to ", core::kMaxOptions,
                    " resources, got K = ", k);
  if (eligible.has_value()) {
    TORCH_CHECK_VALUE(eligible->scalar_type() == at::kBool, "bidfcl: eligible must be bool, got ",
                      eligible->scalar_type());
    TORCH_CHECK_VALUE(eligible->dim() == 2 && eligible->size(0) == n && eligible->size(1) == m,
                      "bidfcl: eligible must have shape [", n, ", ", m, "] like values, got ", shape_str(*eligible));
    checks::check_same_device(values, *eligible, "values", "eligible");
  }
  TORCH_CHECK_VALUE(num_groups >= 0, "bidfcl: num_groups must be >= 0, got ", num_groups);
  if (groups.has_value()) {
    TORCH_CHECK_VALUE(groups->scalar_type() == at::kLong, "bidfcl: groups must be int64, got ", groups->scalar_type());
    TORCH_CHECK_VALUE(groups->dim() == 1 && groups->size(0) == n, "bidfcl: groups must have shape [", n,
                      "] (one group per user), got ", shape_str(*groups));
    TORCH_CHECK_VALUE(num_groups >= 1, "bidfcl: groups given but num_groups = ", num_groups);
    checks::check_same_device(values, *groups, "values", "groups");
  } else {
    TORCH_CHECK_VALUE(num_groups == 0, "bidfcl: num_groups = ", num_groups, " but no groups given");
  }
  const int64_t J = k + m + k * num_groups;
  auto check_vec = [&](const at::Tensor& t, const char* name, bool allow_inf) {
    TORCH_CHECK_VALUE(t.scalar_type() == at::kDouble, "bidfcl: ", name, " must be float64, got ", t.scalar_type());
    TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == J, "bidfcl: ", name, " must have shape [", J,
                      "] (K + M + K * G constraints), got ", shape_str(t));
    checks::check_same_device(values, t, "values", name);
    const at::Tensor h = t.to(at::kCPU).contiguous();
    const double* d = h.data_ptr<double>();
    for (int64_t j = 0; j < J; ++j) {
      TORCH_CHECK_VALUE(!std::isnan(d[j]) && (allow_inf || std::isfinite(d[j])), "bidfcl: ", name, " must be ",
                        allow_inf ? "non-NaN" : "finite", ", got ", d[j], " at index ", j);
      TORCH_CHECK_VALUE(d[j] >= 0, "bidfcl: ", name, " must be >= 0, got ", d[j], " at index ", j);
    }
  };
  check_vec(lam, "lam", /*allow_inf=*/false);
  if (budgets) check_vec(*budgets, "budgets", /*allow_inf=*/true);
}

// Turns a core Status into a ValueError naming the argument and the entry.
inline void raise_if_error(const core::Status& s, int64_t m) {
  using core::Code;
  switch (s.code) {
    case Code::kOk: return;
    case Code::kNonFiniteValue:
      TORCH_CHECK_VALUE(false, "bidfcl: values must be finite, got ", s.value, " at [", s.row, ", ", s.col, "]");
    case Code::kNonFiniteCost:
      TORCH_CHECK_VALUE(false, "bidfcl: costs must be finite, got ", s.value, " at [", s.col / m, ", ", s.row, ", ",
                        s.col % m, "]");
    case Code::kNegativeCost:
      TORCH_CHECK_VALUE(false, "bidfcl: costs must be >= 0, got ", s.value, " at [", s.col / m, ", ", s.row, ", ",
                        s.col % m, "]");
    case Code::kNoEligibleOption:
      if (s.col >= 0)
        TORCH_CHECK_VALUE(false, "bidfcl: choice must be an eligible option in [0, M), got ", s.col, " at row ", s.row);
      TORCH_CHECK_VALUE(false, "bidfcl: eligible must allow at least one option per user, got none at row ", s.row);
    case Code::kBadGroup:
      TORCH_CHECK_VALUE(false, "bidfcl: groups must be in [0, G) = [0, ", s.col, "), got ", s.value, " at row ", s.row);
    default: checks::raise_if_error(s);
  }
}

template <typename T>
core::AllocationInput<T> make_input(const at::Tensor& values, const at::Tensor& costs, const at::Tensor& eligible,
                                    const at::Tensor& groups, int64_t num_groups, int num_threads, bool check) {
  core::AllocationInput<T> in;
  in.values = values.data_ptr<T>();
  in.costs = costs.data_ptr<T>();
  in.eligible = eligible.defined() ? eligible.data_ptr<bool>() : nullptr;
  in.groups = groups.defined() ? groups.data_ptr<int64_t>() : nullptr;
  in.n = values.size(0);
  in.m = values.size(1);
  in.k = costs.size(0);
  in.g = groups.defined() ? num_groups : 0;
  in.num_threads = num_threads;
  in.check = check;
  return in;
}

inline at::Tensor contiguous_or_undefined(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->contiguous() : at::Tensor();
}

// allocation_policy (CPU and CUDA): inputs after their checks, contiguous; outputs; params.
struct PolicyInputs {
  at::Tensor values, costs, lam, eligible, groups;  // eligible, groups: undefined when None
  int64_t num_groups = 0;
};

inline PolicyInputs policy_inputs(const at::Tensor& values, const at::Tensor& costs,
                                  const std::optional<at::Tensor>& eligible, const std::optional<at::Tensor>& groups,
                                  int64_t num_groups, const at::Tensor& lam) {
  check_inputs(values, costs, eligible, groups, num_groups, lam, nullptr);
  return {values.contiguous(),
          costs.contiguous(),
          lam.contiguous(),
          contiguous_or_undefined(eligible),
          contiguous_or_undefined(groups),
          num_groups};
}

struct PolicyOutputs {
  at::Tensor choice, spend, value, lagrangian;
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> tuple() const {
    return {choice, spend, value, lagrangian};
  }
};

inline PolicyOutputs alloc_policy_outputs(const PolicyInputs& in) {
  const auto opts = in.values.options();
  return {at::empty({in.values.size(0)}, opts.dtype(at::kLong)), at::empty({in.lam.size(0)}, opts.dtype(at::kDouble)),
          at::empty({}, opts.dtype(at::kDouble)), at::empty({}, opts.dtype(at::kDouble))};
}

template <typename T>
core::AllocationPolicyParams<T> make_policy_params(const PolicyInputs& in, PolicyOutputs& o, int num_threads) {
  core::AllocationPolicyParams<T> p;
  p.in = make_input<T>(in.values, in.costs, in.eligible, in.groups, in.num_groups, num_threads, true);
  p.lam = in.lam.data_ptr<double>();
  p.choice = o.choice.data_ptr<int64_t>();
  p.spend = o.spend.data_ptr<double>();
  p.value = o.value.data_ptr<double>();
  p.lagrangian = o.lagrangian.data_ptr<double>();
  return p;
}

}  // namespace bidfcl::allocation
