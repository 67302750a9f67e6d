// Surrogate decision losses, IPW policy estimators and the AUCC metric (METHOD.md sections 2-3).
// Torch-free: raw row-major pointers, sizes and a thread count.
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

#include "bidfcl/core/status.h"

namespace bidfcl::core {

// Which input a kNonFiniteInput status refers to: stored in Status::col.
enum class LossInput : int64_t { kRevenue = 0, kCost = 1, kLam = 2, kPropensity = 3 };

// Gap used by PIFD when a flip needs a score move of exactly zero (a tie at the top) and no clip
// is set: the move is taken as this many score units, so the estimate stays finite.
constexpr double kPifdZeroGapFloor = 1e-6;

constexpr int64_t kMaxLossOptions = 256;  // per-row scratch lives on the stack

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
  int64_t m = 0;                       // options, >= 2
  int64_t l = 0;                       // multipliers, >= 1
  int num_threads = 1;                 // results do not depend on it
};

// PPL / DPL / MER forward:
//   z[l, i, :] = softmax(a[l, i, :] / tau),   L = -sum_l sum_i z[l, i, t_i] * w[l, i]
// (On the CPU, float32 evaluates exp with a vectorisable polynomial, relative error < 1e-7;
// float64 uses libm.)
template <typename T>
struct SoftmaxLossParams {
  DecisionBatch<T> in;
  double tau = 1.0;  // temperature, > 0
  T* loss = nullptr;  // [1] output
};

// Its gradient, scaled by the upstream gradient grad_output[0]:
//   dL/da[l, i, j] = -(w[l, i] / tau) * z[l, i, t_i] * (1[j == t_i] - z[l, i, j])
//   grad_r_hat = sum_l dL/da[l],  grad_c_hat = -sum_l lam[l] * dL/da[l]
template <typename T>
struct SoftmaxLossBackwardParams {
  DecisionBatch<T> in;
  double tau = 1.0;
  const T* grad_output = nullptr;  // [1] upstream gradient (same memory space as the inputs)
  T* grad_r_hat = nullptr;         // [n, m] output
  T* grad_c_hat = nullptr;         // [n, m] output
  // [1] optional output (CPU only): when set, the forward loss is written here too, bit for bit what
  // softmax_loss_cpu returns, so one pass gives the loss and its gradient (the fused forward).
  T* loss = nullptr;
};

// PIFD / DIFD forward: the exact discrete decision loss
//   L = -sum_l sum_i 1[argmax_j a[l, i, j] == t_i] * w[l, i]
template <typename T>
struct FlipLossParams {
  DecisionBatch<T> in;
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
struct FlipLossBackwardParams {
  DecisionBatch<T> in;
  double clip = 0.0;  // h; <= 0 means no clip
  const T* grad_output = nullptr;  // [1] upstream gradient
  T* grad_r_hat = nullptr;         // [n, m] output
  T* grad_c_hat = nullptr;         // [n, m] output
  // [1] optional output (CPU only): when set, the forward loss is written here too, bit for bit what
  // flip_loss_cpu returns (the fused forward).
  T* loss = nullptr;
};

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
// NaN when C(n) <= 0 or R(n) == 0 (no cost or revenue gain to normalise by).
constexpr double kAuccMinCostGap = 1e-12;

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

template <typename T> Status softmax_loss_cpu(const SoftmaxLossParams<T>& p);
template <typename T> Status softmax_loss_backward_cpu(const SoftmaxLossBackwardParams<T>& p);
template <typename T> Status flip_loss_cpu(const FlipLossParams<T>& p);
template <typename T> Status flip_loss_backward_cpu(const FlipLossBackwardParams<T>& p);
template <typename T> Status policy_value_cpu(const PolicyValueParams<T>& p);
template <typename T> Status aucc_cpu(const AuccParams<T>& p);

}  // namespace bidfcl::core
