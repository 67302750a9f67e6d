// The settle test of the bracketed fast path (mckp_bracket.cpp) and the vectorised hull builder:
// portable row kernels (scalar with M as a template parameter; 16-byte vectors) and AVX2 kernels
// chosen at run time. The AVX2 code is compiled under `#pragma GCC target("avx2")` below, so it
// lives in this one translation unit (no special flags in CMakeLists.txt).
#include <cstdlib>
#include <cstring>
#include <type_traits>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include <immintrin.h>
#endif

#include "mckp_internal.h"

// 32-byte vector types pass through internal, inlined helpers only; GCC's note that their calling
// convention differs without AVX concerns external ABIs, which none of these functions have.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace bidfcl::core::mckp_detail {
namespace {

// build_hull for a fixed M (0: any) on vectors where the CPU allows (defined with the AVX2 kernels
// below).
template <typename T, int M>
inline int build_hull_fast(const T* r, const T* c, int m, uint8_t* out, uint8_t* order, T* bp);

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
[[gnu::always_inline]] inline void classify_rows(const MckpInput<T>& in, int64_t begin, int64_t end,
                                                 const Bracket<T>& br, BracketChunk<T>& o, int64_t* choice) {
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

// One trait struct per 256-bit vector type (float32: __m256, float64: __m256d). They look alike
// line by line on purpose: each wraps its own intrinsics, and the kernels below are written once
// against either. (Deliberate repetition; a macro over the suffixes would hide what each does.)
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
                                                      const Bracket<typename A::T>& br, BracketChunk<typename A::T>& o,
                                                      int64_t* choice) {
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
#define BIDFCL_SETTLE(row, option)                      \
  do {                                                  \
    const int64_t i_ = (row);                           \
    const int j_ = (option);                            \
    choice[i_] = j_;                                    \
    const double cost_ = double(in.costs[i_ * M + j_]); \
    spend_hi += cost_;                                  \
    settled_cost += cost_;                              \
    settled_value += double(in.values[i_ * M + j_]);    \
  } while (0)
#define BIDFCL_UNSETTLE(row)                                                     \
  do {                                                                           \
    const int64_t i_ = (row);                                                    \
    const T* r_ = in.values + i_ * M;                                            \
    const T* c_ = in.costs + i_ * M;                                             \
    if (!check_row(r_, c_, i_, M).ok()) flagged = true;                          \
    else spend_hi += unsettled_row(r_, c_, i_, M, br, o, build_hull_avx2<A, M>); \
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
        for (int g = 0; g < R; ++g)
          BIDFCL_SETTLE(i + g, std::countr_zero(((first >> (g * M)) & full) | (1u << (M - 1))));
        continue;
      }
      for (int g = 0; g < R && !flagged; ++g) {
        if (((good >> (g * M)) & full) == full)
          BIDFCL_SETTLE(i + g, std::countr_zero(((first >> (g * M)) & full) | (1u << (M - 1))));
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

}  // namespace

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
  if constexpr (M > 0 && M % (16 / sizeof(T)) == 0)
    classify_rows<T, VecRowKernels<T, M>>(in, begin, end, br, o, choice);
  else classify_rows<T, RowKernels<T, M>>(in, begin, end, br, o, choice);
}

#define BIDFCL_INSTANTIATE_M(T, M)                                                                               \
  template void classify_chunk<T, M>(const MckpInput<T>&, int64_t, int64_t, const Bracket<T>&, BracketChunk<T>&, \
                                     int64_t*);
#define BIDFCL_INSTANTIATE(T)                       \
  template HullBuilder<T> hull_builder<T>(int64_t); \
  BIDFCL_INSTANTIATE_M(T, 0)                        \
  BIDFCL_INSTANTIATE_M(T, 2)                        \
  BIDFCL_INSTANTIATE_M(T, 3)                        \
  BIDFCL_INSTANTIATE_M(T, 4)                        \
  BIDFCL_INSTANTIATE_M(T, 5)                        \
  BIDFCL_INSTANTIATE_M(T, 6)                        \
  BIDFCL_INSTANTIATE_M(T, 8)                        \
  BIDFCL_INSTANTIATE_M(T, 12)                       \
  BIDFCL_INSTANTIATE_M(T, 16)
BIDFCL_INSTANTIATE(float)
BIDFCL_INSTANTIATE(double)
#undef BIDFCL_INSTANTIATE
#undef BIDFCL_INSTANTIATE_M

}  // namespace bidfcl::core::mckp_detail
