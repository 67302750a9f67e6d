// CPU budget frontier of mckp.h: every step of the order, from one bucket sort and exact sorts
// inside the buckets.
#include "mckp_internal.h"

namespace bidfcl::core {

using namespace mckp_detail;

template <typename T>
Status run_budget_frontier_cpu(const MckpInput<T>& in, FrontierResult<T>& out) {
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

template Status run_budget_frontier_cpu<float>(const MckpInput<float>&, FrontierResult<float>&);
template Status run_budget_frontier_cpu<double>(const MckpInput<double>&, FrontierResult<double>&);

}  // namespace bidfcl::core
