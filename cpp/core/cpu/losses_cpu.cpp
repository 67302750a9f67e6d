// CPU implementation of the decision losses, policy estimators and AUCC declared in losses.h.
//
// The losses are one pass over rows in fixed chunks (parallel.h): each chunk sums its rows' loss
// into its own double slot and the slots are added in chunk order, so the result does not depend
// on the thread count. Backward passes recompute the row's scores instead of storing them.
#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <vector>

#include "bidfcl/core/losses.h"
#include "bidfcl/core/parallel.h"

namespace bidfcl::core {
namespace {

constexpr int64_t kRowsPerChunk = 1 << 12;

template <typename T>
Status check_lam(const DecisionBatch<T>& in) {
  for (int64_t l = 0; l < in.l; ++l) {
    if (!std::isfinite(in.lam[l])) {
      return {Code::kNonFiniteInput, l, static_cast<int64_t>(LossInput::kLam), double(in.lam[l])};
    }
  }
  return Status::Ok();
}

// Validates row i of a decision batch.
template <typename T>
inline Status check_decision_row(const DecisionBatch<T>& in, int64_t i) {
  const T* r = in.r_hat + i * in.m;
  const T* c = in.c_hat + i * in.m;
  for (int64_t j = 0; j < in.m; ++j) {
    if (!std::isfinite(r[j])) return {Code::kNonFiniteValue, i, j, double(r[j])};
    if (!std::isfinite(c[j])) return {Code::kNonFiniteCost, i, j, double(c[j])};
  }
  const int64_t t = in.treatment[i];
  if (t < 0 || t >= in.m) return {Code::kBadTreatment, i, in.m, double(t)};
  if (!std::isfinite(in.revenue[i])) {
    return {Code::kNonFiniteInput, i, static_cast<int64_t>(LossInput::kRevenue), double(in.revenue[i])};
  }
  if (in.cost && !std::isfinite(in.cost[i])) {
    return {Code::kNonFiniteInput, i, static_cast<int64_t>(LossInput::kCost), double(in.cost[i])};
  }
  const T p = in.propensity[i];
  if (!(p > T(0) && p <= T(1))) return {Code::kBadPropensity, i, 0, double(p)};
  return Status::Ok();
}

// w[l, i] = reward / (n p_i), in the input dtype (as the twin computes it).
template <typename T>
inline T row_weight(const DecisionBatch<T>& in, int64_t i, T lam) {
  const T reward = in.cost ? in.revenue[i] - lam * in.cost[i] : in.revenue[i];
  return reward / (static_cast<T>(in.n) * in.propensity[i]);
}

// Runs fn(i) over all rows in chunks, validating each row first; returns the first error.
// fn returns the row's loss contribution (double); the chunk sums are combined in order.
template <typename T, typename Fn>
Status for_rows(const DecisionBatch<T>& in, double* total, Fn&& fn) {
  Status s = check_lam(in);
  if (!s.ok()) return s;
  const Chunking chunks = Chunking::make(in.n, kRowsPerChunk, 256);
  std::vector<double> partial(chunks.num_chunks, 0.0);
  std::vector<Status> status(chunks.num_chunks);
  parallel_chunks(chunks.num_chunks, in.num_threads, [&](int64_t ch) {
    double acc = 0;
    for (int64_t i = chunks.begin(ch); i < chunks.end(ch); ++i) {
      Status rs = check_decision_row(in, i);
      if (!rs.ok()) {
        status[ch] = rs;
        return;
      }
      acc += fn(i);
    }
    partial[ch] = acc;
  });
  Status first;
  for (const auto& st : status) keep_first(first, st);
  if (!first.ok()) return first;
  double sum = 0;
  for (double x : partial) sum += x;
  if (total) *total = sum;
  return Status::Ok();
}

// Scores of one row for one multiplier.
template <typename T>
inline void row_scores(const T* r, const T* c, T lam, int64_t m, T* a) {
  for (int64_t j = 0; j < m; ++j) a[j] = r[j] - lam * c[j];
}

// Softmax of a / tau in place into z (input dtype); returns nothing. Max-shifted for stability.
template <typename T>
inline void row_softmax(const T* a, int64_t m, T inv_tau, T* z) {
  T mx = a[0];
  for (int64_t j = 1; j < m; ++j) mx = std::max(mx, a[j]);
  T sum = 0;
  for (int64_t j = 0; j < m; ++j) {
    z[j] = std::exp((a[j] - mx) * inv_tau);
    sum += z[j];
  }
  const T inv = T(1) / sum;
  for (int64_t j = 0; j < m; ++j) z[j] *= inv;
}

// Chosen option (first max) and runner-up (first max among the others).
template <typename T>
inline void top_two(const T* a, int64_t m, int64_t& k, int64_t& s) {
  k = 0;
  for (int64_t j = 1; j < m; ++j)
    if (a[j] > a[k]) k = j;
  s = (k == 0) ? 1 : 0;
  for (int64_t j = s + 1; j < m; ++j)
    if (j != k && a[j] > a[s]) s = j;
}

// 1 / effective gap, or 0 when the clip zeroes the cell.
template <typename T>
inline T inv_gap(T gap, double clip) {
  if (clip > 0) {
    const T h = static_cast<T>(clip);
    if (gap > h) return T(0);
    return T(1) / std::max(gap, h);
  }
  if (gap == T(0)) return static_cast<T>(1.0 / kPifdZeroGapFloor);
  return T(1) / gap;
}

}  // namespace

template <typename T>
Status softmax_loss_cpu(const SoftmaxLossParams<T>& p) {
  const auto& in = p.in;
  const int64_t m = in.m;
  const T inv_tau = static_cast<T>(1.0 / p.tau);
  double total = 0;
  Status s = for_rows(in, &total, [&](int64_t i) {
    T a[kMaxLossOptions], z[kMaxLossOptions];
    const T* r = in.r_hat + i * m;
    const T* c = in.c_hat + i * m;
    const int64_t t = in.treatment[i];
    double acc = 0;
    for (int64_t l = 0; l < in.l; ++l) {
      row_scores(r, c, in.lam[l], m, a);
      row_softmax(a, m, inv_tau, z);
      acc -= double(z[t] * row_weight(in, i, in.lam[l]));
    }
    return acc;
  });
  if (!s.ok()) return s;
  p.loss[0] = static_cast<T>(total);
  return Status::Ok();
}

template <typename T>
Status softmax_loss_backward_cpu(const SoftmaxLossBackwardParams<T>& p) {
  const auto& in = p.in;
  const int64_t m = in.m;
  const T inv_tau = static_cast<T>(1.0 / p.tau);
  const T go = p.grad_output[0];
  return for_rows(in, nullptr, [&](int64_t i) {
    T a[kMaxLossOptions], z[kMaxLossOptions];
    const T* r = in.r_hat + i * m;
    const T* c = in.c_hat + i * m;
    T* gr = p.grad_r_hat + i * m;
    T* gc = p.grad_c_hat + i * m;
    for (int64_t j = 0; j < m; ++j) gr[j] = gc[j] = T(0);
    const int64_t t = in.treatment[i];
    for (int64_t l = 0; l < in.l; ++l) {
      const T lam = in.lam[l];
      row_scores(r, c, lam, m, a);
      row_softmax(a, m, inv_tau, z);
      // dL/da_j = -(w / tau) z_t (1[j == t] - z_j), times the upstream gradient
      const T coef = -(row_weight(in, i, lam) * inv_tau) * z[t] * go;
      for (int64_t j = 0; j < m; ++j) {
        const T g = coef * ((j == t ? T(1) : T(0)) - z[j]);
        gr[j] += g;
        gc[j] -= lam * g;
      }
    }
    return 0.0;
  });
}

template <typename T>
Status flip_loss_cpu(const FlipLossParams<T>& p) {
  const auto& in = p.in;
  const int64_t m = in.m;
  double total = 0;
  Status s = for_rows(in, &total, [&](int64_t i) {
    const T* r = in.r_hat + i * m;
    const T* c = in.c_hat + i * m;
    const int64_t t = in.treatment[i];
    double acc = 0;
    for (int64_t l = 0; l < in.l; ++l) {
      const T lam = in.lam[l];
      int64_t k = 0;
      T best = r[0] - lam * c[0];
      for (int64_t j = 1; j < m; ++j) {
        const T aj = r[j] - lam * c[j];
        if (aj > best) {
          best = aj;
          k = j;
        }
      }
      if (k == t) acc -= double(row_weight(in, i, lam));
    }
    return acc;
  });
  if (!s.ok()) return s;
  p.loss[0] = static_cast<T>(total);
  return Status::Ok();
}

template <typename T>
Status flip_loss_backward_cpu(const FlipLossBackwardParams<T>& p) {
  const auto& in = p.in;
  const int64_t m = in.m;
  const T go = p.grad_output[0];
  return for_rows(in, nullptr, [&](int64_t i) {
    T a[kMaxLossOptions];
    const T* r = in.r_hat + i * m;
    const T* c = in.c_hat + i * m;
    T* gr = p.grad_r_hat + i * m;
    T* gc = p.grad_c_hat + i * m;
    for (int64_t j = 0; j < m; ++j) gr[j] = gc[j] = T(0);
    const int64_t t = in.treatment[i];
    for (int64_t l = 0; l < in.l; ++l) {
      const T lam = in.lam[l];
      row_scores(r, c, lam, m, a);
      int64_t k, s;
      top_two(a, m, k, s);
      const T cw = row_weight(in, i, lam) * go;
      auto add = [&](int64_t j, T g) {
        gr[j] += g;
        gc[j] -= lam * g;
      };
      if (k == t) {
        // matched: any flip loses the contribution; a_k moves down to a_s, a_j up to a_k
        add(k, -cw * inv_gap(a[k] - a[s], p.clip));
        for (int64_t j = 0; j < m; ++j)
          if (j != k) add(j, cw * inv_gap(a[k] - a[j], p.clip));
      } else {
        // unmatched: only a flip onto t gains it: a_t up to a_k, or a_k down when t is runner-up
        const T ig = inv_gap(a[k] - a[t], p.clip);
        add(t, -cw * ig);
        if (s == t) add(k, cw * ig);
      }
    }
    return 0.0;
  });
}

template <typename T>
Status policy_value_cpu(const PolicyValueParams<T>& p) {
  const int64_t n = p.n;
  // validate once (shared by all policies)
  {
    const Chunking chunks = Chunking::make(n, 1 << 14, 256);
    std::vector<Status> status(chunks.num_chunks);
    parallel_chunks(chunks.num_chunks, p.num_threads, [&](int64_t ch) {
      for (int64_t i = chunks.begin(ch); i < chunks.end(ch); ++i) {
        if (!std::isfinite(p.revenue[i])) {
          status[ch] = {Code::kNonFiniteInput, i, static_cast<int64_t>(LossInput::kRevenue), double(p.revenue[i])};
          return;
        }
        if (!std::isfinite(p.cost[i])) {
          status[ch] = {Code::kNonFiniteInput, i, static_cast<int64_t>(LossInput::kCost), double(p.cost[i])};
          return;
        }
        const T pr = p.propensity[i];
        if (!(pr > T(0) && pr <= T(1))) {
          status[ch] = {Code::kBadPropensity, i, 0, double(pr)};
          return;
        }
      }
    });
    Status first;
    for (const auto& st : status) keep_first(first, st);
    if (!first.ok()) return first;
  }
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Chunking chunks = Chunking::make(n, 1 << 14, 256);
  const int64_t nc = chunks.num_chunks;
  // Per policy: pass 1 sums (y, x, match weight), pass 2 squared residuals around the estimate.
  std::vector<double> s1(nc * 3), s2(nc * 2);
  for (int64_t kk = 0; kk < p.k; ++kk) {
    const int64_t* choice = p.choice + kk * n;
    parallel_chunks(nc, p.num_threads, [&](int64_t ch) {
      double sy = 0, sx = 0, sw = 0;
      for (int64_t i = chunks.begin(ch); i < chunks.end(ch); ++i) {
        if (choice[i] != p.treatment[i]) continue;
        const double inv_p = 1.0 / double(p.propensity[i]);
        sy += double(p.revenue[i]) * inv_p;
        sx += double(p.cost[i]) * inv_p;
        sw += inv_p;
      }
      s1[ch * 3] = sy;
      s1[ch * 3 + 1] = sx;
      s1[ch * 3 + 2] = sw;
    });
    double sy = 0, sx = 0, sw = 0;
    for (int64_t ch = 0; ch < nc; ++ch) {
      sy += s1[ch * 3];
      sx += s1[ch * 3 + 1];
      sw += s1[ch * 3 + 2];
    }
    const double denom = p.hajek ? sw : double(n);
    const double v = n > 0 && denom > 0 ? sy / denom : nan;
    const double cv = n > 0 && denom > 0 ? sx / denom : nan;
    parallel_chunks(nc, p.num_threads, [&](int64_t ch) {
      double ry = 0, rx = 0;
      for (int64_t i = chunks.begin(ch); i < chunks.end(ch); ++i) {
        const bool match = choice[i] == p.treatment[i];
        const double inv_p = 1.0 / double(p.propensity[i]);
        if (p.hajek) {
          if (!match) continue;
          const double ey = inv_p * (double(p.revenue[i]) - v), ex = inv_p * (double(p.cost[i]) - cv);
          ry += ey * ey;
          rx += ex * ex;
        } else {
          const double y = match ? double(p.revenue[i]) * inv_p : 0.0;
          const double x = match ? double(p.cost[i]) * inv_p : 0.0;
          ry += (y - v) * (y - v);
          rx += (x - cv) * (x - cv);
        }
      }
      s2[ch * 2] = ry;
      s2[ch * 2 + 1] = rx;
    });
    double ry = 0, rx = 0;
    for (int64_t ch = 0; ch < nc; ++ch) {
      ry += s2[ch * 2];
      rx += s2[ch * 2 + 1];
    }
    p.value[kk] = v;
    p.cost_value[kk] = cv;
    if (n < 2 || !(denom > 0)) {
      p.value_se[kk] = p.cost_se[kk] = nan;
    } else if (p.hajek) {
      const double f = double(n) / double(n - 1);
      p.value_se[kk] = std::sqrt(f * ry) / sw;
      p.cost_se[kk] = std::sqrt(f * rx) / sw;
    } else {
      p.value_se[kk] = std::sqrt(ry / double(n - 1) / double(n));
      p.cost_se[kk] = std::sqrt(rx / double(n - 1) / double(n));
    }
  }
  return Status::Ok();
}

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
Status aucc_cpu(const AuccParams<T>& p) {
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
      const T* r = p.r_hat + 2 * i;
      const T* c = p.c_hat + 2 * i;
      for (int j = 0; j < 2; ++j) {
        if (!std::isfinite(r[j])) {
          status[ch] = {Code::kNonFiniteValue, i, j, double(r[j])};
          return;
        }
        if (!std::isfinite(c[j])) {
          status[ch] = {Code::kNonFiniteCost, i, j, double(c[j])};
          return;
        }
      }
      if (p.treatment[i] != 0 && p.treatment[i] != 1) {
        status[ch] = {Code::kBadTreatment, i, 2, double(p.treatment[i])};
        return;
      }
      if (!std::isfinite(p.revenue[i])) {
        status[ch] = {Code::kNonFiniteInput, i, static_cast<int64_t>(LossInput::kRevenue), double(p.revenue[i])};
        return;
      }
      if (!std::isfinite(p.cost[i])) {
        status[ch] = {Code::kNonFiniteInput, i, static_cast<int64_t>(LossInput::kCost), double(p.cost[i])};
        return;
      }
      n1 += p.treatment[i];
      const T dc = std::max(c[1] - c[0], static_cast<T>(kAuccMinCostGap));
      const T roi = (r[1] - r[0]) / dc + T(0);  // + 0 turns -0 into +0
      keys[i] = ~ordered_key(roi);              // ascending key = descending roi
    }
    treated[ch] = n1;
  });
  Status first;
  for (const auto& st : status) keep_first(first, st);
  if (!first.ok()) return first;
  int64_t n1 = 0;
  for (int64_t x : treated) n1 += x;
  const int64_t n0 = n - n1;
  if (n1 == 0 || n0 == 0) return {Code::kBadTreatment, -1, 2, double(n1 == 0 ? 1 : 0)};

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

#define BIDFCL_INSTANTIATE(T)                                                          \
  template Status softmax_loss_cpu<T>(const SoftmaxLossParams<T>&);                    \
  template Status softmax_loss_backward_cpu<T>(const SoftmaxLossBackwardParams<T>&);   \
  template Status flip_loss_cpu<T>(const FlipLossParams<T>&);                          \
  template Status flip_loss_backward_cpu<T>(const FlipLossBackwardParams<T>&);         \
  template Status policy_value_cpu<T>(const PolicyValueParams<T>&);                    \
  template Status aucc_cpu<T>(const AuccParams<T>&);
BIDFCL_INSTANTIATE(float)
BIDFCL_INSTANTIATE(double)
#undef BIDFCL_INSTANTIATE

}  // namespace bidfcl::core
