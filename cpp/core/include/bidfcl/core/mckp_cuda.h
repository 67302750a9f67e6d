// CUDA launchers for the MCKP solvers of mckp.h. Torch-free: raw device pointers, sizes, a stream
// and a caller-provided workspace (so the torch glue can hand out caching-allocator memory).
//
// Same inputs, outputs and semantics as the CPU routines in mckp.h, with these differences:
//   - every pointer in the Params structs is a DEVICE pointer (budgets included), except where a
//     launcher takes an extra host pointer explicitly;
//   - `num_threads` in MckpInput is ignored;
//   - float64 totals (spend, value, dual bound, cumulative spends) are summed in a fixed order that
//     differs from the CPU's, so they agree to rounding; hulls, breakpoints, the step order, cuts,
//     choices and lam are bit-identical to the CPU whenever the cumulative spends compare the same
//     way against the budgets (always, for instance, on integer-valued data);
//   - results are deterministic: no floating-point atomics, fixed reduction trees and grid sizes
//     that depend only on the problem size.
// Bad input is reported through the returned Status (first offending entry in row-major order, the
// same as the CPU). CUDA runtime failures throw std::runtime_error.
// All work is enqueued on `stream`; the launchers synchronise it only to read small results back
// (error flags, the number of hull steps, and, for bisection, the spend at each multiplier).
// With check = false (exact and RCT solves) they never synchronise or read device memory on the
// host: inputs are not validated (bad input gives unspecified outputs, never an out-of-bounds
// access; run_validate_mckp_cuda reports it lazily), every size comes from n and m, and the step order
// is sorted in a worst-case buffer of n * (m - 1) entries instead of P (mckp_kernels.cu says what
// that costs). The results are bit-identical to check = true for valid input. Such a launch can
// be captured in a CUDA graph.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>

#include "bidfcl/core/device_workspace.h"  // DeviceWorkspace: device scratch memory
#include "bidfcl/core/mckp.h"
#include "bidfcl/core/status.h"

namespace bidfcl::core {

// Output buffers of the frontier; their length (P + 1) is only known once the hulls are built, so
// the launcher asks the caller for them through a callback.
template <typename T>
struct FrontierDeviceOutput {
  T* lam = nullptr;         // [P+1] device
  double* spend = nullptr;  // [P+1] device
  double* value = nullptr;  // [P+1] device
};

template <typename T>
Status run_solve_mckp_cuda(const MckpSolveParams<T>& p, DeviceWorkspace& ws, cudaStream_t stream, bool check = true);

// budgets_host: the same [k] budgets as p.out.budgets, on the host (the bisection loop runs there).
template <typename T>
Status run_solve_mckp_bisection_cuda(const MckpBisectionParams<T>& p, const double* budgets_host, DeviceWorkspace& ws,
                                     cudaStream_t stream);

// make_output(len) is called once, with len = P + 1, and returns device buffers of that length.
template <typename T>
Status run_budget_frontier_cuda(const MckpInput<T>& in,
                                const std::function<FrontierDeviceOutput<T>(int64_t)>& make_output, DeviceWorkspace& ws,
                                cudaStream_t stream);

template <typename T>
Status run_solve_mckp_rct_cuda(const MckpRctParams<T>& p, DeviceWorkspace& ws, cudaStream_t stream, bool check = true);

// Lazy validation of the solver inputs (no host read): writes the status record of
// status_record.h into `status` (device, kStatusLen int64). treatment, cost_obs and propensity are
// null for solve_mckp (family kFamilySolve) and all set for solve_mckp_rct (kFamilyRct). The first
// error in the order the eager path checks: treatment labels (the Python wrapper's check), budgets,
// values/costs cells in row-major order, then the RCT rows (propensity, cost_obs).
template <typename T>
struct MckpCheckParams {
  const T* values = nullptr;
  const T* costs = nullptr;
  int64_t n = 0, m = 0;
  const double* budgets = nullptr;  // [k]
  int64_t k = 0;
  const int64_t* treatment = nullptr;  // [n] or null
  const T* cost_obs = nullptr;         // [n] or null
  const T* propensity = nullptr;       // [n] or null
  int64_t* status = nullptr;           // [kStatusLen] output
};

template <typename T>
void run_validate_mckp_cuda(const MckpCheckParams<T>& p, DeviceWorkspace& ws, cudaStream_t stream);

}  // namespace bidfcl::core
