// CUDA glue for the MCKP solver ops: the checks, outputs and params of mckp_ops.h (as the CPU glue),
// then the launchers of mckp_cuda.h on the current stream (c10::cuda::getCurrentCUDAStream, the
// same as at::cuda::), with temporaries from the caching allocator (torch_workspace.h).
#include <ATen/ATen.h>
// c10's stream header, not ATen/cuda/CUDAContext.h: the latter pulls in cuSPARSE/cuBLAS headers
// that a minimal CUDA toolkit (the compile-check machine) does not ship.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <vector>

#include "../mckp_ops.h"
#include "bidfcl/core/mckp_cuda.h"
#include "bidfcl/core/status_record.h"
#include "torch_workspace.h"

namespace bidfcl::mckp {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> solve_mckp_cuda(
    const at::Tensor& values, const at::Tensor& costs, const at::Tensor& budgets, bool check) {
  const SolveInputs in = solve_inputs(values, costs, budgets, check);  // check = false: metadata only, no copy
  const c10::cuda::CUDAGuard guard(in.values.device());
  SolveOutputs o = alloc_solve_outputs(in.values, in.limits.size(0));
  TorchWorkspace ws(in.values.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(in.values.scalar_type(), "bidfcl::solve_mckp", [&] {
    checks::raise_if_error(core::run_solve_mckp_cuda<scalar_t>(make_solve_params<scalar_t>(in, o), ws, stream, check));
  });
  return o.tuple();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> solve_mckp_bisection_cuda(
    const at::Tensor& values, const at::Tensor& costs, const at::Tensor& budgets, int64_t max_iter, double tol) {
  const SolveInputs in = solve_inputs(values, costs, budgets);
  check_bisection_args(max_iter, tol);
  const c10::cuda::CUDAGuard guard(in.values.device());
  const at::Tensor limits_host = in.limits.to(at::kCPU).contiguous();
  SolveOutputs o = alloc_solve_outputs(in.values, in.limits.size(0));
  TorchWorkspace ws(in.values.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(in.values.scalar_type(), "bidfcl::solve_mckp_bisection", [&] {
    core::MckpBisectionParams<scalar_t> p;
    p.out = make_solve_params<scalar_t>(in, o);
    p.max_iter = max_iter;
    p.tol = tol;
    checks::raise_if_error(
        core::run_solve_mckp_bisection_cuda<scalar_t>(p, limits_host.data_ptr<double>(), ws, stream));
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
        core::run_budget_frontier_cuda<scalar_t>(make_input<scalar_t>(values, costs), make_output, ws, stream));
  });
  return {lam, spend, value};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> solve_mckp_rct_cuda(
    const at::Tensor& values, const at::Tensor& costs, const at::Tensor& treatment, const at::Tensor& cost_obs,
    const at::Tensor& propensity, const at::Tensor& budgets, bool check) {
  const RctInputs in = rct_inputs(values, costs, treatment, cost_obs, propensity, budgets, check);
  const c10::cuda::CUDAGuard guard(in.values.device());
  RctOutputs o = alloc_rct_outputs(in.values, in.limits.size(0));
  TorchWorkspace ws(in.values.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(in.values.scalar_type(), "bidfcl::solve_mckp_rct", [&] {
    auto p = make_rct_params<scalar_t>(in, o);
    checks::raise_if_error(core::run_solve_mckp_rct_cuda<scalar_t>(p, ws, stream, check), "values", "costs",
                           "cost_obs");
  });
  return o.tuple();
}

// The lazy check: kernels and one single-thread kernel that writes the status record; nothing is
// read on the host, everything runs on the current stream.
at::Tensor validate_mckp_cuda(const at::Tensor& values, const at::Tensor& costs, const at::Tensor& budgets,
                              const std::optional<at::Tensor>& treatment, const std::optional<at::Tensor>& cost_obs,
                              const std::optional<at::Tensor>& propensity) {
  const ValidateInputs in = validate_inputs(values, costs, budgets, treatment, cost_obs, propensity);
  const c10::cuda::CUDAGuard guard(in.values.device());
  at::Tensor status = at::empty({core::kStatusLen}, in.values.options().dtype(at::kLong));
  TorchWorkspace ws(in.values.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(in.values.scalar_type(), "bidfcl::validate_mckp", [&] {
    core::MckpCheckParams<scalar_t> p;
    p.values = in.values.data_ptr<scalar_t>();
    p.costs = in.costs.data_ptr<scalar_t>();
    p.n = in.values.size(0);
    p.m = in.values.size(1);
    p.budgets = in.budgets.data_ptr<double>();
    p.k = in.budgets.size(0);
    if (in.rct) {
      p.treatment = in.treatment.data_ptr<int64_t>();
      p.cost_obs = in.cost_obs.data_ptr<scalar_t>();
      p.propensity = in.propensity.data_ptr<scalar_t>();
    }
    p.status = status.data_ptr<int64_t>();
    core::run_validate_mckp_cuda<scalar_t>(p, ws, stream);
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
