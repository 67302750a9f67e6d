// The glue builder of the decision-loss family, shared by the CPU and CUDA glue
// (cpu/losses_ops_cpu.cpp, cuda/losses_ops_cuda.cpp): every op's checks, its contiguous inputs and
// outputs, and the params structs of losses.h built from them, in one place. A glue file adds only
// its device: the core call, the stream and scratch memory, and how an error is raised.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <optional>

#include "bidfcl/core/losses.h"
#include "checks.h"

namespace bidfcl::losses {

// Raises the error of a Status from the losses core (CPU) or the losses launchers (CUDA, decoded
// from their device status record): one message for both devices.
inline void raise_loss_error(const core::Status& s) { checks::raise_if_error(s, "r_hat", "c_hat", "input"); }

inline void check_row_vector(const at::Tensor& t, const at::Tensor& like, int64_t n, const char* name) {
  checks::check_float(t, name);
  checks::check_length(t, n, name, "row");
  checks::check_same_dtype(like, t, "r_hat", name);
  checks::check_same_device(like, t, "r_hat", name);
}

inline void check_treatment(const at::Tensor& treatment, const at::Tensor& like, int64_t n) {
  checks::check_defined(treatment, "treatment");
  TORCH_CHECK(treatment.scalar_type() == at::kLong, "bidfcl: treatment must be int64, got ", treatment.scalar_type());
  checks::check_length(treatment, n, "treatment", "row");
  checks::check_same_device(like, treatment, "r_hat", "treatment");
}

// r_hat, c_hat [N, 2 <= M <= kMaxLossOptions]; treatment int64 [N]; revenue, propensity, cost
// (optional) [N]; lam [L >= 1]; everything float in one dtype on one device.
inline void check_decision_inputs(const at::Tensor& r_hat, const at::Tensor& c_hat, const at::Tensor& treatment,
                                  const at::Tensor& revenue, const std::optional<at::Tensor>& cost,
                                  const at::Tensor& lam, const at::Tensor& propensity) {
  checks::check_problem(r_hat, c_hat, "r_hat", "c_hat");
  TORCH_CHECK(r_hat.size(1) >= 2, "bidfcl: r_hat must have at least two options (M >= 2), got shape ",
              checks::shape_str(r_hat));
  TORCH_CHECK(r_hat.size(1) <= core::kMaxLossOptions, "bidfcl: at most ", core::kMaxLossOptions,
              " options are supported, got M = ", r_hat.size(1));
  const int64_t n = r_hat.size(0);
  check_treatment(treatment, r_hat, n);
  check_row_vector(revenue, r_hat, n, "revenue");
  check_row_vector(propensity, r_hat, n, "propensity");
  if (cost.has_value()) check_row_vector(*cost, r_hat, n, "cost");
  checks::check_float(lam, "lam");
  TORCH_CHECK(lam.dim() == 1 && lam.size(0) >= 1,
              "bidfcl: lam must be 1-D [L >= 1] (one entry per multiplier), got shape ", checks::shape_str(lam));
  checks::check_same_dtype(r_hat, lam, "r_hat", "lam");
  checks::check_same_device(r_hat, lam, "r_hat", "lam");
}

inline void check_grad_output(const at::Tensor& grad, const at::Tensor& like) {
  checks::check_float(grad, "grad");
  TORCH_CHECK(grad.numel() == 1, "bidfcl: grad must hold one element (the loss is a scalar), got shape ",
              checks::shape_str(grad));
  checks::check_same_dtype(like, grad, "r_hat", "grad");
  checks::check_same_device(like, grad, "r_hat", "grad");
}

// Contiguous copies of the decision inputs, kept alive while the core reads them.
struct DecisionTensors {
  at::Tensor r_hat, c_hat, treatment, revenue, cost, lam, propensity;
  DecisionTensors(const at::Tensor& r, const at::Tensor& c, const at::Tensor& t, const at::Tensor& rev,
                  const std::optional<at::Tensor>& cst, const at::Tensor& l, const at::Tensor& p)
      : r_hat(r.contiguous()),
        c_hat(c.contiguous()),
        treatment(t.contiguous()),
        revenue(rev.contiguous()),
        cost(cst.has_value() ? cst->contiguous() : at::Tensor()),
        lam(l.contiguous()),
        propensity(p.contiguous()) {}

  template <typename T>
  core::DecisionBatch<T> batch(int num_threads) const {
    core::DecisionBatch<T> b;
    b.r_hat = r_hat.data_ptr<T>();
    b.c_hat = c_hat.data_ptr<T>();
    b.treatment = treatment.data_ptr<int64_t>();
    b.revenue = revenue.data_ptr<T>();
    b.cost = cost.defined() ? cost.data_ptr<T>() : nullptr;
    b.propensity = propensity.data_ptr<T>();
    b.lam = lam.data_ptr<T>();
    b.n = r_hat.size(0);
    b.m = r_hat.size(1);
    b.l = lam.size(0);
    b.num_threads = num_threads;
    return b;
  }
};

// The two decision losses: their extra argument (tau of PPL, clip of PIFD), how it is checked, and
// their params structs. Adding a loss adds one such struct (and its core routines).
struct Ppl {
  using Extra = double;  // tau
  template <typename T> using ForwardParams = core::PplLossParams<T>;
  template <typename T> using GradientParams = core::PplGradientParams<T>;
  static double extra_value(double tau) {
    TORCH_CHECK(std::isfinite(tau) && tau > 0, "bidfcl: tau must be finite and > 0, got ", tau);
    return tau;
  }
  template <typename P> static void set_extra(P& p, double tau) { p.tau = tau; }
};

struct Pifd {
  using Extra = std::optional<double>;  // clip h, None: no clip
  template <typename T> using ForwardParams = core::PifdLossParams<T>;
  template <typename T> using GradientParams = core::PifdGradientParams<T>;
  static double extra_value(const std::optional<double>& clip) {
    if (!clip.has_value()) return 0.0;
    TORCH_CHECK(std::isfinite(*clip) && *clip > 0, "bidfcl: clip must be None or finite and > 0, got ", *clip);
    return *clip;
  }
  template <typename P> static void set_extra(P& p, double clip) { p.clip = clip; }
};

// Which outputs an op returns: the loss (forward), the gradients (backward), or both (fused).
enum class Outputs { kLoss, kGradients, kLossAndGradients };

// One decision-loss op call after its checks (inputs, then grad, then the extra argument, in the
// order every op has always checked them): contiguous inputs and the allocated outputs.
struct DecisionCall {
  DecisionTensors in;
  double extra = 0;                        // tau or clip h (0 = none)
  at::Tensor grad;                         // upstream gradient (backward ops), else undefined
  at::Tensor loss, grad_r_hat, grad_c_hat;  // outputs; undefined when the op does not return them

  template <typename Kind>
  static DecisionCall make(const at::Tensor& r_hat, const at::Tensor& c_hat, const at::Tensor& treatment,
                           const at::Tensor& revenue, const std::optional<at::Tensor>& cost, const at::Tensor& lam,
                           const at::Tensor& propensity, const typename Kind::Extra& extra, const at::Tensor* grad,
                           Outputs outputs) {
    check_decision_inputs(r_hat, c_hat, treatment, revenue, cost, lam, propensity);
    if (grad) check_grad_output(*grad, r_hat);
    const double value = Kind::extra_value(extra);
    DecisionCall c{DecisionTensors(r_hat, c_hat, treatment, revenue, cost, lam, propensity), value};
    if (grad) c.grad = grad->contiguous();
    if (outputs != Outputs::kGradients) c.loss = at::empty({}, r_hat.options());
    if (outputs != Outputs::kLoss) {
      c.grad_r_hat = at::empty(r_hat.sizes(), r_hat.options());
      c.grad_c_hat = at::empty(r_hat.sizes(), r_hat.options());
    }
    return c;
  }

  // The forward params: inputs, extra argument, loss output.
  template <typename Kind, typename T>
  typename Kind::template ForwardParams<T> forward_params(int num_threads) const {
    typename Kind::template ForwardParams<T> p;
    p.in = in.batch<T>(num_threads);
    Kind::set_extra(p, extra);
    p.loss = loss.data_ptr<T>();
    return p;
  }

  // The gradient params: inputs, extra argument, upstream gradient (`grad_output`, same memory
  // space as the inputs), gradient outputs and, when the op returns it, the fused loss.
  template <typename Kind, typename T>
  typename Kind::template GradientParams<T> gradient_params(const T* grad_output, int num_threads) const {
    typename Kind::template GradientParams<T> p;
    p.in = in.batch<T>(num_threads);
    Kind::set_extra(p, extra);
    p.grad_output = grad_output;
    p.grad_r_hat = grad_r_hat.data_ptr<T>();
    p.grad_c_hat = grad_c_hat.data_ptr<T>();
    p.loss = loss.defined() ? loss.data_ptr<T>() : nullptr;
    return p;
  }

  std::tuple<at::Tensor, at::Tensor> gradients() const { return {grad_r_hat, grad_c_hat}; }
  std::tuple<at::Tensor, at::Tensor, at::Tensor> loss_and_gradients() const { return {loss, grad_r_hat, grad_c_hat}; }
};

}  // namespace bidfcl::losses
