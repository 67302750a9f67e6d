// CPU implementation of the exact MCKP solve of mckp.h (solve_mckp).
//
// Exact solve, full algorithm (any number of budgets), in three passes over the individuals (fixed
// chunks, so results do not depend on the thread count):
//   1. hulls: per individual the upper concave hull (stored as uint8 option indices), the cheapest
//      policy's spend and value, and a per-chunk histogram of step costs keyed by the breakpoint's
//      top float bits (64 buckets per octave);
//   2. per budget, the bucket where the cumulative spend (steps in decreasing bp) crosses it; the
//      steps in those buckets are gathered and sorted exactly, giving each budget's cut;
//   3. choices for all cuts in one pass, with spend, value and the dual bound.
// On a large N the budgets first try the bracketed fast path (mckp_bracket.cpp; why it is exact: mckp_internal.h),
// which settles most individuals without a hull and falls back here when its bracket misses (or,
// for several budgets, when one bracket spanning all of them would hold most of the steps).
// No tolerance anywhere: lam* is one of the breakpoints (or 0).
#include "bidfcl/core/memory.h"
#include "mckp_internal.h"

namespace bidfcl::core {
namespace mckp_detail {
namespace {

// Gathers the steps whose bucket is marked (bucket_slot[b] >= 0) into one list per slot, in
// (individual, step) order, then sorts each list into the global order.
template <typename T>
std::vector<std::vector<StepRef<T>>> gather_buckets(const MckpInput<T>& in, const Pass1<T>& p1,
                                                    const std::vector<int32_t>& bucket_slot, int num_slots) {
  const int64_t nc = p1.chunks.num_chunks, m = in.m;
  std::vector<std::vector<std::vector<StepRef<T>>>> per_chunk(nc, std::vector<std::vector<StepRef<T>>>(num_slots));
  parallel_chunks(nc, in.num_threads, [&](int64_t ch) {
    auto& lists = per_chunk[ch];
    for (int64_t i = p1.chunks.begin(ch); i < p1.chunks.end(ch); ++i) {
      const T* r = in.values + i * m;
      const T* c = in.costs + i * m;
      const uint8_t* h = p1.hulls.row(i);
      const int len = p1.hulls.len[i];
      for (int s = 1; s < len; ++s) {
        const T bp = slope(r, c, h[s - 1], h[s]);
        const int32_t slot = bucket_slot[bucket_of(bp)];
        if (slot >= 0) lists[slot].push_back({bp, i * m + s});
      }
    }
  });
  std::vector<std::vector<StepRef<T>>> out(num_slots);
  for (int sl = 0; sl < num_slots; ++sl) {
    size_t total = 0;
    for (int64_t ch = 0; ch < nc; ++ch) total += per_chunk[ch][sl].size();
    out[sl].reserve(total);
    for (int64_t ch = 0; ch < nc; ++ch)
      out[sl].insert(out[sl].end(), per_chunk[ch][sl].begin(), per_chunk[ch][sl].end());
    std::sort(out[sl].begin(), out[sl].end(), order_before<T>);
  }
  return out;
}

template <typename T>
inline double step_cost(const MckpInput<T>& in, const Hulls& hulls, int64_t id) {
  const int64_t i = id / in.m, s = id % in.m;
  const uint8_t* h = hulls.row(i);
  const T* c = in.costs + i * in.m;
  return double(c[h[s]]) - double(c[h[s - 1]]);
}

// Finds the cut for one total budget from the bucket totals; returns the bucket that needs an exact
// look (or -1 when the cut is already known: infeasible or take_all).
struct BucketScan {
  int64_t bucket = -1;
  double spend_before = 0;  // spend of the policy taking every step in higher buckets
};

inline BucketScan scan_buckets(const std::vector<double>& total, double base, double budget, int64_t from) {
  BucketScan out;
  double cum = base;
  for (int64_t b = from; b >= 0; --b) {
    if (total[b] == 0) continue;
    if (cum + total[b] > budget) {
      out.bucket = b;
      out.spend_before = cum;
      return out;
    }
    cum += total[b];
  }
  out.spend_before = cum;
  return out;
}

}  // namespace
}  // namespace mckp_detail

using namespace mckp_detail;

template <typename T>
Status run_solve_mckp_cpu(const MckpSolveParams<T>& p) {
  const MckpInput<T>& in = p.in;
  advise_huge_pages(p.choice, static_cast<size_t>(p.k) * static_cast<size_t>(in.n) * sizeof(int64_t));
  if (in.n >= kBracketMinN) {
    Status st;
    switch (bracketed_solve(p, st)) {
      case FastPath::kSolved: return Status::Ok();
      case FastPath::kError: return st;
      case FastPath::kFallBack: break;
    }
  }
  Pass1<T> p1;
  Status st = build_hulls(in, p1, /*with_histogram=*/true);
  if (!st.ok()) return st;
  const int64_t nc = p1.chunks.num_chunks;
  std::vector<double> total(kNumBuckets, 0.0);
  for (int64_t ch = 0; ch < nc; ++ch) {
    const double* h = p1.hist.data() + ch * kNumBuckets;
    for (int64_t b = 0; b < kNumBuckets; ++b) total[b] += h[b];
  }
  p1.hist.clear();
  p1.hist.shrink_to_fit();
  const double base = chunk_sum<T>(p1.base_spend);

  // Cuts for every budget: bucket scan, then one gather pass for all buckets that need a close look.
  std::vector<Cut<T>> cuts(p.k);
  std::vector<BucketScan> scans(p.k);
  std::vector<int64_t> pending;
  for (int64_t kk = 0; kk < p.k; ++kk) {
    const double budget = p.budgets[kk];
    if (base > budget) {
      cuts[kk].infeasible = true;
      continue;
    }
    scans[kk] = scan_buckets(total, base, budget, kNumBuckets - 1);
    if (scans[kk].bucket < 0) cuts[kk].take_all = true;
    else pending.push_back(kk);
  }
  while (!pending.empty()) {
    std::vector<int32_t> slot(kNumBuckets, -1);
    std::vector<int64_t> slot_bucket;
    for (int64_t kk : pending) {
      const int64_t b = scans[kk].bucket;
      if (slot[b] < 0) {
        slot[b] = static_cast<int32_t>(slot_bucket.size());
        slot_bucket.push_back(b);
      }
    }
    auto lists = gather_buckets(in, p1, slot, static_cast<int>(slot_bucket.size()));
    std::vector<int64_t> still;
    for (int64_t kk : pending) {
      const double budget = p.budgets[kk];
      const auto& list = lists[slot[scans[kk].bucket]];
      double spend = scans[kk].spend_before;
      bool cut_found = false;
      for (const auto& step : list) {
        const double dc = step_cost(in, p1.hulls, step.id);
        if (spend + dc > budget) {
          cuts[kk].lam = step.bp;
          cuts[kk].individual = step.id / in.m;
          cuts[kk].step = step.id % in.m;
          cut_found = true;
          break;
        }
        spend += dc;
      }
      if (cut_found) continue;
      // The bucket total said "over budget" but the exact walk fits (the two sums round
      // differently): carry on below this bucket.
      scans[kk] = scan_buckets(total, spend, budget, scans[kk].bucket - 1);
      if (scans[kk].bucket < 0) cuts[kk].take_all = true;
      else still.push_back(kk);
    }
    pending.swap(still);
  }
  const std::vector<PolicyTotals> totals = apply_cuts(in, p1, cuts, p.choice);
  for (int64_t kk = 0; kk < p.k; ++kk) write_solution(p, kk, cuts[kk], totals[kk]);
  return Status::Ok();
}

template Status run_solve_mckp_cpu<float>(const MckpSolveParams<float>&);
template Status run_solve_mckp_cpu<double>(const MckpSolveParams<double>&);

}  // namespace bidfcl::core
