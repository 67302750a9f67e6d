// CPU glue for the decision-loss, policy-value and AUCC ops: check -> Params -> core.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../lazy_status.h"
#include "../losses_common.h"

namespace bidfcl::losses {
namespace {

using GradPair = std::tuple<at::Tensor, at::Tensor>;

// check = false: bad input is not raised (validate_decision reports it lazily); the outputs are
// then zeros. Valid input gives the same outputs as check = true: the same core call.
void raise_or_zero(const core::Status& st, bool check, std::initializer_list<at::Tensor*> outputs) {
  if (check) raise_loss_error(st);
  if (st.ok()) return;
  for (at::Tensor* t : outputs) t->zero_();
}

at::Tensor softmax_loss_cpu(const at::Tensor& r_hat, const at::Tensor& c_hat, const at::Tensor& treatment,
                            const at::Tensor& revenue, const std::optional<at::Tensor>& cost, const at::Tensor& lam,
                            const at::Tensor& propensity, double tau, bool check) {
  check_decision_inputs(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  check_tau(tau);
  const DecisionTensors in(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  at::Tensor loss = at::empty({}, r_hat.options());
  AT_DISPATCH_FLOATING_TYPES(r_hat.scalar_type(), "bidfcl::ppl_loss", [&] {
    core::SoftmaxLossParams<scalar_t> p;
    p.in = in.batch<scalar_t>(at::get_num_threads());
    p.tau = tau;
    p.loss = loss.data_ptr<scalar_t>();
    raise_or_zero(core::softmax_loss_cpu<scalar_t>(p), check, {&loss});
  });
  return loss;
}

GradPair softmax_loss_backward_cpu(const at::Tensor& grad, const at::Tensor& r_hat, const at::Tensor& c_hat,
                                   const at::Tensor& treatment, const at::Tensor& revenue,
                                   const std::optional<at::Tensor>& cost, const at::Tensor& lam,
                                   const at::Tensor& propensity, double tau, bool check) {
  check_decision_inputs(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  check_grad_output(grad, r_hat);
  check_tau(tau);
  const DecisionTensors in(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  const at::Tensor g = grad.contiguous();
  at::Tensor grad_r = at::empty(r_hat.sizes(), r_hat.options());
  at::Tensor grad_c = at::empty(r_hat.sizes(), r_hat.options());
  AT_DISPATCH_FLOATING_TYPES(r_hat.scalar_type(), "bidfcl::ppl_loss_backward", [&] {
    core::SoftmaxLossBackwardParams<scalar_t> p;
    p.in = in.batch<scalar_t>(at::get_num_threads());
    p.tau = tau;
    p.grad_output = g.data_ptr<scalar_t>();
    p.grad_r_hat = grad_r.data_ptr<scalar_t>();
    p.grad_c_hat = grad_c.data_ptr<scalar_t>();
    raise_or_zero(core::softmax_loss_backward_cpu<scalar_t>(p), check, {&grad_r, &grad_c});
  });
  return {grad_r, grad_c};
}

at::Tensor flip_loss_cpu(const at::Tensor& r_hat, const at::Tensor& c_hat, const at::Tensor& treatment,
                         const at::Tensor& revenue, const std::optional<at::Tensor>& cost, const at::Tensor& lam,
                         const at::Tensor& propensity, std::optional<double> clip, bool check) {
  check_decision_inputs(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  clip_value(clip);
  const DecisionTensors in(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  at::Tensor loss = at::empty({}, r_hat.options());
  AT_DISPATCH_FLOATING_TYPES(r_hat.scalar_type(), "bidfcl::pifd_loss", [&] {
    core::FlipLossParams<scalar_t> p;
    p.in = in.batch<scalar_t>(at::get_num_threads());
    p.loss = loss.data_ptr<scalar_t>();
    raise_or_zero(core::flip_loss_cpu<scalar_t>(p), check, {&loss});
  });
  return loss;
}

GradPair flip_loss_backward_cpu(const at::Tensor& grad, const at::Tensor& r_hat, const at::Tensor& c_hat,
                                const at::Tensor& treatment, const at::Tensor& revenue,
                                const std::optional<at::Tensor>& cost, const at::Tensor& lam,
                                const at::Tensor& propensity, std::optional<double> clip, bool check) {
  check_decision_inputs(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  check_grad_output(grad, r_hat);
  const double h = clip_value(clip);
  const DecisionTensors in(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  const at::Tensor g = grad.contiguous();
  at::Tensor grad_r = at::empty(r_hat.sizes(), r_hat.options());
  at::Tensor grad_c = at::empty(r_hat.sizes(), r_hat.options());
  AT_DISPATCH_FLOATING_TYPES(r_hat.scalar_type(), "bidfcl::pifd_loss_backward", [&] {
    core::FlipLossBackwardParams<scalar_t> p;
    p.in = in.batch<scalar_t>(at::get_num_threads());
    p.clip = h;
    p.grad_output = g.data_ptr<scalar_t>();
    p.grad_r_hat = grad_r.data_ptr<scalar_t>();
    p.grad_c_hat = grad_c.data_ptr<scalar_t>();
    raise_or_zero(core::flip_loss_backward_cpu<scalar_t>(p), check, {&grad_r, &grad_c});
  });
  return {grad_r, grad_c};
}

using LossAndGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

LossAndGrads softmax_loss_with_grad_cpu(const at::Tensor& r_hat, const at::Tensor& c_hat, const at::Tensor& treatment,
                                        const at::Tensor& revenue, const std::optional<at::Tensor>& cost,
                                        const at::Tensor& lam, const at::Tensor& propensity, double tau, bool check) {
  check_decision_inputs(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  check_tau(tau);
  const DecisionTensors in(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  at::Tensor loss = at::empty({}, r_hat.options());
  at::Tensor grad_r = at::empty(r_hat.sizes(), r_hat.options());
  at::Tensor grad_c = at::empty(r_hat.sizes(), r_hat.options());
  AT_DISPATCH_FLOATING_TYPES(r_hat.scalar_type(), "bidfcl::ppl_loss_with_grad", [&] {
    const scalar_t unit = 1;
    core::SoftmaxLossBackwardParams<scalar_t> p;
    p.in = in.batch<scalar_t>(at::get_num_threads());
    p.tau = tau;
    p.grad_output = &unit;
    p.grad_r_hat = grad_r.data_ptr<scalar_t>();
    p.grad_c_hat = grad_c.data_ptr<scalar_t>();
    p.loss = loss.data_ptr<scalar_t>();
    raise_or_zero(core::softmax_loss_backward_cpu<scalar_t>(p), check, {&loss, &grad_r, &grad_c});
  });
  return {loss, grad_r, grad_c};
}

LossAndGrads flip_loss_with_grad_cpu(const at::Tensor& r_hat, const at::Tensor& c_hat, const at::Tensor& treatment,
                                     const at::Tensor& revenue, const std::optional<at::Tensor>& cost,
                                     const at::Tensor& lam, const at::Tensor& propensity, std::optional<double> clip, bool check) {
  check_decision_inputs(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  const double h = clip_value(clip);
  const DecisionTensors in(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
  at::Tensor loss = at::empty({}, r_hat.options());
  at::Tensor grad_r = at::empty(r_hat.sizes(), r_hat.options());
  at::Tensor grad_c = at::empty(r_hat.sizes(), r_hat.options());
  AT_DISPATCH_FLOATING_TYPES(r_hat.scalar_type(), "bidfcl::pifd_loss_with_grad", [&] {
    const scalar_t unit = 1;
    core::FlipLossBackwardParams<scalar_t> p;
    p.in = in.batch<scalar_t>(at::get_num_threads());
    p.clip = h;
    p.grad_output = &unit;
    p.grad_r_hat = grad_r.data_ptr<scalar_t>();
    p.grad_c_hat = grad_c.data_ptr<scalar_t>();
    p.loss = loss.data_ptr<scalar_t>();
    raise_or_zero(core::flip_loss_backward_cpu<scalar_t>(p), check, {&loss, &grad_r, &grad_c});
  });
  return {loss, grad_r, grad_c};
}

// The lazy check of the decision losses: metadata errors raise at once; the first value error
// (labels, lam, then rows) becomes the status record.
at::Tensor validate_decision_cpu(const at::Tensor& r_hat, const at::Tensor& c_hat, const at::Tensor& treatment,
                                 const at::Tensor& revenue, const std::optional<at::Tensor>& cost, const at::Tensor& lam,
                                 const at::Tensor& propensity) {
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

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> policy_value_cpu(
    const at::Tensor& choice_in, const at::Tensor& treatment_in, const at::Tensor& revenue_in,
    const at::Tensor& cost_in, const at::Tensor& propensity_in, bool hajek) {
  check_policy_inputs(choice_in, treatment_in, revenue_in, cost_in, propensity_in);
  const at::Tensor choice = choice_in.contiguous(), treatment = treatment_in.contiguous();
  const at::Tensor revenue = revenue_in.contiguous(), cost = cost_in.contiguous();
  const at::Tensor propensity = propensity_in.contiguous();
  const int64_t k = choice.size(0);
  const auto opts = revenue.options().dtype(at::kDouble);
  at::Tensor value = at::empty({k}, opts), cost_value = at::empty({k}, opts);
  at::Tensor value_se = at::empty({k}, opts), cost_se = at::empty({k}, opts);
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
    p.num_threads = at::get_num_threads();
    p.value = value.data_ptr<double>();
    p.cost_value = cost_value.data_ptr<double>();
    p.value_se = value_se.data_ptr<double>();
    p.cost_se = cost_se.data_ptr<double>();
    raise_loss_error(core::policy_value_cpu<scalar_t>(p));
  });
  return {value, cost_value, value_se, cost_se};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> aucc_cpu(const at::Tensor& r_hat_in, const at::Tensor& c_hat_in,
                                                        const at::Tensor& treatment_in, const at::Tensor& revenue_in,
                                                        const at::Tensor& cost_in, int64_t q) {
  check_aucc_inputs(r_hat_in, c_hat_in, treatment_in, revenue_in, cost_in, q);
  const at::Tensor r_hat = r_hat_in.contiguous(), c_hat = c_hat_in.contiguous();
  const at::Tensor treatment = treatment_in.contiguous(), revenue = revenue_in.contiguous();
  const at::Tensor cost = cost_in.contiguous();
  const auto opts = r_hat.options().dtype(at::kDouble);
  at::Tensor aucc = at::empty({}, opts), cost_curve = at::empty({q + 1}, opts), revenue_curve = at::empty({q + 1}, opts);
  AT_DISPATCH_FLOATING_TYPES(r_hat.scalar_type(), "bidfcl::aucc", [&] {
    core::AuccParams<scalar_t> p;
    p.r_hat = r_hat.data_ptr<scalar_t>();
    p.c_hat = c_hat.data_ptr<scalar_t>();
    p.treatment = treatment.data_ptr<int64_t>();
    p.revenue = revenue.data_ptr<scalar_t>();
    p.cost = cost.data_ptr<scalar_t>();
    p.n = r_hat.size(0);
    p.q = q;
    p.num_threads = at::get_num_threads();
    p.aucc = aucc.data_ptr<double>();
    p.cost_curve = cost_curve.data_ptr<double>();
    p.revenue_curve = revenue_curve.data_ptr<double>();
    raise_loss_error(core::aucc_cpu<scalar_t>(p));
  });
  return {aucc, cost_curve, revenue_curve};
}

}  // namespace

TORCH_LIBRARY_IMPL(bidfcl, CPU, m) {
  m.impl("ppl_loss", &softmax_loss_cpu);
  m.impl("ppl_loss_backward", &softmax_loss_backward_cpu);
  m.impl("pifd_loss", &flip_loss_cpu);
  m.impl("pifd_loss_backward", &flip_loss_backward_cpu);
  m.impl("ppl_loss_with_grad", &softmax_loss_with_grad_cpu);
  m.impl("pifd_loss_with_grad", &flip_loss_with_grad_cpu);
  m.impl("policy_value", &policy_value_cpu);
  m.impl("aucc", &aucc_cpu);
  m.impl("validate_decision", &validate_decision_cpu);
}

}  // namespace bidfcl::losses
