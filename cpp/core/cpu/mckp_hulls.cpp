// Passes 1 and 3 of the exact solvers (see mckp_exact.cpp): hulls with validation and optional
// step-cost histograms, and the choices and totals under given cuts.
#include "mckp_internal.h"

namespace bidfcl::core::mckp_detail {

template <typename T>
Status build_hulls(const MckpInput<T>& in, Pass1<T>& p1, bool with_histogram) {
  const int64_t n = in.n, m = in.m;
  p1.hulls.n = n;
  p1.hulls.m = m;
  p1.hulls.idx.resize(static_cast<size_t>(n * m));
  p1.hulls.len.resize(static_cast<size_t>(n));
  p1.chunks = Chunking::make(n, 1 << 14, 32);
  const int64_t nc = p1.chunks.num_chunks;
  p1.base_spend.assign(nc, 0.0);
  p1.base_value.assign(nc, 0.0);
  if (with_histogram) p1.hist.assign(static_cast<size_t>(nc * kNumBuckets), 0.0);
  std::vector<Status> status(nc);
  std::vector<int64_t> steps(nc, 0);
  const HullBuilder<T> hull = hull_builder<T>(m);
  parallel_chunks(nc, in.num_threads, [&](int64_t ch) {
    uint8_t order[kMaxOptions];
    T bps[kMaxOptions];
    double spend = 0, value = 0;
    int64_t nsteps = 0;
    double* hist = with_histogram ? p1.hist.data() + ch * kNumBuckets : nullptr;
    for (int64_t i = p1.chunks.begin(ch); i < p1.chunks.end(ch); ++i) {
      const T* r = in.values + i * m;
      const T* c = in.costs + i * m;
      Status s = check_row(r, c, i, m);
      if (!s.ok()) {
        status[ch] = s;
        return;
      }
      uint8_t* h = p1.hulls.idx.data() + i * m;
      const int len = hull(r, c, static_cast<int>(m), h, order, bps);
      p1.hulls.len[i] = static_cast<uint16_t>(len);
      spend += double(c[h[0]]);
      value += double(r[h[0]]);
      nsteps += len - 1;
      if (hist) {
        for (int s2 = 1; s2 < len; ++s2) hist[bucket_of(bps[s2])] += double(c[h[s2]]) - double(c[h[s2 - 1]]);
      }
    }
    p1.base_spend[ch] = spend;
    p1.base_value[ch] = value;
    steps[ch] = nsteps;
  });
  Status first;
  for (const auto& s : status) keep_first(first, s);
  p1.num_steps = std::accumulate(steps.begin(), steps.end(), int64_t(0));
  return first;
}

namespace {

// Number of leading entries of the non-increasing a[0 .. k) that are >= x. Up to 32 entries, a
// count over all of them (vectorised, no dependent loads); beyond, a binary search whose steps
// depend only on k (a select, not a branch, picks each half), so neither mispredicts.
template <typename T>
inline int64_t count_at_least(const T* a, int64_t k, T x) {
  if (k <= 32) {
    int64_t count = 0;
    for (int64_t q = 0; q < k; ++q) count += a[q] >= x;
    return count;
  }
  const T* p = a;
  for (int64_t len = k; len > 1;) {
    const int64_t half = len / 2;
    p = p[half] >= x ? p + half : p;  // p[0 .. half] are all >= x then
    len -= half;
  }
  return (p - a) + (*p >= x);
}

// Pass 3 for several cuts. Every cut is a prefix of the one global order of steps, so sorted by
// length the cuts are nested: along the sorted cuts a user only ever takes more steps, and its step
// s is taken from one sorted position pt[s] on (non-decreasing in s). One binary search per hull
// step finds that position; the user's K choices are then runs of its hull points, and its
// contributions to the totals are the exact per-step differences, added at those positions (prefix
// sums per chunk at the end). A user so costs O(len log K + K) instead of K walks and K sums.
template <typename T>
std::vector<PolicyTotals> apply_sorted_cuts(const MckpInput<T>& in, const Pass1<T>& p1, const std::vector<Cut<T>>& cuts,
                                            int64_t* choice) {
  const int64_t nc = p1.chunks.num_chunks, m = in.m, n = in.n;
  const int64_t k = static_cast<int64_t>(cuts.size());
  constexpr T kInf = std::numeric_limits<T>::infinity();
  // shortest prefix first: infeasible (nothing), then lam descending and (individual, step)
  // ascending, then take_all (everything)
  auto kind = [&](int64_t q) { return cuts[q].infeasible ? 0 : (cuts[q].take_all ? 2 : 1); };
  std::vector<int64_t> order(k);
  std::iota(order.begin(), order.end(), int64_t(0));
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    const Cut<T>&x = cuts[a], &y = cuts[b];
    if (kind(a) != kind(b)) return kind(a) < kind(b);
    if (kind(a) == 1) {
      if (x.lam != y.lam) return x.lam > y.lam;
      if (x.individual != y.individual) return x.individual < y.individual;
      if (x.step != y.step) return x.step < y.step;
    }
    return a < b;
  });
  // lam of each sorted cut for the search: a step with bp below lam is never taken, above always;
  // infeasible takes nothing (+inf, and no tie is taken), take_all everything (-inf)
  std::vector<T> lam_sorted(k);
  std::vector<double> lam_dual(k);  // the lam of the dual bound (0 for infeasible and take_all)
  int64_t num_take_all = 0;
  for (int64_t pos = 0; pos < k; ++pos) {
    const Cut<T>& cut = cuts[order[pos]];
    lam_sorted[pos] = cut.infeasible ? kInf : (cut.take_all ? -kInf : cut.lam);
    lam_dual[pos] = cut.infeasible || cut.take_all ? 0.0 : double(cut.lam);
    num_take_all += cut.take_all;
  }
  // per chunk and sorted position: spend, value, and cost and value of the point above lam
  std::vector<double> diffs(static_cast<size_t>(nc * k * 4), 0.0);
  std::vector<double> base(static_cast<size_t>(nc * 2), 0.0);
  parallel_chunks(nc, in.num_threads, [&](int64_t ch) {
    double* d_spend = diffs.data() + ch * k * 4;
    double* d_value = d_spend + k;
    double* d_above_cost = d_value + k;
    double* d_above_value = d_above_cost + k;
    double base_cost = 0, base_value = 0;
    int64_t pt[kMaxOptions + 1];
    for (int64_t i = p1.chunks.begin(ch); i < p1.chunks.end(ch); ++i) {
      const T* r = in.values + i * m;
      const T* c = in.costs + i * m;
      const uint8_t* h = p1.hulls.row(i);
      const int len = p1.hulls.len[i];
      base_cost += double(c[h[0]]);
      base_value += double(r[h[0]]);
      pt[0] = 0;
      for (int s = 1; s < len; ++s) {
        const T bp = slope(r, c, h[s - 1], h[s]);
        // sorted cuts with lam >= bp: those with lam > bp do not take the step, those with lam == bp
        // (a run ending at `ge`) do not take it up to the first whose (individual, step) is above (i, s)
        const int64_t ge = count_at_least(lam_sorted.data(), k, bp);
        int64_t first = ge;
        if (ge > 0 && lam_sorted[ge - 1] == bp) {  // ties at lam: rare but for integer data
          int64_t gt = ge - 1;
          while (gt > 0 && lam_sorted[gt - 1] == bp) --gt;
          first = gt;
          while (first < ge) {
            const Cut<T>& cut = cuts[order[first]];
            const bool takes = !cut.infeasible && (i < cut.individual || (i == cut.individual && s < cut.step));
            if (takes) break;
            ++first;
          }
        }
        pt[s] = first;
        // strictly above lam from position ge on (take_all: above 0, which the last num_take_all
        // positions test as lam = 0; infeasible positions never)
        const int64_t above_from = ge + (bp > T(0) ? 0 : num_take_all);
        const double dc = double(c[h[s]]) - double(c[h[s - 1]]);
        const double dr = double(r[h[s]]) - double(r[h[s - 1]]);
        if (first < k) {
          d_spend[first] += dc;
          d_value[first] += dr;
        }
        if (above_from < k) {
          d_above_cost[above_from] += dc;
          d_above_value[above_from] += dr;
        }
      }
      // choices: hull point s from sorted position pt[s] to pt[s + 1]
      int64_t pos = 0;
      for (int s = 0; s < len; ++s) {
        const int64_t stop = s + 1 < len ? pt[s + 1] : k;
        for (; pos < stop; ++pos) choice[order[pos] * n + i] = h[s];
      }
    }
    base[ch * 2] = base_cost;
    base[ch * 2 + 1] = base_value;
  });
  std::vector<PolicyTotals> totals(k);
  for (int64_t ch = 0; ch < nc; ++ch) {
    const double* d = diffs.data() + ch * k * 4;
    double spend = base[ch * 2], value = base[ch * 2 + 1], above_cost = spend, above_value = value;
    for (int64_t pos = 0; pos < k; ++pos) {
      spend += d[pos];
      value += d[k + pos];
      above_cost += d[2 * k + pos];
      above_value += d[3 * k + pos];
      totals[order[pos]].add(spend, value, above_value - lam_dual[pos] * above_cost);
    }
  }
  return totals;
}

}  // namespace

template <typename T>
std::vector<PolicyTotals> apply_cuts(const MckpInput<T>& in, const Pass1<T>& p1, const std::vector<Cut<T>>& cuts,
                                     int64_t* choice) {
  const int64_t nc = p1.chunks.num_chunks, m = in.m, n = in.n;
  const int64_t k = static_cast<int64_t>(cuts.size());
  // The sorted pass needs a finite lam >= 0 on every ordinary cut (as the solvers' cuts have, short
  // of an infinite breakpoint): a negative, infinite or NaN lam, which a hand-made cut can have,
  // takes the per-cut walk below, whose per-user Lagrangian terms give the twin's inf and NaN.
  const bool ordinary = std::all_of(cuts.begin(), cuts.end(), [](const Cut<T>& x) {
    return x.infeasible || x.take_all || (x.lam >= T(0) && x.lam < std::numeric_limits<T>::infinity());
  });
  if (k > 1 && ordinary) return apply_sorted_cuts(in, p1, cuts, choice);
  std::vector<double> lams(k);
  for (int64_t q = 0; q < k; ++q) lams[q] = cuts[q].infeasible || cuts[q].take_all ? 0.0 : double(cuts[q].lam);
  std::vector<PolicyTotals> parts(nc * k);
  parallel_chunks(nc, in.num_threads, [&](int64_t ch) {
    PolicyTotals* acc = parts.data() + ch * k;
    T bp[kMaxOptions];
    for (int64_t i = p1.chunks.begin(ch); i < p1.chunks.end(ch); ++i) {
      const T* r = in.values + i * m;
      const T* c = in.costs + i * m;
      const uint8_t* h = p1.hulls.row(i);
      const int len = p1.hulls.len[i];
      hull_breakpoints(r, c, h, len, bp);
      for (int64_t q = 0; q < k; ++q) {
        int taken, above;
        steps_taken(bp, len, i, cuts[q], taken, above);
        const int j = h[taken];
        choice[q * n + i] = j;
        acc[q].add(double(c[j]), double(r[j]), double(r[h[above]]) - lams[q] * double(c[h[above]]));
      }
    }
  });
  std::vector<PolicyTotals> totals(k);
  for (int64_t ch = 0; ch < nc; ++ch)
    for (int64_t q = 0; q < k; ++q) totals[q].add(parts[ch * k + q]);
  return totals;
}

#define BIDFCL_INSTANTIATE(T)                                                                                        \
  template Status build_hulls<T>(const MckpInput<T>&, Pass1<T>&, bool);                                              \
  template std::vector<PolicyTotals> apply_cuts<T>(const MckpInput<T>&, const Pass1<T>&, const std::vector<Cut<T>>&, \
                                                   int64_t*);
BIDFCL_INSTANTIATE(float)
BIDFCL_INSTANTIATE(double)
#undef BIDFCL_INSTANTIATE

}  // namespace bidfcl::core::mckp_detail
