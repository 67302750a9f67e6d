// CUDA kernels for the decision losses, policy estimators and AUCC (losses.h / losses_cuda.h).
//
// Losses: one thread per row (M is small), grid-stride over rows with a FIXED grid, each block
// tree-reduces its threads' double sums into a partial, and one block adds the partials in order:
// the result depends only on N, never on scheduling. Backward kernels recompute the row's scores.
// AUCC: CUB radix sort of order-preserving keys (stable: ties keep row order), CUB scans for the
// running sums and running maximum, one thread per cost level for the searches.
#include <cub/cub.cuh>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "bidfcl/core/losses_cuda.h"
#include "bidfcl/core/status_record.h"

namespace bidfcl::core {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 1024;
constexpr unsigned long long kNoRow = ~0ull;

inline void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("bidfcl: CUDA error in ") + what + ": " + cudaGetErrorString(e));
}

inline int grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks));
}

template <typename V>
V* alloc_n(const DeviceAlloc& alloc, int64_t count) {
  return static_cast<V*>(alloc(static_cast<size_t>(count > 0 ? count : 1) * sizeof(V)));
}

// Sum of one double per thread over the block, in a fixed tree order; thread 0 gets the result.
__device__ double block_sum(double x) {
  __shared__ double buf[kThreads];
  buf[threadIdx.x] = x;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) buf[threadIdx.x] += buf[threadIdx.x + s];
    __syncthreads();
  }
  const double r = buf[0];
  __syncthreads();
  return r;
}

// out[0] = sum of partials[0 .. count) in a fixed order (one block), cast to Out.
template <typename Out>
__global__ void final_sum_kernel(const double* partials, int count, Out* out) {
  double acc = 0;
  for (int i = threadIdx.x; i < count; i += kThreads) acc += partials[i];
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[0] = static_cast<Out>(acc);
}

template <typename T>
__device__ bool row_ok(const DecisionBatch<T>& in, int64_t i) {
  const T* r = in.r_hat + i * in.m;
  const T* c = in.c_hat + i * in.m;
  for (int64_t j = 0; j < in.m; ++j)
    if (!isfinite(r[j]) || !isfinite(c[j])) return false;
  const int64_t t = in.treatment[i];
  if (t < 0 || t >= in.m) return false;
  if (!isfinite(in.revenue[i])) return false;
  if (in.cost && !isfinite(in.cost[i])) return false;
  const T p = in.propensity[i];
  return p > T(0) && p <= T(1);
}

template <typename T>
__device__ T row_weight(const DecisionBatch<T>& in, int64_t i, T lam) {
  const T reward = in.cost ? in.revenue[i] - lam * in.cost[i] : in.revenue[i];
  return reward / (static_cast<T>(in.n) * in.propensity[i]);
}

template <typename T>
__device__ T softmax_max(const T* r, const T* c, T lam, int64_t m) {
  T mx = r[0] - lam * c[0];
  for (int64_t j = 1; j < m; ++j) mx = max(mx, r[j] - lam * c[j]);
  return mx;
}

template <typename T>
__device__ T softmax_sum(const T* r, const T* c, T lam, int64_t m, T mx, T inv_tau) {
  T sum = 0;
  for (int64_t j = 0; j < m; ++j) sum += exp((r[j] - lam * c[j] - mx) * inv_tau);
  return sum;
}

template <typename T>
__device__ T inv_gap(T gap, double clip) {
  if (clip > 0) {
    const T h = static_cast<T>(clip);
    if (gap > h) return T(0);
    return T(1) / max(gap, h);
  }
  if (gap == T(0)) return static_cast<T>(1.0 / kPifdZeroGapFloor);
  return T(1) / gap;
}

// kind 0: softmax loss, kind 1: flip (exact) loss. Partial sums per block.
template <typename T, int Kind>
__global__ void loss_kernel(DecisionBatch<T> in, T inv_tau, double* partials, unsigned long long* bad_row) {
  double acc = 0;
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < in.n; i += int64_t(gridDim.x) * kThreads) {
    if (!row_ok(in, i)) {
      atomicMin(bad_row, static_cast<unsigned long long>(i));
      continue;
    }
    const T* r = in.r_hat + i * in.m;
    const T* c = in.c_hat + i * in.m;
    const int64_t t = in.treatment[i];
    for (int64_t l = 0; l < in.l; ++l) {
      const T lam = in.lam[l];
      if (Kind == 0) {
        const T mx = softmax_max(r, c, lam, in.m);
        const T sum = softmax_sum(r, c, lam, in.m, mx, inv_tau);
        const T zt = exp((r[t] - lam * c[t] - mx) * inv_tau) * (T(1) / sum);
        acc -= double(zt * row_weight(in, i, lam));
      } else {
        int64_t k = 0;
        T best = r[0] - lam * c[0];
        for (int64_t j = 1; j < in.m; ++j) {
          const T aj = r[j] - lam * c[j];
          if (aj > best) {
            best = aj;
            k = j;
          }
        }
        if (k == t) acc -= double(row_weight(in, i, lam));
      }
    }
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

template <typename T>
__global__ void softmax_backward_kernel(DecisionBatch<T> in, T inv_tau, const T* grad_output, T* gr_all, T* gc_all,
                                        unsigned long long* bad_row) {
  const T go = grad_output[0];
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < in.n; i += int64_t(gridDim.x) * kThreads) {
    const int64_t m = in.m;
    T* gr = gr_all + i * m;
    T* gc = gc_all + i * m;
    for (int64_t j = 0; j < m; ++j) gr[j] = gc[j] = T(0);
    if (!row_ok(in, i)) {
      atomicMin(bad_row, static_cast<unsigned long long>(i));
      continue;
    }
    const T* r = in.r_hat + i * m;
    const T* c = in.c_hat + i * m;
    const int64_t t = in.treatment[i];
    for (int64_t l = 0; l < in.l; ++l) {
      const T lam = in.lam[l];
      const T mx = softmax_max(r, c, lam, m);
      const T inv_sum = T(1) / softmax_sum(r, c, lam, m, mx, inv_tau);
      const T zt = exp((r[t] - lam * c[t] - mx) * inv_tau) * inv_sum;
      const T coef = -(row_weight(in, i, lam) * inv_tau) * zt * go;
      for (int64_t j = 0; j < m; ++j) {
        const T zj = exp((r[j] - lam * c[j] - mx) * inv_tau) * inv_sum;
        const T g = coef * ((j == t ? T(1) : T(0)) - zj);
        gr[j] += g;
        gc[j] -= lam * g;
      }
    }
  }
}

template <typename T>
__global__ void flip_backward_kernel(DecisionBatch<T> in, double clip, const T* grad_output, T* gr_all, T* gc_all,
                                     unsigned long long* bad_row) {
  const T go = grad_output[0];
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < in.n; i += int64_t(gridDim.x) * kThreads) {
    const int64_t m = in.m;
    T* gr = gr_all + i * m;
    T* gc = gc_all + i * m;
    for (int64_t j = 0; j < m; ++j) gr[j] = gc[j] = T(0);
    if (!row_ok(in, i)) {
      atomicMin(bad_row, static_cast<unsigned long long>(i));
      continue;
    }
    const T* r = in.r_hat + i * m;
    const T* c = in.c_hat + i * m;
    const int64_t t = in.treatment[i];
    for (int64_t l = 0; l < in.l; ++l) {
      const T lam = in.lam[l];
      int64_t k = 0;
      for (int64_t j = 1; j < m; ++j)
        if (r[j] - lam * c[j] > r[k] - lam * c[k]) k = j;
      int64_t s = (k == 0) ? 1 : 0;
      for (int64_t j = s + 1; j < m; ++j)
        if (j != k && r[j] - lam * c[j] > r[s] - lam * c[s]) s = j;
      const T ak = r[k] - lam * c[k];
      const T cw = row_weight(in, i, lam) * go;
      if (k == t) {
        for (int64_t j = 0; j < m; ++j) {
          const T g = (j == k) ? -cw * inv_gap(ak - (r[s] - lam * c[s]), clip) : cw * inv_gap(ak - (r[j] - lam * c[j]), clip);
          gr[j] += g;
          gc[j] -= lam * g;
        }
      } else {
        const T ig = inv_gap(ak - (r[t] - lam * c[t]), clip);
        const T gt = -cw * ig;
        gr[t] += gt;
        gc[t] -= lam * gt;
        if (s == t) {
          const T gk = cw * ig;
          gr[k] += gk;
          gc[k] -= lam * gk;
        }
      }
    }
  }
}

unsigned long long* new_bad_row(const DeviceAlloc& alloc, cudaStream_t stream) {
  auto* bad = alloc_n<unsigned long long>(alloc, 1);
  cuda_check(cudaMemsetAsync(bad, 0xff, sizeof(unsigned long long), stream), "memset");
  return bad;
}

// Reads the error record (one sync). row >= 0: the first offending row.
Status bad_row_status(const unsigned long long* bad, cudaStream_t stream) {
  unsigned long long host = kNoRow;
  cuda_check(cudaMemcpyAsync(&host, bad, sizeof(host), cudaMemcpyDeviceToHost, stream), "memcpy");
  cuda_check(cudaStreamSynchronize(stream), "synchronize");
  if (host == kNoRow) return Status::Ok();
  return {Code::kNonFiniteInput, static_cast<int64_t>(host), -1, 0.0};
}

template <typename T>
Status lam_status(const DecisionBatch<T>& in, cudaStream_t stream) {
  // lam is tiny: check it on the host
  const int64_t l = in.l;
  T host[64];
  for (int64_t base = 0; base < l; base += 64) {
    const int64_t cnt = (l - base < 64) ? l - base : 64;
    cuda_check(cudaMemcpyAsync(host, in.lam + base, cnt * sizeof(T), cudaMemcpyDeviceToHost, stream), "memcpy");
    cuda_check(cudaStreamSynchronize(stream), "synchronize");
    for (int64_t x = 0; x < cnt; ++x)
      if (!std::isfinite(host[x])) return {Code::kNonFiniteInput, base + x, int64_t(LossInput::kLam), double(host[x])};
  }
  return Status::Ok();
}

// check = false: no lam read on the host and no error read back (no synchronisation at all); bad
// rows are still skipped by the kernels, so bad input gives an unspecified loss, never a fault.
template <typename T, int Kind>
Status launch_loss(const DecisionBatch<T>& in, double tau, T* loss, const DeviceAlloc& alloc, cudaStream_t stream,
                   bool check) {
  if (check) {
    Status st = lam_status(in, stream);
    if (!st.ok()) return st;
  }
  const int grid = grid_for(in.n);
  double* partials = alloc_n<double>(alloc, grid);
  unsigned long long* bad = new_bad_row(alloc, stream);
  loss_kernel<T, Kind><<<grid, kThreads, 0, stream>>>(in, static_cast<T>(1.0 / tau), partials, bad);
  cuda_check(cudaGetLastError(), "loss_kernel");
  final_sum_kernel<T><<<1, kThreads, 0, stream>>>(partials, grid, loss);
  cuda_check(cudaGetLastError(), "final_sum_kernel");
  return check ? bad_row_status(bad, stream) : Status::Ok();
}

}  // namespace

template <typename T>
Status softmax_loss_cuda(const SoftmaxLossParams<T>& p, const DeviceAlloc& alloc, cudaStream_t stream, bool check) {
  return launch_loss<T, 0>(p.in, p.tau, p.loss, alloc, stream, check);
}

template <typename T>
Status flip_loss_cuda(const FlipLossParams<T>& p, const DeviceAlloc& alloc, cudaStream_t stream, bool check) {
  return launch_loss<T, 1>(p.in, 1.0, p.loss, alloc, stream, check);
}

template <typename T>
Status softmax_loss_backward_cuda(const SoftmaxLossBackwardParams<T>& p, const DeviceAlloc& alloc, cudaStream_t stream,
                                  bool check) {
  if (check) {
    Status st = lam_status(p.in, stream);
    if (!st.ok()) return st;
  }
  unsigned long long* bad = new_bad_row(alloc, stream);
  if (p.in.n > 0) {
    softmax_backward_kernel<T><<<grid_for(p.in.n), kThreads, 0, stream>>>(p.in, static_cast<T>(1.0 / p.tau),
                                                                           p.grad_output, p.grad_r_hat, p.grad_c_hat, bad);
    cuda_check(cudaGetLastError(), "softmax_backward_kernel");
  }
  return check ? bad_row_status(bad, stream) : Status::Ok();
}

template <typename T>
Status flip_loss_backward_cuda(const FlipLossBackwardParams<T>& p, const DeviceAlloc& alloc, cudaStream_t stream,
                               bool check) {
  if (check) {
    Status st = lam_status(p.in, stream);
    if (!st.ok()) return st;
  }
  unsigned long long* bad = new_bad_row(alloc, stream);
  if (p.in.n > 0) {
    flip_backward_kernel<T><<<grid_for(p.in.n), kThreads, 0, stream>>>(p.in, p.clip, p.grad_output, p.grad_r_hat,
                                                                        p.grad_c_hat, bad);
    cuda_check(cudaGetLastError(), "flip_backward_kernel");
  }
  return check ? bad_row_status(bad, stream) : Status::Ok();
}

// ---- lazy validation of the decision inputs (validate_decision_cuda) -----------------------------

namespace {

__global__ void first_bad_label_kernel(const int64_t* treatment, int64_t n, int64_t m, unsigned long long* first) {
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < n; i += int64_t(gridDim.x) * kThreads) {
    const int64_t t = treatment[i];
    if (t < 0 || t >= m) atomicMin(first, static_cast<unsigned long long>(i));
  }
}

template <typename T>
__global__ void first_bad_lam_kernel(const T* lam, int64_t l, unsigned long long* first) {
  for (int64_t x = blockIdx.x * int64_t(kThreads) + threadIdx.x; x < l; x += int64_t(gridDim.x) * kThreads)
    if (!isfinite(lam[x])) atomicMin(first, static_cast<unsigned long long>(x));
}

template <typename T>
__global__ void first_bad_row_kernel(DecisionBatch<T> in, unsigned long long* first) {
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < in.n; i += int64_t(gridDim.x) * kThreads)
    if (!row_ok(in, i)) atomicMin(first, static_cast<unsigned long long>(i));
}

// One thread: the first finding in the eager order (the wrapper's label check, lam, then rows), with
// the row examined exactly like check_decision_row of losses_cpu.cpp.
template <typename T>
__global__ void decision_status_kernel(DecisionBatch<T> in, const unsigned long long* rec, int64_t* status) {
  int64_t code = 0, row = -1, col = -1, value = 0;
  if (rec[0] != kNoRow) {
    row = static_cast<int64_t>(rec[0]);
    code = static_cast<int64_t>(Code::kBadTreatment);
    col = in.m;
    value = in.treatment[row];
  } else if (rec[1] != kNoRow) {
    row = static_cast<int64_t>(rec[1]);
    code = static_cast<int64_t>(Code::kNonFiniteInput);
    col = static_cast<int64_t>(LossInput::kLam);
    value = __double_as_longlong(double(in.lam[row]));
  } else if (rec[2] != kNoRow) {
    const int64_t i = static_cast<int64_t>(rec[2]);
    const T* r = in.r_hat + i * in.m;
    const T* c = in.c_hat + i * in.m;
    row = i;
    for (int64_t j = 0; j < in.m && code == 0; ++j) {
      if (!isfinite(r[j])) {
        code = static_cast<int64_t>(Code::kNonFiniteValue);
        col = j;
        value = __double_as_longlong(double(r[j]));
      } else if (!isfinite(c[j])) {
        code = static_cast<int64_t>(Code::kNonFiniteCost);
        col = j;
        value = __double_as_longlong(double(c[j]));
      }
    }
    if (code == 0) {
      const T p = in.propensity[i];
      if (!isfinite(in.revenue[i])) {
        code = static_cast<int64_t>(Code::kNonFiniteInput);
        col = static_cast<int64_t>(LossInput::kRevenue);
        value = __double_as_longlong(double(in.revenue[i]));
      } else if (in.cost && !isfinite(in.cost[i])) {
        code = static_cast<int64_t>(Code::kNonFiniteInput);
        col = static_cast<int64_t>(LossInput::kCost);
        value = __double_as_longlong(double(in.cost[i]));
      } else if (!(p > T(0) && p <= T(1))) {
        code = static_cast<int64_t>(Code::kBadPropensity);
        col = 0;
        value = __double_as_longlong(double(p));
      }
    }
  }
  if (code == 0) row = col = -1;
  status[kStatusCode] = code;
  status[kStatusRow] = row;
  status[kStatusCol] = col;
  status[kStatusValue] = value;
  status[kStatusFamily] = kFamilyDecision;
}

}  // namespace

template <typename T>
void validate_decision_cuda(const DecisionBatch<T>& in, int64_t* status, const DeviceAlloc& alloc, cudaStream_t stream) {
  auto* rec = alloc_n<unsigned long long>(alloc, 3);  // first bad label, lam index, row
  cuda_check(cudaMemsetAsync(rec, 0xff, 3 * sizeof(unsigned long long), stream), "memset");
  const int grid = grid_for(in.n);
  first_bad_label_kernel<<<grid, kThreads, 0, stream>>>(in.treatment, in.n, in.m, rec);
  cuda_check(cudaGetLastError(), "first_bad_label_kernel");
  first_bad_lam_kernel<T><<<grid_for(in.l), kThreads, 0, stream>>>(in.lam, in.l, rec + 1);
  cuda_check(cudaGetLastError(), "first_bad_lam_kernel");
  first_bad_row_kernel<T><<<grid, kThreads, 0, stream>>>(in, rec + 2);
  cuda_check(cudaGetLastError(), "first_bad_row_kernel");
  decision_status_kernel<T><<<1, 1, 0, stream>>>(in, rec, status);
  cuda_check(cudaGetLastError(), "decision_status_kernel");
}

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
    if (!isfinite(p.revenue[i]) || !isfinite(p.cost[i]) || !(pr > T(0) && pr <= T(1))) {
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

}  // namespace

template <typename T>
Status policy_value_cuda(const PolicyValueParams<T>& p, const DeviceAlloc& alloc, cudaStream_t stream) {
  if (p.k == 0) return Status::Ok();
  const int grid = grid_for(p.n);
  double* partials = alloc_n<double>(alloc, p.k * grid * 3);
  double* est = alloc_n<double>(alloc, p.k * 3);
  unsigned long long* bad = new_bad_row(alloc, stream);
  const dim3 blocks(grid, static_cast<unsigned>(p.k));
  policy_sums_kernel<T, 0><<<blocks, kThreads, 0, stream>>>(p, est, partials, bad);
  cuda_check(cudaGetLastError(), "policy_sums_kernel");
  policy_finish_kernel<0><<<static_cast<unsigned>(p.k), kThreads, 0, stream>>>(
      partials, grid, p.n, p.hajek, est, p.value, p.cost_value, p.value_se, p.cost_se);
  policy_sums_kernel<T, 1><<<blocks, kThreads, 0, stream>>>(p, est, partials, bad);
  policy_finish_kernel<1><<<static_cast<unsigned>(p.k), kThreads, 0, stream>>>(
      partials, grid, p.n, p.hajek, est, p.value, p.cost_value, p.value_se, p.cost_se);
  cuda_check(cudaGetLastError(), "policy_finish_kernel");
  return bad_row_status(bad, stream);
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
    const T* r = p.r_hat + 2 * i;
    const T* c = p.c_hat + 2 * i;
    const int64_t t = p.treatment[i];
    const bool ok = isfinite(r[0]) && isfinite(r[1]) && isfinite(c[0]) && isfinite(c[1]) && (t == 0 || t == 1) &&
                    isfinite(p.revenue[i]) && isfinite(p.cost[i]);
    if (!ok) {
      atomicMin(bad_row, static_cast<unsigned long long>(i));
      keys[i] = 0;
      idx[i] = static_cast<uint32_t>(i);
      continue;
    }
    n1 += static_cast<unsigned long long>(t);
    const T dc = max(c[1] - c[0], static_cast<T>(kAuccMinCostGap));
    const T roi = (r[1] - r[0]) / dc + T(0);
    keys[i] = ~ordered_key(roi);
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
      if (max(max_c[mid], 0.0) >= level) hi = mid; else lo = mid + 1;
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

__global__ void fill_kernel(double* x, int64_t count, double v) {
  const int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x;
  if (i < count) x[i] = v;
}

}  // namespace

template <typename T>
Status aucc_cuda(const AuccParams<T>& p, const DeviceAlloc& alloc, cudaStream_t stream) {
  const int64_t n = p.n;
  const unsigned fill_blocks = static_cast<unsigned>((p.q + 1 + kThreads - 1) / kThreads);
  if (n == 0) {
    fill_kernel<<<1, 1, 0, stream>>>(p.aucc, 1, __builtin_nan(""));
    fill_kernel<<<fill_blocks, kThreads, 0, stream>>>(p.cost_curve, p.q + 1, 0.0);
    fill_kernel<<<fill_blocks, kThreads, 0, stream>>>(p.revenue_curve, p.q + 1, 0.0);
    cuda_check(cudaGetLastError(), "fill_kernel");
    return Status::Ok();
  }
  using Key = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  Key* keys = alloc_n<Key>(alloc, n);
  Key* keys_sorted = alloc_n<Key>(alloc, n);
  uint32_t* idx = alloc_n<uint32_t>(alloc, n);
  uint32_t* order = alloc_n<uint32_t>(alloc, n);
  auto* treated = alloc_n<unsigned long long>(alloc, 1);
  cuda_check(cudaMemsetAsync(treated, 0, sizeof(unsigned long long), stream), "memset");
  unsigned long long* bad = new_bad_row(alloc, stream);
  const int grid = grid_for(n);
  aucc_keys_kernel<T, Key><<<grid, kThreads, 0, stream>>>(p, keys, idx, treated, bad);
  cuda_check(cudaGetLastError(), "aucc_keys_kernel");
  // error record and arm sizes: one sync
  unsigned long long host[2];
  cuda_check(cudaMemcpyAsync(&host[0], bad, sizeof(unsigned long long), cudaMemcpyDeviceToHost, stream), "memcpy");
  cuda_check(cudaMemcpyAsync(&host[1], treated, sizeof(unsigned long long), cudaMemcpyDeviceToHost, stream), "memcpy");
  cuda_check(cudaStreamSynchronize(stream), "synchronize");
  if (host[0] != kNoRow) return {Code::kNonFiniteInput, static_cast<int64_t>(host[0]), -1, 0.0};
  const int64_t n1 = static_cast<int64_t>(host[1]);
  if (n1 == 0 || n1 == n) return {Code::kBadTreatment, -1, 2, double(n1 == 0 ? 1 : 0)};

  // stable radix sort, ascending key = descending ROI, ties by row index
  size_t temp_bytes = 0;
  cuda_check(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys, keys_sorted, idx, order, n, 0,
                                             int(sizeof(Key) * 8), stream), "SortPairs(size)");
  void* temp = alloc(temp_bytes);
  cuda_check(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys, keys_sorted, idx, order, n, 0,
                                             int(sizeof(Key) * 8), stream), "SortPairs");
  double* dcost = alloc_n<double>(alloc, n);
  double* drev = alloc_n<double>(alloc, n);
  aucc_steps_kernel<T><<<grid, kThreads, 0, stream>>>(p, order, treated, dcost, drev);
  cuda_check(cudaGetLastError(), "aucc_steps_kernel");
  // cum_c[k - 1] = C(k), cum_r likewise, max_c = running max of cum_c
  double* cum_c = alloc_n<double>(alloc, n);
  double* cum_r = alloc_n<double>(alloc, n);
  double* max_c = alloc_n<double>(alloc, n);
  size_t scan_bytes = 0;
  cuda_check(cub::DeviceScan::InclusiveSum(nullptr, scan_bytes, dcost, cum_c, n, stream), "InclusiveSum(size)");
  size_t max_bytes = 0;
  cuda_check(cub::DeviceScan::InclusiveScan(nullptr, max_bytes, cum_c, max_c, MaxOp{}, n, stream), "InclusiveScan(size)");
  void* scan_temp = alloc(scan_bytes > max_bytes ? scan_bytes : max_bytes);
  cuda_check(cub::DeviceScan::InclusiveSum(scan_temp, scan_bytes, dcost, cum_c, n, stream), "InclusiveSum");
  cuda_check(cub::DeviceScan::InclusiveSum(scan_temp, scan_bytes, drev, cum_r, n, stream), "InclusiveSum");
  cuda_check(cub::DeviceScan::InclusiveScan(scan_temp, max_bytes, cum_c, max_c, MaxOp{}, n, stream), "InclusiveScan");
  aucc_levels_kernel<<<fill_blocks, kThreads, 0, stream>>>(cum_c, cum_r, max_c, n, p.q, p.cost_curve, p.revenue_curve);
  cuda_check(cudaGetLastError(), "aucc_levels_kernel");
  aucc_final_kernel<<<1, 1, 0, stream>>>(p.revenue_curve, cum_c, cum_r, n, p.q, p.aucc);
  cuda_check(cudaGetLastError(), "aucc_final_kernel");
  return Status::Ok();
}

#define BIDFCL_INSTANTIATE(T)                                                                                     \
  template Status softmax_loss_cuda<T>(const SoftmaxLossParams<T>&, const DeviceAlloc&, cudaStream_t, bool);      \
  template Status softmax_loss_backward_cuda<T>(const SoftmaxLossBackwardParams<T>&, const DeviceAlloc&,           \
                                                cudaStream_t, bool);                                               \
  template Status flip_loss_cuda<T>(const FlipLossParams<T>&, const DeviceAlloc&, cudaStream_t, bool);            \
  template Status flip_loss_backward_cuda<T>(const FlipLossBackwardParams<T>&, const DeviceAlloc&, cudaStream_t,   \
                                             bool);                                                                \
  template void validate_decision_cuda<T>(const DecisionBatch<T>&, int64_t*, const DeviceAlloc&, cudaStream_t);   \
  template Status policy_value_cuda<T>(const PolicyValueParams<T>&, const DeviceAlloc&, cudaStream_t);            \
  template Status aucc_cuda<T>(const AuccParams<T>&, const DeviceAlloc&, cudaStream_t);
BIDFCL_INSTANTIATE(float)
BIDFCL_INSTANTIATE(double)
#undef BIDFCL_INSTANTIATE

}  // namespace bidfcl::core
