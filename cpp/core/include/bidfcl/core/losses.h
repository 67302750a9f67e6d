// Surrogate decision losses (METHOD.md sections 2-3): PPL / DPL / MER (softmax) and PIFD / DIFD
// (exact loss, flip-based finite-difference gradient). Torch-free: raw row-major pointers, sizes and
// a thread count. The metrics (policy_value, aucc) are in metrics.h.
//
// Vocabulary used throughout:
//   score     a[l, i, j] = r_hat[i, j] - lam[l] * c_hat[i, j], one score matrix per multiplier lam[l]
//             of the grid (L = 1 for the primal losses PPL and PIFD, L >= 1 for DFCL's DPL/MER/DIFD).
//   reward    rw[l, i] = revenue[i]                         (primal: cost == nullptr)
//                      = revenue[i] - lam[l] * cost[i]      (dual:   cost given)
//   weight    w[l, i] = rw[l, i] / (n * propensity[i]): row i's IPW contribution to the per-capita
//             value V when the policy picks its randomised arm t_i.
//   policy    the argmax of a row's scores; ties go to the lowest option index.
//   runner-up the argmax of a row's scores over every option except the chosen one (ties lowest).
//
// Every loss is summed over the lam grid:  L = sum_l L_l.
#pragma once

#include <cstdint>

#include "bidfcl/core/constants.h"
#include "bidfcl/core/status.h"

namespace bidfcl::core {

template <typename T>
struct DecisionBatch {
  const T* r_hat = nullptr;            // [n, m] predicted revenue of option j for row i
  const T* c_hat = nullptr;            // [n, m] predicted cost of option j for row i
  const int64_t* treatment = nullptr;  // [n] randomised arm t_i, in [0, m)
  const T* revenue = nullptr;          // [n] observed revenue of row i under t_i
  const T* cost = nullptr;             // [n] observed cost under t_i, or nullptr (primal reward)
  const T* propensity = nullptr;       // [n] probability of row i's own arm, in (0, 1]
  const T* lam = nullptr;              // [l] multipliers (constants: no gradient)
  int64_t n = 0;                       // rows
  int64_t m = 0;                       // options, 2 <= m <= kMaxLossOptions
  int64_t l = 0;                       // multipliers, >= 1
  int num_threads = 1;                 // results do not depend on it
};

// The input checks of every decision loss, in their order: lam first (index x of the first
// non-finite entry), then row by row. CPU core and CUDA kernels both call these, so both report
// the same first error.
template <typename T>
BIDFCL_HD inline Status check_lam_entry(const DecisionBatch<T>& in, int64_t x) {
  if (!is_finite(in.lam[x])) return {Code::kNonFiniteInput, x, -1, double(in.lam[x]), Input::kLam};
  return Status::Ok();
}

// Row i: r_hat / c_hat per option, the treatment label, revenue, cost, propensity in (0, 1].
template <typename T>
BIDFCL_HD inline Status check_decision_row(const DecisionBatch<T>& in, int64_t i) {
  const T* r = in.r_hat + i * in.m;
  const T* c = in.c_hat + i * in.m;
  for (int64_t j = 0; j < in.m; ++j) {
    if (!is_finite(r[j])) return {Code::kNonFiniteValue, i, j, double(r[j])};
    if (!is_finite(c[j])) return {Code::kNonFiniteCost, i, j, double(c[j])};
  }
  const int64_t t = in.treatment[i];
  if (t < 0 || t >= in.m) return {Code::kBadTreatment, i, in.m, double(t)};
  if (!is_finite(in.revenue[i])) return {Code::kNonFiniteInput, i, -1, double(in.revenue[i]), Input::kRevenue};
  if (in.cost && !is_finite(in.cost[i])) return {Code::kNonFiniteInput, i, -1, double(in.cost[i]), Input::kCost};
  const T p = in.propensity[i];
  if (!(p > T(0) && p <= T(1))) return {Code::kBadPropensity, i, -1, double(p)};
  return Status::Ok();
}

// PPL / DPL / MER forward:
//   z[l, i, :] = softmax(a[l, i, :] / tau),   L = -sum_l sum_i z[l, i, t_i] * w[l, i]
// (On the CPU, float32 evaluates exp with a vectorisable polynomial, relative error < 1e-7;
// float64 uses libm.)
template <typename T>
struct PplLossParams {
  DecisionBatch<T> in;
  double tau = 1.0;   // temperature, > 0
  T* loss = nullptr;  // [1] output
};

// Its gradient, scaled by the upstream gradient grad_output[0]:
//   dL/da[l, i, j] = -(w[l, i] / tau) * z[l, i, t_i] * (1[j == t_i] - z[l, i, j])
//   grad_r_hat = sum_l dL/da[l],  grad_c_hat = -sum_l lam[l] * dL/da[l]
template <typename T>
struct PplGradientParams {
  DecisionBatch<T> in;
  double tau = 1.0;
  const T* grad_output = nullptr;  // [1] upstream gradient (same memory space as the inputs)
  T* grad_r_hat = nullptr;         // [n, m] output
  T* grad_c_hat = nullptr;         // [n, m] output
  // [1] optional output (CPU only): when set, the forward loss is written here too, bit for bit what
  // ppl_loss_forward_cpu returns, so one pass gives the loss and its gradient (the fused forward).
  T* loss = nullptr;
};

// PIFD / DIFD forward: the exact discrete decision loss
//   L = -sum_l sum_i 1[argmax_j a[l, i, j] == t_i] * w[l, i]
template <typename T>
struct PifdLossParams {
  DecisionBatch<T> in;
  double clip = 0.0;  // unused by the forward (kept so the glue builds both structs alike)
  T* loss = nullptr;  // [1] output
};

// Its finite-difference gradient w.r.t. the scores (METHOD.md section 3). For row i with chosen
// option k, runner-up s and C = w[l, i], the flip estimate dL/da[l, i, j] is
//   matched row (k == t_i):   j == k: -C / gap(a_k - a_s);   j != k: +C / gap(a_k - a_j)
//   unmatched row (k != t_i): j == t_i: -C / gap(a_k - a_t);
//                             j == k and s == t_i: +C / gap(a_k - a_t);   every other cell: 0
// where gap(g) = g, except: with a clip h > 0, g < h becomes h and g > h zeroes the cell; without
// a clip, g == 0 becomes kPifdZeroGapFloor. Then grad_r_hat = sum_l dL/da[l] and
// grad_c_hat = -sum_l lam[l] dL/da[l], scaled by grad_output[0].
template <typename T>
struct PifdGradientParams {
  DecisionBatch<T> in;
  double clip = 0.0;  // h; <= 0 means no clip
  const T* grad_output = nullptr;  // [1] upstream gradient
  T* grad_r_hat = nullptr;         // [n, m] output
  T* grad_c_hat = nullptr;         // [n, m] output
  // [1] optional output (CPU only): when set, the forward loss is written here too, bit for bit what
  // pifd_loss_forward_cpu returns (the fused forward).
  T* loss = nullptr;
};

// 1 / effective gap of the PIFD gradient (above), or 0 when the clip zeroes the cell. One copy for
// the CPU core and the CUDA kernels (std::max's rule: a NaN gap stays NaN on both).
template <typename T>
BIDFCL_HD inline T pifd_inv_gap(T gap, double clip) {
  if (clip > 0) {
    const T h = static_cast<T>(clip);
    if (gap > h) return T(0);
    return T(1) / (gap < h ? h : gap);
  }
  if (gap == T(0)) return static_cast<T>(1.0 / kPifdZeroGapFloor);
  return T(1) / gap;
}

template <typename T> Status ppl_loss_forward_cpu(const PplLossParams<T>& p);
template <typename T> Status ppl_loss_gradient_cpu(const PplGradientParams<T>& p);
template <typename T> Status pifd_loss_forward_cpu(const PifdLossParams<T>& p);
template <typename T> Status pifd_loss_gradient_cpu(const PifdGradientParams<T>& p);

}  // namespace bidfcl::core
