// CPU implementation of the AUCC metric of metrics.h: ROI keys and validation in one parallel pass,
// a stable LSD radix sort of order-preserving keys (ties keep row order), then the running sums in
// rank order and one binary search per cost level.
#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "bidfcl/core/metrics.h"
#include "bidfcl/core/parallel.h"

namespace bidfcl::core {
namespace {

// Order-preserving unsigned image of a float: a < b  <=>  key(a) < key(b) (for non-NaN, +0 == -0
// after the caller adds 0.0).
inline uint32_t ordered_key(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
inline uint64_t ordered_key(double f) {
  const uint64_t u = std::bit_cast<uint64_t>(f);
  return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

// Stable LSD radix sort of (key, index) pairs by key ascending, 11 bits per pass. Returns the
// indices in order. Passes whose digit is constant over all keys are skipped.
template <typename K>
std::vector<uint32_t> radix_argsort(std::vector<K>& keys, int num_threads) {
  const int64_t n = static_cast<int64_t>(keys.size());
  constexpr int kBits = 11;
  constexpr int64_t kRadix = int64_t(1) << kBits;
  constexpr int kPasses = (int(sizeof(K)) * 8 + kBits - 1) / kBits;
  std::vector<uint32_t> idx(n), idx_tmp(n);
  std::vector<K> key_tmp(n);
  for (int64_t i = 0; i < n; ++i) idx[i] = static_cast<uint32_t>(i);
  const Chunking chunks = Chunking::make(n, 1 << 16, 64);
  const int64_t nc = chunks.num_chunks;
  std::vector<int64_t> hist(nc * kRadix);
  for (int pass = 0; pass < kPasses; ++pass) {
    const int shift = pass * kBits;
    std::fill(hist.begin(), hist.end(), 0);
    parallel_chunks(nc, num_threads, [&](int64_t ch) {
      int64_t* h = hist.data() + ch * kRadix;
      for (int64_t i = chunks.begin(ch); i < chunks.end(ch); ++i) ++h[(keys[i] >> shift) & (kRadix - 1)];
    });
    // skip a pass where every key has the same digit
    bool constant = false;
    for (int64_t d = 0; d < kRadix && !constant; ++d) {
      int64_t tot = 0;
      for (int64_t ch = 0; ch < nc; ++ch) tot += hist[ch * kRadix + d];
      if (tot == n) constant = true;
      if (tot != 0 && tot != n) break;
    }
    if (constant) continue;
    // exclusive offsets: digit-major, chunk-minor (keeps the sort stable)
    int64_t run = 0;
    for (int64_t d = 0; d < kRadix; ++d) {
      for (int64_t ch = 0; ch < nc; ++ch) {
        const int64_t c = hist[ch * kRadix + d];
        hist[ch * kRadix + d] = run;
        run += c;
      }
    }
    parallel_chunks(nc, num_threads, [&](int64_t ch) {
      int64_t* h = hist.data() + ch * kRadix;
      for (int64_t i = chunks.begin(ch); i < chunks.end(ch); ++i) {
        const int64_t pos = h[(keys[i] >> shift) & (kRadix - 1)]++;
        key_tmp[pos] = keys[i];
        idx_tmp[pos] = idx[i];
      }
    });
    keys.swap(key_tmp);
    idx.swap(idx_tmp);
  }
  return idx;
}

}  // namespace

template <typename T>
Status aucc_curve_cpu(const AuccParams<T>& p) {
  const int64_t n = p.n;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (n == 0) {  // nothing to rank
    p.aucc[0] = nan;
    std::fill(p.cost_curve, p.cost_curve + p.q + 1, 0.0);
    std::fill(p.revenue_curve, p.revenue_curve + p.q + 1, 0.0);
    return Status::Ok();
  }
  using Key = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  std::vector<Key> keys(n);
  const Chunking chunks = Chunking::make(n, 1 << 14, 256);
  std::vector<Status> status(chunks.num_chunks);
  std::vector<int64_t> treated(chunks.num_chunks, 0);
  parallel_chunks(chunks.num_chunks, p.num_threads, [&](int64_t ch) {
    int64_t n1 = 0;
    for (int64_t i = chunks.begin(ch); i < chunks.end(ch); ++i) {
      const Status rs = check_aucc_row(p, i);
      if (!rs.ok()) {
        status[ch] = rs;
        return;
      }
      n1 += p.treatment[i];
      keys[i] = ~ordered_key(aucc_roi(p, i));  // ascending key = descending roi
    }
    treated[ch] = n1;
  });
  Status first;
  for (const auto& st : status) keep_first(first, st);
  if (!first.ok()) return first;
  int64_t n1 = 0;
  for (int64_t x : treated) n1 += x;
  const int64_t n0 = n - n1;
  const Status arms = aucc_arm_status(n1, n);
  if (!arms.ok()) return arms;

  const std::vector<uint32_t> order = radix_argsort(keys, p.num_threads);
  // per-rank increments (random reads, in parallel), then C(k), R(k) for k = 0..n and the running
  // max of C by one sequential scan (the sums' order is fixed: rank order)
  std::vector<double> cum_c(n + 1), cum_r(n + 1), max_c(n + 1);
  const double dn1 = double(n1), dn0 = double(n0);
  parallel_chunks(chunks.num_chunks, p.num_threads, [&](int64_t ch) {
    for (int64_t k = chunks.begin(ch); k < chunks.end(ch); ++k) {
      const int64_t i = order[k];
      if (p.treatment[i] == 1) {
        cum_c[k + 1] = double(p.cost[i]) / dn1;
        cum_r[k + 1] = double(p.revenue[i]) / dn1;
      } else {
        cum_c[k + 1] = -(double(p.cost[i]) / dn0);
        cum_r[k + 1] = -(double(p.revenue[i]) / dn0);
      }
    }
  });
  cum_c[0] = cum_r[0] = max_c[0] = 0.0;
  double cc = 0, rr = 0, mc = 0;
  for (int64_t k = 1; k <= n; ++k) {
    cc += cum_c[k];
    rr += cum_r[k];
    cum_c[k] = cc;
    cum_r[k] = rr;
    mc = std::max(mc, cc);
    max_c[k] = mc;
  }
  const double c_tot = cum_c[n], r_tot = cum_r[n];
  double area = 0;
  for (int64_t qq = 0; qq <= p.q; ++qq) {
    const double level = c_tot * (double(qq) / double(p.q));
    const int64_t k = std::lower_bound(max_c.begin(), max_c.end(), level) - max_c.begin();
    const int64_t kk = std::min(k, n);
    p.cost_curve[qq] = cum_c[kk];
    p.revenue_curve[qq] = cum_r[kk];
    area += cum_r[kk];
  }
  p.aucc[0] = (c_tot > 0 && r_tot != 0) ? area / (r_tot * double(p.q + 1)) : nan;
  return Status::Ok();
}

template Status aucc_curve_cpu<float>(const AuccParams<float>&);
template Status aucc_curve_cpu<double>(const AuccParams<double>&);

}  // namespace bidfcl::core
