// IPW policy estimators and the AUCC metric (METHOD.md section 2): evaluation of fixed policies,
// not losses (no gradient). Torch-free: raw row-major pointers, sizes and a thread count.
#pragma once

#include <cstdint>

#include "bidfcl/core/constants.h"
#include "bidfcl/core/status.h"

namespace bidfcl::core {

// IPW estimates of the per-capita revenue and cost of K policies on one RCT sample:
//   y_i = 1[choice[k, i] == t_i] * revenue_i / p_i      (x_i likewise with cost)
//   ipw:   V = (1/n) sum_i y_i,        se = sqrt( sum_i (y_i - V)^2 / (n - 1) / n )
//   hajek: W = sum_i 1[match_i] / p_i, V = (sum_i y_i) / W,
//          se = sqrt( n/(n-1) * sum_i (1[match_i]/p_i)^2 (revenue_i - V)^2 ) / W
template <typename T>
struct PolicyValueParams {
  const int64_t* choice = nullptr;     // [k, n] option chosen for row i by policy k
  const int64_t* treatment = nullptr;  // [n]
  const T* revenue = nullptr;          // [n]
  const T* cost = nullptr;             // [n]
  const T* propensity = nullptr;       // [n] in (0, 1]
  int64_t n = 0;
  int64_t k = 0;
  bool hajek = false;
  int num_threads = 1;
  // outputs, float64 [k]
  double* value = nullptr;
  double* cost_value = nullptr;
  double* value_se = nullptr;
  double* cost_se = nullptr;
};

// AUCC for two options (0 = control, 1 = treatment). Rows are ranked by predicted ROI
//   roi_i = (r_hat[i,1] - r_hat[i,0]) / max(c_hat[i,1] - c_hat[i,0], kAuccMinCostGap)
// (descending, ties by row index). Walking the ranking, after the first k rows
//   C(k) = sum_{treated in top k} cost/n1 - sum_{control in top k} cost/n0   (R(k) likewise)
// with n1, n0 the full arm sizes. With C* = C(n), level q' (0..q) is C* * (q'/q), k_q' is the
// first k whose running max of C reaches it, and
//   AUCC = sum_q' R(k_q') / (R(n) * (q + 1)).
// NaN when C(n) <= 0 or R(n) == 0 (no cost or revenue gain to normalise by). An arm without rows
// is an error (kEmptyArm).
template <typename T>
struct AuccParams {
  const T* r_hat = nullptr;            // [n, 2]
  const T* c_hat = nullptr;            // [n, 2]
  const int64_t* treatment = nullptr;  // [n] in {0, 1}
  const T* revenue = nullptr;          // [n]
  const T* cost = nullptr;             // [n]
  int64_t n = 0;
  int64_t q = 200;  // number of cost intervals; q + 1 curve points
  int num_threads = 1;
  // outputs (float64)
  double* aucc = nullptr;           // [1]
  double* cost_curve = nullptr;     // [q + 1] C(k_q')
  double* revenue_curve = nullptr;  // [q + 1] R(k_q')
};

// Row checks, shared by the CPU core and the CUDA kernels (same first error on both).
template <typename T>
BIDFCL_HD inline Status check_policy_row(const PolicyValueParams<T>& p, int64_t i) {
  if (!is_finite(p.revenue[i])) return {Code::kNonFiniteInput, i, -1, double(p.revenue[i]), Input::kRevenue};
  if (!is_finite(p.cost[i])) return {Code::kNonFiniteInput, i, -1, double(p.cost[i]), Input::kCost};
  const T pr = p.propensity[i];
  if (!(pr > T(0) && pr <= T(1))) return {Code::kBadPropensity, i, -1, double(pr)};
  return Status::Ok();
}

template <typename T>
BIDFCL_HD inline Status check_aucc_row(const AuccParams<T>& p, int64_t i) {
  const T* r = p.r_hat + 2 * i;
  const T* c = p.c_hat + 2 * i;
  for (int j = 0; j < 2; ++j) {
    if (!is_finite(r[j])) return {Code::kNonFiniteValue, i, j, double(r[j])};
    if (!is_finite(c[j])) return {Code::kNonFiniteCost, i, j, double(c[j])};
  }
  if (p.treatment[i] != 0 && p.treatment[i] != 1) return {Code::kBadTreatment, i, 2, double(p.treatment[i])};
  if (!is_finite(p.revenue[i])) return {Code::kNonFiniteInput, i, -1, double(p.revenue[i]), Input::kRevenue};
  if (!is_finite(p.cost[i])) return {Code::kNonFiniteInput, i, -1, double(p.cost[i]), Input::kCost};
  return Status::Ok();
}

// The empty-arm error of AUCC (n1 treated rows of n).
BIDFCL_HD inline Status aucc_arm_status(int64_t n1, int64_t n) {
  if (n1 != 0 && n1 != n) return Status::Ok();
  Status s;
  s.code = Code::kEmptyArm;
  s.arm = n1 == 0 ? 1 : 0;
  return s;
}

// The ROI of row i as AUCC ranks it (+0 for -0, so equal ROIs compare equal as keys).
template <typename T>
BIDFCL_HD inline T aucc_roi(const AuccParams<T>& p, int64_t i) {
  const T* r = p.r_hat + 2 * i;
  const T* c = p.c_hat + 2 * i;
  const T gap = c[1] - c[0];
  const T floor = static_cast<T>(kAuccMinCostGap);
  return (r[1] - r[0]) / (gap < floor ? floor : gap) + T(0);
}

template <typename T> Status policy_value_estimate_cpu(const PolicyValueParams<T>& p);
template <typename T> Status aucc_curve_cpu(const AuccParams<T>& p);

}  // namespace bidfcl::core
