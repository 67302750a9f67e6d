// The bracketed fast path of the exact solve (the comment above kBracketMinN in mckp_internal.h
// says why it is exact): a sampled bracket, one settle pass (mckp_settle.cpp), the cuts from the
// bracket's steps, and the unsettled rows' choices.
#include "mckp_internal.h"

namespace bidfcl::core::mckp_detail {

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

  // 4. Choices for every cut: each chunk copies its settled choices (the same for all cuts) into
  //    the other cuts' rows, then writes its unsettled individuals' choices over them while those
  //    rows are still in cache; totals.
  std::vector<double> lams(nk);
  for (int64_t kk = 0; kk < nk; ++kk) lams[kk] = cuts[kk].take_all ? 0.0 : double(cuts[kk].lam);
  std::vector<PolicyTotals> parts(nc * nk);
  parallel_chunks(nc, in.num_threads, [&](int64_t ch) {
    const BracketChunk<T>& o = outs[ch];
    PolicyTotals* acc = parts.data() + ch * nk;
    for (int64_t kk = 1; kk < nk; ++kk)
      std::copy(choice + chunks.begin(ch), choice + chunks.end(ch), choice + kk * n + chunks.begin(ch));
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

template FastPath bracketed_solve<float>(const MckpSolveParams<float>&, Status&);
template FastPath bracketed_solve<double>(const MckpSolveParams<double>&, Status&);

}  // namespace bidfcl::core::mckp_detail
