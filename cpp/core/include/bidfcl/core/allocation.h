// Multi-constraint allocation: one option per user, several linear constraints. Torch-free.
//
//   max_x  sum_i r[i, x_i]   over x_i in E_i (the eligible options of user i)
//   s.t.   sum_i c_k[i, x_i]               <= B_k          k = 0 .. K-1   (global resources)
//          #{i : x_i = m}                   <= cap_m        m = 0 .. M-1   (capacities)
//          sum_{i : g_i = g} c_k[i, x_i]    <= B_{k, g}     k, g           (group budgets)
//
// Every constraint is linear in the one-hot assignment, so with one multiplier lam_j >= 0 per
// constraint the problem separates per user. Constraint j is laid out in ONE vector of length
// J = K + M + K * G:
//   j = k                     global resource k
//   j = K + m                 capacity of option m
//   j = K + M + k * G + g     budget of group g on resource k
// An absent constraint has budget +inf and multiplier 0.
//
// The adjusted score of option m for user i, in the input dtype T, evaluated in exactly this order
// (multiply, then subtract; no fused multiply-add) by every CPU and CUDA routine:
//   w_k   = T(lam[k] + lam[K + M + k * G + g_i])      (the sum in double; no group term when G = 0)
//   s     = r[i, m];  for k = 0 .. K-1: s = s - w_k * c_k[i, m];  s = s - T(lam[K + m])
// The Lagrangian policy takes argmax_m s over eligible options, ties to the lowest option index.
// The dual function is D(lam) = sum_i max_m s_im + sum_j lam_j b_j, an upper bound on the LP
// relaxation and hence on the integer optimum (up to the rounding of s in T).
#pragma once

#include <cstdint>

#include "bidfcl/core/status.h"

#if defined(__CUDACC__)
#define BIDFCL_HD __host__ __device__
#else
#define BIDFCL_HD
#endif

namespace bidfcl::core {

template <typename T>
struct AllocationInput {
  const T* values = nullptr;     // [n, m] row-major: value of giving option j to user i (any sign, finite)
  const T* costs = nullptr;      // [k, n, m]: cost of option j to user i on resource k (finite, >= 0)
  const bool* eligible = nullptr;  // [n, m] or nullptr (every option eligible); each row needs a true
  const int64_t* groups = nullptr;  // [n] group of user i in [0, g), or nullptr when g == 0
  int64_t n = 0;                 // users
  int64_t m = 0;                 // options, 1 <= m <= kMaxOptions
  int64_t k = 0;                 // resources, >= 1
  int64_t g = 0;                 // groups (0: no group budgets)
  int num_threads = 1;           // threads; results do not depend on it
  bool check = true;             // validate every entry (false: the caller already did, on these inputs)
  int64_t num_constraints() const { return k + m + k * g; }
};

// The per-user step: the Lagrangian policy at fixed multipliers and its totals.
template <typename T>
struct AllocationPolicyParams {
  AllocationInput<T> in;
  const double* lam = nullptr;  // [J] multipliers, >= 0 and finite
  // outputs
  int64_t* choice = nullptr;      // [n] argmax of the adjusted score over eligible options
  double* spend = nullptr;        // [J] spend of `choice` per constraint (a count for capacities)
  double* value = nullptr;        // [1] sum_i r[i, choice_i]
  double* lagrangian = nullptr;   // [1] sum_i max_m s_im (add lam . b for the dual value)
};

// One coordinate of dual coordinate descent: minimises D over lam_j >= 0 with the other
// multipliers fixed, exactly (lam_j* is a breakpoint of the one-dimensional dual, or 0).
//   resource or group j: the single-budget problem on values r - (every other term of s) with
//                        costs c_k (masked by eligibility) and budget b_j, solved by
//                        run_solve_mckp_cpu; lam_j* is its multiplier;
//   capacity j = K + m:  with d_i = s_im + lam_j - max_{m' != m eligible} s_im', the (floor(cap)+1)-th
//                        largest d_i, or 0 when at most floor(cap) of them are positive.
// lam_out = +inf when even the cheapest eligible policy violates constraint j.
template <typename T>
struct AllocationLineSearchParams {
  AllocationInput<T> in;
  const double* lam = nullptr;      // [J] current multipliers
  const double* budgets = nullptr;  // [J] constraint limits: budgets with kBudgetSlack (+inf: absent)
  int64_t constraint = 0;           // j
  double* lam_out = nullptr;        // [1] the minimising lam_j
};

// The smoothed dual (softmax with temperature tau) and its derivatives, for the Newton phase:
//   D_tau(lam) = sum_i tau log sum_{m eligible} exp(s_im / tau) + lam . b   >= D(lam)
//   dD_tau/dlam_j = b_j - sum_i E_p[a_j(i, .)],   p_im = softmax_m(s_im / tau)
//   d2D_tau/dlam_j dlam_l = (1/tau) sum_i Cov_p(a_j(i, .), a_l(i, .))
// (a_j(i, m) is user i's use of constraint j under option m.) The outputs leave out the lam . b
// and b terms, which the caller adds. Users whose second-best option is more than 40 tau below the
// best contribute to the expectation exactly (one-hot) and nothing to the Hessian (< e^-40).
constexpr int64_t kMaxSmoothedConstraints = 128;  // J x J Hessians per chunk stay small

template <typename T>
struct AllocationSmoothedParams {
  AllocationInput<T> in;
  const double* lam = nullptr;  // [J]
  double tau = 1.0;             // > 0, in units of the values
  // outputs
  double* smoothed = nullptr;    // [1] sum_i tau log sum_m exp(s_im / tau)
  double* lagrangian = nullptr;  // [1] sum_i max_m s_im (the exact dual minus lam . b)
  double* expected = nullptr;    // [J] sum_i E_p[a_j]
  double* hessian = nullptr;     // [J, J] sum_i Cov_p(a_j, a_l) / tau
  int64_t* soft = nullptr;       // [1] users that contribute to the Hessian
};

// Primal repair and fill, from a starting choice (normally the Lagrangian policy).
//   repair: while a constraint is violated, apply the move (one user to another eligible option)
//           with the least value loss per unit of relative violation removed,
//             loss / sum_{violated j} (-delta_j) / spend_j,
//           among moves that raise no violated constraint and push no satisfied one over its
//           budget; ties to the lower user, then the lower option. Stops when all hold or no such
//           move is left (then `feasible` says which still fail).
//   fill:   then, while some move gains value and keeps every constraint within budget, apply the
//           one with the largest  gain - sum_j lam_j delta_j  (the least reduced-cost loss).
template <typename T>
struct AllocationRepairParams {
  AllocationInput<T> in;
  const double* lam = nullptr;      // [J] multipliers of the dual phase (rank the fill moves)
  const double* budgets = nullptr;  // [J] constraint limits: budgets with kBudgetSlack (+inf: absent)
  bool fill = true;                 // run the fill phase
  // in/out
  int64_t* choice = nullptr;  // [n] starting choice in, repaired choice out
  // outputs
  double* spend = nullptr;    // [J] spend of the final choice per constraint
  double* value = nullptr;    // [1] its value
  bool* feasible = nullptr;   // [J] spend_j <= b_j
  int64_t* moves = nullptr;   // [2] moves applied by the repair and by the fill
};

// Products rounded on their own (never fused into an FMA), on the host and on the device alike.
BIDFCL_HD inline float rounded_mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
BIDFCL_HD inline double rounded_mul(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

// The adjusted score s of option `col` (see the top of this file). costs_row points at resource
// 0's row of the user; resource kk's row is plane = n * m entries further. `w` holds the user's K
// resource weights, mu the option's capacity multiplier.
template <typename T>
BIDFCL_HD inline T adjusted_score(const T* values_row, const T* costs_row, int64_t plane, int64_t col, int64_t k,
                                  const T* w, T mu) {
  T s = values_row[col];
  for (int64_t kk = 0; kk < k; ++kk) s = s - rounded_mul(w[kk], costs_row[kk * plane + col]);
  return s - mu;
}

template <typename T> Status run_allocation_policy_cpu(const AllocationPolicyParams<T>& p);
template <typename T> Status run_allocation_line_search_cpu(const AllocationLineSearchParams<T>& p);
template <typename T> Status run_allocation_smoothed_cpu(const AllocationSmoothedParams<T>& p);
template <typename T> Status run_allocation_repair_cpu(const AllocationRepairParams<T>& p);

}  // namespace bidfcl::core
