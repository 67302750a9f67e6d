// CPU glue of the metrics ops: PolicyValueCall / AuccCall (metrics_ops.h) -> params -> core (metrics.h).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../metrics_ops.h"

namespace bidfcl::metrics {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> policy_value_cpu(const at::Tensor& choice,
                                                                            const at::Tensor& treatment,
                                                                            const at::Tensor& revenue,
                                                                            const at::Tensor& cost,
                                                                            const at::Tensor& propensity, bool hajek) {
  const PolicyValueCall c = PolicyValueCall::make(choice, treatment, revenue, cost, propensity, hajek);
  AT_DISPATCH_FLOATING_TYPES(c.revenue.scalar_type(), "bidfcl::policy_value", [&] {
    raise_metric_error(core::policy_value_estimate_cpu<scalar_t>(c.params<scalar_t>(at::get_num_threads())));
  });
  return c.outputs();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> aucc_cpu(const at::Tensor& r_hat, const at::Tensor& c_hat,
                                                        const at::Tensor& treatment, const at::Tensor& revenue,
                                                        const at::Tensor& cost, int64_t q) {
  const AuccCall c = AuccCall::make(r_hat, c_hat, treatment, revenue, cost, q);
  AT_DISPATCH_FLOATING_TYPES(c.r_hat.scalar_type(), "bidfcl::aucc", [&] {
    raise_metric_error(core::aucc_curve_cpu<scalar_t>(c.params<scalar_t>(at::get_num_threads())));
  });
  return c.outputs();
}

}  // namespace

TORCH_LIBRARY_IMPL(bidfcl, CPU, m) {
  m.impl("policy_value", &policy_value_cpu);
  m.impl("aucc", &aucc_cpu);
}

}  // namespace bidfcl::metrics
