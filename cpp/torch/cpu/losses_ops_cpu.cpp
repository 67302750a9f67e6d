// CPU glue of the decision-loss ops: DecisionCall (losses_ops.h) -> params -> core (losses.h).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../lazy_status.h"
#include "../losses_ops.h"

namespace bidfcl::losses {
namespace {

using GradPair = std::tuple<at::Tensor, at::Tensor>;
using LossAndGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// The core routine of each params struct.
template <typename T> core::Status run_core(const core::PplLossParams<T>& p) { return core::ppl_loss_forward_cpu(p); }
template <typename T> core::Status run_core(const core::PplGradientParams<T>& p) {
  return core::ppl_loss_gradient_cpu(p);
}
template <typename T> core::Status run_core(const core::PifdLossParams<T>& p) { return core::pifd_loss_forward_cpu(p); }
template <typename T> core::Status run_core(const core::PifdGradientParams<T>& p) {
  return core::pifd_loss_gradient_cpu(p);
}

// check = false: bad input is not raised (validate_decision reports it lazily); the outputs are
// then zeros. Valid input gives the same outputs as check = true: the same core call.
void raise_or_zero(const core::Status& st, bool check, DecisionCall& c) {
  if (check) raise_loss_error(st);
  if (st.ok()) return;
  for (at::Tensor* t : {&c.loss, &c.grad_r_hat, &c.grad_c_hat})
    if (t->defined()) t->zero_();
}

// The forward op: the loss.
template <typename Kind>
at::Tensor forward_cpu(DecisionCall c, bool check) {
  AT_DISPATCH_FLOATING_TYPES(c.in.r_hat.scalar_type(), "bidfcl::loss_forward", [&] {
    raise_or_zero(run_core(c.forward_params<Kind, scalar_t>(at::get_num_threads())), check, c);
  });
  return c.loss;
}

// The backward op (grad_output = the op's grad) or the fused forward (grad_output = 1, the loss too).
template <typename Kind>
DecisionCall gradient_cpu(DecisionCall c, bool check) {
  AT_DISPATCH_FLOATING_TYPES(c.in.r_hat.scalar_type(), "bidfcl::loss_gradient", [&] {
    const scalar_t unit = 1;
    const scalar_t* go = c.grad.defined() ? c.grad.data_ptr<scalar_t>() : &unit;
    raise_or_zero(run_core(c.gradient_params<Kind, scalar_t>(go, at::get_num_threads())), check, c);
  });
  return c;
}

at::Tensor ppl_loss_cpu(const at::Tensor& r_hat, const at::Tensor& c_hat, const at::Tensor& treatment,
                        const at::Tensor& revenue, const std::optional<at::Tensor>& cost, const at::Tensor& lam,
                        const at::Tensor& propensity, double tau, bool check) {
  return forward_cpu<Ppl>(
      DecisionCall::make<Ppl>(r_hat, c_hat, treatment, revenue, cost, lam, propensity, tau, nullptr, Outputs::kLoss),
      check);
}

GradPair ppl_loss_backward_cpu(const at::Tensor& grad, const at::Tensor& r_hat, const at::Tensor& c_hat,
                               const at::Tensor& treatment, const at::Tensor& revenue,
                               const std::optional<at::Tensor>& cost, const at::Tensor& lam,
                               const at::Tensor& propensity, double tau, bool check) {
  return gradient_cpu<Ppl>(DecisionCall::make<Ppl>(r_hat, c_hat, treatment, revenue, cost, lam, propensity, tau, &grad,
                                                   Outputs::kGradients),
                           check)
      .gradients();
}

LossAndGrads ppl_loss_with_grad_cpu(const at::Tensor& r_hat, const at::Tensor& c_hat, const at::Tensor& treatment,
                                    const at::Tensor& revenue, const std::optional<at::Tensor>& cost,
                                    const at::Tensor& lam, const at::Tensor& propensity, double tau, bool check) {
  return gradient_cpu<Ppl>(DecisionCall::make<Ppl>(r_hat, c_hat, treatment, revenue, cost, lam, propensity, tau,
                                                   nullptr, Outputs::kLossAndGradients),
                           check)
      .loss_and_gradients();
}

at::Tensor pifd_loss_cpu(const at::Tensor& r_hat, const at::Tensor& c_hat, const at::Tensor& treatment,
                         const at::Tensor& revenue, const std::optional<at::Tensor>& cost, const at::Tensor& lam,
                         const at::Tensor& propensity, std::optional<double> clip, bool check) {
  return forward_cpu<Pifd>(
      DecisionCall::make<Pifd>(r_hat, c_hat, treatment, revenue, cost, lam, propensity, clip, nullptr, Outputs::kLoss),
      check);
}

GradPair pifd_loss_backward_cpu(const at::Tensor& grad, const at::Tensor& r_hat, const at::Tensor& c_hat,
                                const at::Tensor& treatment, const at::Tensor& revenue,
                                const std::optional<at::Tensor>& cost, const at::Tensor& lam,
                                const at::Tensor& propensity, std::optional<double> clip, bool check) {
  return gradient_cpu<Pifd>(DecisionCall::make<Pifd>(r_hat, c_hat, treatment, revenue, cost, lam, propensity, clip,
                                                     &grad, Outputs::kGradients),
                            check)
      .gradients();
}

LossAndGrads pifd_loss_with_grad_cpu(const at::Tensor& r_hat, const at::Tensor& c_hat, const at::Tensor& treatment,
                                     const at::Tensor& revenue, const std::optional<at::Tensor>& cost,
                                     const at::Tensor& lam, const at::Tensor& propensity, std::optional<double> clip,
                                     bool check) {
  return gradient_cpu<Pifd>(DecisionCall::make<Pifd>(r_hat, c_hat, treatment, revenue, cost, lam, propensity, clip,
                                                     nullptr, Outputs::kLossAndGradients),
                            check)
      .loss_and_gradients();
}

// The lazy check of the decision losses: metadata errors raise at once; the first value error
// (labels, lam, then rows) becomes the status record.
at::Tensor validate_decision_cpu(const at::Tensor& r_hat, const at::Tensor& c_hat, const at::Tensor& treatment,
                                 const at::Tensor& revenue, const std::optional<at::Tensor>& cost,
                                 const at::Tensor& lam, const at::Tensor& propensity) {
  check_decision_inputs(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  const DecisionTensors in(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  lazy::Record rec;
  AT_DISPATCH_FLOATING_TYPES(r_hat.scalar_type(), "bidfcl::validate_decision", [&] {
    const core::DecisionBatch<scalar_t> b = in.batch<scalar_t>(1);
    rec = lazy::check_labels(b.treatment, b.n, b.m);
    if (rec.ok()) rec = lazy::check_decision(b);
  });
  return lazy::to_tensor(rec, core::kFamilyDecision);
}

}  // namespace

TORCH_LIBRARY_IMPL(bidfcl, CPU, m) {
  m.impl("ppl_loss", &ppl_loss_cpu);
  m.impl("ppl_loss_backward", &ppl_loss_backward_cpu);
  m.impl("pifd_loss", &pifd_loss_cpu);
  m.impl("pifd_loss_backward", &pifd_loss_backward_cpu);
  m.impl("ppl_loss_with_grad", &ppl_loss_with_grad_cpu);
  m.impl("pifd_loss_with_grad", &pifd_loss_with_grad_cpu);
  m.impl("validate_decision", &validate_decision_cpu);
}

}  // namespace bidfcl::losses
