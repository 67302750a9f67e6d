// CUDA glue of the metrics ops: the same PolicyValueCall / AuccCall (metrics_ops.h) as the CPU glue,
// then the launchers of metrics_cuda.h on the current stream with caching-allocator scratch
// (TorchWorkspace); their Status (from the device status record) is raised like the CPU core's.
#include <ATen/ATen.h>
// c10's stream header, not ATen/cuda/CUDAContext.h (which needs cuBLAS/cuSPARSE headers).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../metrics_ops.h"
#include "bidfcl/core/metrics_cuda.h"
#include "torch_workspace.h"

namespace bidfcl::metrics {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> policy_value_cuda(const at::Tensor& choice,
                                                                             const at::Tensor& treatment,
                                                                             const at::Tensor& revenue,
                                                                             const at::Tensor& cost,
                                                                             const at::Tensor& propensity, bool hajek) {
  const PolicyValueCall c = PolicyValueCall::make(choice, treatment, revenue, cost, propensity, hajek);
  const c10::cuda::CUDAGuard guard(c.choice.device());
  TorchWorkspace ws(c.revenue.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(c.revenue.scalar_type(), "bidfcl::policy_value", [&] {
    raise_metric_error(core::policy_value_estimate_cuda<scalar_t>(c.params<scalar_t>(1), ws, stream));
  });
  return c.outputs();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> aucc_cuda(const at::Tensor& r_hat, const at::Tensor& c_hat,
                                                         const at::Tensor& treatment, const at::Tensor& revenue,
                                                         const at::Tensor& cost, int64_t q) {
  const AuccCall c = AuccCall::make(r_hat, c_hat, treatment, revenue, cost, q);
  const c10::cuda::CUDAGuard guard(c.r_hat.device());
  TorchWorkspace ws(c.r_hat.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(c.r_hat.scalar_type(), "bidfcl::aucc", [&] {
    raise_metric_error(core::aucc_curve_cuda<scalar_t>(c.params<scalar_t>(1), ws, stream));
  });
  return c.outputs();
}

}  // namespace

TORCH_LIBRARY_IMPL(bidfcl, CUDA, m) {
  m.impl("policy_value", &policy_value_cuda);
  m.impl("aucc", &aucc_cuda);
}

}  // namespace bidfcl::metrics
