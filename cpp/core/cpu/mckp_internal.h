// Private to the CPU MCKP solvers (cpp/core/cpu/mckp_*.cpp): the pieces several of them share.
// Not part of the core's interface (that is bidfcl/core/mckp.h); nothing outside this folder
// includes it.
//
// Who does what:
//   mckp_hulls.cpp      pass 1 (validate, hulls, histograms) and pass 3 (choices under cuts), shared
//                       by every exact solver below
//   mckp_exact.cpp      the exact solve (any number of budgets): bucket scan, exact cut, pass 3
//   mckp_bracket.cpp    its bracketed fast path on large N (sample, bracket, settle pass, cuts)
//   mckp_settle.cpp     the settle test's row kernels (scalar, 16-byte vectors, AVX2) and the
//                       vectorised hull builder; the one translation unit with AVX2 code
//   mckp_frontier.cpp   the whole budget curve
//   mckp_bisection.cpp  the paper's bisection on lam (kept for comparison)
//   mckp_rct.cpp        the RCT-calibrated solve (IPW spend estimate)
//   mckp_sharded.cpp    the two pieces of a solve over shards: events and cut application
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "bidfcl/core/mckp.h"
#include "bidfcl/core/parallel.h"

namespace bidfcl::core::mckp_detail {

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
      for (int k = 0; k < m; ++k) rank += (c[k] < cj) | ((c[k] == cj) & ((r[k] > rj) | ((r[k] == rj) & (k < j))));
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

// The hull builder for a run-time option count m: build_hull on vectors where the CPU allows and a
// fixed-M kernel exists, else build_hull itself (mckp_settle.cpp).
template <typename T>
using HullBuilder = int (*)(const T*, const T*, int, uint8_t*, uint8_t*, T*);
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

// Pass 1: validate, build hulls, and (optionally) the per-chunk histograms (mckp_hulls.cpp).
template <typename T>
Status build_hulls(const MckpInput<T>& in, Pass1<T>& p1, bool with_histogram);

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
// are computed once); each cut's sums keep the chunk order, so they do not depend on K
// (mckp_hulls.cpp).
template <typename T>
std::vector<PolicyTotals> apply_cuts(const MckpInput<T>& in, const Pass1<T>& p1, const std::vector<Cut<T>>& cuts,
                                     int64_t* choice);

template <typename T>
inline void write_solution(const MckpSolveParams<T>& p, int64_t kk, const Cut<T>& cut, const PolicyTotals& t) {
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

// One chunk of the bracketed pass with M options (0: any): settles rows [begin, end) or builds their
// hulls, the AVX2 kernel where there is one and the CPU has it, else the portable one
// (mckp_settle.cpp, instantiated for the M that bracketed_solve dispatches on: 0, 2-6, 8, 12, 16).
template <typename T, int M>
void classify_chunk(const MckpInput<T>& in, int64_t begin, int64_t end, const Bracket<T>& br, BracketChunk<T>& o,
                    int64_t* choice);

enum class FastPath { kSolved, kFallBack, kError };

// The fast path for the exact solve (mckp_bracket.cpp): kSolved (outputs written), kError
// (status set), or kFallBack (the bracket missed or does not pay: run the full algorithm).
template <typename T>
FastPath bracketed_solve(const MckpSolveParams<T>& p, Status& status);

}  // namespace bidfcl::core::mckp_detail
