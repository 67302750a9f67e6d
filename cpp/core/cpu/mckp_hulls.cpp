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

template <typename T>
std::vector<PolicyTotals> apply_cuts(const MckpInput<T>& in, const Pass1<T>& p1, const std::vector<Cut<T>>& cuts,
                                     int64_t* choice) {
  const int64_t nc = p1.chunks.num_chunks, m = in.m, n = in.n;
  const int64_t k = static_cast<int64_t>(cuts.size());
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
