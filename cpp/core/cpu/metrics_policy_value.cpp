// CPU implementation of the IPW / Hajek policy estimators of metrics.h (policy_value): one
// validation pass, then per policy two passes in fixed chunks (sums, then squared residuals around
// the estimate), each chunk's partial added in chunk order, so the result does not depend on the
// thread count.
#include <cmath>
#include <limits>
#include <vector>

#include "bidfcl/core/metrics.h"
#include "bidfcl/core/parallel.h"

namespace bidfcl::core {

template <typename T>
Status policy_value_estimate_cpu(const PolicyValueParams<T>& p) {
  const int64_t n = p.n;
  // validate once (shared by all policies)
  {
    const Chunking chunks = Chunking::make(n, 1 << 14, 256);
    std::vector<Status> status(chunks.num_chunks);
    parallel_chunks(chunks.num_chunks, p.num_threads, [&](int64_t ch) {
      for (int64_t i = chunks.begin(ch); i < chunks.end(ch); ++i) {
        const Status rs = check_policy_row(p, i);
        if (!rs.ok()) {
          status[ch] = rs;
          return;
        }
      }
    });
    Status first;
    for (const auto& st : status) keep_first(first, st);
    if (!first.ok()) return first;
  }
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Chunking chunks = Chunking::make(n, 1 << 14, 256);
  const int64_t nc = chunks.num_chunks;
  // Per policy: pass 1 sums (y, x, match weight), pass 2 squared residuals around the estimate.
  std::vector<double> s1(nc * 3), s2(nc * 2);
  for (int64_t kk = 0; kk < p.k; ++kk) {
    const int64_t* choice = p.choice + kk * n;
    parallel_chunks(nc, p.num_threads, [&](int64_t ch) {
      double sy = 0, sx = 0, sw = 0;
      for (int64_t i = chunks.begin(ch); i < chunks.end(ch); ++i) {
        if (choice[i] != p.treatment[i]) continue;
        const double inv_p = 1.0 / double(p.propensity[i]);
        sy += double(p.revenue[i]) * inv_p;
        sx += double(p.cost[i]) * inv_p;
        sw += inv_p;
      }
      s1[ch * 3] = sy;
      s1[ch * 3 + 1] = sx;
      s1[ch * 3 + 2] = sw;
    });
    double sy = 0, sx = 0, sw = 0;
    for (int64_t ch = 0; ch < nc; ++ch) {
      sy += s1[ch * 3];
      sx += s1[ch * 3 + 1];
      sw += s1[ch * 3 + 2];
    }
    const double denom = p.hajek ? sw : double(n);
    const double v = n > 0 && denom > 0 ? sy / denom : nan;
    const double cv = n > 0 && denom > 0 ? sx / denom : nan;
    parallel_chunks(nc, p.num_threads, [&](int64_t ch) {
      double ry = 0, rx = 0;
      for (int64_t i = chunks.begin(ch); i < chunks.end(ch); ++i) {
        const bool match = choice[i] == p.treatment[i];
        const double inv_p = 1.0 / double(p.propensity[i]);
        if (p.hajek) {
          if (!match) continue;
          const double ey = inv_p * (double(p.revenue[i]) - v), ex = inv_p * (double(p.cost[i]) - cv);
          ry += ey * ey;
          rx += ex * ex;
        } else {
          const double y = match ? double(p.revenue[i]) * inv_p : 0.0;
          const double x = match ? double(p.cost[i]) * inv_p : 0.0;
          ry += (y - v) * (y - v);
          rx += (x - cv) * (x - cv);
        }
      }
      s2[ch * 2] = ry;
      s2[ch * 2 + 1] = rx;
    });
    double ry = 0, rx = 0;
    for (int64_t ch = 0; ch < nc; ++ch) {
      ry += s2[ch * 2];
      rx += s2[ch * 2 + 1];
    }
    p.value[kk] = v;
    p.cost_value[kk] = cv;
    if (n < 2 || !(denom > 0)) {
      p.value_se[kk] = p.cost_se[kk] = nan;
    } else if (p.hajek) {
      const double f = double(n) / double(n - 1);
      p.value_se[kk] = std::sqrt(f * ry) / sw;
      p.cost_se[kk] = std::sqrt(f * rx) / sw;
    } else {
      p.value_se[kk] = std::sqrt(ry / double(n - 1) / double(n));
      p.cost_se[kk] = std::sqrt(rx / double(n - 1) / double(n));
    }
  }
  return Status::Ok();
}

template Status policy_value_estimate_cpu<float>(const PolicyValueParams<float>&);
template Status policy_value_estimate_cpu<double>(const PolicyValueParams<double>&);

}  // namespace bidfcl::core
