// CUDA glue of the decision-loss ops: the same DecisionCall (losses_ops.h) as the CPU glue, then
// the launchers of losses_cuda.h on the current stream, with scratch memory from the caching
// allocator (TorchWorkspace). A launcher's Status comes from its device status record and is
// raised exactly like the CPU core's.
#include <ATen/ATen.h>
// c10's stream header, not ATen/cuda/CUDAContext.h (which needs cuBLAS/cuSPARSE headers).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../losses_ops.h"
#include "bidfcl/core/losses_cuda.h"
#include "bidfcl/core/status_record.h"
#include "torch_workspace.h"

namespace bidfcl::losses {
namespace {

using GradPair = std::tuple<at::Tensor, at::Tensor>;

// The launcher of each params struct.
template <typename T>
core::Status run_core(const core::PplLossParams<T>& p, core::DeviceWorkspace& ws, cudaStream_t s, bool check) {
  return core::ppl_loss_forward_cuda(p, ws, s, check);
}
template <typename T>
core::Status run_core(const core::PplGradientParams<T>& p, core::DeviceWorkspace& ws, cudaStream_t s, bool check) {
  return core::ppl_loss_gradient_cuda(p, ws, s, check);
}
template <typename T>
core::Status run_core(const core::PifdLossParams<T>& p, core::DeviceWorkspace& ws, cudaStream_t s, bool check) {
  return core::pifd_loss_forward_cuda(p, ws, s, check);
}
template <typename T>
core::Status run_core(const core::PifdGradientParams<T>& p, core::DeviceWorkspace& ws, cudaStream_t s, bool check) {
  return core::pifd_loss_gradient_cuda(p, ws, s, check);
}

// The forward op (gradients = false) or the backward op (gradients = true) on the current stream.
template <typename Kind>
void run_cuda(const DecisionCall& c, bool gradients, bool check) {
  const c10::cuda::CUDAGuard guard(c.in.r_hat.device());
  TorchWorkspace ws(c.in.r_hat.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(c.in.r_hat.scalar_type(), "bidfcl::loss_cuda", [&] {
    const core::Status st =
        gradients ? run_core(c.gradient_params<Kind, scalar_t>(c.grad.data_ptr<scalar_t>(), 1), ws, stream, check)
                  : run_core(c.forward_params<Kind, scalar_t>(1), ws, stream, check);
    raise_loss_error(st);  // check = false: always Ok (nothing was read back)
  });
}

at::Tensor ppl_loss_cuda(const at::Tensor& r_hat, const at::Tensor& c_hat, const at::Tensor& treatment,
                         const at::Tensor& revenue, const std::optional<at::Tensor>& cost, const at::Tensor& lam,
                         const at::Tensor& propensity, double tau, bool check) {
  const DecisionCall c =
      DecisionCall::make<Ppl>(r_hat, c_hat, treatment, revenue, cost, lam, propensity, tau, nullptr, Outputs::kLoss);
  run_cuda<Ppl>(c, false, check);
  return c.loss;
}

GradPair ppl_loss_backward_cuda(const at::Tensor& grad, const at::Tensor& r_hat, const at::Tensor& c_hat,
                                const at::Tensor& treatment, const at::Tensor& revenue,
                                const std::optional<at::Tensor>& cost, const at::Tensor& lam,
                                const at::Tensor& propensity, double tau, bool check) {
  const DecisionCall c =
      DecisionCall::make<Ppl>(r_hat, c_hat, treatment, revenue, cost, lam, propensity, tau, &grad, Outputs::kGradients);
  run_cuda<Ppl>(c, true, check);
  return c.gradients();
}

at::Tensor pifd_loss_cuda(const at::Tensor& r_hat, const at::Tensor& c_hat, const at::Tensor& treatment,
                          const at::Tensor& revenue, const std::optional<at::Tensor>& cost, const at::Tensor& lam,
                          const at::Tensor& propensity, std::optional<double> clip, bool check) {
  const DecisionCall c =
      DecisionCall::make<Pifd>(r_hat, c_hat, treatment, revenue, cost, lam, propensity, clip, nullptr, Outputs::kLoss);
  run_cuda<Pifd>(c, false, check);
  return c.loss;
}

GradPair pifd_loss_backward_cuda(const at::Tensor& grad, const at::Tensor& r_hat, const at::Tensor& c_hat,
                                 const at::Tensor& treatment, const at::Tensor& revenue,
                                 const std::optional<at::Tensor>& cost, const at::Tensor& lam,
                                 const at::Tensor& propensity, std::optional<double> clip, bool check) {
  const DecisionCall c = DecisionCall::make<Pifd>(r_hat, c_hat, treatment, revenue, cost, lam, propensity, clip, &grad,
                                                  Outputs::kGradients);
  run_cuda<Pifd>(c, true, check);
  return c.gradients();
}

// The lazy check of the decision inputs: kernels only, the status record stays on the device.
at::Tensor validate_decision_cuda(const at::Tensor& r_hat, const at::Tensor& c_hat, const at::Tensor& treatment,
                                  const at::Tensor& revenue, const std::optional<at::Tensor>& cost,
                                  const at::Tensor& lam, const at::Tensor& propensity) {
  check_decision_inputs(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  const c10::cuda::CUDAGuard guard(r_hat.device());
  const DecisionTensors in(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  at::Tensor status = at::empty({core::kStatusLen}, r_hat.options().dtype(at::kLong));
  TorchWorkspace ws(r_hat.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(r_hat.scalar_type(), "bidfcl::validate_decision", [&] {
    core::validate_decision_record_cuda<scalar_t>(in.batch<scalar_t>(1), status.data_ptr<int64_t>(), ws, stream);
  });
  return status;
}

}  // namespace

TORCH_LIBRARY_IMPL(bidfcl, CUDA, m) {
  m.impl("ppl_loss", &ppl_loss_cuda);
  m.impl("ppl_loss_backward", &ppl_loss_backward_cuda);
  m.impl("pifd_loss", &pifd_loss_cuda);
  m.impl("pifd_loss_backward", &pifd_loss_backward_cuda);
  m.impl("validate_decision", &validate_decision_cuda);
}

}  // namespace bidfcl::losses
