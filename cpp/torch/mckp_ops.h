// The MCKP solver family's glue builder, shared by the CPU and CUDA glue (cpu/mckp_ops_cpu.cpp,
// cuda/mckp_ops_cuda.cpp): the checks of every op's inputs, in the order the messages promise, the
// contiguous inputs, the outputs, and the params structs of bidfcl/core/mckp.h. The per-device
// files only add what differs: the thread count or the stream and the workspace, and how a bad
// status is raised.
#pragma once

#include <ATen/ATen.h>

#include "bidfcl/core/mckp.h"
#include "checks.h"

namespace bidfcl::mckp {

// check = false: the metadata only (dtype, shape, device); the values are left to the lazy check
// (validate_mckp), so nothing is read from a device.
inline void check_budgets(const at::Tensor& values, const at::Tensor& budgets, const char* what, bool check = true) {
  checks::check_defined(budgets, "budgets");
  TORCH_CHECK(budgets.scalar_type() == at::kDouble, "bidfcl: budgets must be float64, got ", budgets.scalar_type());
  TORCH_CHECK(budgets.dim() == 1, "bidfcl: budgets must be 1-D [K] (", what, "), got shape ",
              checks::shape_str(budgets));
  TORCH_CHECK(budgets.size(0) >= 1, "bidfcl: budgets must hold at least one budget, got shape ",
              checks::shape_str(budgets));
  checks::check_same_device(values, budgets, "values", "budgets");
  if (!check) return;
  // K is small: checking on the host is cheap and gives a readable message.
  const at::Tensor host = budgets.to(at::kCPU).contiguous();
  const double* b = host.data_ptr<double>();
  for (int64_t k = 0; k < host.size(0); ++k) {
    TORCH_CHECK(std::isfinite(b[k]), "bidfcl: budgets must be finite, got ", b[k], " at index ", k);
    TORCH_CHECK(b[k] >= 0, "bidfcl: budgets must be >= 0 (", what, "), got ", b[k], " at index ", k);
  }
}

// The ops take budgets as given and hand the core limits = budgets * (1 + core::kBudgetSlack) (see
// mckp.h): one float64 multiply per budget on the budgets' device (no host read, capturable). The
// twin does the same (python/bidfcl/_reference.py, budget_limit).
inline at::Tensor budget_limits(const at::Tensor& budgets) { return budgets * (1.0 + core::kBudgetSlack); }

inline void check_solver_problem(const at::Tensor& values, const at::Tensor& costs) {
  checks::check_problem(values, costs);
  TORCH_CHECK(values.size(0) >= 1, "bidfcl: values must hold at least one individual (N >= 1), got shape ",
              checks::shape_str(values));
  TORCH_CHECK(values.size(1) <= core::kMaxOptions, "bidfcl: at most ", core::kMaxOptions,
              " options are supported, got M = ", values.size(1));
}

inline void check_bisection_args(int64_t max_iter, double tol) {
  TORCH_CHECK(max_iter >= 0, "bidfcl: max_iter must be >= 0, got ", max_iter);
  TORCH_CHECK(std::isfinite(tol) && tol >= 0, "bidfcl: tol must be finite and >= 0, got ", tol);
}

// solve_mckp / solve_mckp_bisection inputs after their checks: contiguous, budgets as limits.
struct SolveInputs {
  at::Tensor values, costs, limits;
};

// check = false: the budgets' metadata only (see check_budgets).
inline SolveInputs solve_inputs(const at::Tensor& values, const at::Tensor& costs, const at::Tensor& budgets,
                                bool check = true) {
  check_solver_problem(values, costs);
  check_budgets(values, budgets, "total budgets", check);
  return {values.contiguous(), costs.contiguous(), budget_limits(budgets.contiguous())};
}

struct SolveOutputs {
  at::Tensor lam, choice, spend, value, dual_bound, feasible;
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> tuple() const {
    return {lam, choice, spend, value, dual_bound, feasible};
  }
};

inline SolveOutputs alloc_solve_outputs(const at::Tensor& values, int64_t k) {
  const auto opts = values.options();
  SolveOutputs o;
  o.lam = at::empty({k}, opts);
  o.choice = at::empty({k, values.size(0)}, opts.dtype(at::kLong));
  o.spend = at::empty({k}, opts.dtype(at::kDouble));
  o.value = at::empty({k}, opts.dtype(at::kDouble));
  o.dual_bound = at::empty({k}, opts.dtype(at::kDouble));
  o.feasible = at::empty({k}, opts.dtype(at::kBool));
  return o;
}

// The border to the core: tensor data pointers into params structs (host or device pointers alike).
template <typename T>
core::MckpInput<T> make_input(const at::Tensor& values, const at::Tensor& costs, int num_threads = 1) {
  core::MckpInput<T> in;
  in.values = values.data_ptr<T>();
  in.costs = costs.data_ptr<T>();
  in.n = values.size(0);
  in.m = values.size(1);
  in.num_threads = num_threads;
  return in;
}

template <typename T>
core::MckpSolveParams<T> make_solve_params(const SolveInputs& in, SolveOutputs& o, int num_threads = 1) {
  core::MckpSolveParams<T> p;
  p.in = make_input<T>(in.values, in.costs, num_threads);
  p.budgets = in.limits.data_ptr<double>();
  p.k = in.limits.size(0);
  p.lam = o.lam.data_ptr<T>();
  p.choice = o.choice.data_ptr<int64_t>();
  p.spend = o.spend.data_ptr<double>();
  p.value = o.value.data_ptr<double>();
  p.dual_bound = o.dual_bound.data_ptr<double>();
  p.feasible = o.feasible.data_ptr<bool>();
  return p;
}

inline void check_rct_inputs(const at::Tensor& values, const at::Tensor& treatment, const at::Tensor& cost_obs,
                             const at::Tensor& propensity) {
  const int64_t n = values.size(0);
  checks::check_defined(treatment, "treatment");
  TORCH_CHECK(treatment.scalar_type() == at::kLong, "bidfcl: treatment must be int64, got ", treatment.scalar_type());
  checks::check_length(treatment, n, "treatment", "individual (row of values)");
  checks::check_float(cost_obs, "cost_obs");
  checks::check_length(cost_obs, n, "cost_obs", "individual (row of values)");
  checks::check_same_dtype(values, cost_obs, "values", "cost_obs");
  checks::check_float(propensity, "propensity");
  checks::check_length(propensity, n, "propensity", "individual (row of values)");
  checks::check_same_dtype(values, propensity, "values", "propensity");
  checks::check_same_device(values, treatment, "values", "treatment");
  checks::check_same_device(values, cost_obs, "values", "cost_obs");
  checks::check_same_device(values, propensity, "values", "propensity");
}

// solve_mckp_rct inputs after their checks: contiguous, budgets (per capita) as limits.
struct RctInputs {
  at::Tensor values, costs, treatment, cost_obs, propensity, limits;
};

inline RctInputs rct_inputs(const at::Tensor& values, const at::Tensor& costs, const at::Tensor& treatment,
                            const at::Tensor& cost_obs, const at::Tensor& propensity, const at::Tensor& budgets,
                            bool check = true) {
  check_solver_problem(values, costs);
  check_rct_inputs(values, treatment, cost_obs, propensity);
  check_budgets(values, budgets, "per-capita budgets", check);
  return {values.contiguous(),   costs.contiguous(),      treatment.contiguous(),
          cost_obs.contiguous(), propensity.contiguous(), budget_limits(budgets.contiguous())};
}

// validate_mckp inputs (the lazy check of solve_mckp, or of solve_mckp_rct when `rct`) after the
// metadata checks, contiguous; the budgets as given (their values are what the check reports).
struct ValidateInputs {
  bool rct = false;
  at::Tensor values, costs, budgets, treatment, cost_obs, propensity;  // the last three when rct
};

inline ValidateInputs validate_inputs(const at::Tensor& values, const at::Tensor& costs, const at::Tensor& budgets,
                                      const std::optional<at::Tensor>& treatment,
                                      const std::optional<at::Tensor>& cost_obs,
                                      const std::optional<at::Tensor>& propensity) {
  check_solver_problem(values, costs);
  ValidateInputs in;
  in.rct = treatment.has_value();
  TORCH_CHECK(in.rct == cost_obs.has_value() && in.rct == propensity.has_value(),
              "bidfcl: validate_mckp needs treatment, cost_obs and propensity together, or none of them");
  if (in.rct) check_rct_inputs(values, *treatment, *cost_obs, *propensity);
  check_budgets(values, budgets, in.rct ? "per-capita budgets" : "total budgets", /*check=*/false);
  in.values = values.contiguous();
  in.costs = costs.contiguous();
  in.budgets = budgets.contiguous();
  if (in.rct) {
    in.treatment = treatment->contiguous();
    in.cost_obs = cost_obs->contiguous();
    in.propensity = propensity->contiguous();
  }
  return in;
}

struct RctOutputs {
  at::Tensor lam, choice, spend, feasible;
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> tuple() const { return {lam, choice, spend, feasible}; }
};

inline RctOutputs alloc_rct_outputs(const at::Tensor& values, int64_t k) {
  const auto opts = values.options();
  return {at::empty({k}, opts), at::empty({k, values.size(0)}, opts.dtype(at::kLong)),
          at::empty({k}, opts.dtype(at::kDouble)), at::empty({k}, opts.dtype(at::kBool))};
}

template <typename T>
core::MckpRctParams<T> make_rct_params(const RctInputs& in, RctOutputs& o, int num_threads = 1) {
  core::MckpRctParams<T> p;
  p.in = make_input<T>(in.values, in.costs, num_threads);
  p.treatment = in.treatment.data_ptr<int64_t>();
  p.cost_obs = in.cost_obs.data_ptr<T>();
  p.propensity = in.propensity.data_ptr<T>();
  p.budgets = in.limits.data_ptr<double>();
  p.k = in.limits.size(0);
  p.lam = o.lam.data_ptr<T>();
  p.choice = o.choice.data_ptr<int64_t>();
  p.spend = o.spend.data_ptr<double>();
  p.feasible = o.feasible.data_ptr<bool>();
  return p;
}

}  // namespace bidfcl::mckp
