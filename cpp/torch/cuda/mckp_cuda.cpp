// CUDA glue for the MCKP solver ops: the same checks and outputs as the CPU glue, then the launchers
// of mckp_cuda.h on the current stream (c10::cuda::getCurrentCUDAStream, the same as at::cuda::), with temporaries from the caching allocator.
#include <ATen/ATen.h>
// c10's stream header, not ATen/cuda/CUDAContext.h: the latter pulls in cuSPARSE/cuBLAS headers
// that a minimal CUDA toolkit (the compile-check machine) does not ship.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <vector>

#include "../mckp_common.h"
#include "bidfcl/core/mckp_cuda.h"
#include "bidfcl/core/status_record.h"
#include "torch_workspace.h"  // TorchWorkspace: scratch memory for the launchers

namespace bidfcl::mckp {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> solve_mckp_cuda(
    const at::Tensor& values_in, const at::Tensor& costs_in, const at::Tensor& budgets_in, bool check) {
  check_solver_problem(values_in, costs_in);
  check_budgets(values_in, budgets_in, "total budgets", check);  // check = false: metadata only, no copy
  const c10::cuda::CUDAGuard guard(values_in.device());
  const at::Tensor values = values_in.contiguous(), costs = costs_in.contiguous(), budgets = budgets_in.contiguous();
  SolveOutputs o = alloc_solve_outputs(values, budgets.size(0));
  TorchWorkspace ws(values.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "bidfcl::solve_mckp", [&] {
    checks::raise_if_error(core::solve_mckp_exact_cuda<scalar_t>(make_solve_params<scalar_t>(values, costs, budgets, o),
                                                                 ws, stream, check));
  });
  return o.tuple();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> solve_mckp_bisection_cuda(
    const at::Tensor& values_in, const at::Tensor& costs_in, const at::Tensor& budgets_in, int64_t max_iter,
    double tol) {
  check_solver_problem(values_in, costs_in);
  check_budgets(values_in, budgets_in, "total budgets");
  TORCH_CHECK(max_iter >= 0, "bidfcl: max_iter must be >= 0, got ", max_iter);
  TORCH_CHECK(std::isfinite(tol) && tol >= 0, "bidfcl: tol must be finite and >= 0, got ", tol);
  const c10::cuda::CUDAGuard guard(values_in.device());
  const at::Tensor values = values_in.contiguous(), costs = costs_in.contiguous(), budgets = budgets_in.contiguous();
  const at::Tensor budgets_host = budgets.to(at::kCPU).contiguous();
  SolveOutputs o = alloc_solve_outputs(values, budgets.size(0));
  TorchWorkspace ws(values.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "bidfcl::solve_mckp_bisection", [&] {
    core::MckpBisectionParams<scalar_t> p;
    p.out = make_solve_params<scalar_t>(values, costs, budgets, o);
    p.max_iter = max_iter;
    p.tol = tol;
    checks::raise_if_error(
        core::solve_mckp_bisection_cuda<scalar_t>(p, budgets_host.data_ptr<double>(), ws, stream));
  });
  return o.tuple();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> budget_frontier_cuda(const at::Tensor& values_in,
                                                                    const at::Tensor& costs_in) {
  check_solver_problem(values_in, costs_in);
  const c10::cuda::CUDAGuard guard(values_in.device());
  const at::Tensor values = values_in.contiguous(), costs = costs_in.contiguous();
  at::Tensor lam, spend, value;
  TorchWorkspace ws(values.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "bidfcl::budget_frontier", [&] {
    auto make_output = [&](int64_t len) {
      lam = at::empty({len}, values.options());
      spend = at::empty({len}, values.options().dtype(at::kDouble));
      value = at::empty({len}, values.options().dtype(at::kDouble));
      core::FrontierDeviceOutput<scalar_t> out;
      out.lam = lam.data_ptr<scalar_t>();
      out.spend = spend.data_ptr<double>();
      out.value = value.data_ptr<double>();
      return out;
    };
    checks::raise_if_error(
        core::budget_frontier_cuda<scalar_t>(make_input<scalar_t>(values, costs), make_output, ws, stream));
  });
  return {lam, spend, value};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> solve_mckp_rct_cuda(
    const at::Tensor& values_in, const at::Tensor& costs_in, const at::Tensor& treatment_in,
    const at::Tensor& cost_obs_in, const at::Tensor& propensity_in, const at::Tensor& budgets_in, bool check) {
  check_solver_problem(values_in, costs_in);
  check_rct_inputs(values_in, treatment_in, cost_obs_in, propensity_in);
  check_budgets(values_in, budgets_in, "per-capita budgets", check);
  const c10::cuda::CUDAGuard guard(values_in.device());
  const at::Tensor values = values_in.contiguous(), costs = costs_in.contiguous();
  const at::Tensor treatment = treatment_in.contiguous(), cost_obs = cost_obs_in.contiguous();
  const at::Tensor propensity = propensity_in.contiguous(), budgets = budgets_in.contiguous();
  RctOutputs o = alloc_rct_outputs(values, budgets.size(0));
  TorchWorkspace ws(values.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "bidfcl::solve_mckp_rct", [&] {
    auto p = make_rct_params<scalar_t>(values, costs, treatment, cost_obs, propensity, budgets, o);
    checks::raise_if_error(core::solve_mckp_rct_cuda<scalar_t>(p, ws, stream, check), "values", "costs", "cost_obs");
  });
  return o.tuple();
}

// The lazy check: kernels and one single-thread kernel that writes the status record; nothing is
// read on the host, everything runs on the current stream.
at::Tensor validate_mckp_cuda(const at::Tensor& values_in, const at::Tensor& costs_in, const at::Tensor& budgets_in,
                              const std::optional<at::Tensor>& treatment_in,
                              const std::optional<at::Tensor>& cost_obs_in,
                              const std::optional<at::Tensor>& propensity_in) {
  check_solver_problem(values_in, costs_in);
  const bool rct = treatment_in.has_value();
  TORCH_CHECK(rct == cost_obs_in.has_value() && rct == propensity_in.has_value(),
              "bidfcl: validate_mckp needs treatment, cost_obs and propensity together, or none of them");
  if (rct) check_rct_inputs(values_in, *treatment_in, *cost_obs_in, *propensity_in);
  check_budgets(values_in, budgets_in, rct ? "per-capita budgets" : "total budgets", /*check=*/false);
  const c10::cuda::CUDAGuard guard(values_in.device());
  const at::Tensor values = values_in.contiguous(), costs = costs_in.contiguous(), budgets = budgets_in.contiguous();
  at::Tensor treatment, cost_obs, propensity;
  if (rct) {
    treatment = treatment_in->contiguous();
    cost_obs = cost_obs_in->contiguous();
    propensity = propensity_in->contiguous();
  }
  at::Tensor status = at::empty({core::kStatusLen}, values.options().dtype(at::kLong));
  TorchWorkspace ws(values.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "bidfcl::validate_mckp", [&] {
    core::MckpCheckParams<scalar_t> p;
    p.values = values.data_ptr<scalar_t>();
    p.costs = costs.data_ptr<scalar_t>();
    p.n = values.size(0);
    p.m = values.size(1);
    p.budgets = budgets.data_ptr<double>();
    p.k = budgets.size(0);
    if (rct) {
      p.treatment = treatment.data_ptr<int64_t>();
      p.cost_obs = cost_obs.data_ptr<scalar_t>();
      p.propensity = propensity.data_ptr<scalar_t>();
    }
    p.status = status.data_ptr<int64_t>();
    core::validate_mckp_cuda<scalar_t>(p, ws, stream);
  });
  return status;
}

}  // namespace

TORCH_LIBRARY_IMPL(bidfcl, CUDA, m) {
  m.impl("solve_mckp", &solve_mckp_cuda);
  m.impl("solve_mckp_bisection", &solve_mckp_bisection_cuda);
  m.impl("budget_frontier", &budget_frontier_cuda);
  m.impl("solve_mckp_rct", &solve_mckp_rct_cuda);
  m.impl("validate_mckp", &validate_mckp_cuda);
}

}  // namespace bidfcl::mckp
