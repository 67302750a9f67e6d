// CPU implementation of the MCKP solvers in mckp.h.
//
// Exact solve, full algorithm (any number of budgets), in three passes over the individuals (fixed
// chunks, so results do not depend on the thread count):
//   1. hulls: per individual the upper concave hull (stored as uint8 option indices), the cheapest
//      policy's spend and value, and a per-chunk histogram of step costs keyed by the breakpoint's
//      top float bits (64 buckets per octave);
//   2. per budget, the bucket where the cumulative spend (steps in decreasing bp) crosses it; the
//      steps in those buckets are gathered and sorted exactly, giving each budget's cut;
//   3. choices for all cuts in one pass, with spend, value and the dual bound.
// On a large N the budgets first try the bracketed fast path (see "bracketed fast path" below),
// which settles most individuals without a hull and falls back here when its bracket misses (or,
// for several budgets, when one bracket spanning all of them would hold most of the steps).
// No tolerance anywhere: lam* is one of the breakpoints (or 0).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <type_traits>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include <immintrin.h>
#endif

#include "bidfcl/core/mckp.h"
#include "bidfcl/core/parallel.h"

// 32-byte vector types pass through internal, inlined helpers only; GCC's note that their calling
// convention differs without AVX concerns external ABIs, which none of these functions have.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace bidfcl::core {
namespace {

constexpr int kBucketBits = 14;
constexpr int kRankSortMaxOptions = 16;  // up to this many options, order rows by counting ranks
constexpr int64_t kNumBuckets = int64_t(1) << kBucketBits;

// Order-preserving bucket of a non-negative breakpoint: the top bits of its float32 image. The
// float conversion is monotone, so a larger bp never lands in a smaller bucket.
template <typename T>
inline int64_t bucket_of(T bp) {
  const float f = static_cast<float>(bp);
  return static_cast<int64_t>(std::bit_cast<uint32_t>(f) >> (31 - kBucketBits));
}

// Finer buckets (256 per octave) for the bracketed fast path, where the histograms are small.
constexpr int kFineBits = 16;
constexpr int64_t kNumFine = int64_t(1) << kFineBits;

template <typename T>
inline int64_t fine_bucket_of(T bp) {
  return static_cast<int64_t>(std::bit_cast<uint32_t>(static_cast<float>(bp)) >> (31 - kFineBits));
}

// Smallest float whose bucket is b: every value of a bucket >= b is >= it, up to the rounding of a
// double to float (so callers step one bucket further for a strict bound).
inline float fine_bucket_low(int64_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << (31 - kFineBits)); }

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

// The monotone chain over options already in (cost asc, value desc, index asc) order: keeps the
// points that strictly raise the best value so far and pops only on a strictly convex turn
// (collinear points stay). Returns the hull's length and writes its breakpoints bp[s] =
// slope(out[s-1], out[s]) for s = 1 .. len-1 (each slope computed once, as hull_breakpoints does).
template <typename T>
inline int hull_chain(const T* r, const T* c, int m, const uint8_t* order, uint8_t* out, T* bp) {
  int len = 0;
  for (int x = 0; x < m; ++x) {
    const int j = order[x];
    if (len > 0 && !(r[j] > r[out[len - 1]])) continue;  // dominated: costs no less, worth no more
    if (len > 0) {
      T joined = slope(r, c, out[len - 1], j);
      while (len >= 2 && bp[len - 1] < joined) joined = slope(r, c, out[--len - 1], j);
      bp[len] = joined;
    }
    out[len++] = static_cast<uint8_t>(j);
  }
  return len;
}

// Upper concave hull of one individual's (cost, value) points; returns its length.
// Sort by (cost asc, value desc, index asc), then the monotone chain above.
template <typename T>
inline int build_hull(const T* r, const T* c, int m, uint8_t* out, uint8_t* order, T* bp) {
  if (m <= kRankSortMaxOptions) {
    // Branchless: the rank of option j is the number of options that sort before it. The order is
    // a strict total order (the index breaks every tie), so the ranks are a permutation. O(m^2)
    // compares, but they vectorise and never mispredict, unlike a comparison sort on random rows.
    for (int j = 0; j < m; ++j) {
      const T cj = c[j], rj = r[j];
      int rank = 0;
      for (int k = 0; k < m; ++k)
        rank += (c[k] < cj) | ((c[k] == cj) & ((r[k] > rj) | ((r[k] == rj) & (k < j))));
      order[rank] = static_cast<uint8_t>(j);
    }
  } else {
    for (int j = 0; j < m; ++j) order[j] = static_cast<uint8_t>(j);
    std::sort(order, order + m, [&](int a, int b) {
      if (c[a] != c[b]) return c[a] < c[b];
      if (r[a] != r[b]) return r[a] > r[b];
      return a < b;
    });
  }
  return hull_chain(r, c, m, order, out, bp);
}

// build_hull for a fixed M (0: any) on vectors where the CPU allows, and a pointer to the right one
// for a run-time M (both defined with the AVX2 kernels below).
template <typename T>
using HullBuilder = int (*)(const T*, const T*, int, uint8_t*, uint8_t*, T*);
template <typename T, int M>
inline int build_hull_fast(const T* r, const T* c, int m, uint8_t* out, uint8_t* order, T* bp);
template <typename T>
HullBuilder<T> hull_builder(int64_t m);

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

// The breakpoints of a hull: bp[s] for its steps s = 1 .. len-1.
template <typename T>
inline void hull_breakpoints(const T* r, const T* c, const uint8_t* h, int len, T* bp) {
  for (int s = 1; s < len; ++s) bp[s] = slope(r, c, h[s - 1], h[s]);
}

// Number of steps individual i takes under the cut (a prefix of its hull steps), and the number of
// steps with bp strictly above lam (the Lagrangian choice before tie upgrades).
template <typename T>
inline void steps_taken(const T* bp, int len, int64_t i, const Cut<T>& cut, int& taken, int& above) {
  if (cut.infeasible) {
    taken = above = 0;
    return;
  }
  if (cut.take_all) {
    taken = len - 1;
    above = 0;
    for (int s = 1; s < len; ++s)
      if (bp[s] > T(0)) above = s;
    return;
  }
  taken = above = 0;
  for (int s = 1; s < len; ++s) {
    if (bp[s] > cut.lam) {
      taken = above = s;
    } else if (bp[s] == cut.lam && (i < cut.individual || (i == cut.individual && s < cut.step))) {
      taken = s;
    } else {
      break;  // bp is non-increasing along the hull: no later step is taken either
    }
  }
}

struct PolicyTotals {
  double spend = 0, value = 0, lagrangian = 0;
  void add(double c, double r, double lagr) {
    spend += c;
    value += r;
    lagrangian += lagr;
  }
  void add(const PolicyTotals& o) { add(o.spend, o.value, o.lagrangian); }
};

// Pass 3: for every cut k, writes the choices into choice[k * n ...] and returns spend, value and
// sum_i max_j (r - lam c). One pass over the individuals serves all cuts (each hull's breakpoints
// are computed once); each cut's sums keep the chunk order, so they do not depend on K.
template <typename T>
std::vector<PolicyTotals> apply_cuts(const MckpInput<T>& in, const Pass1<T>& p1, const std::vector<Cut<T>>& cuts,
                                     int64_t* choice) {
  const int64_t nc = p1.chunks.num_chunks, m = in.m, n = in.n;
  const int64_t k = static_cast<int64_t>(cuts.size());
  std::vector<double> lams(k);
  for (int64_t q = 0; q < k; ++q)
    lams[q] = cuts[q].infeasible || cuts[q].take_all ? 0.0 : double(cuts[q].lam);
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

// ---- bracketed fast path (large N; several budgets share one spanning bracket) --------------------------------------------------
//
// Most individuals are nowhere near indifferent at lam*. A small exact sample brackets lam* in
// [lo, hi]; then one pass over everyone settles an individual without building its hull when one
// option j is the unique optimum over the whole bracket with a safety margin:
//   costlier k:  r_k - r_j <= 0  or  r_k - r_j < lo (1 - eps) (c_k - c_j)
//   cheaper k:   r_j - r_k > hi (1 + eps) (c_j - c_k)
//   equal cost:  r_k < r_j, or r_k == r_j and k > j.
// With eps = 64 ulp (far above the few ulp of rounding in these tests and in a breakpoint), j is
// then on the hull, every computed breakpoint before j is > hi and every one after it is < lo, so
// the exact algorithm would choose j too and no step of j's individual lies in the bracket. Only
// the unsettled individuals get hulls; their bracket steps are sorted exactly for the cut. If the
// bracket misses lam*, the caller falls back to the full algorithm: the answer never depends on it.
constexpr int64_t kBracketMinN = int64_t(1) << 15;
constexpr int64_t kSampleStride = 32;

// Row kernels with the option count as a template parameter (M > 0), so that the compiler unrolls
// them; M == 0 is the generic runtime-m version. classify() returns a candidate j (argmax of
// r - mid c) and a verdict: kSettled (j is the unique optimum over the bracket, see above),
// kUnsettled, or kInvalid (a NaN/Inf entry or a negative cost; the caller locates it).
enum Verdict : int { kSettled = 0, kUnsettled = 1, kInvalid = 2 };

template <typename T>
struct BracketScalars {
  T lo_m, hi_m, mid;
};

template <typename T, int M>
struct RowKernels {
  static constexpr int kOptions = M;
  using Consts = BracketScalars<T>;
  static Consts consts(T lo_m, T hi_m, T mid) { return {lo_m, hi_m, mid}; }
  static int count(int m) { return M > 0 ? M : m; }

  static Verdict classify(const T* r, const T* c, int m, const Consts& k, int& j_out) {
    int bad = 0;  // x - x == 0 is false exactly for NaN and +-Inf
    for (int q = 0; q < count(m); ++q) bad |= !(r[q] - r[q] == T(0)) | !(c[q] - c[q] == T(0)) | (c[q] < T(0));
    if (bad) return kInvalid;
    int j = 0;
    T best = r[0] - k.mid * c[0];
    for (int q = 1; q < count(m); ++q) {
      const T score = r[q] - k.mid * c[q];
      const bool better = score > best;
      best = better ? score : best;
      j = better ? q : j;
    }
    j_out = j;
    const T cj = c[j], rj = r[j];
    for (int q = 0; q < count(m); ++q) {  // an OR-reduction of comparisons: no branches
      const T dc = c[q] - cj, dr = r[q] - rj;
      const int costlier_bad = (dc > T(0)) & (dr > T(0)) & !(dr < k.lo_m * dc);
      const int cheaper_bad = (dc < T(0)) & !(dr < k.hi_m * dc);  // r_j - r_q > hi_m (c_j - c_q)
      const int equal_bad = (dc == T(0)) & (dr >= T(0)) & ((dr > T(0)) | (q < j));
      bad |= costlier_bad | cheaper_bad | equal_bad;
    }
    return bad ? kUnsettled : kSettled;
  }
};

// The same classification on 16-byte vectors (GCC/Clang vector extensions, SSE2 width: no -march
// flag needed), for rows whose option count fills whole vectors. Same arithmetic, lane by lane,
// and a single horizontal reduction in the common (valid and settled) case.
template <typename T, int VB>
struct VecTypes;
template <int VB>
struct VecTypes<float, VB> {
  typedef float V __attribute__((vector_size(VB)));
  typedef int32_t I __attribute__((vector_size(VB)));
};
template <int VB>
struct VecTypes<double, VB> {
  typedef double V __attribute__((vector_size(VB)));
  typedef int64_t I __attribute__((vector_size(VB)));
};

template <typename T, int M, int VB = 16>  // VB: vector bytes (16 = SSE2; 32 for the AVX2 clone)
struct VecRowKernels {
  using V = typename VecTypes<T, VB>::V;
  using I = typename VecTypes<T, VB>::I;
  static constexpr int W = VB / sizeof(T);
  static constexpr int kOptions = M;
  static_assert(M % W == 0, "rows must fill whole vectors");
  static constexpr int B = M / W;
  struct Consts {
    V lo, hi, mid, zero;
    I lanes;
  };

  [[gnu::always_inline]] static V splat(T x) { return V{} + x; }  // scalars broadcast to every lane
  [[gnu::always_inline]] static Consts consts(T lo_m, T hi_m, T mid) {
    Consts k{splat(lo_m), splat(hi_m), splat(mid), splat(T(0)), {}};
    for (int l = 0; l < W; ++l) k.lanes[l] = l;
    return k;
  }
  [[gnu::always_inline]] static V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  }
  [[gnu::always_inline]] static bool none(I bad) {
    for (int l = 1; l < W; ++l) bad[0] |= bad[l];
    return bad[0] == 0;
  }

  [[gnu::always_inline]] static Verdict classify(const T* r, const T* c, int, const Consts& k, int& j_out) {
    V rv[B], cv[B];
    I invalid = {};
    T scores[M];
    for (int b = 0; b < B; ++b) {
      rv[b] = load(r + b * W);
      cv[b] = load(c + b * W);
      invalid |= ~((rv[b] - rv[b]) == k.zero) | ~((cv[b] - cv[b]) == k.zero) | (cv[b] < k.zero);
      const V s = rv[b] - k.mid * cv[b];
      std::memcpy(scores + b * W, &s, sizeof(V));
    }
    int j = 0;  // any candidate will do (the test decides); NaN rows are caught by `invalid`
    T best = scores[0];
    for (int q = 1; q < M; ++q) {
      const bool better = scores[q] > best;
      best = better ? scores[q] : best;
      j = better ? q : j;
    }
    j_out = j;
    const V cj = splat(c[j]), rj = splat(r[j]);
    const I jv = I{} + j;
    I idx = k.lanes;
    I bad = invalid;
    for (int b = 0; b < B; ++b) {
      const V dc = cv[b] - cj, dr = rv[b] - rj;
      const I costlier_bad = (dc > k.zero) & (dr > k.zero) & ~(dr < k.lo * dc);
      const I cheaper_bad = (dc < k.zero) & ~(dr < k.hi * dc);
      const I equal_bad = (dc == k.zero) & (dr >= k.zero) & ((dr > k.zero) | (idx < jv));
      bad |= costlier_bad | cheaper_bad | equal_bad;
      idx += W;
    }
    if (none(bad)) return kSettled;
    return none(invalid) ? kUnsettled : kInvalid;
  }
};

template <typename T>
struct Candidate {
  T bp;
  int64_t id;
  double dc;
};

// One chunk's share of the bracketed pass.
template <typename T>
struct BracketChunk {
  Status status;
  double spend_hi = 0, settled_cost = 0, settled_value = 0;
  std::vector<int64_t> rows;        // unsettled individuals
  std::vector<uint8_t> hulls;       // their hulls, m entries each
  std::vector<T> bps;               // and breakpoints (entry s of a row: step s; entry 0 unused)
  std::vector<uint16_t> lens;
  std::vector<Candidate<T>> cands;  // their steps with lo <= bp <= hi
};

template <typename T>
struct Bracket {
  T lo, hi;         // the bracket
  T lo_m, hi_m;     // with the safety margin
  T mid;            // where the candidate option is taken
};

// The hull path of a row the settle test could not decide: its hull and the steps inside the
// bracket (candidates for the cut). Returns the cost of the hull point it takes at hi (its share of
// the spend bound spend_hi).
template <typename T, typename HullFn>
[[gnu::always_inline]] inline double unsettled_row(const T* r, const T* c, int64_t i, int m, const Bracket<T>& br,
                                                   BracketChunk<T>& o, HullFn&& hull) {
  uint8_t ord[kMaxOptions], h[kMaxOptions];
  T bps[kMaxOptions];
  const int len = hull(r, c, m, h, ord, bps);
  int above = 0;
  for (int st = 1; st < len; ++st) {
    const T bp = bps[st];
    if (bp > br.hi) above = st;
    else if (bp >= br.lo) o.cands.push_back({bp, i * m + st, double(c[h[st]]) - double(c[h[st - 1]])});
  }
  o.rows.push_back(i);
  o.hulls.insert(o.hulls.end(), h, h + m);
  o.bps.insert(o.bps.end(), bps, bps + m);
  o.lens.push_back(static_cast<uint16_t>(len));
  return double(c[h[above]]);
}

// Settles rows [begin, end) or builds their hulls (see the comment on the fast path above).
// Sums run over the rows in order, settled or not: the totals do not depend on the kernel.
template <typename T, typename K>
[[gnu::always_inline]] inline void classify_rows(const MckpInput<T>& in, int64_t begin, int64_t end, const Bracket<T>& br,
                          BracketChunk<T>& o, int64_t* choice) {
  const int64_t m = in.m;
  const int mm = static_cast<int>(m);
  const typename K::Consts consts = K::consts(br.lo_m, br.hi_m, br.mid);
  double spend_hi = o.spend_hi, settled_cost = o.settled_cost, settled_value = o.settled_value;
  for (int64_t i = begin; i < end; ++i) {
    const T* r = in.values + i * m;
    const T* c = in.costs + i * m;
    int j = 0;
    const Verdict verdict = K::classify(r, c, mm, consts, j);
    if (verdict == kInvalid) {
      o.status = check_row(r, c, i, m);
      return;
    }
    if (verdict == kSettled) {
      choice[i] = j;
      spend_hi += double(c[j]);
      settled_cost += double(c[j]);
      settled_value += double(r[j]);
      continue;
    }
    spend_hi += unsettled_row(r, c, i, mm, br, o, build_hull_fast<T, K::kOptions>);
  }
  o.spend_hi = spend_hi;
  o.settled_cost = settled_cost;
  o.settled_value = settled_value;
}

// ---- AVX2 row kernels ---------------------------------------------------------------------------
//
// The settle test of RowKernels on 256-bit vectors, for float32 and float64 and every M that fills
// whole vectors: M < W options pack W / M rows into one vector (groups of M lanes, reduced with
// in-register shuffles), M >= W spreads a row over M / W vectors. Chosen at run time on CPUs with
// AVX2 (BIDFCL_DISABLE_AVX2=1 in the environment forces the portable kernels, for tests); without
// FMA, so nothing is contracted and every kernel computes the same products and differences.
//
// The test, per option q against the candidate j (first argmax of r - mid c), with dc = c_q - c_j
// and dr = r_q - r_j as the hull computes them:
//   good_q = dr < L dc  or  (dr == 0 and dc >= 0),   L = lo_m if dc >= 0 else hi_m,
// which is RowKernels' three cases in one: costlier (dc > 0) passes when dr < lo_m dc or dr <= 0,
// cheaper (dc < 0) when dr < hi_m dc, equal cost when dr < 0 or dr == 0. An equal option with a
// lower index cannot exist: its score would equal j's and the first argmax would have taken it. A
// NaN in a row fails every comparison (the row goes to check_row); +-Inf or a negative cost can
// pass the test, so finiteness and signs are accumulated per chunk and a flagged chunk is
// re-checked row by row: the error names the same first bad entry as check_row over the rows.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define BIDFCL_HAVE_AVX2_PATH 1
#pragma GCC push_options
#pragma GCC target("avx2")

struct Avx2F32 {
  using T = float;
  using V = __m256;
  static constexpr int W = 8;
  static V load(const T* p) { return _mm256_loadu_ps(p); }
  static V set1(T x) { return _mm256_set1_ps(x); }
  static V zero() { return _mm256_setzero_ps(); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V vmin(V a, V b) { return _mm256_min_ps(a, b); }
  static V vmax(V a, V b) { return _mm256_max_ps(a, b); }
  static V lt(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static V eq(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
  static V gt(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static V ge(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_GE_OQ); }
  static V vand(V a, V b) { return _mm256_and_ps(a, b); }
  static V vor(V a, V b) { return _mm256_or_ps(a, b); }
  static V select(V mask, V yes, V no) { return _mm256_blendv_ps(no, yes, mask); }
  static unsigned bits(V mask) { return static_cast<unsigned>(_mm256_movemask_ps(mask)); }
  static V lane_ids() { return _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7); }
  template <int S>  // lane l gets lane l ^ S
  static V partner(V x) {
    if constexpr (S == 1) return _mm256_permute_ps(x, 0xB1);
    else if constexpr (S == 2) return _mm256_permute_ps(x, 0x4E);
    else return _mm256_permute2f128_ps(x, x, 1);
  }
  static V gather_lanes(V x, V idx) { return _mm256_permutevar8x32_ps(x, _mm256_cvttps_epi32(idx)); }
};

struct Avx2F64 {
  using T = double;
  using V = __m256d;
  static constexpr int W = 4;
  static V load(const T* p) { return _mm256_loadu_pd(p); }
  static V set1(T x) { return _mm256_set1_pd(x); }
  static V zero() { return _mm256_setzero_pd(); }
  static V add(V a, V b) { return _mm256_add_pd(a, b); }
  static V sub(V a, V b) { return _mm256_sub_pd(a, b); }
  static V mul(V a, V b) { return _mm256_mul_pd(a, b); }
  static V vmin(V a, V b) { return _mm256_min_pd(a, b); }
  static V vmax(V a, V b) { return _mm256_max_pd(a, b); }
  static V lt(V a, V b) { return _mm256_cmp_pd(a, b, _CMP_LT_OQ); }
  static V eq(V a, V b) { return _mm256_cmp_pd(a, b, _CMP_EQ_OQ); }
  static V gt(V a, V b) { return _mm256_cmp_pd(a, b, _CMP_GT_OQ); }
  static V ge(V a, V b) { return _mm256_cmp_pd(a, b, _CMP_GE_OQ); }
  static V vand(V a, V b) { return _mm256_and_pd(a, b); }
  static V vor(V a, V b) { return _mm256_or_pd(a, b); }
  static V select(V mask, V yes, V no) { return _mm256_blendv_pd(no, yes, mask); }
  static unsigned bits(V mask) { return static_cast<unsigned>(_mm256_movemask_pd(mask)); }
  static V lane_ids() { return _mm256_setr_pd(0, 1, 2, 3); }
  template <int S>
  static V partner(V x) {
    if constexpr (S == 1) return _mm256_permute_pd(x, 0x5);
    else return _mm256_permute2f128_pd(x, x, 1);
  }
  static V gather_lanes(V x, V idx) {  // a 64-bit lane k is the 32-bit lanes 2k, 2k + 1
    const __m256i k2 = _mm256_slli_epi64(_mm256_cvtepu32_epi64(_mm256_cvttpd_epi32(idx)), 1);
    const __m256i ctrl = _mm256_or_si256(k2, _mm256_slli_epi64(_mm256_add_epi64(k2, _mm256_set1_epi64x(1)), 32));
    return _mm256_castps_pd(_mm256_permutevar8x32_ps(_mm256_castpd_ps(x), ctrl));
  }
};

template <typename A, int G>
[[gnu::always_inline]] inline typename A::V group_max(typename A::V x) {
  if constexpr (G >= 2) x = A::vmax(x, A::template partner<1>(x));
  if constexpr (G >= 4) x = A::vmax(x, A::template partner<2>(x));
  if constexpr (G >= 8) x = A::vmax(x, A::template partner<4>(x));
  return x;
}
template <typename A, int G>
[[gnu::always_inline]] inline typename A::V group_min(typename A::V x) {
  if constexpr (G >= 2) x = A::vmin(x, A::template partner<1>(x));
  if constexpr (G >= 4) x = A::vmin(x, A::template partner<2>(x));
  if constexpr (G >= 8) x = A::vmin(x, A::template partner<4>(x));
  return x;
}

// build_hull with the ranks on vectors: for each option j, the options that sort before it under
// (cost asc, value desc, index asc) as one lane mask per vector, counted. Same ranks, same hull.
// Rows shorter than whole vectors are copied into a buffer padded with +inf costs (never before j).
template <typename A, int M>
[[gnu::always_inline]] inline int build_hull_avx2(const typename A::T* r, const typename A::T* c, int, uint8_t* out,
                                                  uint8_t* order, typename A::T* bp) {
  using T = typename A::T;
  using V = typename A::V;
  constexpr int W = A::W, B = (M + W - 1) / W;
  V rv[B], cv[B], ids[B];
  if constexpr (M % W == 0) {
    for (int b = 0; b < B; ++b) {
      rv[b] = A::load(r + b * W);
      cv[b] = A::load(c + b * W);
    }
  } else {
    T rb[B * W], cb[B * W];
    for (int q = 0; q < B * W; ++q) {
      rb[q] = q < M ? r[q] : T(0);
      cb[q] = q < M ? c[q] : std::numeric_limits<T>::infinity();
    }
    for (int b = 0; b < B; ++b) {
      rv[b] = A::load(rb + b * W);
      cv[b] = A::load(cb + b * W);
    }
  }
  for (int b = 0; b < B; ++b) ids[b] = A::add(A::lane_ids(), A::set1(T(b * W)));
  for (int j = 0; j < M; ++j) {
    const V cj = A::set1(c[j]), rj = A::set1(r[j]), jv = A::set1(T(j));
    int rank = 0;
    for (int b = 0; b < B; ++b) {
      const V value_first = A::vor(A::gt(rv[b], rj), A::vand(A::eq(rv[b], rj), A::lt(ids[b], jv)));
      rank += std::popcount(A::bits(A::vor(A::lt(cv[b], cj), A::vand(A::eq(cv[b], cj), value_first))));
    }
    order[rank] = static_cast<uint8_t>(j);
  }
  return hull_chain(r, c, M, order, out, bp);
}

template <typename T, int M>
__attribute__((noinline)) int build_hull_avx2_entry(const T* r, const T* c, int m, uint8_t* out, uint8_t* order,
                                                   T* bp) {
  using A = std::conditional_t<std::is_same_v<T, float>, Avx2F32, Avx2F64>;
  return build_hull_avx2<A, M>(r, c, m, out, order, bp);
}

template <typename A>
struct TestConsts {
  typename A::V lo_m, hi_m, mid, zero;
};

// good_q for one vector of options (see above), as a lane mask.
template <typename A>
[[gnu::always_inline]] inline typename A::V settle_mask(typename A::V r, typename A::V c, typename A::V rj,
                                                        typename A::V cj, const TestConsts<A>& k) {
  const auto dc = A::sub(c, cj), dr = A::sub(r, rj);
  const auto costlier_or_equal = A::ge(dc, k.zero);
  const auto limit = A::mul(A::select(costlier_or_equal, k.lo_m, k.hi_m), dc);
  return A::vor(A::lt(dr, limit), A::vand(A::eq(dr, k.zero), costlier_or_equal));
}

// Rows [begin, end) of a chunk with M options (M < W: W / M rows per vector; else M / W vectors
// per row); the rows a vector cannot fill at the end of the chunk take the scalar kernel.
template <typename A, int M>
[[gnu::always_inline]] inline void classify_rows_avx2(const MckpInput<typename A::T>& in, int64_t begin, int64_t end,
                                                      const Bracket<typename A::T>& br,
                                                      BracketChunk<typename A::T>& o, int64_t* choice) {
  using T = typename A::T;
  using V = typename A::V;
  constexpr int W = A::W;
  constexpr bool kPacked = M < W;
  static_assert(kPacked ? W % M == 0 : M % W == 0, "rows must fill whole vectors");
  constexpr int R = kPacked ? W / M : 1;  // rows per vector
  constexpr int B = kPacked ? 1 : M / W;  // vectors per row
  static_assert(B * W <= 64, "equality bits must fit one word");
  const TestConsts<A> k{A::set1(br.lo_m), A::set1(br.hi_m), A::set1(br.mid), A::zero()};
  const V big = A::set1(T(1e9)), lanes = A::lane_ids();
  V finite = A::zero(), low_cost = A::zero();  // sum of x - x (NaN if any x is not finite); min cost
  double spend_hi = o.spend_hi, settled_cost = o.settled_cost, settled_value = o.settled_value;
  bool flagged = false;
  // Settled rows add their choice to the sums; undecided rows go to the hull (after check_row, so
  // that no invalid row reaches it). Plain locals and return values keep the sums in registers.
#define BIDFCL_SETTLE(row, option)                           \
  do {                                                       \
    const int64_t i_ = (row);                                \
    const int j_ = (option);                                 \
    choice[i_] = j_;                                         \
    const double cost_ = double(in.costs[i_ * M + j_]);      \
    spend_hi += cost_;                                       \
    settled_cost += cost_;                                   \
    settled_value += double(in.values[i_ * M + j_]);         \
  } while (0)
#define BIDFCL_UNSETTLE(row)                                                               \
  do {                                                                                     \
    const int64_t i_ = (row);                                                              \
    const T* r_ = in.values + i_ * M;                                                      \
    const T* c_ = in.costs + i_ * M;                                                       \
    if (!check_row(r_, c_, i_, M).ok()) flagged = true;                                    \
    else spend_hi += unsettled_row(r_, c_, i_, M, br, o, build_hull_avx2<A, M>);           \
  } while (0)
  const int64_t vec_end = begin + (end - begin) / R * R;
  int64_t i = begin;
  for (; i < vec_end && !flagged; i += R) {
    const T* r = in.values + i * M;
    const T* c = in.costs + i * M;
    if constexpr (kPacked) {
      const V rv = A::load(r), cv = A::load(c);
      finite = A::add(finite, A::add(A::sub(rv, rv), A::sub(cv, cv)));
      low_cost = A::vmin(low_cost, cv);
      const V score = A::sub(rv, A::mul(k.mid, cv));
      const V is_max = A::eq(score, group_max<A, M>(score));
      const V idx = group_min<A, M>(A::select(is_max, lanes, big));
      const unsigned good = A::bits(settle_mask<A>(rv, cv, A::gather_lanes(rv, idx), A::gather_lanes(cv, idx), k));
      const unsigned first = A::bits(is_max);
      constexpr unsigned full = (1u << M) - 1;
      if (good == (1u << W) - 1) {  // the common case: every row of the vector settled
        for (int g = 0; g < R; ++g) BIDFCL_SETTLE(i + g, std::countr_zero(((first >> (g * M)) & full) | (1u << (M - 1))));
        continue;
      }
      for (int g = 0; g < R && !flagged; ++g) {
        if (((good >> (g * M)) & full) == full) BIDFCL_SETTLE(i + g, std::countr_zero(((first >> (g * M)) & full) | (1u << (M - 1))));
        else BIDFCL_UNSETTLE(i + g);
      }
    } else {
      V rv[B], cv[B], score[B];
      V top = A::set1(-std::numeric_limits<T>::infinity());
      for (int b = 0; b < B; ++b) {
        rv[b] = A::load(r + b * W);
        cv[b] = A::load(c + b * W);
        finite = A::add(finite, A::add(A::sub(rv[b], rv[b]), A::sub(cv[b], cv[b])));
        low_cost = A::vmin(low_cost, cv[b]);
        score[b] = A::sub(rv[b], A::mul(k.mid, cv[b]));
        top = A::vmax(top, score[b]);
      }
      top = group_max<A, W>(top);
      uint64_t is_max = 0;
      for (int b = 0; b < B; ++b) is_max |= uint64_t(A::bits(A::eq(score[b], top))) << (b * W);
      const int j = is_max ? std::countr_zero(is_max) : 0;
      const V rj = A::set1(r[j]), cj = A::set1(c[j]);
      unsigned good = (1u << W) - 1;
      for (int b = 0; b < B; ++b) good &= A::bits(settle_mask<A>(rv[b], cv[b], rj, cj, k));
      if (good == (1u << W) - 1) BIDFCL_SETTLE(i, j);
      else BIDFCL_UNSETTLE(i);
    }
  }
  if (!flagged) {
    // the rows left over at the end of the chunk
    const typename RowKernels<T, M>::Consts ks = RowKernels<T, M>::consts(br.lo_m, br.hi_m, br.mid);
    for (; i < end; ++i) {
      const T* r = in.values + i * M;
      const T* c = in.costs + i * M;
      int j = 0;
      const Verdict verdict = RowKernels<T, M>::classify(r, c, M, ks, j);
      if (verdict == kInvalid) {
        flagged = true;
        break;
      }
      if (verdict == kSettled) BIDFCL_SETTLE(i, j);
      else spend_hi += unsettled_row(r, c, i, M, br, o, build_hull_avx2<A, M>);
    }
  }
#undef BIDFCL_SETTLE
#undef BIDFCL_UNSETTLE
  flagged = flagged || A::bits(A::eq(finite, A::zero())) != (1u << W) - 1 ||
            A::bits(A::ge(low_cost, A::zero())) != (1u << W) - 1;
  if (flagged) {  // the first bad entry of the chunk, as the scalar kernel reports it
    for (int64_t q = begin; q < end; ++q) {
      const Status st = check_row(in.values + q * M, in.costs + q * M, q, M);
      if (!st.ok()) {
        o.status = st;
        return;
      }
    }
  }
  o.spend_hi = spend_hi;
  o.settled_cost = settled_cost;
  o.settled_value = settled_value;
}

template <typename T, int M>
__attribute__((noinline)) void classify_rows_avx2_entry(const MckpInput<T>& in, int64_t begin, int64_t end,
                                                        const Bracket<T>& br, BracketChunk<T>& o, int64_t* choice) {
  using A = std::conditional_t<std::is_same_v<T, float>, Avx2F32, Avx2F64>;
  classify_rows_avx2<A, M>(in, begin, end, br, o, choice);
}
#pragma GCC pop_options

inline bool use_avx2() {
  static const bool yes = [] {
    const char* off = std::getenv("BIDFCL_DISABLE_AVX2");
    return __builtin_cpu_supports("avx2") && !(off && off[0] && std::strcmp(off, "0") != 0);
  }();
  return yes;
}
#endif

// Option counts with an AVX2 kernel: those that fill whole vectors, up to 16.
template <typename T, int M>
constexpr bool kHasAvx2Kernel = M >= 2 && M <= 16 && ((32 / int(sizeof(T))) % M == 0 || M % (32 / int(sizeof(T))) == 0);

// build_hull for M options (0: any), on vectors where the CPU has AVX2 and 2 <= M <= 16.
template <typename T, int M>
inline int build_hull_fast(const T* r, const T* c, int m, uint8_t* out, uint8_t* order, T* bp) {
#ifdef BIDFCL_HAVE_AVX2_PATH
  if constexpr (M >= 2 && M <= kRankSortMaxOptions) {
    if (use_avx2()) return build_hull_avx2_entry<T, M>(r, c, m, out, order, bp);
  }
#endif
  return build_hull(r, c, M > 0 ? M : m, out, order, bp);
}

// The hull builder for a run-time option count.
template <typename T>
HullBuilder<T> hull_builder(int64_t m) {
  switch (m) {
    case 2: return build_hull_fast<T, 2>;
    case 3: return build_hull_fast<T, 3>;
    case 4: return build_hull_fast<T, 4>;
    case 5: return build_hull_fast<T, 5>;
    case 6: return build_hull_fast<T, 6>;
    case 7: return build_hull_fast<T, 7>;
    case 8: return build_hull_fast<T, 8>;
    case 12: return build_hull_fast<T, 12>;
    case 16: return build_hull_fast<T, 16>;
    default: return build_hull_fast<T, 0>;
  }
}

// One chunk of the bracketed pass with M options: the AVX2 kernel where there is one and the CPU
// has it, else the portable one (16-byte vectors when rows fill them, scalar otherwise).
template <typename T, int M>
void classify_chunk(const MckpInput<T>& in, int64_t begin, int64_t end, const Bracket<T>& br, BracketChunk<T>& o,
                    int64_t* choice) {
#ifdef BIDFCL_HAVE_AVX2_PATH
  if constexpr (kHasAvx2Kernel<T, M>) {
    if (use_avx2()) return classify_rows_avx2_entry<T, M>(in, begin, end, br, o, choice);
  }
#endif
  if constexpr (M > 0 && M % (16 / sizeof(T)) == 0) classify_rows<T, VecRowKernels<T, M>>(in, begin, end, br, o, choice);
  else classify_rows<T, RowKernels<T, M>>(in, begin, end, br, o, choice);
}

enum class FastPath { kSolved, kFallBack, kError };

template <typename T>
FastPath bracketed_solve(const MckpSolveParams<T>& p, Status& status) {
  const MckpInput<T>& in = p.in;
  const int64_t n = in.n, m = in.m, nk = p.k;

  // 1. Sample every kSampleStride-th individual exactly (in parallel) and read a bracket off the
  //    sample's spend curve, from a histogram of its steps (no sort: the bracket only needs to be
  //    roughly right, the verification below keeps the answer exact).
  const int64_t ns = (n + kSampleStride - 1) / kSampleStride;
  const Chunking sch = Chunking::make(ns, 512, 64);
  std::vector<std::vector<std::pair<T, double>>> sparts(sch.num_chunks);
  std::vector<double> sbase(sch.num_chunks, 0.0);
  std::vector<char> sbad(sch.num_chunks, 0);
  const HullBuilder<T> build_hull_at = hull_builder<T>(m);
  parallel_chunks(sch.num_chunks, in.num_threads, [&](int64_t ch) {
    uint8_t order[kMaxOptions], hull[kMaxOptions];
    T bps[kMaxOptions];
    for (int64_t q = sch.begin(ch); q < sch.end(ch); ++q) {
      const int64_t i = q * kSampleStride;
      const T* r = in.values + i * m;
      const T* c = in.costs + i * m;
      if (!check_row(r, c, i, m).ok()) {
        sbad[ch] = 1;  // the full algorithm reports it with its position
        return;
      }
      const int len = build_hull_at(r, c, static_cast<int>(m), hull, order, bps);
      sbase[ch] += double(c[hull[0]]);
      for (int s = 1; s < len; ++s) sparts[ch].push_back({bps[s], double(c[hull[s]]) - double(c[hull[s - 1]])});
    }
  });
  double sample_base = 0;
  for (int64_t ch = 0; ch < sch.num_chunks; ++ch) {
    if (sbad[ch]) return FastPath::kFallBack;
    sample_base += sbase[ch];
  }
  std::vector<int64_t> cnt(kNumFine, 0);
  std::vector<double> wsum(kNumFine, 0.0);
  int64_t P = 0;
  for (const auto& part : sparts)
    for (const auto& [bp, dc] : part) {
      const int64_t b = fine_bucket_of(bp);
      ++cnt[b];
      wsum[b] += dc;
      ++P;
    }
  if (P == 0) return FastPath::kFallBack;
  auto bucket_at = [&](int64_t position) {  // the bucket holding the step at this position (descending)
    int64_t pos = 0;
    for (int64_t b = kNumFine - 1; b >= 0; --b) {
      pos += cnt[b];
      if (pos > position) return b;
    }
    return int64_t(0);
  };
  // Each budget's bracket; with several budgets the pass below uses one bracket spanning them all.
  T lo = std::numeric_limits<T>::infinity(), hi = T(0);
  int64_t span_first = P, span_last = 0;  // sample steps (positions, descending bp) inside the span
  for (int64_t kk = 0; kk < nk; ++kk) {
    const double budget_sample = p.budgets[kk] * double(ns) / double(n);  // the budget in sample units
    if (sample_base > budget_sample) return FastPath::kFallBack;
    // cross: number of sample steps above the crossing bucket; cross_end: including it
    int64_t cross = P, cross_end = P;
    {
      double cum = sample_base;
      int64_t pos = 0;
      for (int64_t b = kNumFine - 1; b >= 0; --b) {
        if (cnt[b] == 0) continue;
        if (cum + wsum[b] > budget_sample) {
          cross = pos;
          cross_end = pos + cnt[b];
          break;
        }
        cum += wsum[b];
        pos += cnt[b];
      }
    }
    // The sampled spend at a position is off by about sqrt(position) steps; 3.5 of those plus a few
    // keep fall-backs rare while the bracket stays narrow.
    const int64_t delta = 8 + static_cast<int64_t>(3.5 * std::sqrt(double(std::min(cross, P - cross) + 1)));
    const int64_t b_hi = bucket_at(std::max<int64_t>(cross - delta, 0));
    const T hi_k = b_hi + 1 < kNumFine ? T(fine_bucket_low(b_hi + 1)) : std::numeric_limits<T>::infinity();
    T lo_k = T(0);
    if (cross_end + delta < P) {
      const int64_t b_lo = bucket_at(cross_end + delta);
      lo_k = b_lo > 0 ? T(fine_bucket_low(b_lo - 1)) : T(0);
    }
    lo = std::min(lo, lo_k);
    hi = std::max(hi, hi_k);
    span_first = std::min(span_first, std::max<int64_t>(cross - delta, 0));
    span_last = std::max(span_last, std::min(cross_end + delta, P));
  }
  if (!std::isfinite(double(hi)) || !(hi > lo)) return FastPath::kFallBack;
  // A span holding most steps settles few individuals: the full algorithm is cheaper then.
  if (nk > 1 && 2 * (span_last - span_first) > P) return FastPath::kFallBack;
  const T eps = T(64) * std::numeric_limits<T>::epsilon();
  const T hi_m = hi * (T(1) + eps), lo_m = lo * (T(1) - eps), mid = lo + (hi - lo) / T(2);

  // 2. One pass: settle whom we can, build hulls for the rest. Choices go to the first budget's row.
  const Chunking chunks = Chunking::make(n, 1 << 14, 64);
  const int64_t nc = chunks.num_chunks;
  std::vector<BracketChunk<T>> outs(nc);
  int64_t* choice = p.choice;
  auto pass = [&]<int M>() {
    parallel_chunks(nc, in.num_threads, [&](int64_t ch) {
      const Bracket<T> br{lo, hi, lo_m, hi_m, mid};
      classify_chunk<T, M>(in, chunks.begin(ch), chunks.end(ch), br, outs[ch], choice);
    });
  };
  // Fixed-size kernels for common option counts (vectorised when rows fill whole vectors).
  switch (m) {
    case 2: pass.template operator()<2>(); break;
    case 3: pass.template operator()<3>(); break;
    case 4: pass.template operator()<4>(); break;
    case 5: pass.template operator()<5>(); break;
    case 6: pass.template operator()<6>(); break;
    case 8: pass.template operator()<8>(); break;
    case 12: pass.template operator()<12>(); break;
    case 16: pass.template operator()<16>(); break;
    default: pass.template operator()<0>(); break;
  }
  for (const auto& o : outs) keep_first(status, o.status);
  if (!status.ok()) return FastPath::kError;
  double spend_hi = 0, settled_cost = 0, settled_value = 0;
  std::vector<Candidate<T>> cands;
  for (auto& o : outs) {
    spend_hi += o.spend_hi;
    settled_cost += o.settled_cost;
    settled_value += o.settled_value;
    cands.insert(cands.end(), o.cands.begin(), o.cands.end());
    std::vector<Candidate<T>>().swap(o.cands);
  }

  // 3. The cuts: the bracket's steps in the global order, histogrammed so that only the buckets
  //    where a budget runs out are sorted exactly.
  std::vector<Cut<T>> cuts(nk);
  {
    std::fill(cnt.begin(), cnt.end(), 0);
    std::fill(wsum.begin(), wsum.end(), 0.0);
    for (const auto& cd : cands) {
      const int64_t b = fine_bucket_of(cd.bp);
      ++cnt[b];
      wsum[b] += cd.dc;
    }
    std::vector<std::vector<Candidate<T>>> sorted_buckets(nk > 1 ? kNumFine : 0);
    std::vector<Candidate<T>> here;
    for (int64_t kk = 0; kk < nk; ++kk) {
      const double budget = p.budgets[kk];
      if (spend_hi > budget) return FastPath::kFallBack;  // lam* > hi
      Cut<T>& cut = cuts[kk];
      double spend = spend_hi;
      bool found = false;
      for (int64_t from = kNumFine - 1; !found;) {
        int64_t bc = -1;
        for (int64_t b = from; b >= 0; --b) {
          if (cnt[b] == 0) continue;
          if (spend + wsum[b] > budget) {
            bc = b;
            break;
          }
          spend += wsum[b];
        }
        if (bc < 0) break;
        std::vector<Candidate<T>>& list = nk > 1 ? sorted_buckets[bc] : here;
        if (list.empty()) {  // sorted once, shared by the budgets that run out in this bucket
          list.reserve(cnt[bc]);
          for (const auto& cd : cands)
            if (fine_bucket_of(cd.bp) == bc) list.push_back(cd);
          std::sort(list.begin(), list.end(), [](const Candidate<T>& a, const Candidate<T>& b) {
            if (a.bp != b.bp) return a.bp > b.bp;
            return a.id < b.id;
          });
        }
        for (const auto& cd : list) {
          if (spend + cd.dc > budget) {
            cut.lam = cd.bp;
            cut.individual = cd.id / m;
            cut.step = cd.id % m;
            found = true;
            break;
          }
          spend += cd.dc;
        }
        if (nk == 1) list.clear();
        from = bc - 1;  // only if the bucket's exact walk fit after all (its total rounded up)
      }
      if (!found) {
        if (lo > T(0)) return FastPath::kFallBack;  // lam* < lo
        cut.take_all = true;
      }
    }
  }

  // 4. Choices of the unsettled individuals for every cut (settled ones choose the same for all);
  //    totals.
  for (int64_t kk = 1; kk < nk; ++kk) std::copy(choice, choice + n, choice + kk * n);
  std::vector<double> lams(nk);
  for (int64_t kk = 0; kk < nk; ++kk) lams[kk] = cuts[kk].take_all ? 0.0 : double(cuts[kk].lam);
  std::vector<PolicyTotals> parts(nc * nk);
  parallel_chunks(nc, in.num_threads, [&](int64_t ch) {
    const BracketChunk<T>& o = outs[ch];
    PolicyTotals* acc = parts.data() + ch * nk;
    for (size_t q = 0; q < o.rows.size(); ++q) {
      const int64_t i = o.rows[q];
      const T* r = in.values + i * m;
      const T* c = in.costs + i * m;
      const uint8_t* h = o.hulls.data() + q * m;
      const T* bp = o.bps.data() + q * m;
      for (int64_t kk = 0; kk < nk; ++kk) {
        int taken, above;
        steps_taken(bp, o.lens[q], i, cuts[kk], taken, above);
        const int j = h[taken];
        choice[kk * n + i] = j;
        acc[kk].add(double(c[j]), double(r[j]), double(r[h[above]]) - lams[kk] * double(c[h[above]]));
      }
    }
  });
  for (int64_t kk = 0; kk < nk; ++kk) {
    PolicyTotals t;
    t.add(settled_cost, settled_value, settled_value - lams[kk] * settled_cost);
    for (int64_t ch = 0; ch < nc; ++ch) t.add(parts[ch * nk + kk]);
    write_solution(p, kk, cuts[kk], t);
  }
  return FastPath::kSolved;
}

}  // namespace

template <typename T>
Status solve_mckp_exact_cpu(const MckpSolveParams<T>& p) {
  const MckpInput<T>& in = p.in;
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
  std::vector<Cut<T>> cuts(p.k);
  for (int64_t kk = 0; kk < p.k; ++kk) {
    const double budget = p.budgets[kk];
    Cut<T>& cut = cuts[kk];
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
    p.lam[kk] = cut.infeasible ? std::numeric_limits<T>::infinity() : (cut.take_all ? T(0) : cut.lam);
    p.spend[kk] = spend;
    p.feasible[kk] = !cut.infeasible;
  }
  apply_cuts(in, p1, cuts, p.choice);
  return Status::Ok();
}

template <typename T>
Status mckp_events_cpu(const MckpEventsParams<T>& p, EventList<T>& out) {
  const MckpInput<T>& in = p.in;
  const int64_t m = in.m;
  Pass1<T> p1;
  Status st = build_hulls(in, p1, /*with_histogram=*/false);
  if (!st.ok()) return st;
  const int64_t nc = p1.chunks.num_chunks;
  std::vector<EventList<T>> parts(nc);
  std::vector<Status> status(nc);
  parallel_chunks(nc, in.num_threads, [&](int64_t ch) {
    EventList<T>& ev = parts[ch];
    for (int64_t i = p1.chunks.begin(ch); i < p1.chunks.end(ch); ++i) {
      const T* r = in.values + i * m;
      const T* c = in.costs + i * m;
      const uint8_t* h = p1.hulls.row(i);
      const int len = p1.hulls.len[i];
      if (!p.treatment) {
        for (int s = 1; s < len; ++s) {
          ev.bp.push_back(slope(r, c, h[s - 1], h[s]));
          ev.id.push_back(i * m + s);
          ev.delta.push_back(double(c[h[s]]) - double(c[h[s - 1]]));
        }
        continue;
      }
      // The same events as solve_mckp_rct_cpu: entering the arm's hull point q, leaving it at q+1.
      const int64_t t = p.treatment[i];
      if (t < 0 || t >= m) {
        status[ch] = {Code::kBadTreatment, i, m, double(t)};
        return;
      }
      int q = -1;
      for (int s = 0; s < len; ++s)
        if (h[s] == t) q = s;
      if (q < 0) continue;
      const double w = p.weight[i];
      if (q == 0) ev.base += w;
      else {
        ev.bp.push_back(slope(r, c, h[q - 1], h[q]));
        ev.id.push_back(i * m + q);
        ev.delta.push_back(w);
      }
      if (q + 1 < len) {
        ev.bp.push_back(slope(r, c, h[q], h[q + 1]));
        ev.id.push_back(i * m + q + 1);
        ev.delta.push_back(-w);
      }
    }
  });
  Status first;
  for (const auto& s2 : status) keep_first(first, s2);
  if (!first.ok()) return first;
  size_t total = 0;
  for (const auto& e : parts) total += e.bp.size();
  out.bp.reserve(total);
  out.id.reserve(total);
  out.delta.reserve(total);
  out.base = p.treatment ? 0.0 : chunk_sum<T>(p1.base_spend);
  for (auto& e : parts) {  // chunk order = individual order
    out.bp.insert(out.bp.end(), e.bp.begin(), e.bp.end());
    out.id.insert(out.id.end(), e.id.begin(), e.id.end());
    out.delta.insert(out.delta.end(), e.delta.begin(), e.delta.end());
    if (p.treatment) out.base += e.base;
    e = EventList<T>();  // free the part as soon as it is copied
  }
  return Status::Ok();
}

template <typename T>
Status apply_mckp_cuts_cpu(const MckpApplyParams<T>& p) {
  Pass1<T> p1;
  Status st = build_hulls(p.in, p1, /*with_histogram=*/false);
  if (!st.ok()) return st;
  const std::vector<Cut<T>> cuts(p.cuts, p.cuts + p.k);
  const std::vector<PolicyTotals> totals = apply_cuts(p.in, p1, cuts, p.choice);
  for (int64_t q = 0; q < p.k; ++q) {
    p.spend[q] = totals[q].spend;
    p.value[q] = totals[q].value;
    p.lagrangian[q] = totals[q].lagrangian;
  }
  return Status::Ok();
}

#define BIDFCL_INSTANTIATE(T)                                                  \
  template Status solve_mckp_exact_cpu<T>(const MckpSolveParams<T>&);          \
  template Status solve_mckp_bisection_cpu<T>(const MckpBisectionParams<T>&);  \
  template Status budget_frontier_cpu<T>(const MckpInput<T>&, FrontierResult<T>&); \
  template Status solve_mckp_rct_cpu<T>(const MckpRctParams<T>&);                \
  template Status mckp_events_cpu<T>(const MckpEventsParams<T>&, EventList<T>&); \
  template Status apply_mckp_cuts_cpu<T>(const MckpApplyParams<T>&);
BIDFCL_INSTANTIATE(float)
BIDFCL_INSTANTIATE(double)
#undef BIDFCL_INSTANTIATE

}  // namespace bidfcl::core
