// The two CPU pieces of a solve over shards (bidfcl.distributed, bidfcl.streaming): a shard's
// events (its steps as a flat list) and the choices under cuts selected over all shards.
#include "mckp_internal.h"

namespace bidfcl::core {

using namespace mckp_detail;

template <typename T>
Status run_mckp_events_cpu(const MckpEventsParams<T>& p, EventList<T>& out) {
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
      // The same events as run_solve_mckp_rct_cpu: entering the arm's hull point q, leaving it at q+1.
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
Status run_apply_mckp_cut_cpu(const MckpApplyParams<T>& p) {
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

template Status run_mckp_events_cpu<float>(const MckpEventsParams<float>&, EventList<float>&);
template Status run_mckp_events_cpu<double>(const MckpEventsParams<double>&, EventList<double>&);
template Status run_apply_mckp_cut_cpu<float>(const MckpApplyParams<float>&);
template Status run_apply_mckp_cut_cpu<double>(const MckpApplyParams<double>&);

}  // namespace bidfcl::core
