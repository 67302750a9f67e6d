// CUDA implementation of the allocation policy step (allocation_cuda.h).
//   1. policy_kernel: one thread per user: validation (first bad user -> atomicMin), adjusted
//      scores (adjusted_score with explicitly rounded products), argmax over eligible options
//      (ties to the lowest index), and the user's terms: chosen cost per resource, value, dual term;
//      option counts with integer atomics (exact, hence deterministic);
//   2. rows_partial_kernel / rows_final_kernel: fixed-tree sums of the per-user terms;
//   3. group_kernel: one block per (resource, group) sums its users in group_perm order.
#include <cuda_runtime.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "bidfcl/core/allocation.h"
#include "bidfcl/core/allocation_cuda.h"

namespace bidfcl::core {
namespace {

constexpr int kThreads = 256;
constexpr int kRowBlocks = 256;  // fixed grid of the row reductions
constexpr unsigned long long kNoError = ~0ull;

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("bidfcl: CUDA error in ") + what + ": " + cudaGetErrorString(e));
}

template <typename V>
V* take(DeviceWorkspace& ws, int64_t count) {
  return static_cast<V*>(ws.allocate(static_cast<size_t>(count < 1 ? 1 : count) * sizeof(V)));
}

// Tree sum of one value per thread in a block; the tree is fixed, so the result is deterministic.
__device__ double block_sum(double x, double* shared) {
  shared[threadIdx.x] = x;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) shared[threadIdx.x] = __dadd_rn(shared[threadIdx.x], shared[threadIdx.x + s]);
    __syncthreads();
  }
  const double out = shared[0];
  __syncthreads();
  return out;
}

template <typename T>
__device__ bool row_ok(const AllocationInput<T>& in, int64_t i) {
  const int64_t m = in.m, plane = in.n * in.m;
  bool ok = true, any = in.eligible == nullptr;
  for (int64_t j = 0; j < m; ++j) {
    const T r = in.values[i * m + j];
    ok &= r - r == T(0);
    for (int64_t kk = 0; kk < in.k; ++kk) {
      const T c = in.costs[kk * plane + i * m + j];
      ok &= (c - c == T(0)) & (c >= T(0));
    }
    if (in.eligible) any |= in.eligible[i * m + j];
  }
  if (in.groups) ok &= in.groups[i] >= 0 && in.groups[i] < in.g;
  return ok && any;
}

template <typename T>
__global__ void policy_kernel(AllocationInput<T> in, const double* lam, int64_t* choice, double* terms,
                              unsigned long long* counts, unsigned long long* err) {
  const int64_t n = in.n, m = in.m, k = in.k, plane = n * m;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    if (!row_ok(in, i)) {
      atomicMin(err, static_cast<unsigned long long>(i));
      choice[i] = 0;
      for (int64_t r = 0; r < k + 2; ++r) terms[r * n + i] = 0.0;
      continue;
    }
    const int64_t gi = in.groups ? in.groups[i] : -1;
    T w[kMaxOptions];
    double w64[kMaxOptions];
    for (int64_t kk = 0; kk < k; ++kk) {
      const double x = lam[kk] + (gi >= 0 ? lam[k + m + kk * in.g + gi] : 0.0);
      w64[kk] = x;
      w[kk] = T(x);
    }
    const T* r = in.values + i * m;
    const T* c = in.costs + i * m;
    int64_t best = -1;
    T best_s = T(0);
    double dual = -INFINITY;
    for (int64_t j = 0; j < m; ++j) {
      if (in.eligible && !in.eligible[i * m + j]) continue;
      const T s = adjusted_score(r, c, plane, j, k, w, T(lam[k + j]));
      if (best < 0 || s > best_s) {
        best = j;
        best_s = s;
      }
      double s64 = double(r[j]);
      for (int64_t kk = 0; kk < k; ++kk) s64 = __dsub_rn(s64, __dmul_rn(w64[kk], double(c[kk * plane + j])));
      s64 = __dsub_rn(s64, lam[k + j]);
      dual = s64 > dual ? s64 : dual;
    }
    choice[i] = best;
    for (int64_t kk = 0; kk < k; ++kk) terms[kk * n + i] = double(c[kk * plane + best]);
    terms[k * n + i] = double(r[best]);
    terms[(k + 1) * n + i] = sizeof(T) == sizeof(double) ? double(best_s) : dual;
    atomicAdd(&counts[best], 1ull);
  }
}

// partials[row, b] = sum of terms[row, i] over i = b * kThreads + t + q * kRowBlocks * kThreads.
__global__ void rows_partial_kernel(const double* terms, int64_t n, double* partials) {
  __shared__ double shared[kThreads];
  const int64_t row = blockIdx.y;
  double acc = 0.0;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += int64_t(kRowBlocks) * kThreads)
    acc = __dadd_rn(acc, terms[row * n + i]);
  const double s = block_sum(acc, shared);
  if (threadIdx.x == 0) partials[row * kRowBlocks + blockIdx.x] = s;
}

__global__ void rows_final_kernel(const double* partials, double* out) {
  __shared__ double shared[kThreads];
  const int64_t row = blockIdx.x;
  const double x = threadIdx.x < kRowBlocks ? partials[row * kRowBlocks + threadIdx.x] : 0.0;
  const double s = block_sum(x, shared);
  if (threadIdx.x == 0) out[row] = s;
}

// Block (g, kk): spend of group g on resource kk into spend[k + m + kk * G + g].
__global__ void group_kernel(const double* terms, int64_t n, int64_t k, int64_t m, int64_t g, const int64_t* perm,
                             const int64_t* offsets, double* spend) {
  __shared__ double shared[kThreads];
  const int64_t gg = blockIdx.x, kk = blockIdx.y;
  double acc = 0.0;
  for (int64_t q = offsets[gg] + threadIdx.x; q < offsets[gg + 1]; q += kThreads)
    acc = __dadd_rn(acc, terms[kk * n + perm[q]]);
  const double s = block_sum(acc, shared);
  if (threadIdx.x == 0) spend[k + m + kk * g + gg] = s;
}

__global__ void write_totals_kernel(const double* sums, const unsigned long long* counts, int64_t k, int64_t m,
                                    double* spend, double* value, double* lagrangian) {
  for (int64_t kk = 0; kk < k; ++kk) spend[kk] = sums[kk];
  for (int64_t o = 0; o < m; ++o) spend[k + o] = double(counts[o]);
  *value = sums[k];
  *lagrangian = sums[k + 1];
}

}  // namespace

template <typename T>
Status allocation_check_row_host(const AllocationInput<T>& in, int64_t row) {
  const int64_t m = in.m;
  for (int64_t j = 0; j < m; ++j)
    if (!std::isfinite(in.values[j])) return {Code::kNonFiniteValue, row, j, double(in.values[j])};
  for (int64_t kk = 0; kk < in.k; ++kk)
    for (int64_t j = 0; j < m; ++j) {
      const T c = in.costs[kk * m + j];
      if (!std::isfinite(c)) return {Code::kNonFiniteCost, row, kk * m + j, double(c)};
      if (c < T(0)) return {Code::kNegativeCost, row, kk * m + j, double(c)};
    }
  if (in.eligible) {
    bool any = false;
    for (int64_t j = 0; j < m; ++j) any |= in.eligible[j];
    if (!any) return {Code::kNoEligibleOption, row, -1, 0.0};
  }
  if (in.groups && (in.groups[0] < 0 || in.groups[0] >= in.g))
    return {Code::kBadGroup, row, in.g, double(in.groups[0])};
  return Status::Ok();
}

template <typename T>
Status run_allocation_policy_cuda(const AllocationPolicyParams<T>& p, const int64_t* group_perm,
                                  const int64_t* group_offsets, DeviceWorkspace& ws, cudaStream_t stream) {
  const AllocationInput<T>& in = p.in;
  const int64_t n = in.n, m = in.m, k = in.k, rows = k + 2;
  double* terms = take<double>(ws, rows * n);
  double* partials = take<double>(ws, rows * kRowBlocks);
  double* sums = take<double>(ws, rows);
  unsigned long long* counts = take<unsigned long long>(ws, m + 1);  // [m] counts, then the error record
  unsigned long long* err = counts + m;
  check_cuda(cudaMemsetAsync(counts, 0, static_cast<size_t>(m) * sizeof(unsigned long long), stream), "memset");
  check_cuda(cudaMemsetAsync(err, 0xff, sizeof(unsigned long long), stream), "memset");
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(1) << 16));
  if (n > 0)
    policy_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(in, p.lam, p.choice, terms, counts, err);
  check_cuda(cudaGetLastError(), "policy_kernel");
  unsigned long long bad = kNoError;
  check_cuda(cudaMemcpyAsync(&bad, err, sizeof(bad), cudaMemcpyDeviceToHost, stream), "copy");
  check_cuda(cudaStreamSynchronize(stream), "sync");
  if (bad != kNoError) {
    const int64_t i = static_cast<int64_t>(bad);
    std::vector<T> v(m), c(k * m);
    std::vector<char> e(m);
    int64_t gi = 0;
    check_cuda(cudaMemcpy(v.data(), in.values + i * m, m * sizeof(T), cudaMemcpyDeviceToHost), "copy");
    for (int64_t kk = 0; kk < k; ++kk)
      check_cuda(cudaMemcpy(c.data() + kk * m, in.costs + kk * n * m + i * m, m * sizeof(T), cudaMemcpyDeviceToHost),
                 "copy");
    if (in.eligible) check_cuda(cudaMemcpy(e.data(), in.eligible + i * m, m, cudaMemcpyDeviceToHost), "copy");
    if (in.groups) check_cuda(cudaMemcpy(&gi, in.groups + i, sizeof(int64_t), cudaMemcpyDeviceToHost), "copy");
    AllocationInput<T> host = in;
    host.values = v.data();
    host.costs = c.data();
    host.eligible = in.eligible ? reinterpret_cast<const bool*>(e.data()) : nullptr;
    host.groups = in.groups ? &gi : nullptr;
    host.n = 1;
    return allocation_check_row_host(host, i);
  }
  rows_partial_kernel<<<dim3(kRowBlocks, static_cast<unsigned>(rows)), kThreads, 0, stream>>>(terms, n, partials);
  check_cuda(cudaGetLastError(), "rows_partial_kernel");
  rows_final_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(partials, sums);
  check_cuda(cudaGetLastError(), "rows_final_kernel");
  if (in.g > 0) {
    group_kernel<<<dim3(static_cast<unsigned>(in.g), static_cast<unsigned>(k)), kThreads, 0, stream>>>(
        terms, n, k, m, in.g, group_perm, group_offsets, p.spend);
    check_cuda(cudaGetLastError(), "group_kernel");
  }
  write_totals_kernel<<<1, 1, 0, stream>>>(sums, counts, k, m, p.spend, p.value, p.lagrangian);
  check_cuda(cudaGetLastError(), "write_totals_kernel");
  return Status::Ok();
}

#define BIDFCL_INSTANTIATE(T)                                                                                     \
  template Status run_allocation_policy_cuda<T>(const AllocationPolicyParams<T>&, const int64_t*, const int64_t*, \
                                                DeviceWorkspace&, cudaStream_t);                                  \
  template Status allocation_check_row_host<T>(const AllocationInput<T>&, int64_t);
BIDFCL_INSTANTIATE(float)
BIDFCL_INSTANTIATE(double)
#undef BIDFCL_INSTANTIATE

}  // namespace bidfcl::core
