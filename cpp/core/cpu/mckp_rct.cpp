// CPU RCT-calibrated solve of mckp.h: the first crossing of the IPW spend estimate along the
// step order.
#include "mckp_internal.h"

namespace bidfcl::core {

using namespace mckp_detail;

template <typename T>
Status run_solve_mckp_rct_cpu(const MckpRctParams<T>& p) {
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

template Status run_solve_mckp_rct_cpu<float>(const MckpRctParams<float>&);
template Status run_solve_mckp_rct_cpu<double>(const MckpRctParams<double>&);

}  // namespace bidfcl::core
