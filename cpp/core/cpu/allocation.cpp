// CPU implementation of the multi-constraint allocation routines in allocation.h.
//
// Determinism: users are cut into fixed chunks (parallel.h); per-chunk partial sums are combined in
// chunk order, and the sequential parts (the repair heap) break every tie by (user, option). So the
// results do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <limits>
#include <queue>
#include <type_traits>
#include <vector>

#include "bidfcl/core/allocation.h"
#include "bidfcl/core/mckp.h"
#include "bidfcl/core/parallel.h"

namespace bidfcl::core {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

template <typename T>
inline bool eligible_at(const AllocationInput<T>& in, int64_t i, int64_t j) {
  return in.eligible == nullptr || in.eligible[i * in.m + j];
}

inline int64_t group_slot(int64_t k, int64_t m, int64_t g, int64_t kk, int64_t gi) { return k + m + kk * g + gi; }

// The K resource weights w_k = T(lam_k + lam_{k, g_i}) of user i; `skip` (if >= 0) is a constraint
// whose multiplier is left out (the coordinate being line-searched).
template <typename T>
inline void user_weights(const AllocationInput<T>& in, const double* lam, int64_t i, int64_t skip, T* w) {
  const int64_t gi = in.groups ? in.groups[i] : -1;
  for (int64_t kk = 0; kk < in.k; ++kk) {
    double x = kk == skip ? 0.0 : lam[kk];
    if (gi >= 0) {
      const int64_t js = group_slot(in.k, in.m, in.g, kk, gi);
      if (js != skip) x += lam[js];
    }
    w[kk] = T(x);
  }
}

// Validates row i of every input: values, costs, eligibility, group label.
template <typename T>
Status check_user(const AllocationInput<T>& in, int64_t i) {
  const int64_t m = in.m, plane = in.n * in.m;
  const T* r = in.values + i * m;
  for (int64_t j = 0; j < m; ++j)
    if (!std::isfinite(r[j])) return {Code::kNonFiniteValue, i, j, double(r[j])};
  for (int64_t kk = 0; kk < in.k; ++kk) {
    const T* c = in.costs + kk * plane + i * m;
    for (int64_t j = 0; j < m; ++j) {
      // the column index carries the resource: col = kk * m + j (the glue prints [k, i, j])
      if (!std::isfinite(c[j])) return {Code::kNonFiniteCost, i, kk * m + j, double(c[j])};
      if (c[j] < T(0)) return {Code::kNegativeCost, i, kk * m + j, double(c[j])};
    }
  }
  if (in.eligible) {
    bool any = false;
    for (int64_t j = 0; j < m; ++j) any |= in.eligible[i * m + j];
    if (!any) return {Code::kNoEligibleOption, i, -1, 0.0};
  }
  if (in.groups) {
    const int64_t gi = in.groups[i];
    if (gi < 0 || gi >= in.g) return {Code::kBadGroup, i, in.g, double(gi)};
  }
  return Status::Ok();
}

template <typename T>
Status validate(const AllocationInput<T>& in) {
  const Chunking ch = Chunking::make(in.n, 1 << 14, 64);
  std::vector<Status> status(ch.num_chunks);
  parallel_chunks(ch.num_chunks, in.num_threads, [&](int64_t c) {
    for (int64_t i = ch.begin(c); i < ch.end(c); ++i) {
      Status s = check_user(in, i);
      if (!s.ok()) {
        status[c] = s;
        return;
      }
    }
  });
  Status first;
  for (const auto& s : status) keep_first(first, s);
  return first;
}

// Adjusted scores of user i into s[0 .. m); ineligible options get no score (elig[j] = false).
template <typename T>
inline void user_scores(const AllocationInput<T>& in, const double* lam, int64_t i, int64_t skip, T* s) {
  T w[kMaxOptions];  // K <= kMaxOptions is checked by the glue
  user_weights(in, lam, i, skip, w);
  const int64_t m = in.m, plane = in.n * in.m;
  const T* r = in.values + i * m;
  const T* c = in.costs + i * m;
  for (int64_t j = 0; j < m; ++j) {
    const int64_t jc = in.k + j;
    const T mu = jc == skip ? T(0) : T(lam[jc]);
    s[j] = adjusted_score(r, c, plane, j, in.k, w, mu);
  }
}

// max over eligible options of the score in double (weights not rounded to T): the user's term of
// the dual function, so that the reported bound is not lowered by the rounding of float32 scores.
template <typename T>
inline double user_dual_term(const AllocationInput<T>& in, const double* lam, int64_t i) {
  double w[kMaxOptions];
  const int64_t gi = in.groups ? in.groups[i] : -1;
  for (int64_t kk = 0; kk < in.k; ++kk) w[kk] = lam[kk] + (gi >= 0 ? lam[group_slot(in.k, in.m, in.g, kk, gi)] : 0.0);
  const int64_t m = in.m, plane = in.n * in.m;
  double best = -kInf;
  for (int64_t j = 0; j < m; ++j) {
    if (!eligible_at(in, i, j)) continue;
    double s = double(in.values[i * m + j]);
    for (int64_t kk = 0; kk < in.k; ++kk) s -= w[kk] * double(in.costs[kk * plane + i * m + j]);
    s -= lam[in.k + j];
    best = std::max(best, s);
  }
  return best;
}

template <typename T>
inline int64_t best_option(const AllocationInput<T>& in, int64_t i, const T* s) {
  int64_t best = -1;
  for (int64_t j = 0; j < in.m; ++j) {
    if (!eligible_at(in, i, j)) continue;
    if (best < 0 || s[j] > s[best]) best = j;
  }
  return best;
}

// Spend of a choice per constraint and its value, in chunk order.
template <typename T>
void choice_totals(const AllocationInput<T>& in, const int64_t* choice, double* spend, double* value) {
  const int64_t J = in.num_constraints(), m = in.m, plane = in.n * in.m;
  const Chunking ch = Chunking::make(in.n, 1 << 14, 64);
  std::vector<double> parts(ch.num_chunks * (J + 1), 0.0);
  parallel_chunks(ch.num_chunks, in.num_threads, [&](int64_t c) {
    double* acc = parts.data() + c * (J + 1);
    for (int64_t i = ch.begin(c); i < ch.end(c); ++i) {
      const int64_t x = choice[i];
      const int64_t gi = in.groups ? in.groups[i] : -1;
      for (int64_t kk = 0; kk < in.k; ++kk) {
        const double cost = double(in.costs[kk * plane + i * m + x]);
        acc[kk] += cost;
        if (gi >= 0) acc[group_slot(in.k, m, in.g, kk, gi)] += cost;
      }
      acc[in.k + x] += 1.0;
      acc[J] += double(in.values[i * m + x]);
    }
  });
  for (int64_t j = 0; j <= J; ++j) {
    double t = 0;
    for (int64_t c = 0; c < ch.num_chunks; ++c) t += parts[c * (J + 1) + j];
    if (j < J) spend[j] = t;
    else *value = t;
  }
}

// ---- line searches ---------------------------------------------------------------------------

// Resource (or group) coordinate: materialise the single-budget problem on `rows` (all users when
// rows is empty and all_rows is set) and solve it exactly.
template <typename T>
Status resource_line_search(const AllocationInput<T>& in, const double* lam, int64_t j, int64_t kk, double budget,
                            const std::vector<int64_t>& rows, bool all_rows, double* lam_out) {
  const int64_t m = in.m, plane = in.n * in.m;
  const int64_t n2 = all_rows ? in.n : static_cast<int64_t>(rows.size());
  if (n2 == 0) {
    *lam_out = 0.0;
    return Status::Ok();
  }
  std::vector<T> vals(static_cast<size_t>(n2 * m));
  std::vector<T> masked;  // costs with ineligible options made dominated (only with eligibility)
  const T* cost_ptr = nullptr;
  const bool copy_costs = in.eligible != nullptr || !all_rows;
  if (copy_costs) masked.resize(static_cast<size_t>(n2 * m));
  else cost_ptr = in.costs + kk * plane;
  const Chunking ch = Chunking::make(n2, 1 << 14, 64);
  parallel_chunks(ch.num_chunks, in.num_threads, [&](int64_t c) {
    T s[kMaxOptions];
    for (int64_t q = ch.begin(c); q < ch.end(c); ++q) {
      const int64_t i = all_rows ? q : rows[q];
      user_scores(in, lam, i, j, s);
      // s excludes lam_j's term; the line search adds -lam_j c_k back.
      T* v = vals.data() + q * m;
      const T* c = in.costs + kk * plane + i * m;
      if (!copy_costs) {
        for (int64_t o = 0; o < m; ++o) v[o] = s[o];
        continue;
      }
      T* cm = masked.data() + q * m;
      if (in.eligible == nullptr) {
        for (int64_t o = 0; o < m; ++o) {
          v[o] = s[o];
          cm[o] = c[o];
        }
        continue;
      }
      // An ineligible option gets the row's largest eligible cost and a value below every eligible
      // one: every eligible option dominates it, so no multiplier selects it.
      T vmin = std::numeric_limits<T>::max(), cmax = T(0);
      for (int64_t o = 0; o < m; ++o)
        if (in.eligible[i * m + o]) {
          vmin = std::min(vmin, s[o]);
          cmax = std::max(cmax, c[o]);
        }
      T low = vmin - (T(1) + std::abs(vmin));
      if (!std::isfinite(low)) low = std::numeric_limits<T>::lowest();
      for (int64_t o = 0; o < m; ++o) {
        const bool e = in.eligible[i * m + o];
        v[o] = e ? s[o] : low;
        cm[o] = e ? c[o] : cmax;
      }
    }
  });
  T lam_k = T(0);
  std::vector<int64_t> choice(static_cast<size_t>(n2));
  double spend = 0, value = 0, dual = 0;
  bool feasible = false;
  MckpSolveParams<T> sp;
  sp.in.values = vals.data();
  sp.in.costs = copy_costs ? masked.data() : cost_ptr;
  sp.in.n = n2;
  sp.in.m = m;
  sp.in.num_threads = in.num_threads;
  sp.budgets = &budget;
  sp.k = 1;
  sp.lam = &lam_k;
  sp.choice = choice.data();
  sp.spend = &spend;
  sp.value = &value;
  sp.dual_bound = &dual;
  sp.feasible = &feasible;
  Status st = run_solve_mckp_cpu<T>(sp);
  if (!st.ok()) return st;
  *lam_out = feasible ? double(lam_k) : kInf;
  return Status::Ok();
}

// Capacity coordinate of option o: margins d_i of option o over the user's best other eligible
// option (scores without mu_o); lam* is the (cap + 1)-th largest margin, or 0.
template <typename T>
Status capacity_line_search(const AllocationInput<T>& in, const double* lam, int64_t o, double cap, double* lam_out) {
  const int64_t m = in.m, n = in.n;
  const int64_t j = in.k + o;
  const int64_t limit = cap >= double(n) ? n : static_cast<int64_t>(std::floor(cap));
  const Chunking ch = Chunking::make(n, 1 << 14, 64);
  std::vector<std::vector<double>> parts(ch.num_chunks);
  parallel_chunks(ch.num_chunks, in.num_threads, [&](int64_t c) {
    T s[kMaxOptions];
    auto& out = parts[c];
    for (int64_t i = ch.begin(c); i < ch.end(c); ++i) {
      if (!eligible_at(in, i, o)) continue;
      user_scores(in, lam, i, j, s);
      bool other = false;
      T best = T(0);
      for (int64_t q = 0; q < m; ++q) {
        if (q == o || !eligible_at(in, i, q)) continue;
        if (!other || s[q] > best) best = s[q];
        other = true;
      }
      const double d = other ? double(s[o]) - double(best) : kInf;
      if (d > 0) out.push_back(d);
    }
  });
  std::vector<double> margins;
  for (auto& v : parts) margins.insert(margins.end(), v.begin(), v.end());
  if (static_cast<int64_t>(margins.size()) <= limit) {
    *lam_out = 0.0;
    return Status::Ok();
  }
  std::nth_element(margins.begin(), margins.begin() + limit, margins.end(), std::greater<double>());
  *lam_out = margins[limit];  // +inf when more than `limit` users have no other eligible option
  return Status::Ok();
}

// ---- repair and fill ---------------------------------------------------------------------------

struct Move {
  double key;  // smaller is better
  int64_t user;
  int64_t to;
  bool operator>(const Move& o) const {
    if (key != o.key) return key > o.key;
    if (user != o.user) return user > o.user;
    return to > o.to;
  }
};
using MoveHeap = std::priority_queue<Move, std::vector<Move>, std::greater<Move>>;

struct RepairState {
  std::vector<double> spend, budget, weight, lam;
  std::vector<char> violated;
  int64_t num_violated() const {
    int64_t c = 0;
    for (char v : violated) c += v;
    return c;
  }
};

// The best move of user i in the repair phase (repair = true) or the fill phase; key = +inf if none.
// Constraint deltas are visited in one fixed order: for each resource kk its global and then its
// group constraint, then the capacity of the current option, then that of the target.
template <typename T>
Move best_move(const AllocationInput<T>& in, const RepairState& st, const int64_t* choice, int64_t i, bool repair) {
  const int64_t m = in.m, plane = in.n * in.m, x = choice[i];
  const int64_t gi = in.groups ? in.groups[i] : -1;
  const T* r = in.values + i * m;
  Move best{kInf, i, -1};
  for (int64_t to = 0; to < m; ++to) {
    if (to == x || !eligible_at(in, i, to)) continue;
    bool ok = true;
    double acc = 0;  // repair: violation removed (weighted); fill: sum_j lam_j delta_j
    auto visit = [&](int64_t j, double d) {
      if (st.violated[j]) {
        if (d > 0) ok = false;
        else if (repair) acc += st.weight[j] * -d;
      } else if (d > 0 && st.spend[j] + d > st.budget[j]) {
        ok = false;
      }
      if (!repair && st.lam[j] != 0) acc += st.lam[j] * d;
    };
    for (int64_t kk = 0; kk < in.k && ok; ++kk) {
      const double d = double(in.costs[kk * plane + i * m + to]) - double(in.costs[kk * plane + i * m + x]);
      visit(kk, d);
      if (gi >= 0) visit(group_slot(in.k, m, in.g, kk, gi), d);
    }
    if (!ok) continue;
    visit(in.k + x, -1.0);
    visit(in.k + to, 1.0);
    if (!ok) continue;
    double key;
    if (repair) {
      if (!(acc > 0)) continue;
      key = (double(r[x]) - double(r[to])) / acc;
    } else {
      const double gain = double(r[to]) - double(r[x]);
      if (!(gain > 0)) continue;
      key = -(gain - acc);
    }
    if (key < best.key) best = {key, i, to};
  }
  return best;
}

template <typename T>
MoveHeap build_heap(const AllocationInput<T>& in, const RepairState& st, const int64_t* choice, bool repair) {
  const Chunking ch = Chunking::make(in.n, 1 << 14, 64);
  std::vector<std::vector<Move>> parts(ch.num_chunks);
  parallel_chunks(ch.num_chunks, in.num_threads, [&](int64_t c) {
    for (int64_t i = ch.begin(c); i < ch.end(c); ++i) {
      const Move mv = best_move(in, st, choice, i, repair);
      if (mv.to >= 0) parts[c].push_back(mv);
    }
  });
  std::vector<Move> all;
  for (auto& v : parts) all.insert(all.end(), v.begin(), v.end());
  return MoveHeap(std::greater<Move>(), std::move(all));
}

template <typename T>
void apply_move(const AllocationInput<T>& in, RepairState& st, int64_t* choice, const Move& mv) {
  const int64_t m = in.m, plane = in.n * in.m, i = mv.user, x = choice[i];
  const int64_t gi = in.groups ? in.groups[i] : -1;
  for (int64_t kk = 0; kk < in.k; ++kk) {
    const double d = double(in.costs[kk * plane + i * m + mv.to]) - double(in.costs[kk * plane + i * m + x]);
    st.spend[kk] += d;
    if (gi >= 0) st.spend[group_slot(in.k, m, in.g, kk, gi)] += d;
  }
  st.spend[in.k + x] -= 1.0;
  st.spend[in.k + mv.to] += 1.0;
  choice[i] = mv.to;
}

// Runs one phase to its end; returns the number of moves applied.
template <typename T>
int64_t run_phase(const AllocationInput<T>& in, RepairState& st, int64_t* choice, bool repair) {
  const int64_t J = in.num_constraints();
  int64_t moves = 0;
  auto refresh = [&]() {
    for (int64_t j = 0; j < J; ++j) {
      st.violated[j] = st.spend[j] > st.budget[j];
      st.weight[j] = st.violated[j] ? 1.0 / st.spend[j] : 0.0;
    }
  };
  refresh();
  if (repair && st.num_violated() == 0) return 0;
  MoveHeap heap = build_heap(in, st, choice, repair);
  while (!heap.empty()) {
    const Move top = heap.top();
    heap.pop();
    const Move now = best_move(in, st, choice, top.user, repair);
    if (now.to < 0) continue;
    if (now.key != top.key || now.to != top.to) {
      heap.push(now);
      continue;
    }
    const int64_t before = st.num_violated();
    apply_move(in, st, choice, now);
    ++moves;
    if (repair) {
      refresh();
      const int64_t after = st.num_violated();
      if (after == 0) break;
      if (after != before) {
        heap = build_heap(in, st, choice, repair);  // the weights changed
        continue;
      }
    }
    const Move next = best_move(in, st, choice, top.user, repair);
    if (next.to >= 0) heap.push(next);
  }
  return moves;
}

}  // namespace

template <typename T>
Status run_allocation_policy_cpu(const AllocationPolicyParams<T>& p) {
  const AllocationInput<T>& in = p.in;
  if (in.check) {
    Status st = validate(in);
    if (!st.ok()) return st;
  }
  const int64_t J = in.num_constraints(), m = in.m, plane = in.n * in.m;
  const Chunking ch = Chunking::make(in.n, 1 << 14, 64);
  std::vector<double> parts(ch.num_chunks * (J + 2), 0.0);
  parallel_chunks(ch.num_chunks, in.num_threads, [&](int64_t c) {
    double* acc = parts.data() + c * (J + 2);
    T s[kMaxOptions];
    for (int64_t i = ch.begin(c); i < ch.end(c); ++i) {
      user_scores(in, p.lam, i, -1, s);
      const int64_t x = best_option(in, i, s);
      p.choice[i] = x;
      const int64_t gi = in.groups ? in.groups[i] : -1;
      for (int64_t kk = 0; kk < in.k; ++kk) {
        const double cost = double(in.costs[kk * plane + i * m + x]);
        acc[kk] += cost;
        if (gi >= 0) acc[group_slot(in.k, m, in.g, kk, gi)] += cost;
      }
      acc[in.k + x] += 1.0;
      acc[J] += double(in.values[i * m + x]);
      acc[J + 1] += std::is_same_v<T, double> ? double(s[x]) : user_dual_term(in, p.lam, i);
    }
  });
  for (int64_t j = 0; j < J + 2; ++j) {
    double t = 0;
    for (int64_t c = 0; c < ch.num_chunks; ++c) t += parts[c * (J + 2) + j];
    if (j < J) p.spend[j] = t;
    else if (j == J) *p.value = t;
    else *p.lagrangian = t;
  }
  return Status::Ok();
}

template <typename T>
Status run_allocation_line_search_cpu(const AllocationLineSearchParams<T>& p) {
  const AllocationInput<T>& in = p.in;
  if (in.check) {
    Status st = validate(in);
    if (!st.ok()) return st;
  }
  const int64_t j = p.constraint, k = in.k, m = in.m;
  const double budget = p.budgets[j];
  if (!(budget < kInf)) {
    *p.lam_out = 0.0;
    return Status::Ok();
  }
  if (j < k) return resource_line_search(in, p.lam, j, j, budget, {}, true, p.lam_out);
  if (j < k + m) return capacity_line_search(in, p.lam, j - k, budget, p.lam_out);
  const int64_t kk = (j - k - m) / in.g, g = (j - k - m) % in.g;
  std::vector<int64_t> rows;
  for (int64_t i = 0; i < in.n; ++i)
    if (in.groups[i] == g) rows.push_back(i);
  return resource_line_search(in, p.lam, j, kk, budget, rows, false, p.lam_out);
}

template <typename T>
Status run_allocation_smoothed_cpu(const AllocationSmoothedParams<T>& p) {
  const AllocationInput<T>& in = p.in;
  if (in.check) {
    Status st = validate(in);
    if (!st.ok()) return st;
  }
  const int64_t J = in.num_constraints(), m = in.m, k = in.k, plane = in.n * in.m;
  const double tau = p.tau;
  const Chunking ch = Chunking::make(in.n, 1 << 14, 64);
  const int64_t stride = 3 + J + J * J;  // smoothed, lagrangian, soft count, expected [J], hessian [J, J]
  std::vector<double> parts(ch.num_chunks * stride, 0.0);
  parallel_chunks(ch.num_chunks, in.num_threads, [&](int64_t c) {
    double* acc = parts.data() + c * stride;
    double* ex = acc + 3;
    double* hs = ex + J;
    T s[kMaxOptions];
    double prob[kMaxOptions], mean[2 * kMaxOptions];
    int64_t near[kMaxOptions], slot[2 * kMaxOptions];
    const T* row[2 * kMaxOptions];
    for (int64_t i = ch.begin(c); i < ch.end(c); ++i) {
      user_scores(in, p.lam, i, -1, s);
      const int64_t x = best_option(in, i, s);
      const double mx = double(s[x]);
      // the options within 40 tau of the best: the only ones with a non-negligible probability
      double z = 0;
      int64_t nn = 0;
      for (int64_t o = 0; o < m; ++o) {
        if (!eligible_at(in, i, o)) continue;
        const double e = (double(s[o]) - mx) / tau;
        if (e > -40.0) {
          near[nn] = o;
          prob[nn] = std::exp(e);
          z += prob[nn++];
        } else if (e > -745.0) {
          z += std::exp(e);  // negligible but exact in the log-sum-exp
        }
      }
      acc[0] += mx + tau * std::log(z);
      acc[1] += std::is_same_v<T, double> ? mx : user_dual_term(in, p.lam, i);
      const int64_t gi = in.groups ? in.groups[i] : -1;
      int64_t nr = 0;  // the user's resource constraints: per resource its global, then its group
      for (int64_t kk = 0; kk < k; ++kk) {
        const T* cr = in.costs + kk * plane + i * m;
        slot[nr] = kk;
        row[nr++] = cr;
        if (gi >= 0) {
          slot[nr] = group_slot(k, m, in.g, kk, gi);
          row[nr++] = cr;
        }
      }
      if (nn <= 1) {  // one-hot: exact expectation, no curvature
        for (int64_t t = 0; t < nr; ++t) ex[slot[t]] += double(row[t][x]);
        ex[k + x] += 1.0;
        continue;
      }
      for (int64_t q = 0; q < nn; ++q) prob[q] /= z;
      for (int64_t t = 0; t < nr; ++t) {
        double e = 0;
        for (int64_t q = 0; q < nn; ++q) e += prob[q] * double(row[t][near[q]]);
        mean[t] = e;
        ex[slot[t]] += e;
      }
      for (int64_t q = 0; q < nn; ++q) ex[k + near[q]] += prob[q];
      acc[2] += 1;
      // Cov of (resource uses, option indicators) under p
      for (int64_t t = 0; t < nr; ++t) {
        for (int64_t u = t; u < nr; ++u) {
          double e = 0;
          for (int64_t q = 0; q < nn; ++q) e += prob[q] * double(row[t][near[q]]) * double(row[u][near[q]]);
          hs[slot[t] * J + slot[u]] += e - mean[t] * mean[u];
        }
        for (int64_t q = 0; q < nn; ++q) {
          hs[slot[t] * J + k + near[q]] += prob[q] * (double(row[t][near[q]]) - mean[t]);
        }
      }
      for (int64_t q = 0; q < nn; ++q)
        for (int64_t r2 = q; r2 < nn; ++r2)
          hs[(k + near[q]) * J + k + near[r2]] += (q == r2 ? prob[q] : 0.0) - prob[q] * prob[r2];
    }
  });
  std::vector<double> tot(stride, 0.0);
  for (int64_t c = 0; c < ch.num_chunks; ++c)
    for (int64_t q = 0; q < stride; ++q) tot[q] += parts[c * stride + q];
  *p.smoothed = tot[0];
  *p.lagrangian = tot[1];
  *p.soft = static_cast<int64_t>(tot[2]);
  for (int64_t j = 0; j < J; ++j) p.expected[j] = tot[3 + j];
  // entries were accumulated at (a, b) or (b, a) for a pair; the Hessian is their symmetric sum
  const double* h = tot.data() + 3 + J;
  for (int64_t a = 0; a < J; ++a)
    for (int64_t b = 0; b < J; ++b) {
      const double v = a == b ? h[a * J + a] : h[a * J + b] + h[b * J + a];
      p.hessian[a * J + b] = v / tau;
    }
  return Status::Ok();
}

template <typename T>
Status run_allocation_repair_cpu(const AllocationRepairParams<T>& p) {
  const AllocationInput<T>& in = p.in;
  if (in.check) {
    Status st = validate(in);
    if (!st.ok()) return st;
  }
  const int64_t J = in.num_constraints();
  for (int64_t i = 0; i < in.n; ++i) {
    const int64_t x = p.choice[i];
    if (x < 0 || x >= in.m || !eligible_at(in, i, x)) return {Code::kNoEligibleOption, i, x, double(x)};
  }
  RepairState rs;
  rs.spend.assign(J, 0.0);
  rs.budget.assign(p.budgets, p.budgets + J);
  rs.weight.assign(J, 0.0);
  rs.lam.assign(p.lam, p.lam + J);
  for (double& l : rs.lam)
    if (!std::isfinite(l)) l = 0.0;  // an infeasible constraint's +inf carries no price
  rs.violated.assign(J, 0);
  double value = 0;
  int64_t moves[2] = {0, 0};
  // Incremental spends drift by rounding; recompute them exactly and repeat until they agree.
  for (int round = 0; round < 4; ++round) {
    choice_totals(in, p.choice, rs.spend.data(), &value);
    const int64_t a = run_phase(in, rs, p.choice, /*repair=*/true);
    moves[0] += a;
    int64_t b = 0;
    if (p.fill) {
      choice_totals(in, p.choice, rs.spend.data(), &value);
      b = run_phase(in, rs, p.choice, /*repair=*/false);
      moves[1] += b;
    }
    choice_totals(in, p.choice, rs.spend.data(), &value);
    bool violated = false;
    for (int64_t j = 0; j < J; ++j) violated |= rs.spend[j] > rs.budget[j];
    if (!violated || (a == 0 && b == 0)) break;
  }
  for (int64_t j = 0; j < J; ++j) {
    p.spend[j] = rs.spend[j];
    p.feasible[j] = rs.spend[j] <= rs.budget[j];
  }
  *p.value = value;
  if (p.moves) {
    p.moves[0] = moves[0];
    p.moves[1] = moves[1];
  }
  return Status::Ok();
}

#define BIDFCL_INSTANTIATE(T)                                                              \
  template Status run_allocation_policy_cpu<T>(const AllocationPolicyParams<T>&);          \
  template Status run_allocation_line_search_cpu<T>(const AllocationLineSearchParams<T>&); \
  template Status run_allocation_repair_cpu<T>(const AllocationRepairParams<T>&);          \
  template Status run_allocation_smoothed_cpu<T>(const AllocationSmoothedParams<T>&);
BIDFCL_INSTANTIATE(float)
BIDFCL_INSTANTIATE(double)
#undef BIDFCL_INSTANTIATE

}  // namespace bidfcl::core
