// CUDA kernels for the decision losses (losses.h / losses_cuda.h).
//
// One thread per row (M is small), grid-stride over rows with a FIXED grid, each block tree-reduces
// its threads' double sums into a partial, and one block adds the partials in order: the result
// depends only on N, never on scheduling. Backward kernels recompute the row's scores.
// Errors: kernels atomicMin the first bad row / lam entry; decision_status_kernel examines them
// with the CPU core's checks (losses.h) into a status record (status_record.h).
#include <cmath>
#include <cstdint>

#include "bidfcl/core/losses_cuda.h"
#include "bidfcl/core/status_record.h"
#include "kernel_common.cuh"

namespace bidfcl::core {
namespace {

using kernels::block_sum;
using kernels::grid_for;
using kernels::kNoRow;
using kernels::kThreads;

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
  return check_decision_row(in, i).ok();
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

// Kind 0: PPL (softmax) loss, Kind 1: PIFD (exact) loss. Partial sums per block.
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

// The row loop of both gradient kernels: grid-stride over rows, row i's gradient zeroed; a bad row
// is recorded (atomicMin) and left at zero, a valid one handed to row_fn(i, r, c, t, gr, gc) with
// its r_hat / c_hat rows, label and gradient rows.
template <typename T, typename RowFn>
__device__ void for_gradient_rows(const DecisionBatch<T>& in, T* gr_all, T* gc_all, unsigned long long* bad_row,
                                  RowFn&& row_fn) {
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < in.n; i += int64_t(gridDim.x) * kThreads) {
    T* gr = gr_all + i * in.m;
    T* gc = gc_all + i * in.m;
    for (int64_t j = 0; j < in.m; ++j) gr[j] = gc[j] = T(0);
    if (!row_ok(in, i)) {
      atomicMin(bad_row, static_cast<unsigned long long>(i));
      continue;
    }
    row_fn(i, in.r_hat + i * in.m, in.c_hat + i * in.m, in.treatment[i], gr, gc);
  }
}

template <typename T>
__global__ void ppl_gradient_kernel(DecisionBatch<T> in, T inv_tau, const T* grad_output, T* gr_all, T* gc_all,
                                    unsigned long long* bad_row) {
  const T go = grad_output[0];
  for_gradient_rows(in, gr_all, gc_all, bad_row, [&](int64_t i, const T* r, const T* c, int64_t t, T* gr, T* gc) {
    const int64_t m = in.m;
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
  });
}

template <typename T>
__global__ void pifd_gradient_kernel(DecisionBatch<T> in, double clip, const T* grad_output, T* gr_all, T* gc_all,
                                     unsigned long long* bad_row) {
  const T go = grad_output[0];
  for_gradient_rows(in, gr_all, gc_all, bad_row, [&](int64_t i, const T* r, const T* c, int64_t t, T* gr, T* gc) {
    const int64_t m = in.m;
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
          const T g = (j == k) ? -cw * pifd_inv_gap(ak - (r[s] - lam * c[s]), clip)
                               : cw * pifd_inv_gap(ak - (r[j] - lam * c[j]), clip);
          gr[j] += g;
          gc[j] -= lam * g;
        }
      } else {
        const T ig = pifd_inv_gap(ak - (r[t] - lam * c[t]), clip);
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
  });
}

template <typename T>
__global__ void first_bad_lam_kernel(const T* lam, int64_t l, unsigned long long* first) {
  for (int64_t x = blockIdx.x * int64_t(kThreads) + threadIdx.x; x < l; x += int64_t(gridDim.x) * kThreads)
    if (!isfinite(lam[x])) atomicMin(first, static_cast<unsigned long long>(x));
}

// One thread: the first finding in the eager order, written as a status record. first[0]: first
// bad treatment label (the Python wrapper's check; lazy path only), first[1]: first non-finite lam
// entry, first[2]: first bad row, examined with the CPU core's own checks.
template <typename T>
__global__ void decision_status_kernel(DecisionBatch<T> in, const unsigned long long* first, int64_t* status) {
  if (first[0] != kNoRow) {  // the wrapper's message shows the int64 label itself
    const int64_t i = static_cast<int64_t>(first[0]);
    write_status_record(status, {static_cast<int64_t>(Code::kBadTreatment), i, in.m, in.treatment[i], kFamilyDecision});
    return;
  }
  Status s;
  if (first[1] != kNoRow) {
    s = check_lam_entry(in, static_cast<int64_t>(first[1]));
  } else if (first[2] != kNoRow) {
    s = check_decision_row(in, static_cast<int64_t>(first[2]));
  }
  write_status_record(status, to_record(s, kFamilyDecision));
}

// The error slots of one launch: [label, lam, row], all kNoRow.
struct DecisionErrors {
  unsigned long long* first;
  DecisionErrors(DeviceWorkspace& ws, cudaStream_t stream) : first(kernels::new_first_rows(ws, 3, stream)) {}
  unsigned long long* lam() const { return first + 1; }
  unsigned long long* row() const { return first + 2; }
};

// check: marks a bad lam entry before the kernels of the launch (on the same stream).
template <typename T>
DecisionErrors begin_check(const DecisionBatch<T>& in, DeviceWorkspace& ws, cudaStream_t stream, bool check) {
  DecisionErrors err(ws, stream);
  if (check) {
    first_bad_lam_kernel<T><<<grid_for(in.l), kThreads, 0, stream>>>(in.lam, in.l, err.lam());
    BIDFCL_LAUNCH_CHECK("first_bad_lam_kernel");
  }
  return err;
}

// check: the first error of the launch as the CPU core would report it (one read back, one sync);
// no check: Ok, with nothing read.
template <typename T>
Status end_check(const DecisionBatch<T>& in, const DecisionErrors& err, DeviceWorkspace& ws, cudaStream_t stream,
                 bool check) {
  if (!check) return Status::Ok();
  int64_t* record = workspace_array<int64_t>(ws, kStatusLen);
  decision_status_kernel<T><<<1, 1, 0, stream>>>(in, err.first, record);
  BIDFCL_LAUNCH_CHECK("decision_status_kernel");
  return kernels::read_status_record(record, stream);
}

// check = false: no lam check and no error read back (no synchronisation at all); bad rows are
// still skipped by the kernels, so bad input gives an unspecified loss, never a fault.
template <typename T, int Kind>
Status launch_loss(const DecisionBatch<T>& in, double tau, T* loss, DeviceWorkspace& ws, cudaStream_t stream,
                   bool check) {
  const DecisionErrors err = begin_check(in, ws, stream, check);
  const int grid = grid_for(in.n);
  double* partials = workspace_array<double>(ws, grid);
  loss_kernel<T, Kind><<<grid, kThreads, 0, stream>>>(in, static_cast<T>(1.0 / tau), partials, err.row());
  BIDFCL_LAUNCH_CHECK("loss_kernel");
  final_sum_kernel<T><<<1, kThreads, 0, stream>>>(partials, grid, loss);
  BIDFCL_LAUNCH_CHECK("final_sum_kernel");
  return end_check(in, err, ws, stream, check);
}

}  // namespace

template <typename T>
Status ppl_loss_forward_cuda(const PplLossParams<T>& p, DeviceWorkspace& ws, cudaStream_t stream, bool check) {
  return launch_loss<T, 0>(p.in, p.tau, p.loss, ws, stream, check);
}

template <typename T>
Status pifd_loss_forward_cuda(const PifdLossParams<T>& p, DeviceWorkspace& ws, cudaStream_t stream, bool check) {
  return launch_loss<T, 1>(p.in, 1.0, p.loss, ws, stream, check);
}

template <typename T>
Status ppl_loss_gradient_cuda(const PplGradientParams<T>& p, DeviceWorkspace& ws, cudaStream_t stream, bool check) {
  const DecisionErrors err = begin_check(p.in, ws, stream, check);
  if (p.in.n > 0) {
    ppl_gradient_kernel<T><<<grid_for(p.in.n), kThreads, 0, stream>>>(p.in, static_cast<T>(1.0 / p.tau), p.grad_output,
                                                                      p.grad_r_hat, p.grad_c_hat, err.row());
    BIDFCL_LAUNCH_CHECK("ppl_gradient_kernel");
  }
  return end_check(p.in, err, ws, stream, check);
}

template <typename T>
Status pifd_loss_gradient_cuda(const PifdGradientParams<T>& p, DeviceWorkspace& ws, cudaStream_t stream, bool check) {
  const DecisionErrors err = begin_check(p.in, ws, stream, check);
  if (p.in.n > 0) {
    pifd_gradient_kernel<T>
        <<<grid_for(p.in.n), kThreads, 0, stream>>>(p.in, p.clip, p.grad_output, p.grad_r_hat, p.grad_c_hat, err.row());
    BIDFCL_LAUNCH_CHECK("pifd_gradient_kernel");
  }
  return end_check(p.in, err, ws, stream, check);
}

// ---- lazy validation of the decision inputs (validate_decision_record_cuda) ----------------------

namespace {

__global__ void first_bad_label_kernel(const int64_t* treatment, int64_t n, int64_t m, unsigned long long* first) {
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < n; i += int64_t(gridDim.x) * kThreads) {
    const int64_t t = treatment[i];
    if (t < 0 || t >= m) atomicMin(first, static_cast<unsigned long long>(i));
  }
}

template <typename T>
__global__ void first_bad_row_kernel(DecisionBatch<T> in, unsigned long long* first) {
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < in.n; i += int64_t(gridDim.x) * kThreads)
    if (!row_ok(in, i)) atomicMin(first, static_cast<unsigned long long>(i));
}

}  // namespace

template <typename T>
void validate_decision_record_cuda(const DecisionBatch<T>& in, int64_t* status, DeviceWorkspace& ws,
                                   cudaStream_t stream) {
  const DecisionErrors err = begin_check(in, ws, stream, /*check=*/true);  // lam -> err.lam()
  const int grid = grid_for(in.n);
  first_bad_label_kernel<<<grid, kThreads, 0, stream>>>(in.treatment, in.n, in.m, err.first);
  BIDFCL_LAUNCH_CHECK("first_bad_label_kernel");
  first_bad_row_kernel<T><<<grid, kThreads, 0, stream>>>(in, err.row());
  BIDFCL_LAUNCH_CHECK("first_bad_row_kernel");
  decision_status_kernel<T><<<1, 1, 0, stream>>>(in, err.first, status);
  BIDFCL_LAUNCH_CHECK("decision_status_kernel");
}

#define BIDFCL_INSTANTIATE(T)                                                                                     \
  template Status ppl_loss_forward_cuda<T>(const PplLossParams<T>&, DeviceWorkspace&, cudaStream_t, bool);        \
  template Status ppl_loss_gradient_cuda<T>(const PplGradientParams<T>&, DeviceWorkspace&, cudaStream_t, bool);   \
  template Status pifd_loss_forward_cuda<T>(const PifdLossParams<T>&, DeviceWorkspace&, cudaStream_t, bool);      \
  template Status pifd_loss_gradient_cuda<T>(const PifdGradientParams<T>&, DeviceWorkspace&, cudaStream_t, bool); \
  template void validate_decision_record_cuda<T>(const DecisionBatch<T>&, int64_t*, DeviceWorkspace&, cudaStream_t);
BIDFCL_INSTANTIATE(float)
BIDFCL_INSTANTIATE(double)
#undef BIDFCL_INSTANTIATE

}  // namespace bidfcl::core
