// CPU glue for the MCKP solver ops: check -> Params -> core.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../mckp_common.h"

namespace bidfcl::mckp {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> solve_mckp_cpu(
    const at::Tensor& values_in, const at::Tensor& costs_in, const at::Tensor& budgets_in) {
  check_solver_problem(values_in, costs_in);
  check_budgets(values_in, budgets_in, "total budgets");
  const at::Tensor values = values_in.contiguous(), costs = costs_in.contiguous(), budgets = budgets_in.contiguous();
  SolveOutputs o = alloc_solve_outputs(values, budgets.size(0));
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "bidfcl::solve_mckp", [&] {
    checks::raise_if_error(core::solve_mckp_exact_cpu<scalar_t>(make_solve_params<scalar_t>(values, costs, budgets, o, at::get_num_threads())));
  });
  return o.tuple();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> solve_mckp_bisection_cpu(
    const at::Tensor& values_in, const at::Tensor& costs_in, const at::Tensor& budgets_in, int64_t max_iter,
    double tol) {
  check_solver_problem(values_in, costs_in);
  check_budgets(values_in, budgets_in, "total budgets");
  TORCH_CHECK(max_iter >= 0, "bidfcl: max_iter must be >= 0, got ", max_iter);
  TORCH_CHECK(std::isfinite(tol) && tol >= 0, "bidfcl: tol must be finite and >= 0, got ", tol);
  const at::Tensor values = values_in.contiguous(), costs = costs_in.contiguous(), budgets = budgets_in.contiguous();
  SolveOutputs o = alloc_solve_outputs(values, budgets.size(0));
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "bidfcl::solve_mckp_bisection", [&] {
    core::MckpBisectionParams<scalar_t> p;
    p.out = make_solve_params<scalar_t>(values, costs, budgets, o, at::get_num_threads());
    p.max_iter = max_iter;
    p.tol = tol;
    checks::raise_if_error(core::solve_mckp_bisection_cpu<scalar_t>(p));
  });
  return o.tuple();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> budget_frontier_cpu(const at::Tensor& values_in,
                                                                   const at::Tensor& costs_in) {
  check_solver_problem(values_in, costs_in);
  const at::Tensor values = values_in.contiguous(), costs = costs_in.contiguous();
  at::Tensor lam, spend, value;
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "bidfcl::budget_frontier", [&] {
    core::FrontierResult<scalar_t> r;
    checks::raise_if_error(core::budget_frontier_cpu<scalar_t>(make_input<scalar_t>(values, costs, at::get_num_threads()), r));
    const int64_t len = static_cast<int64_t>(r.lam.size());
    lam = at::empty({len}, values.options());
    spend = at::empty({len}, values.options().dtype(at::kDouble));
    value = at::empty({len}, values.options().dtype(at::kDouble));
    std::copy(r.lam.begin(), r.lam.end(), lam.data_ptr<scalar_t>());
    std::copy(r.spend.begin(), r.spend.end(), spend.data_ptr<double>());
    std::copy(r.value.begin(), r.value.end(), value.data_ptr<double>());
  });
  return {lam, spend, value};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> solve_mckp_rct_cpu(
    const at::Tensor& values_in, const at::Tensor& costs_in, const at::Tensor& treatment_in,
    const at::Tensor& cost_obs_in, const at::Tensor& propensity_in, const at::Tensor& budgets_in) {
  check_solver_problem(values_in, costs_in);
  check_rct_inputs(values_in, treatment_in, cost_obs_in, propensity_in);
  check_budgets(values_in, budgets_in, "per-capita budgets");
  const at::Tensor values = values_in.contiguous(), costs = costs_in.contiguous();
  const at::Tensor treatment = treatment_in.contiguous(), cost_obs = cost_obs_in.contiguous();
  const at::Tensor propensity = propensity_in.contiguous(), budgets = budgets_in.contiguous();
  RctOutputs o = alloc_rct_outputs(values, budgets.size(0));
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "bidfcl::solve_mckp_rct", [&] {
    auto p = make_rct_params<scalar_t>(values, costs, treatment, cost_obs, propensity, budgets, o, at::get_num_threads());
    checks::raise_if_error(core::solve_mckp_rct_cpu<scalar_t>(p), "values", "costs", "cost_obs");
  });
  return o.tuple();
}

}  // namespace

TORCH_LIBRARY_IMPL(bidfcl, CPU, m) {
  m.impl("solve_mckp", &solve_mckp_cpu);
  m.impl("solve_mckp_bisection", &solve_mckp_bisection_cpu);
  m.impl("budget_frontier", &budget_frontier_cpu);
  m.impl("solve_mckp_rct", &solve_mckp_rct_cpu);
}

}  // namespace bidfcl::mckp
