// CUDA kernels for the metrics (metrics.h / metrics_cuda.h).
//
// Policy value: per policy (blockIdx.y) fixed-grid block sums, added in order by one block per
// policy; two passes (sums, then squared residuals around the estimate).
// AUCC: CUB radix sort of order-preserving keys (stable: ties keep row order), CUB scans for the
// running sums and running maximum, one thread per cost level for the searches.
// Errors: the first bad row (atomicMin), examined on the device with the CPU core's row checks
// (metrics.h) into a status record (status_record.h) that the launcher reads back once.
#include <cub/cub.cuh>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "bidfcl/core/metrics_cuda.h"
#include "bidfcl/core/status_record.h"
#include "kernel_common.cuh"

namespace bidfcl::core {
namespace {

using kernels::block_sum;
using kernels::grid_for;
using kernels::kNoRow;
using kernels::kThreads;

}  // namespace

// ---- policy value -------------------------------------------------------------------------------

namespace {

// Pass 1 (stage = 0): per block sums of y, x, 1/p over matched rows, for policy blockIdx.y.
// Pass 2 (stage = 1): per block sums of squared residuals around est[k] (value, cost).
template <typename T, int Stage>
__global__ void policy_sums_kernel(PolicyValueParams<T> p, const double* est, double* partials,
                                   unsigned long long* bad_row) {
  const int64_t kk = blockIdx.y;
  const int64_t* choice = p.choice + kk * p.n;
  double a = 0, b = 0, w = 0;
  const double v = Stage == 1 ? est[kk * 2] : 0.0, cv = Stage == 1 ? est[kk * 2 + 1] : 0.0;
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < p.n; i += int64_t(gridDim.x) * kThreads) {
    const T pr = p.propensity[i];
    if (!check_policy_row(p, i).ok()) {
      if (Stage == 0) atomicMin(bad_row, static_cast<unsigned long long>(i));
      continue;
    }
    const bool match = choice[i] == p.treatment[i];
    const double inv_p = 1.0 / double(pr);
    if (Stage == 0) {
      if (!match) continue;
      a += double(p.revenue[i]) * inv_p;
      b += double(p.cost[i]) * inv_p;
      w += inv_p;
    } else if (p.hajek) {
      if (!match) continue;
      const double ey = inv_p * (double(p.revenue[i]) - v), ex = inv_p * (double(p.cost[i]) - cv);
      a += ey * ey;
      b += ex * ex;
    } else {
      const double y = match ? double(p.revenue[i]) * inv_p : 0.0;
      const double x = match ? double(p.cost[i]) * inv_p : 0.0;
      a += (y - v) * (y - v);
      b += (x - cv) * (x - cv);
    }
  }
  const int64_t base = (kk * gridDim.x + blockIdx.x) * 3;
  a = block_sum(a);
  b = block_sum(b);
  w = block_sum(w);
  if (threadIdx.x == 0) {
    partials[base] = a;
    partials[base + 1] = b;
    partials[base + 2] = w;
  }
}

// One block per policy: adds the partials in order; stage 0 writes the estimates (and W), stage 1
// the standard errors.
template <int Stage>
__global__ void policy_finish_kernel(const double* partials, int grid, int64_t n, bool hajek, double* est,
                                     double* value, double* cost_value, double* value_se, double* cost_se) {
  const int64_t kk = blockIdx.x;
  double a = 0, b = 0, w = 0;
  for (int g = threadIdx.x; g < grid; g += kThreads) {
    const double* q = partials + (kk * grid + g) * 3;
    a += q[0];
    b += q[1];
    w += q[2];
  }
  a = block_sum(a);
  b = block_sum(b);
  w = block_sum(w);
  if (threadIdx.x != 0) return;
  const double nan = __longlong_as_double(0x7ff8000000000000ll);
  if (Stage == 0) {
    const double denom = hajek ? w : double(n);
    const bool ok = n > 0 && denom > 0;
    est[kk * 2] = ok ? a / denom : nan;
    est[kk * 2 + 1] = ok ? b / denom : nan;
    est[2 * gridDim.x + kk] = w;  // W after the 2K estimates
    value[kk] = est[kk * 2];
    cost_value[kk] = est[kk * 2 + 1];
  } else {
    const double sw = est[2 * gridDim.x + kk];
    const double denom = hajek ? sw : double(n);
    if (n < 2 || !(denom > 0)) {
      value_se[kk] = cost_se[kk] = nan;
    } else if (hajek) {
      const double f = double(n) / double(n - 1);
      value_se[kk] = sqrt(f * a) / sw;
      cost_se[kk] = sqrt(f * b) / sw;
    } else {
      value_se[kk] = sqrt(a / double(n - 1) / double(n));
      cost_se[kk] = sqrt(b / double(n - 1) / double(n));
    }
  }
}

// One thread: the first bad row (if any) examined with the CPU core's row check, as a record.
template <typename T>
__global__ void policy_status_kernel(PolicyValueParams<T> p, const unsigned long long* first, int64_t* status) {
  const Status s = *first == kNoRow ? Status::Ok() : check_policy_row(p, static_cast<int64_t>(*first));
  write_status_record(status, to_record(s, kFamilyMetrics));
}

}  // namespace

template <typename T>
Status policy_value_estimate_cuda(const PolicyValueParams<T>& p, DeviceWorkspace& ws, cudaStream_t stream) {
  if (p.k == 0) return Status::Ok();
  const int grid = grid_for(p.n);
  double* partials = workspace_array<double>(ws, p.k * grid * 3);
  double* est = workspace_array<double>(ws, p.k * 3);
  unsigned long long* bad = kernels::new_first_rows(ws, 1, stream);
  const dim3 blocks(grid, static_cast<unsigned>(p.k));
  policy_sums_kernel<T, 0><<<blocks, kThreads, 0, stream>>>(p, est, partials, bad);
  BIDFCL_LAUNCH_CHECK("policy_sums_kernel");
  policy_finish_kernel<0><<<static_cast<unsigned>(p.k), kThreads, 0, stream>>>(
      partials, grid, p.n, p.hajek, est, p.value, p.cost_value, p.value_se, p.cost_se);
  policy_sums_kernel<T, 1><<<blocks, kThreads, 0, stream>>>(p, est, partials, bad);
  policy_finish_kernel<1><<<static_cast<unsigned>(p.k), kThreads, 0, stream>>>(
      partials, grid, p.n, p.hajek, est, p.value, p.cost_value, p.value_se, p.cost_se);
  BIDFCL_LAUNCH_CHECK("policy_finish_kernel");
  int64_t* record = workspace_array<int64_t>(ws, kStatusLen);
  policy_status_kernel<T><<<1, 1, 0, stream>>>(p, bad, record);
  BIDFCL_LAUNCH_CHECK("policy_status_kernel");
  return kernels::read_status_record(record, stream);
}

// ---- AUCC ---------------------------------------------------------------------------------------

namespace {

__device__ inline uint32_t ordered_key(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ inline uint64_t ordered_key(double f) {
  const uint64_t u = static_cast<uint64_t>(__double_as_longlong(f));
  return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

template <typename T, typename K>
__global__ void aucc_keys_kernel(AuccParams<T> p, K* keys, uint32_t* idx, unsigned long long* treated,
                                 unsigned long long* bad_row) {
  unsigned long long n1 = 0;
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < p.n; i += int64_t(gridDim.x) * kThreads) {
    const int64_t t = p.treatment[i];
    if (!check_aucc_row(p, i).ok()) {
      atomicMin(bad_row, static_cast<unsigned long long>(i));
      keys[i] = 0;
      idx[i] = static_cast<uint32_t>(i);
      continue;
    }
    n1 += static_cast<unsigned long long>(t);
    keys[i] = ~ordered_key(aucc_roi(p, i));
    idx[i] = static_cast<uint32_t>(i);
  }
  if (n1) atomicAdd(treated, n1);  // integer atomics: order does not matter
}

template <typename T>
__global__ void aucc_steps_kernel(AuccParams<T> p, const uint32_t* order, const unsigned long long* treated,
                                  double* dcost, double* drev) {
  const double n1 = double(*treated), n0 = double(p.n) - n1;
  for (int64_t k = blockIdx.x * int64_t(kThreads) + threadIdx.x; k < p.n; k += int64_t(gridDim.x) * kThreads) {
    const int64_t i = order[k];
    if (p.treatment[i] == 1) {
      dcost[k] = double(p.cost[i]) / n1;
      drev[k] = double(p.revenue[i]) / n1;
    } else {
      dcost[k] = -(double(p.cost[i]) / n0);
      drev[k] = -(double(p.revenue[i]) / n0);
    }
  }
}

struct MaxOp {
  __device__ double operator()(double a, double b) const { return a > b ? a : b; }
};

// One thread per level: first k in [0, n] with max_c[k] >= level (max_c[0] = 0 is implicit).
__global__ void aucc_levels_kernel(const double* cum_c, const double* cum_r, const double* max_c, int64_t n, int64_t q,
                                   double* cost_curve, double* revenue_curve) {
  const int64_t qq = blockIdx.x * int64_t(kThreads) + threadIdx.x;
  if (qq > q) return;
  const double c_tot = cum_c[n - 1];
  const double level = c_tot * (double(qq) / double(q));
  int64_t k;
  if (0.0 >= level) {
    k = 0;
  } else {
    int64_t lo = 0, hi = n;  // search max_c[0 .. n) (prefix k = index + 1)
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (max(max_c[mid], 0.0) >= level) hi = mid;
      else lo = mid + 1;
    }
    k = lo < n ? lo + 1 : n;
  }
  cost_curve[qq] = k == 0 ? 0.0 : cum_c[k - 1];
  revenue_curve[qq] = k == 0 ? 0.0 : cum_r[k - 1];
}

__global__ void aucc_final_kernel(const double* revenue_curve, const double* cum_c, const double* cum_r, int64_t n,
                                  int64_t q, double* aucc) {
  double area = 0;
  for (int64_t qq = 0; qq <= q; ++qq) area += revenue_curve[qq];  // in order, like the CPU
  const double c_tot = cum_c[n - 1], r_tot = cum_r[n - 1];
  aucc[0] = (c_tot > 0 && r_tot != 0) ? area / (r_tot * double(q + 1)) : __longlong_as_double(0x7ff8000000000000ll);
}

// One thread: the first bad row examined with the CPU core's row check, else the empty-arm check
// on the treated count, as a record.
template <typename T>
__global__ void aucc_status_kernel(AuccParams<T> p, const unsigned long long* first, const unsigned long long* treated,
                                   int64_t* status) {
  const Status s = *first != kNoRow ? check_aucc_row(p, static_cast<int64_t>(*first))
                                    : aucc_arm_status(static_cast<int64_t>(*treated), p.n);
  write_status_record(status, to_record(s, kFamilyMetrics));
}

__global__ void fill_kernel(double* x, int64_t count, double v) {
  const int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x;
  if (i < count) x[i] = v;
}

}  // namespace

template <typename T>
Status aucc_curve_cuda(const AuccParams<T>& p, DeviceWorkspace& ws, cudaStream_t stream) {
  const int64_t n = p.n;
  const unsigned fill_blocks = static_cast<unsigned>((p.q + 1 + kThreads - 1) / kThreads);
  if (n == 0) {
    fill_kernel<<<1, 1, 0, stream>>>(p.aucc, 1, __builtin_nan(""));
    fill_kernel<<<fill_blocks, kThreads, 0, stream>>>(p.cost_curve, p.q + 1, 0.0);
    fill_kernel<<<fill_blocks, kThreads, 0, stream>>>(p.revenue_curve, p.q + 1, 0.0);
    BIDFCL_LAUNCH_CHECK("fill_kernel");
    return Status::Ok();
  }
  using Key = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  Key* keys = workspace_array<Key>(ws, n);
  Key* keys_sorted = workspace_array<Key>(ws, n);
  uint32_t* idx = workspace_array<uint32_t>(ws, n);
  uint32_t* order = workspace_array<uint32_t>(ws, n);
  auto* treated = workspace_array<unsigned long long>(ws, 1);
  cuda_check(cudaMemsetAsync(treated, 0, sizeof(unsigned long long), stream), "memset");
  unsigned long long* bad = kernels::new_first_rows(ws, 1, stream);
  const int grid = grid_for(n);
  aucc_keys_kernel<T, Key><<<grid, kThreads, 0, stream>>>(p, keys, idx, treated, bad);
  BIDFCL_LAUNCH_CHECK("aucc_keys_kernel");
  // the error record (bad row or empty arm): one sync
  int64_t* record = workspace_array<int64_t>(ws, kStatusLen);
  aucc_status_kernel<T><<<1, 1, 0, stream>>>(p, bad, treated, record);
  BIDFCL_LAUNCH_CHECK("aucc_status_kernel");
  const Status st = kernels::read_status_record(record, stream);
  if (!st.ok()) return st;

  // stable radix sort, ascending key = descending ROI, ties by row index
  size_t temp_bytes = 0;
  cuda_check(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys, keys_sorted, idx, order, n, 0,
                                             int(sizeof(Key) * 8), stream),
             "SortPairs(size)");
  void* temp = ws.allocate(temp_bytes);
  cuda_check(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys, keys_sorted, idx, order, n, 0,
                                             int(sizeof(Key) * 8), stream),
             "SortPairs");
  double* dcost = workspace_array<double>(ws, n);
  double* drev = workspace_array<double>(ws, n);
  aucc_steps_kernel<T><<<grid, kThreads, 0, stream>>>(p, order, treated, dcost, drev);
  BIDFCL_LAUNCH_CHECK("aucc_steps_kernel");
  // cum_c[k - 1] = C(k), cum_r likewise, max_c = running max of cum_c
  double* cum_c = workspace_array<double>(ws, n);
  double* cum_r = workspace_array<double>(ws, n);
  double* max_c = workspace_array<double>(ws, n);
  size_t scan_bytes = 0;
  cuda_check(cub::DeviceScan::InclusiveSum(nullptr, scan_bytes, dcost, cum_c, n, stream), "InclusiveSum(size)");
  size_t max_bytes = 0;
  cuda_check(cub::DeviceScan::InclusiveScan(nullptr, max_bytes, cum_c, max_c, MaxOp{}, n, stream),
             "InclusiveScan(size)");
  void* scan_temp = ws.allocate(scan_bytes > max_bytes ? scan_bytes : max_bytes);
  cuda_check(cub::DeviceScan::InclusiveSum(scan_temp, scan_bytes, dcost, cum_c, n, stream), "InclusiveSum");
  cuda_check(cub::DeviceScan::InclusiveSum(scan_temp, scan_bytes, drev, cum_r, n, stream), "InclusiveSum");
  cuda_check(cub::DeviceScan::InclusiveScan(scan_temp, max_bytes, cum_c, max_c, MaxOp{}, n, stream), "InclusiveScan");
  aucc_levels_kernel<<<fill_blocks, kThreads, 0, stream>>>(cum_c, cum_r, max_c, n, p.q, p.cost_curve, p.revenue_curve);
  BIDFCL_LAUNCH_CHECK("aucc_levels_kernel");
  aucc_final_kernel<<<1, 1, 0, stream>>>(p.revenue_curve, cum_c, cum_r, n, p.q, p.aucc);
  BIDFCL_LAUNCH_CHECK("aucc_final_kernel");
  return Status::Ok();
}

#define BIDFCL_INSTANTIATE(T)                                                                                 \
  template Status policy_value_estimate_cuda<T>(const PolicyValueParams<T>&, DeviceWorkspace&, cudaStream_t); \
  template Status aucc_curve_cuda<T>(const AuccParams<T>&, DeviceWorkspace&, cudaStream_t);
BIDFCL_INSTANTIATE(float)
BIDFCL_INSTANTIATE(double)
#undef BIDFCL_INSTANTIATE

}  // namespace bidfcl::core
