// CUDA glue for the decision-loss, policy-value and AUCC ops: the same checks and outputs as the CPU
// glue, then the launchers of losses_cuda.h on the current stream, with scratch memory from the
// caching allocator. When a kernel finds bad input, the CPU core re-validates host copies so the
// error message is exactly the CPU op's.
#include <ATen/ATen.h>
// c10's stream header, not ATen/cuda/CUDAContext.h (which needs cuBLAS/cuSPARSE headers).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <vector>

#include "../losses_common.h"
#include "bidfcl/core/losses_cuda.h"
#include "bidfcl/core/status_record.h"

namespace bidfcl::losses {
namespace {

using GradPair = std::tuple<at::Tensor, at::Tensor>;

// Byte tensors on the op's device, alive until the op returns (stream-ordered caching allocator).
struct Scratch {
  explicit Scratch(const at::Device& d) : opts(at::TensorOptions().dtype(at::kByte).device(d)) {}
  core::DeviceAlloc alloc() {
    return [this](size_t bytes) -> void* {
      blocks.push_back(at::empty({static_cast<int64_t>(bytes)}, opts));
      return blocks.back().data_ptr();
    };
  }
  at::TensorOptions opts;
  std::vector<at::Tensor> blocks;
};

// Re-validates the decision inputs on the host with the CPU core and raises its message.
void raise_decision_error(const core::Status& device_status, const DecisionTensors& in) {
  if (device_status.ok()) return;
  if (device_status.row < 0 || device_status.code != core::Code::kNonFiniteInput || device_status.col >= 0) {
    raise_loss_error(device_status);  // lam or other host-side findings carry their own message
  }
  const std::optional<at::Tensor> cost = in.cost.defined() ? std::optional<at::Tensor>(in.cost.cpu()) : std::nullopt;
  const DecisionTensors host(in.r_hat.cpu(), in.c_hat.cpu(), in.treatment.cpu(), in.revenue.cpu(), cost, in.lam.cpu(),
                             in.propensity.cpu());
  at::Tensor loss = at::empty({}, host.r_hat.options());
  AT_DISPATCH_FLOATING_TYPES(host.r_hat.scalar_type(), "bidfcl::revalidate", [&] {
    core::FlipLossParams<scalar_t> p;
    p.in = host.batch<scalar_t>(1);
    p.loss = loss.data_ptr<scalar_t>();
    raise_loss_error(core::flip_loss_cpu<scalar_t>(p));
  });
  TORCH_CHECK(false, "bidfcl: invalid input at row ", device_status.row);
}

at::Tensor softmax_loss_cuda(const at::Tensor& r_hat, const at::Tensor& c_hat, const at::Tensor& treatment,
                             const at::Tensor& revenue, const std::optional<at::Tensor>& cost, const at::Tensor& lam,
                             const at::Tensor& propensity, double tau, bool check) {
  check_decision_inputs(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  check_tau(tau);
  const c10::cuda::CUDAGuard guard(r_hat.device());
  const DecisionTensors in(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  at::Tensor loss = at::empty({}, r_hat.options());
  Scratch scratch(r_hat.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(r_hat.scalar_type(), "bidfcl::ppl_loss", [&] {
    core::SoftmaxLossParams<scalar_t> p;
    p.in = in.batch<scalar_t>(1);
    p.tau = tau;
    p.loss = loss.data_ptr<scalar_t>();
    raise_decision_error(core::softmax_loss_cuda<scalar_t>(p, scratch.alloc(), stream, check), in);
  });
  return loss;
}

GradPair softmax_loss_backward_cuda(const at::Tensor& grad, const at::Tensor& r_hat, const at::Tensor& c_hat,
                                    const at::Tensor& treatment, const at::Tensor& revenue,
                                    const std::optional<at::Tensor>& cost, const at::Tensor& lam,
                                    const at::Tensor& propensity, double tau, bool check) {
  check_decision_inputs(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  check_grad_output(grad, r_hat);
  check_tau(tau);
  const c10::cuda::CUDAGuard guard(r_hat.device());
  const DecisionTensors in(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  const at::Tensor g = grad.contiguous();
  at::Tensor grad_r = at::empty(r_hat.sizes(), r_hat.options());
  at::Tensor grad_c = at::empty(r_hat.sizes(), r_hat.options());
  Scratch scratch(r_hat.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(r_hat.scalar_type(), "bidfcl::ppl_loss_backward", [&] {
    core::SoftmaxLossBackwardParams<scalar_t> p;
    p.in = in.batch<scalar_t>(1);
    p.tau = tau;
    p.grad_output = g.data_ptr<scalar_t>();
    p.grad_r_hat = grad_r.data_ptr<scalar_t>();
    p.grad_c_hat = grad_c.data_ptr<scalar_t>();
    raise_decision_error(core::softmax_loss_backward_cuda<scalar_t>(p, scratch.alloc(), stream, check), in);
  });
  return {grad_r, grad_c};
}

at::Tensor flip_loss_cuda(const at::Tensor& r_hat, const at::Tensor& c_hat, const at::Tensor& treatment,
                          const at::Tensor& revenue, const std::optional<at::Tensor>& cost, const at::Tensor& lam,
                          const at::Tensor& propensity, std::optional<double> clip, bool check) {
  check_decision_inputs(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  clip_value(clip);
  const c10::cuda::CUDAGuard guard(r_hat.device());
  const DecisionTensors in(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  at::Tensor loss = at::empty({}, r_hat.options());
  Scratch scratch(r_hat.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(r_hat.scalar_type(), "bidfcl::pifd_loss", [&] {
    core::FlipLossParams<scalar_t> p;
    p.in = in.batch<scalar_t>(1);
    p.loss = loss.data_ptr<scalar_t>();
    raise_decision_error(core::flip_loss_cuda<scalar_t>(p, scratch.alloc(), stream, check), in);
  });
  return loss;
}

GradPair flip_loss_backward_cuda(const at::Tensor& grad, const at::Tensor& r_hat, const at::Tensor& c_hat,
                                 const at::Tensor& treatment, const at::Tensor& revenue,
                                 const std::optional<at::Tensor>& cost, const at::Tensor& lam,
                                 const at::Tensor& propensity, std::optional<double> clip, bool check) {
  check_decision_inputs(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  check_grad_output(grad, r_hat);
  const double h = clip_value(clip);
  const c10::cuda::CUDAGuard guard(r_hat.device());
  const DecisionTensors in(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  const at::Tensor g = grad.contiguous();
  at::Tensor grad_r = at::empty(r_hat.sizes(), r_hat.options());
  at::Tensor grad_c = at::empty(r_hat.sizes(), r_hat.options());
  Scratch scratch(r_hat.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(r_hat.scalar_type(), "bidfcl::pifd_loss_backward", [&] {
    core::FlipLossBackwardParams<scalar_t> p;
    p.in = in.batch<scalar_t>(1);
    p.clip = h;
    p.grad_output = g.data_ptr<scalar_t>();
    p.grad_r_hat = grad_r.data_ptr<scalar_t>();
    p.grad_c_hat = grad_c.data_ptr<scalar_t>();
    raise_decision_error(core::flip_loss_backward_cuda<scalar_t>(p, scratch.alloc(), stream, check), in);
  });
  return {grad_r, grad_c};
}

// The lazy check of the decision inputs: kernels only, the status record stays on the device.
at::Tensor validate_decision_cuda(const at::Tensor& r_hat, const at::Tensor& c_hat, const at::Tensor& treatment,
                                  const at::Tensor& revenue, const std::optional<at::Tensor>& cost,
                                  const at::Tensor& lam, const at::Tensor& propensity) {
  check_decision_inputs(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  const c10::cuda::CUDAGuard guard(r_hat.device());
  const DecisionTensors in(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  at::Tensor status = at::empty({core::kStatusLen}, r_hat.options().dtype(at::kLong));
  Scratch scratch(r_hat.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(r_hat.scalar_type(), "bidfcl::validate_decision", [&] {
    core::validate_decision_cuda<scalar_t>(in.batch<scalar_t>(1), status.data_ptr<int64_t>(), scratch.alloc(), stream);
  });
  return status;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> policy_value_cuda(
    const at::Tensor& choice_in, const at::Tensor& treatment_in, const at::Tensor& revenue_in,
    const at::Tensor& cost_in, const at::Tensor& propensity_in, bool hajek) {
  check_policy_inputs(choice_in, treatment_in, revenue_in, cost_in, propensity_in);
  const c10::cuda::CUDAGuard guard(choice_in.device());
  const at::Tensor choice = choice_in.contiguous(), treatment = treatment_in.contiguous();
  const at::Tensor revenue = revenue_in.contiguous(), cost = cost_in.contiguous();
  const at::Tensor propensity = propensity_in.contiguous();
  const int64_t k = choice.size(0);
  const auto opts = revenue.options().dtype(at::kDouble);
  at::Tensor value = at::empty({k}, opts), cost_value = at::empty({k}, opts);
  at::Tensor value_se = at::empty({k}, opts), cost_se = at::empty({k}, opts);
  Scratch scratch(revenue.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(revenue.scalar_type(), "bidfcl::policy_value", [&] {
    core::PolicyValueParams<scalar_t> p;
    p.choice = choice.data_ptr<int64_t>();
    p.treatment = treatment.data_ptr<int64_t>();
    p.revenue = revenue.data_ptr<scalar_t>();
    p.cost = cost.data_ptr<scalar_t>();
    p.propensity = propensity.data_ptr<scalar_t>();
    p.n = choice.size(1);
    p.k = k;
    p.hajek = hajek;
    p.value = value.data_ptr<double>();
    p.cost_value = cost_value.data_ptr<double>();
    p.value_se = value_se.data_ptr<double>();
    p.cost_se = cost_se.data_ptr<double>();
    const core::Status st = core::policy_value_cuda<scalar_t>(p, scratch.alloc(), stream);
    if (!st.ok()) {  // re-validate on the host for the CPU op's message
      const at::Tensor hc = choice.narrow(0, 0, 1).cpu(), ht = treatment.cpu(), hr = revenue.cpu(), hx = cost.cpu();
      const at::Tensor hp = propensity.cpu();
      at::Tensor out = at::empty({4}, hr.options().dtype(at::kDouble));
      core::PolicyValueParams<scalar_t> q = p;
      q.choice = hc.data_ptr<int64_t>();
      q.treatment = ht.data_ptr<int64_t>();
      q.revenue = hr.data_ptr<scalar_t>();
      q.cost = hx.data_ptr<scalar_t>();
      q.propensity = hp.data_ptr<scalar_t>();
      q.k = 1;
      q.value = out.data_ptr<double>();
      q.cost_value = q.value + 1;
      q.value_se = q.value + 2;
      q.cost_se = q.value + 3;
      raise_loss_error(core::policy_value_cpu<scalar_t>(q));
      TORCH_CHECK(false, "bidfcl: invalid input at row ", st.row);
    }
  });
  return {value, cost_value, value_se, cost_se};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> aucc_cuda(const at::Tensor& r_hat_in, const at::Tensor& c_hat_in,
                                                         const at::Tensor& treatment_in, const at::Tensor& revenue_in,
                                                         const at::Tensor& cost_in, int64_t q) {
  check_aucc_inputs(r_hat_in, c_hat_in, treatment_in, revenue_in, cost_in, q);
  const c10::cuda::CUDAGuard guard(r_hat_in.device());
  const at::Tensor r_hat = r_hat_in.contiguous(), c_hat = c_hat_in.contiguous();
  const at::Tensor treatment = treatment_in.contiguous(), revenue = revenue_in.contiguous();
  const at::Tensor cost = cost_in.contiguous();
  const auto opts = r_hat.options().dtype(at::kDouble);
  at::Tensor aucc = at::empty({}, opts), cost_curve = at::empty({q + 1}, opts), revenue_curve = at::empty({q + 1}, opts);
  Scratch scratch(r_hat.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(r_hat.scalar_type(), "bidfcl::aucc", [&] {
    core::AuccParams<scalar_t> p;
    p.r_hat = r_hat.data_ptr<scalar_t>();
    p.c_hat = c_hat.data_ptr<scalar_t>();
    p.treatment = treatment.data_ptr<int64_t>();
    p.revenue = revenue.data_ptr<scalar_t>();
    p.cost = cost.data_ptr<scalar_t>();
    p.n = r_hat.size(0);
    p.q = q;
    p.aucc = aucc.data_ptr<double>();
    p.cost_curve = cost_curve.data_ptr<double>();
    p.revenue_curve = revenue_curve.data_ptr<double>();
    const core::Status st = core::aucc_cuda<scalar_t>(p, scratch.alloc(), stream);
    if (!st.ok() && st.row >= 0) {  // re-validate on the host for the CPU op's message
      const at::Tensor hr = r_hat.cpu(), hc = c_hat.cpu(), ht = treatment.cpu(), hv = revenue.cpu(), hx = cost.cpu();
      at::Tensor out = at::empty({2 * (q + 1) + 1}, hr.options().dtype(at::kDouble));
      core::AuccParams<scalar_t> hp = p;
      hp.r_hat = hr.data_ptr<scalar_t>();
      hp.c_hat = hc.data_ptr<scalar_t>();
      hp.treatment = ht.data_ptr<int64_t>();
      hp.revenue = hv.data_ptr<scalar_t>();
      hp.cost = hx.data_ptr<scalar_t>();
      hp.aucc = out.data_ptr<double>();
      hp.cost_curve = hp.aucc + 1;
      hp.revenue_curve = hp.aucc + 2 + q;
      raise_loss_error(core::aucc_cpu<scalar_t>(hp));
      TORCH_CHECK(false, "bidfcl: invalid input at row ", st.row);
    }
    raise_loss_error(st);
  });
  return {aucc, cost_curve, revenue_curve};
}

}  // namespace

TORCH_LIBRARY_IMPL(bidfcl, CUDA, m) {
  m.impl("ppl_loss", &softmax_loss_cuda);
  m.impl("ppl_loss_backward", &softmax_loss_backward_cuda);
  m.impl("pifd_loss", &flip_loss_cuda);
  m.impl("pifd_loss_backward", &flip_loss_backward_cuda);
  m.impl("policy_value", &policy_value_cuda);
  m.impl("aucc", &aucc_cuda);
  m.impl("validate_decision", &validate_decision_cuda);
}

}  // namespace bidfcl::losses
