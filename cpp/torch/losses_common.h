// Checks, error messages and params building shared by the CPU and CUDA glue of the decision-loss,
// policy-value and AUCC ops.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "bidfcl/core/losses.h"
#include "checks.h"

namespace bidfcl::losses {

// Turns a core Status from a losses routine into a readable error. kNonFiniteInput carries which
// input in Status::col (core::LossInput); kBadTreatment with col == 2 comes from the binary AUCC.
inline void raise_loss_error(const core::Status& s) {
  using core::Code;
  using core::LossInput;
  if (s.code == Code::kNonFiniteInput) {
    const char* name = "input";
    switch (static_cast<LossInput>(s.col)) {
      case LossInput::kRevenue: name = "revenue"; break;
      case LossInput::kCost: name = "cost"; break;
      case LossInput::kLam: name = "lam"; break;
      case LossInput::kPropensity: name = "propensity"; break;
    }
    const char* where = static_cast<LossInput>(s.col) == LossInput::kLam ? " at index " : " at row ";
    TORCH_CHECK(false, "bidfcl: ", name, " must be finite, got ", s.value, where, s.row);
  }
  if (s.code == Code::kBadTreatment && s.row < 0) {
    TORCH_CHECK(false, "bidfcl: aucc needs rows in both arms (treatment 0 and 1), got none with treatment ",
                static_cast<int64_t>(s.value));
  }
  checks::raise_if_error(s, "r_hat", "c_hat", "input");
}

inline void check_row_vector(const at::Tensor& t, const at::Tensor& like, int64_t n, const char* name) {
  checks::check_float(t, name);
  checks::check_length(t, n, name, "row");
  checks::check_same_dtype(like, t, "r_hat", name);
  checks::check_same_device(like, t, "r_hat", name);
}

inline void check_treatment(const at::Tensor& treatment, const at::Tensor& like, int64_t n) {
  checks::check_defined(treatment, "treatment");
  TORCH_CHECK(treatment.scalar_type() == at::kLong, "bidfcl: treatment must be int64, got ",
              treatment.scalar_type());
  checks::check_length(treatment, n, "treatment", "row");
  checks::check_same_device(like, treatment, "r_hat", "treatment");
}

// r_hat, c_hat [N, M >= 2]; treatment int64 [N]; revenue, propensity, cost (optional) [N];
// lam [L >= 1]; everything float in one dtype on one device.
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
  TORCH_CHECK(lam.dim() == 1 && lam.size(0) >= 1, "bidfcl: lam must be 1-D [L >= 1] (one entry per multiplier), got shape ",
              checks::shape_str(lam));
  checks::check_same_dtype(r_hat, lam, "r_hat", "lam");
  checks::check_same_device(r_hat, lam, "r_hat", "lam");
}

inline void check_tau(double tau) {
  TORCH_CHECK(std::isfinite(tau) && tau > 0, "bidfcl: tau must be finite and > 0, got ", tau);
}

inline double clip_value(const std::optional<double>& clip) {
  if (!clip.has_value()) return 0.0;
  TORCH_CHECK(std::isfinite(*clip) && *clip > 0, "bidfcl: clip must be None or finite and > 0, got ", *clip);
  return *clip;
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
      : r_hat(r.contiguous()), c_hat(c.contiguous()), treatment(t.contiguous()), revenue(rev.contiguous()),
        cost(cst.has_value() ? cst->contiguous() : at::Tensor()), lam(l.contiguous()), propensity(p.contiguous()) {}

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

inline void check_policy_inputs(const at::Tensor& choice, const at::Tensor& treatment, const at::Tensor& revenue,
                                const at::Tensor& cost, const at::Tensor& propensity) {
  checks::check_defined(choice, "choice");
  TORCH_CHECK(choice.scalar_type() == at::kLong, "bidfcl: choice must be int64, got ", choice.scalar_type());
  checks::check_dim(choice, 2, "choice", "[K policies, N rows]");
  const int64_t n = choice.size(1);
  checks::check_defined(treatment, "treatment");
  TORCH_CHECK(treatment.scalar_type() == at::kLong, "bidfcl: treatment must be int64, got ", treatment.scalar_type());
  checks::check_length(treatment, n, "treatment", "row (column of choice)");
  checks::check_float(revenue, "revenue");
  checks::check_length(revenue, n, "revenue", "row (column of choice)");
  for (auto [t, name] : {std::pair{&cost, "cost"}, std::pair{&propensity, "propensity"}}) {
    checks::check_float(*t, name);
    checks::check_length(*t, n, name, "row (column of choice)");
    checks::check_same_dtype(revenue, *t, "revenue", name);
  }
  checks::check_same_device(choice, treatment, "choice", "treatment");
  checks::check_same_device(choice, revenue, "choice", "revenue");
  checks::check_same_device(choice, cost, "choice", "cost");
  checks::check_same_device(choice, propensity, "choice", "propensity");
}

inline void check_aucc_inputs(const at::Tensor& r_hat, const at::Tensor& c_hat, const at::Tensor& treatment,
                              const at::Tensor& revenue, const at::Tensor& cost, int64_t q) {
  checks::check_problem(r_hat, c_hat, "r_hat", "c_hat");
  TORCH_CHECK(r_hat.size(1) == 2, "bidfcl: aucc needs exactly two options (control, treatment), got shape ",
              checks::shape_str(r_hat));
  const int64_t n = r_hat.size(0);
  TORCH_CHECK(n < (int64_t(1) << 32), "bidfcl: aucc supports at most 2^32 - 1 rows, got ", n);
  check_treatment(treatment, r_hat, n);
  check_row_vector(revenue, r_hat, n, "revenue");
  check_row_vector(cost, r_hat, n, "cost");
  TORCH_CHECK(q >= 1, "bidfcl: q must be >= 1, got ", q);
}

}  // namespace bidfcl::losses
