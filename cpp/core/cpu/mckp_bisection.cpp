// CPU bisection on lam of mckp.h (the paper's Alg. 2), kept as a peer for the exact solve.
#include "mckp_internal.h"

namespace bidfcl::core {

using namespace mckp_detail;

template <typename T>
Status run_solve_mckp_bisection_cpu(const MckpBisectionParams<T>& bp) {
  const MckpSolveParams<T>& p = bp.out;
  const MckpInput<T>& in = p.in;
  const int64_t n = in.n, m = in.m;
  const Chunking chunks = Chunking::make(n, 1 << 14, 64);
  const int64_t nc = chunks.num_chunks;
  {
    std::vector<Status> status(nc);
    parallel_chunks(nc, in.num_threads, [&](int64_t ch) {
      for (int64_t i = chunks.begin(ch); i < chunks.end(ch); ++i) {
        Status s = check_row(in.values + i * m, in.costs + i * m, i, m);
        if (!s.ok()) {
          status[ch] = s;
          return;
        }
      }
    });
    Status first;
    for (const auto& s : status) keep_first(first, s);
    if (!first.ok()) return first;
  }
  // Policy at a multiplier: argmax_j (r_ij - lam c_ij), ties to the lowest option index.
  // Computed as two rounded operations (multiply, then subtract), exactly like the twin.
  auto evaluate = [&](T lam, int64_t* choice) {
    std::vector<PolicyTotals> parts(nc);
    parallel_chunks(nc, in.num_threads, [&](int64_t ch) {
      PolicyTotals acc;
      for (int64_t i = chunks.begin(ch); i < chunks.end(ch); ++i) {
        const T* r = in.values + i * m;
        const T* c = in.costs + i * m;
        int best = 0;
        T best_score = r[0] - lam * c[0];
        for (int j = 1; j < m; ++j) {
          const T prod = lam * c[j];
          const T score = r[j] - prod;
          if (score > best_score) {
            best_score = score;
            best = j;
          }
        }
        if (choice) choice[i] = best;
        acc.spend += double(c[best]);
        acc.value += double(r[best]);
        acc.lagrangian += double(best_score);
      }
      parts[ch] = acc;
    });
    PolicyTotals total;
    for (const auto& q : parts) {
      total.spend += q.spend;
      total.value += q.value;
      total.lagrangian += q.lagrangian;
    }
    return total;
  };
  // Upper end of the bracket: the largest value/cost ratio (the paper's max r/c).
  T ratio_max = T(0);
  for (int64_t i = 0; i < n * m; ++i)
    if (in.costs[i] > T(0) && in.values[i] > T(0)) ratio_max = std::max<T>(ratio_max, in.values[i] / in.costs[i]);
  if (!(ratio_max > T(0))) ratio_max = T(1);
  for (int64_t kk = 0; kk < p.k; ++kk) {
    const double budget = p.budgets[kk];
    T lo = T(0), hi = ratio_max;
    bool feasible = true;
    if (evaluate(T(0), nullptr).spend <= budget) {
      hi = T(0);
    } else {
      int doublings = 0;
      while (evaluate(hi, nullptr).spend > budget) {
        lo = hi;
        hi = hi * T(2);
        if (++doublings > 64 || !std::isfinite(double(hi))) {
          feasible = false;
          break;
        }
      }
      for (int64_t it = 0; feasible && it < bp.max_iter && (hi - lo) > T(bp.tol) * hi; ++it) {
        const T mid = lo + (hi - lo) / T(2);
        if (evaluate(mid, nullptr).spend <= budget) hi = mid;
        else lo = mid;
      }
    }
    if (!feasible) hi = lo;
    const PolicyTotals t = evaluate(hi, p.choice + kk * n);
    p.lam[kk] = feasible ? hi : std::numeric_limits<T>::infinity();
    p.spend[kk] = t.spend;
    p.value[kk] = t.value;
    p.feasible[kk] = feasible && t.spend <= budget;
    p.dual_bound[kk] = feasible ? double(hi) * budget + t.lagrangian : -std::numeric_limits<double>::infinity();
  }
  return Status::Ok();
}

template Status run_solve_mckp_bisection_cpu<float>(const MckpBisectionParams<float>&);
template Status run_solve_mckp_bisection_cpu<double>(const MckpBisectionParams<double>&);

}  // namespace bidfcl::core
