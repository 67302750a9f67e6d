// Multiple-choice knapsack (MCKP) solvers: one option per individual, one global budget.
// Torch-free: raw row-major pointers, sizes and a thread count. See METHOD.md section 1.
//
// Vocabulary used throughout:
//   hull      per individual, the options that some multiplier lam >= 0 can select: the upper
//             concave hull of the points (cost, value), cheapest first. Ties: equal (cost, value)
//             points keep the lowest option index; collinear points are kept (finer upgrades).
//   step s    moving individual i from hull point s-1 to hull point s (s = 1 .. len-1). It costs
//             dc = c[h_s] - c[h_{s-1}] > 0 and gains dv = r[h_s] - r[h_{s-1}] > 0.
//   bp        the step's breakpoint dv/dc computed in the input dtype as
//             (r[h_s] - r[h_{s-1}]) / (c[h_s] - c[h_{s-1}]); non-increasing along a hull.
//   order     all steps of all individuals sorted by (bp descending, individual ascending, step
//             ascending). Taking a prefix of that order is a policy; the budget frontier lists
//             them all, and the exact solve takes the longest prefix that fits the budget.
//   cut       that prefix, stored as (lam, individual, step) of the first step NOT taken:
//             step (i, s) is taken iff bp > lam, or bp == lam and (i, s) < (individual, step).
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "bidfcl/core/constants.h"  // kMaxOptions (hull indices are stored as uint8)
#include "bidfcl/core/status.h"

namespace bidfcl::core {

// kMaxOptions and kBudgetSlack (how budgets are compared) live in constants.h.

template <typename T>
struct MckpInput {
  const T* values = nullptr;  // [n, m] row-major: value (revenue) of giving option j to individual i
  const T* costs = nullptr;   // [n, m] row-major: cost of that; finite and >= 0
  int64_t n = 0;              // individuals (may exceed 2^31)
  int64_t m = 0;              // options, 1 <= m <= kMaxOptions
  int num_threads = 1;        // threads to use; results do not depend on it
};

// Which steps a policy takes; see "cut" above.
template <typename T>
struct Cut {
  bool infeasible = false;  // even the cheapest policy exceeds the budget: take no step
  bool take_all = false;    // every step fits: lam = 0
  T lam = T(0);
  int64_t individual = 0;
  int64_t step = 0;
};

template <typename T>
struct MckpSolveParams {
  MckpInput<T> in;
  const double* budgets = nullptr;  // [k] total budget limits (budgets with kBudgetSlack), >= 0
  int64_t k = 0;
  // outputs
  T* lam = nullptr;              // [k] smallest multiplier whose policy fits (+inf if infeasible)
  int64_t* choice = nullptr;     // [k, n] chosen option per individual
  double* spend = nullptr;       // [k] total cost of the choice
  double* value = nullptr;       // [k] total value of the choice
  double* dual_bound = nullptr;  // [k] lam*B + sum_i max_j (r_ij - lam c_ij) >= integer optimum
  bool* feasible = nullptr;      // [k] false when the budget is below the cheapest policy
};

template <typename T>
struct MckpBisectionParams {
  MckpSolveParams<T> out;  // same inputs and outputs as the exact solve
  int64_t max_iter = 50;   // bisection steps after bracketing
  double tol = 1e-6;       // stop when hi - lo <= tol * hi
};

template <typename T>
struct FrontierResult {
  std::vector<T> lam;        // [P+1]; lam[0] = +inf (no step), lam[k] = bp of the k-th step
  std::vector<double> spend;  // [P+1] total cost after the first k steps of the order
  std::vector<double> value;  // [P+1] total value after the first k steps
};

template <typename T>
struct MckpRctParams {
  MckpInput<T> in;
  const int64_t* treatment = nullptr;  // [n] randomised arm of individual i, in [0, m)
  const T* cost_obs = nullptr;         // [n] observed cost of individual i under its arm
  const T* propensity = nullptr;       // [n] probability of individual i's own arm, in (0, 1]
  const double* budgets = nullptr;     // [k] per-capita budget limits (with kBudgetSlack), >= 0
  int64_t k = 0;
  // outputs
  T* lam = nullptr;           // [k]
  int64_t* choice = nullptr;  // [k, n]
  double* spend = nullptr;    // [k] IPW estimate of per-capita spend of the choice
  bool* feasible = nullptr;   // [k]
};

// The steps of the order as a flat list, for selections that run over several shards of the
// individuals (ranks of a process group, chunks of a file): a shard's events, with the shard's
// row offset added to `id`, merge into the global order by (bp desc, id asc).
//   without treatment: every hull step is an event, delta = dc (the spend it adds);
//   with treatment t and weights w (RCT): only the steps where individual i's choice starts or
//     stops matching t_i, delta = +w_i / -w_i (the IPW spend estimate it adds); base = sum of w_i
//     over individuals whose cheapest hull point is t_i.
// Events come in (individual asc, step asc) order, NOT sorted by bp.
template <typename T>
struct MckpEventsParams {
  MckpInput<T> in;
  const int64_t* treatment = nullptr;  // [n] in [0, m), or null for the plain (total spend) events
  const double* weight = nullptr;      // [n] IPW weight of each row (with treatment)
};

template <typename T>
struct EventList {
  std::vector<T> bp;          // breakpoint of the step
  std::vector<int64_t> id;    // individual * m + step
  std::vector<double> delta;  // what applying the step adds to the spend (or its estimate)
  double base = 0;            // spend (estimate) of the cheapest policy
};

// Choices, totals and sum_i max_j (r_ij - lam c_ij) for given cuts (see "cut" above); the
// Lagrangian sum uses lam (0 for take_all) and is meaningless for an infeasible cut.
template <typename T>
struct MckpApplyParams {
  MckpInput<T> in;
  const Cut<T>* cuts = nullptr;  // [k]
  int64_t k = 0;
  int64_t* choice = nullptr;     // [k, n]
  double* spend = nullptr;       // [k]
  double* value = nullptr;       // [k]
  double* lagrangian = nullptr;  // [k]
};

template <typename T> Status run_mckp_events_cpu(const MckpEventsParams<T>& p, EventList<T>& out);
template <typename T> Status run_apply_mckp_cut_cpu(const MckpApplyParams<T>& p);

template <typename T> Status run_solve_mckp_cpu(const MckpSolveParams<T>& p);
template <typename T> Status run_solve_mckp_bisection_cpu(const MckpBisectionParams<T>& p);
template <typename T> Status run_budget_frontier_cpu(const MckpInput<T>& in, FrontierResult<T>& out);
template <typename T> Status run_solve_mckp_rct_cpu(const MckpRctParams<T>& p);

}  // namespace bidfcl::core
