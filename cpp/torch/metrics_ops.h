// The glue builder of the metrics family (policy_value, aucc), shared by the CPU and CUDA glue
// (cpu/metrics_ops_cpu.cpp, cuda/metrics_ops_cuda.cpp): checks, contiguous inputs, outputs and the
// params structs of metrics.h, in one place.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "bidfcl/core/metrics.h"
#include "checks.h"
#include "losses_ops.h"  // check_treatment, check_row_vector (the same rules as the losses' inputs)

namespace bidfcl::metrics {

// Raises the error of a Status from the metrics core (CPU) or launchers (CUDA): one message for both.
inline void raise_metric_error(const core::Status& s) { checks::raise_if_error(s, "r_hat", "c_hat", "input"); }

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

// One policy_value call after its checks: contiguous inputs, float64 [K] outputs.
struct PolicyValueCall {
  at::Tensor choice, treatment, revenue, cost, propensity;
  bool hajek = false;
  at::Tensor value, cost_value, value_se, cost_se;

  static PolicyValueCall make(const at::Tensor& choice, const at::Tensor& treatment, const at::Tensor& revenue,
                              const at::Tensor& cost, const at::Tensor& propensity, bool hajek) {
    check_policy_inputs(choice, treatment, revenue, cost, propensity);
    PolicyValueCall c{choice.contiguous(), treatment.contiguous(),  revenue.contiguous(),
                      cost.contiguous(),   propensity.contiguous(), hajek};
    const auto opts = revenue.options().dtype(at::kDouble);
    const int64_t k = choice.size(0);
    c.value = at::empty({k}, opts);
    c.cost_value = at::empty({k}, opts);
    c.value_se = at::empty({k}, opts);
    c.cost_se = at::empty({k}, opts);
    return c;
  }

  template <typename T>
  core::PolicyValueParams<T> params(int num_threads) const {
    core::PolicyValueParams<T> p;
    p.choice = choice.data_ptr<int64_t>();
    p.treatment = treatment.data_ptr<int64_t>();
    p.revenue = revenue.data_ptr<T>();
    p.cost = cost.data_ptr<T>();
    p.propensity = propensity.data_ptr<T>();
    p.n = choice.size(1);
    p.k = choice.size(0);
    p.hajek = hajek;
    p.num_threads = num_threads;
    p.value = value.data_ptr<double>();
    p.cost_value = cost_value.data_ptr<double>();
    p.value_se = value_se.data_ptr<double>();
    p.cost_se = cost_se.data_ptr<double>();
    return p;
  }

  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> outputs() const {
    return {value, cost_value, value_se, cost_se};
  }
};

inline void check_aucc_inputs(const at::Tensor& r_hat, const at::Tensor& c_hat, const at::Tensor& treatment,
                              const at::Tensor& revenue, const at::Tensor& cost, int64_t q) {
  checks::check_problem(r_hat, c_hat, "r_hat", "c_hat");
  TORCH_CHECK(r_hat.size(1) == 2, "bidfcl: aucc needs exactly two options (control, treatment), got shape ",
              checks::shape_str(r_hat));
  const int64_t n = r_hat.size(0);
  TORCH_CHECK(n < (int64_t(1) << 32), "bidfcl: aucc supports at most 2^32 - 1 rows, got ", n);
  losses::check_treatment(treatment, r_hat, n);
  losses::check_row_vector(revenue, r_hat, n, "revenue");
  losses::check_row_vector(cost, r_hat, n, "cost");
  TORCH_CHECK(q >= 1, "bidfcl: q must be >= 1, got ", q);
}

// One aucc call after its checks: contiguous inputs, float64 outputs (0-d AUCC, [q + 1] curves).
struct AuccCall {
  at::Tensor r_hat, c_hat, treatment, revenue, cost;
  int64_t q = 0;
  at::Tensor aucc, cost_curve, revenue_curve;

  static AuccCall make(const at::Tensor& r_hat, const at::Tensor& c_hat, const at::Tensor& treatment,
                       const at::Tensor& revenue, const at::Tensor& cost, int64_t q) {
    check_aucc_inputs(r_hat, c_hat, treatment, revenue, cost, q);
    AuccCall c{r_hat.contiguous(),   c_hat.contiguous(), treatment.contiguous(),
               revenue.contiguous(), cost.contiguous(),  q};
    const auto opts = r_hat.options().dtype(at::kDouble);
    c.aucc = at::empty({}, opts);
    c.cost_curve = at::empty({q + 1}, opts);
    c.revenue_curve = at::empty({q + 1}, opts);
    return c;
  }

  template <typename T>
  core::AuccParams<T> params(int num_threads) const {
    core::AuccParams<T> p;
    p.r_hat = r_hat.data_ptr<T>();
    p.c_hat = c_hat.data_ptr<T>();
    p.treatment = treatment.data_ptr<int64_t>();
    p.revenue = revenue.data_ptr<T>();
    p.cost = cost.data_ptr<T>();
    p.n = r_hat.size(0);
    p.q = q;
    p.num_threads = num_threads;
    p.aucc = aucc.data_ptr<double>();
    p.cost_curve = cost_curve.data_ptr<double>();
    p.revenue_curve = revenue_curve.data_ptr<double>();
    return p;
  }

  std::tuple<at::Tensor, at::Tensor, at::Tensor> outputs() const { return {aucc, cost_curve, revenue_curve}; }
};

}  // namespace bidfcl::metrics
