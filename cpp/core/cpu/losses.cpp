// CPU implementation of the decision losses declared in losses.h (PPL / DPL / MER and PIFD / DIFD).
//
// The losses are one pass over rows in fixed chunks (parallel.h): each chunk sums its rows' loss
// into its own double slot and the slots are added in chunk order, so the result does not depend
// on the thread count. Backward passes recompute the row's scores instead of storing them, and can
// write the forward loss as well (Params::loss), so autograd gets loss and gradient in one pass.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "bidfcl/core/losses.h"
#include "bidfcl/core/parallel.h"

namespace bidfcl::core {
namespace {

constexpr int64_t kRowsPerChunk = 1 << 12;

template <typename T>
Status check_lam(const DecisionBatch<T>& in) {
  for (int64_t x = 0; x < in.l; ++x) {
    const Status s = check_lam_entry(in, x);
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

// w[l, i] = reward / (n p_i), in the input dtype (as the twin computes it).
template <typename T>
inline T row_weight(const DecisionBatch<T>& in, int64_t i, T lam) {
  const T reward = in.cost ? in.revenue[i] - lam * in.cost[i] : in.revenue[i];
  return reward / (static_cast<T>(in.n) * in.propensity[i]);
}

// True when every entry of x[0 .. count) is finite: branch-free over the exponent bits, so the
// loop vectorises; the exact per-row check runs only when this fails.
template <typename T>
inline bool all_finite(const T* x, int64_t count) {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  constexpr U kExp = sizeof(T) == 4 ? U(0x7f800000u) : U(0x7ff0000000000000ull);
  U bad = 0;
  for (int64_t k = 0; k < count; ++k) {
    U u;
    std::memcpy(&u, x + k, sizeof(U));
    bad |= U((u & kExp) == kExp);
  }
  return bad == 0;
}

// Fast check of rows [i0, i1): the same conditions as check_decision_row, without locating.
template <typename T>
bool rows_valid(const DecisionBatch<T>& in, int64_t i0, int64_t i1) {
  const int64_t cnt = i1 - i0;
  if (!all_finite(in.r_hat + i0 * in.m, cnt * in.m) || !all_finite(in.c_hat + i0 * in.m, cnt * in.m)) return false;
  if (!all_finite(in.revenue + i0, cnt)) return false;
  if (in.cost && !all_finite(in.cost + i0, cnt)) return false;
  int bad = 0;
  for (int64_t i = i0; i < i1; ++i) {
    const T p = in.propensity[i];
    bad |= int(!(p > T(0))) | int(!(p <= T(1)));
  }
  for (int64_t i = i0; i < i1; ++i) bad |= int(in.treatment[i] < 0) | int(in.treatment[i] >= in.m);
  return bad == 0;
}

// Runs fn(i0, i1) over the rows in fixed chunks [i0, i1), validating each chunk first, and adds
// the chunks' loss contributions (fn returns a double) in chunk order into *total. Returns the
// first error in row order (lam first), in which case fn never ran on a chunk with a bad row.
template <typename T, typename Fn>
Status for_chunks(const DecisionBatch<T>& in, double* total, Fn&& fn) {
  Status s = check_lam(in);
  if (!s.ok()) return s;
  const Chunking chunks = Chunking::make(in.n, kRowsPerChunk, 256);
  std::vector<double> partial(chunks.num_chunks, 0.0);
  std::vector<Status> status(chunks.num_chunks);
  parallel_chunks(chunks.num_chunks, in.num_threads, [&](int64_t ch) {
    if (!rows_valid(in, chunks.begin(ch), chunks.end(ch))) {
      for (int64_t i = chunks.begin(ch); i < chunks.end(ch); ++i) {  // find the first bad row
        Status rs = check_decision_row(in, i);
        if (!rs.ok()) {
          status[ch] = rs;
          return;
        }
      }
    }
    partial[ch] = fn(chunks.begin(ch), chunks.end(ch));
  });
  Status first;
  for (const auto& st : status) keep_first(first, st);
  if (!first.ok()) return first;
  double sum = 0;
  for (double x : partial) sum += x;
  if (total) *total = sum;
  return Status::Ok();
}

// for_chunks with fn(i) -> double called per row.
template <typename T, typename Fn>
Status for_rows(const DecisionBatch<T>& in, double* total, Fn&& fn) {
  return for_chunks(in, total, [&](int64_t i0, int64_t i1) {
    double acc = 0;
    for (int64_t i = i0; i < i1; ++i) acc += fn(i);
    return acc;
  });
}

// Scores of one row for one multiplier.
template <typename T>
inline void row_scores(const T* r, const T* c, T lam, int64_t m, T* a) {
  for (int64_t j = 0; j < m; ++j) a[j] = r[j] - lam * c[j];
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

}  // namespace

namespace {

constexpr int64_t kBlockRows = 64;  // rows processed together so the per-option loops vectorise

// exp for float32 that the compiler can vectorise (no libm call): exp(x) = 2^k exp(r) with
// k = round(x / ln 2), |r| <= ln2 / 2, and a degree-6 Taylor polynomial for exp(r) (relative error
// below 1e-7, about one float ulp). For x <= 0 only (softmax arguments): inputs below -87 are
// clamped to it (exp(-87) ~ 1.6e-38 stands in for anything smaller).
inline float vector_exp(float x) {
  // clamp below at -87 on the bit pattern (an integer select, which vectorises; for negative
  // floats a larger pattern is a more negative number)
  const uint32_t limit = 0xC2AE0000u;  // bits of -87.0f
  uint32_t u = std::bit_cast<uint32_t>(x);
  u = u > limit ? limit : u;
  x = std::bit_cast<float>(u);
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  const float k = (x * 1.44269504088896341f + magic) - magic;
  float r = x - k * 0.693145751953125f;
  r = r - k * 1.428606765330187045e-06f;
  float poly = 1.0f / 720.0f;
  poly = poly * r + 1.0f / 120.0f;
  poly = poly * r + 1.0f / 24.0f;
  poly = poly * r + 1.0f / 6.0f;
  poly = poly * r + 0.5f;
  poly = poly * r + 1.0f;
  poly = poly * r + 1.0f;
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(k) + 127) << 23;
  return poly * std::bit_cast<float>(bits);
}
inline double vector_exp(double x) { return std::exp(x); }  // float64 keeps libm's accuracy

// e[b] = exp((e[b] - mx[b]) * inv_tau), sum[b] += e[b]  (one option column of a block).
template <typename T>
inline void exp_shifted(T* __restrict e, const T* __restrict mx, T* __restrict sum, int64_t nb, T inv_tau) {
  for (int64_t b = 0; b < nb; ++b) {
    const T x = vector_exp((e[b] - mx[b]) * inv_tau);
    e[b] = x;
    sum[b] += x;
  }
}

// The float32 loop is the hot spot: on x86-64 with GCC, also compile an AVX2 clone and let the
// loader pick it on CPUs that have AVX2 (same arithmetic, wider vectors; no FMA contraction).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
__attribute__((target_clones("avx2", "default")))
#endif
void exp_shifted_f32(float* __restrict e, const float* __restrict mx, float* __restrict sum, int64_t nb,
                     float inv_tau) {
  exp_shifted<float>(e, mx, sum, nb, inv_tau);
}
inline void exp_column(float* e, const float* mx, float* sum, int64_t nb, float inv_tau) {
  exp_shifted_f32(e, mx, sum, nb, inv_tau);
}
inline void exp_column(double* e, const double* mx, double* sum, int64_t nb, double inv_tau) {
  exp_shifted<double>(e, mx, sum, nb, inv_tau);
}

// Softmax pieces of rows [i0, i0 + nb) for one multiplier, option-major in e ([m][kBlockRows]):
// e[j][b] = exp((a_bj - max_j a_bj) / tau), inv_sum[b] = 1 / sum_j e[j][b], zt[b] = e[t_b][b] * inv_sum[b],
// w[b] = reward / (n p) of the row.
// kM > 0 is the option count known at compile time (== in.m), so the compiler can unroll the
// per-option loops and fix the strides; kM == 0 reads in.m at run time. Same arithmetic either way.
template <int64_t kM, typename T>
void softmax_block(const DecisionBatch<T>& in, int64_t i0, int64_t nb, T lam, T inv_tau, T* e, T* inv_sum, T* zt,
                   T* w) {
  const int64_t m = kM > 0 ? kM : in.m;
  const T* r = in.r_hat + i0 * m;
  const T* c = in.c_hat + i0 * m;
  T mx[kBlockRows], sum[kBlockRows];
  for (int64_t b = 0; b < nb; ++b) {
    const T a0 = r[b * m] - lam * c[b * m];
    e[b] = a0;
    mx[b] = a0;
    sum[b] = T(0);
  }
  for (int64_t j = 1; j < m; ++j) {
    T* __restrict ej = e + j * kBlockRows;
    for (int64_t b = 0; b < nb; ++b) {
      const T a = r[b * m + j] - lam * c[b * m + j];
      ej[b] = a;
      mx[b] = a > mx[b] ? a : mx[b];
    }
  }
  for (int64_t j = 0; j < m; ++j) exp_column(e + j * kBlockRows, mx, sum, nb, inv_tau);
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t i = i0 + b;
    inv_sum[b] = T(1) / sum[b];
    zt[b] = e[in.treatment[i] * kBlockRows + b] * inv_sum[b];
    w[b] = row_weight(in, i, lam);
  }
}

// for_chunks handing fn whole blocks of validated rows: fn(i0, nb, scratch) -> double, with
// per-chunk scratch of m * kBlockRows + 3 * kBlockRows entries.
template <typename T, typename Fn>
Status for_blocks(const DecisionBatch<T>& in, double* total, Fn&& fn) {
  return for_chunks(in, total, [&](int64_t c0, int64_t c1) {
    std::vector<T> scratch(static_cast<size_t>(in.m * kBlockRows + 3 * kBlockRows));
    double acc = 0;
    for (int64_t i0 = c0; i0 < c1; i0 += kBlockRows) acc += fn(i0, std::min(kBlockRows, c1 - i0), scratch.data());
    return acc;
  });
}

// Calls fn(std::integral_constant<int64_t, kM>) with kM == m for the common small option counts
// (specialised loops), kM == 0 otherwise. Every specialisation computes the same thing.
template <typename Fn>
Status with_option_count(int64_t m, Fn&& fn) {
  switch (m) {
    case 2: return fn(std::integral_constant<int64_t, 2>{});
    case 3: return fn(std::integral_constant<int64_t, 3>{});
    case 4: return fn(std::integral_constant<int64_t, 4>{});
    case 5: return fn(std::integral_constant<int64_t, 5>{});
    case 8: return fn(std::integral_constant<int64_t, 8>{});
    case 16: return fn(std::integral_constant<int64_t, 16>{});
    default: return fn(std::integral_constant<int64_t, 0>{});
  }
}

}  // namespace

template <typename T>
Status ppl_loss_forward_cpu(const PplLossParams<T>& p) {
  const auto& in = p.in;
  const T inv_tau = static_cast<T>(1.0 / p.tau);
  double total = 0;
  Status s = with_option_count(in.m, [&](auto fixed_m) {
    constexpr int64_t kM = decltype(fixed_m)::value;
    return for_blocks(in, &total, [&](int64_t i0, int64_t nb, T* scratch) {
      T* e = scratch;
      T* inv_sum = e + in.m * kBlockRows;
      T *zt = inv_sum + kBlockRows, *w = zt + kBlockRows;
      double acc = 0;
      for (int64_t l = 0; l < in.l; ++l) {
        softmax_block<kM>(in, i0, nb, in.lam[l], inv_tau, e, inv_sum, zt, w);
        for (int64_t b = 0; b < nb; ++b) acc -= double(zt[b] * w[b]);
      }
      return acc;
    });
  });
  if (!s.ok()) return s;
  p.loss[0] = static_cast<T>(total);
  return Status::Ok();
}

template <typename T>
Status ppl_loss_gradient_cpu(const PplGradientParams<T>& p) {
  const auto& in = p.in;
  const T inv_tau = static_cast<T>(1.0 / p.tau);
  const T go = p.grad_output[0];
  double total = 0;
  const Status s = with_option_count(in.m, [&](auto fixed_m) {
    constexpr int64_t kM = decltype(fixed_m)::value;
    const int64_t m = kM > 0 ? kM : in.m;
    return for_blocks(in, &total, [&](int64_t i0, int64_t nb, T* scratch) {
      T* e = scratch;
      T* inv_sum = e + m * kBlockRows;
      T *zt = inv_sum + kBlockRows, *w = zt + kBlockRows;
      T* gr = p.grad_r_hat + i0 * m;
      T* gc = p.grad_c_hat + i0 * m;
      T coef[kBlockRows];
      double acc = 0;  // the forward loss of the block, summed as ppl_loss_forward_cpu sums it
      for (int64_t l = 0; l < in.l; ++l) {
        const T lam = in.lam[l];
        softmax_block<kM>(in, i0, nb, lam, inv_tau, e, inv_sum, zt, w);
        for (int64_t b = 0; b < nb; ++b) acc -= double(zt[b] * w[b]);
        // dL/da_j = coef (1[j == t] - z_j) with coef = -(w / tau) z_t, times the upstream gradient:
        // -coef z_j on every cell (computed in place, option-major), then +coef on the row's arm
        for (int64_t b = 0; b < nb; ++b) coef[b] = -(w[b] * inv_tau) * zt[b] * go;
        for (int64_t j = 0; j < m; ++j) {
          T* __restrict ej = e + j * kBlockRows;
          for (int64_t b = 0; b < nb; ++b) ej[b] = -(coef[b] * (ej[b] * inv_sum[b]));
        }
        for (int64_t b = 0; b < nb; ++b) {
          T* gr_row = gr + b * m;
          T* gc_row = gc + b * m;
          if (l == 0) {
            for (int64_t j = 0; j < m; ++j) {
              gr_row[j] = e[j * kBlockRows + b];
              gc_row[j] = -(lam * e[j * kBlockRows + b]);
            }
          } else {
            for (int64_t j = 0; j < m; ++j) {
              gr_row[j] += e[j * kBlockRows + b];
              gc_row[j] -= lam * e[j * kBlockRows + b];
            }
          }
          const int64_t t = in.treatment[i0 + b];
          gr_row[t] += coef[b];
          gc_row[t] -= lam * coef[b];
        }
      }
      return acc;
    });
  });
  if (s.ok() && p.loss) p.loss[0] = static_cast<T>(total);
  return s;
}

template <typename T>
Status pifd_loss_forward_cpu(const PifdLossParams<T>& p) {
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
Status pifd_loss_gradient_cpu(const PifdGradientParams<T>& p) {
  const auto& in = p.in;
  const int64_t m = in.m;
  const T go = p.grad_output[0];
  double total = 0;
  const Status st = for_rows(in, &total, [&](int64_t i) {
    T a[kMaxLossOptions];
    const T* r = in.r_hat + i * m;
    const T* c = in.c_hat + i * m;
    T* gr = p.grad_r_hat + i * m;
    T* gc = p.grad_c_hat + i * m;
    for (int64_t j = 0; j < m; ++j) gr[j] = gc[j] = T(0);
    const int64_t t = in.treatment[i];
    double acc = 0;  // the row's forward loss, as pifd_loss_forward_cpu sums it
    for (int64_t l = 0; l < in.l; ++l) {
      const T lam = in.lam[l];
      row_scores(r, c, lam, m, a);
      int64_t k, s;
      top_two(a, m, k, s);
      const T rw = row_weight(in, i, lam);
      if (k == t) acc -= double(rw);
      const T cw = rw * go;
      auto add = [&](int64_t j, T g) {
        gr[j] += g;
        gc[j] -= lam * g;
      };
      if (k == t) {
        // matched: any flip loses the contribution; a_k moves down to a_s, a_j up to a_k
        add(k, -cw * pifd_inv_gap(a[k] - a[s], p.clip));
        for (int64_t j = 0; j < m; ++j)
          if (j != k) add(j, cw * pifd_inv_gap(a[k] - a[j], p.clip));
      } else {
        // unmatched: only a flip onto t gains it: a_t up to a_k, or a_k down when t is runner-up
        const T ig = pifd_inv_gap(a[k] - a[t], p.clip);
        add(t, -cw * ig);
        if (s == t) add(k, cw * ig);
      }
    }
    return acc;
  });
  if (st.ok() && p.loss) p.loss[0] = static_cast<T>(total);
  return st;
}

#define BIDFCL_INSTANTIATE(T)                                            \
  template Status ppl_loss_forward_cpu<T>(const PplLossParams<T>&);      \
  template Status ppl_loss_gradient_cpu<T>(const PplGradientParams<T>&); \
  template Status pifd_loss_forward_cpu<T>(const PifdLossParams<T>&);    \
  template Status pifd_loss_gradient_cpu<T>(const PifdGradientParams<T>&);
BIDFCL_INSTANTIATE(float)
BIDFCL_INSTANTIATE(double)
#undef BIDFCL_INSTANTIATE

}  // namespace bidfcl::core
