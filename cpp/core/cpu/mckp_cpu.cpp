// CPU implementation of the MCKP solvers in mckp.h.
//
// Exact solve, in three passes over the individuals (fixed chunks, so results do not depend on the
// thread count):
//   1. hulls: per individual the upper concave hull (stored as uint8 option indices), the cheapest
//      policy's spend and value, and a per-chunk histogram of step costs keyed by the breakpoint's
//      top float bits (64 buckets per octave);
//   2. the bucket where the cumulative spend (steps in decreasing bp) crosses the budget; the
//      steps in that bucket are gathered and sorted exactly, giving the cut;
//   3. choices from the cut, with spend, value and the dual bound.
// No tolerance anywhere: lam* is one of the breakpoints (or 0).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <numeric>

#include "bidfcl/core/mckp.h"
#include "bidfcl/core/parallel.h"

namespace bidfcl::core {
namespace {

constexpr int kBucketBits = 14;
constexpr int64_t kNumBuckets = int64_t(1) << kBucketBits;

// Order-preserving bucket of a non-negative breakpoint: the top bits of its float32 image. The
// float conversion is monotone, so a larger bp never lands in a smaller bucket.
template <typename T>
inline int64_t bucket_of(T bp) {
  const float f = static_cast<float>(bp);
  return static_cast<int64_t>(std::bit_cast<uint32_t>(f) >> (31 - kBucketBits));
}

struct Hulls {
  int64_t n = 0, m = 0;
  std::vector<uint8_t> idx;   // [n, m]: hull option indices, cheapest first
  std::vector<uint16_t> len;  // [n]: number of hull points, >= 1
  const uint8_t* row(int64_t i) const { return idx.data() + i * m; }
};

template <typename T>
inline T slope(const T* r, const T* c, int a, int b) {
  return (r[b] - r[a]) / (c[b] - c[a]);
}

template <typename T>
inline Status check_row(const T* r, const T* c, int64_t i, int64_t m) {
  for (int64_t j = 0; j < m; ++j) {
    if (!std::isfinite(r[j])) return {Code::kNonFiniteValue, i, j, double(r[j])};
    if (!std::isfinite(c[j])) return {Code::kNonFiniteCost, i, j, double(c[j])};
    if (c[j] < T(0)) return {Code::kNegativeCost, i, j, double(c[j])};
  }
  return Status::Ok();
}

// Upper concave hull of one individual's (cost, value) points; returns its length.
// Sort by (cost asc, value desc, index asc), keep points that strictly raise the best value so far,
// then a monotone chain that pops only on a strictly convex turn (collinear points stay).
template <typename T>
inline int build_hull(const T* r, const T* c, int m, uint8_t* out, uint8_t* order) {
  for (int j = 0; j < m; ++j) order[j] = static_cast<uint8_t>(j);
  auto before = [&](int a, int b) {  // true if option a sorts before option b
    if (c[a] != c[b]) return c[a] < c[b];
    if (r[a] != r[b]) return r[a] > r[b];
    return a < b;
  };
  for (int x = 1; x < m; ++x) {  // insertion sort: m is small and rows are often nearly sorted
    const uint8_t v = order[x];
    int y = x - 1;
    while (y >= 0 && before(v, order[y])) {
      order[y + 1] = order[y];
      --y;
    }
    order[y + 1] = v;
  }
  int len = 0;
  for (int x = 0; x < m; ++x) {
    const int j = order[x];
    if (len > 0 && !(r[j] > r[out[len - 1]])) continue;  // dominated: costs no less, worth no more
    while (len >= 2 && slope(r, c, out[len - 2], out[len - 1]) < slope(r, c, out[len - 1], j)) --len;
    out[len++] = static_cast<uint8_t>(j);
  }
  return len;
}

template <typename T>
struct Pass1 {
  Hulls hulls;
  Chunking chunks;
  std::vector<double> base_spend, base_value;  // per chunk
  std::vector<double> hist;                    // [num_chunks, kNumBuckets] step costs per bucket
  int64_t num_steps = 0;
};

// Pass 1: validate, build hulls, and (optionally) the per-chunk histograms.
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
  parallel_chunks(nc, in.num_threads, [&](int64_t ch) {
    uint8_t order[kMaxOptions];
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
      const int len = build_hull(r, c, static_cast<int>(m), h, order);
      p1.hulls.len[i] = static_cast<uint16_t>(len);
      spend += double(c[h[0]]);
      value += double(r[h[0]]);
      nsteps += len - 1;
      if (hist) {
        for (int s2 = 1; s2 < len; ++s2) {
          const T bp = slope(r, c, h[s2 - 1], h[s2]);
          hist[bucket_of(bp)] += double(c[h[s2]]) - double(c[h[s2 - 1]]);
        }
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
double chunk_sum(const std::vector<double>& v) {
  double acc = 0;
  for (double x : v) acc += x;  // in chunk order: deterministic
  return acc;
}

// A step in the global order: its breakpoint and id = individual * m + step.
template <typename T>
struct StepRef {
  T bp;
  int64_t id;
};

template <typename T>
inline bool order_before(const StepRef<T>& a, const StepRef<T>& b) {
  if (a.bp != b.bp) return a.bp > b.bp;
  return a.id < b.id;
}

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
    for (int64_t ch = 0; ch < nc; ++ch) out[sl].insert(out[sl].end(), per_chunk[ch][sl].begin(), per_chunk[ch][sl].end());
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

// Number of steps individual i takes under the cut (a prefix of its hull steps), and the number of
// steps with bp strictly above lam (the Lagrangian choice before tie upgrades).
template <typename T>
inline void steps_taken(const T* r, const T* c, const uint8_t* h, int len, int64_t i, const Cut<T>& cut,
                        int& taken, int& above) {
  if (cut.infeasible) {
    taken = above = 0;
    return;
  }
  if (cut.take_all) {
    taken = len - 1;
    above = 0;
    for (int s = 1; s < len; ++s)
      if (slope(r, c, h[s - 1], h[s]) > T(0)) above = s;
    return;
  }
  taken = above = 0;
  for (int s = 1; s < len; ++s) {
    const T bp = slope(r, c, h[s - 1], h[s]);
    if (bp > cut.lam) {
      taken = above = s;
    } else if (bp == cut.lam && (i < cut.individual || (i == cut.individual && s < cut.step))) {
      taken = s;
    } else {
      break;  // bp is non-increasing along the hull: no later step is taken either
    }
  }
}

struct PolicyTotals {
  double spend = 0, value = 0, lagrangian = 0;
};

// Pass 3: writes the choices for one cut and returns spend, value and sum_i max_j (r - lam c).
template <typename T>
PolicyTotals apply_cut(const MckpInput<T>& in, const Pass1<T>& p1, const Cut<T>& cut, int64_t* choice) {
  const int64_t nc = p1.chunks.num_chunks, m = in.m;
  std::vector<PolicyTotals> parts(nc);
  const double lam = cut.infeasible || cut.take_all ? 0.0 : double(cut.lam);
  parallel_chunks(nc, in.num_threads, [&](int64_t ch) {
    PolicyTotals acc;
    for (int64_t i = p1.chunks.begin(ch); i < p1.chunks.end(ch); ++i) {
      const T* r = in.values + i * m;
      const T* c = in.costs + i * m;
      const uint8_t* h = p1.hulls.row(i);
      int taken, above;
      steps_taken(r, c, h, p1.hulls.len[i], i, cut, taken, above);
      const int j = h[taken];
      choice[i] = j;
      acc.spend += double(c[j]);
      acc.value += double(r[j]);
      acc.lagrangian += double(r[h[above]]) - lam * double(c[h[above]]);
    }
    parts[ch] = acc;
  });
  PolicyTotals total;
  for (const auto& p : parts) {
    total.spend += p.spend;
    total.value += p.value;
    total.lagrangian += p.lagrangian;
  }
  return total;
}

template <typename T>
void write_solution(const MckpSolveParams<T>& p, int64_t kk, const Cut<T>& cut, const PolicyTotals& t) {
  const double budget = p.budgets[kk];
  p.spend[kk] = t.spend;
  p.value[kk] = t.value;
  p.feasible[kk] = !cut.infeasible;
  if (cut.infeasible) {
    p.lam[kk] = std::numeric_limits<T>::infinity();
    p.dual_bound[kk] = -std::numeric_limits<double>::infinity();  // the dual is unbounded below
  } else {
    const T lam = cut.take_all ? T(0) : cut.lam;
    p.lam[kk] = lam;
    p.dual_bound[kk] = double(lam) * budget + t.lagrangian;
  }
}

}  // namespace

template <typename T>
Status solve_mckp_exact_cpu(const MckpSolveParams<T>& p) {
  const MckpInput<T>& in = p.in;
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
  for (int64_t kk = 0; kk < p.k; ++kk) {
    const PolicyTotals t = apply_cut(in, p1, cuts[kk], p.choice + kk * in.n);
    write_solution(p, kk, cuts[kk], t);
  }
  return Status::Ok();
}

template <typename T>
Status budget_frontier_cpu(const MckpInput<T>& in, FrontierResult<T>& out) {
  Pass1<T> p1;
  Status st = build_hulls(in, p1, /*with_histogram=*/false);
  if (!st.ok()) return st;
  const int64_t nc = p1.chunks.num_chunks, m = in.m;
  // Bucket sort by breakpoint (descending), then an exact sort inside each bucket.
  std::vector<std::vector<int64_t>> counts(nc, std::vector<int64_t>(kNumBuckets, 0));
  parallel_chunks(nc, in.num_threads, [&](int64_t ch) {
    auto& cnt = counts[ch];
    for (int64_t i = p1.chunks.begin(ch); i < p1.chunks.end(ch); ++i) {
      const T* r = in.values + i * m;
      const T* c = in.costs + i * m;
      const uint8_t* h = p1.hulls.row(i);
      for (int s = 1; s < p1.hulls.len[i]; ++s) ++cnt[bucket_of(slope(r, c, h[s - 1], h[s]))];
    }
  });
  // offsets: buckets in descending order, chunks in ascending order inside a bucket
  std::vector<int64_t> bucket_start(kNumBuckets + 1, 0);
  {
    int64_t pos = 0;
    for (int64_t b = kNumBuckets - 1; b >= 0; --b) {
      bucket_start[b] = pos;
      for (int64_t ch = 0; ch < nc; ++ch) {
        const int64_t cnt = counts[ch][b];
        counts[ch][b] = pos;  // becomes this chunk's write cursor in bucket b
        pos += cnt;
      }
    }
    bucket_start[kNumBuckets] = pos;
  }
  const int64_t P = p1.num_steps;
  std::vector<StepRef<T>> steps(static_cast<size_t>(P));
  parallel_chunks(nc, in.num_threads, [&](int64_t ch) {
    auto& cursor = counts[ch];
    for (int64_t i = p1.chunks.begin(ch); i < p1.chunks.end(ch); ++i) {
      const T* r = in.values + i * m;
      const T* c = in.costs + i * m;
      const uint8_t* h = p1.hulls.row(i);
      for (int s = 1; s < p1.hulls.len[i]; ++s) {
        const T bp = slope(r, c, h[s - 1], h[s]);
        steps[cursor[bucket_of(bp)]++] = {bp, i * m + s};
      }
    }
  });
  counts.clear();
  // Sort inside buckets. Buckets were laid out from the top, so bucket b ends where b-1 starts.
  const Chunking bchunks = Chunking::make(kNumBuckets, 256, 64);
  parallel_chunks(bchunks.num_chunks, in.num_threads, [&](int64_t ch) {
    for (int64_t b = bchunks.begin(ch); b < bchunks.end(ch); ++b) {
      const int64_t lo = bucket_start[b];
      const int64_t hi = b > 0 ? bucket_start[b - 1] : P;
      if (hi - lo > 1) std::sort(steps.begin() + lo, steps.begin() + hi, order_before<T>);
    }
  });
  out.lam.resize(P + 1);
  out.spend.resize(P + 1);
  out.value.resize(P + 1);
  out.lam[0] = std::numeric_limits<T>::infinity();
  out.spend[0] = chunk_sum<T>(p1.base_spend);
  out.value[0] = chunk_sum<T>(p1.base_value);
  for (int64_t q = 0; q < P; ++q) {
    const int64_t i = steps[q].id / m, s = steps[q].id % m;
    const uint8_t* h = p1.hulls.row(i);
    const T* r = in.values + i * m;
    const T* c = in.costs + i * m;
    out.lam[q + 1] = steps[q].bp;
    out.spend[q + 1] = out.spend[q] + (double(c[h[s]]) - double(c[h[s - 1]]));
    out.value[q + 1] = out.value[q] + (double(r[h[s]]) - double(r[h[s - 1]]));
  }
  return Status::Ok();
}

template <typename T>
Status solve_mckp_bisection_cpu(const MckpBisectionParams<T>& bp) {
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

template <typename T>
Status solve_mckp_rct_cpu(const MckpRctParams<T>& p) {
  const MckpInput<T>& in = p.in;
  const int64_t n = in.n, m = in.m;
  Pass1<T> p1;
  Status st = build_hulls(in, p1, /*with_histogram=*/false);
  if (!st.ok()) return st;
  const int64_t nc = p1.chunks.num_chunks;
  // Events: the steps at which individual i's choice starts or stops matching its arm.
  struct Event {
    T bp;
    int64_t id;
    double delta;
  };
  std::vector<std::vector<Event>> per_chunk(nc);
  std::vector<double> base_parts(nc, 0.0);
  std::vector<Status> status(nc);
  const double inv_n = 1.0 / double(n);
  parallel_chunks(nc, in.num_threads, [&](int64_t ch) {
    auto& ev = per_chunk[ch];
    double base = 0;
    for (int64_t i = p1.chunks.begin(ch); i < p1.chunks.end(ch); ++i) {
      const int64_t t = p.treatment[i];
      if (t < 0 || t >= m) {
        status[ch] = {Code::kBadTreatment, i, m, double(t)};
        return;
      }
      const T prop = p.propensity[i];
      if (!(prop > T(0) && prop <= T(1))) {
        status[ch] = {Code::kBadPropensity, i, -1, double(prop)};
        return;
      }
      if (!std::isfinite(p.cost_obs[i])) {
        status[ch] = {Code::kNonFiniteInput, i, -1, double(p.cost_obs[i])};
        return;
      }
      const uint8_t* h = p1.hulls.row(i);
      const int len = p1.hulls.len[i];
      int q = -1;
      for (int s = 0; s < len; ++s)
        if (h[s] == t) q = s;
      if (q < 0) continue;  // the arm is never chosen at any lam: never matches
      const double w = double(p.cost_obs[i]) / double(prop) * inv_n;
      const T* r = in.values + i * m;
      const T* c = in.costs + i * m;
      if (q == 0) base += w;
      else ev.push_back({slope(r, c, h[q - 1], h[q]), i * m + q, w});
      if (q + 1 < len) ev.push_back({slope(r, c, h[q], h[q + 1]), i * m + q + 1, -w});
    }
    base_parts[ch] = base;
  });
  Status first;
  for (const auto& s : status) keep_first(first, s);
  if (!first.ok()) return first;
  std::vector<Event> events;
  for (auto& v : per_chunk) events.insert(events.end(), v.begin(), v.end());
  per_chunk.clear();
  std::sort(events.begin(), events.end(), [](const Event& a, const Event& b) {
    if (a.bp != b.bp) return a.bp > b.bp;
    return a.id < b.id;
  });
  const double base = chunk_sum<T>(base_parts);
  // spend_after[e]: estimated spend once events 0..e are applied; prefix_max for the first crossing.
  const int64_t E = static_cast<int64_t>(events.size());
  std::vector<double> spend_after(E), prefix_max(E);
  double acc = base, pm = -std::numeric_limits<double>::infinity();
  for (int64_t e = 0; e < E; ++e) {
    acc += events[e].delta;
    spend_after[e] = acc;
    pm = std::max(pm, acc);
    prefix_max[e] = pm;
  }
  for (int64_t kk = 0; kk < p.k; ++kk) {
    const double budget = p.budgets[kk];
    Cut<T> cut;
    double spend;
    if (base > budget) {
      cut.infeasible = true;
      spend = base;
    } else {
      // first event whose application pushes the estimated spend over the budget
      const int64_t e = std::upper_bound(prefix_max.begin(), prefix_max.end(), budget) - prefix_max.begin();
      if (e == E) {
        cut.take_all = true;
        spend = E > 0 ? spend_after[E - 1] : base;
      } else {
        cut.lam = events[e].bp;
        cut.individual = events[e].id / m;
        cut.step = events[e].id % m;
        spend = e > 0 ? spend_after[e - 1] : base;
      }
    }
    apply_cut(in, p1, cut, p.choice + kk * n);
    p.lam[kk] = cut.infeasible ? std::numeric_limits<T>::infinity() : (cut.take_all ? T(0) : cut.lam);
    p.spend[kk] = spend;
    p.feasible[kk] = !cut.infeasible;
  }
  return Status::Ok();
}

#define BIDFCL_INSTANTIATE(T)                                                  \
  template Status solve_mckp_exact_cpu<T>(const MckpSolveParams<T>&);          \
  template Status solve_mckp_bisection_cpu<T>(const MckpBisectionParams<T>&);  \
  template Status budget_frontier_cpu<T>(const MckpInput<T>&, FrontierResult<T>&); \
  template Status solve_mckp_rct_cpu<T>(const MckpRctParams<T>&);
BIDFCL_INSTANTIATE(float)
BIDFCL_INSTANTIATE(double)
#undef BIDFCL_INSTANTIATE

}  // namespace bidfcl::core
